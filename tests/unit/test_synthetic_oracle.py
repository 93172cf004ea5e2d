"""bench/synthetic_oracle.py: the half-oracles' per-owner Bayesian estimate."""

from __future__ import annotations

import numpy as np
from harness import bench_module

synthetic_oracle = bench_module("synthetic_oracle")


def test_posterior_means_recover_each_owners_weights_and_fall_back_to_the_prior():
    rng = np.random.default_rng(0)
    weights = rng.normal(0, 1, (3, 4))
    owners = np.repeat([0, 1, 2], [2000, 2000, 3])  # owner 3 has no observations
    features = rng.normal(0, 1, (len(owners), 4))
    targets = np.einsum("ij,ij->i", features, weights[owners]) + rng.normal(0, 0.1, len(owners))
    estimates = synthetic_oracle.posterior_means(owners, 4, features, targets, np.ones(4), noise_var=0.01)
    assert np.allclose(estimates[:2], weights[:2], atol=0.01)
    # Three noisy observations of four weights: the prior pulls the estimate, but it still points the same way.
    assert np.dot(estimates[2], weights[2]) > 0 and not np.allclose(estimates[2], weights[2], atol=0.01)
    assert np.array_equal(estimates[3], np.zeros(4))

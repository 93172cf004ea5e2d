"""The train stage's memory estimate: each model's tables counted without allocating them, and the refusal of a
model that would not fit, before anything is built."""

from __future__ import annotations

import re

import polars as pl
import pytest
import torch
from fakes import low_rank_rows, ratings_frame
from harness import model_params, project_params

from movielens_pipeline import training
from movielens_pipeline.data import DataShape
from movielens_pipeline.models import REGISTRY
from movielens_pipeline.models.sweep.ridge import GRAM_FLOATS
from movielens_pipeline.params import GradientSettings, ParamsError
from movielens_pipeline.preprocess import index_ratings
from movielens_pipeline.profiles import read_profiles
from movielens_pipeline.split import split_ratings
from movielens_pipeline.training import gradient, memory
from movielens_pipeline.training.memory import physical_memory
from movielens_pipeline.training.processes import processes, refits_beside

GIB = 2**30
ML_100K = DataShape(n_users=943, n_movies=1682, n_genres=19, n_train_ratings=70_000, train_mean=3.53)
# ML-25M's index space and 70 % of its ratings: the largest data set the committed settings train on.
ML_25M = DataShape(n_users=162_541, n_movies=59_047, n_genres=20, n_train_ratings=17_500_000, train_mean=3.53)


def settings_of(name: str, **changes):
    """Model `name`'s committed settings with `changes`, `auto` resolved for ML-100K's training ratings."""
    settings = model_params(name, **{name: changes}).settings
    return settings.resolved(ML_100K.n_train_ratings) if isinstance(settings, GradientSettings) else settings


def nbytes(tensors) -> int:
    return sum(tensor.nelement() * tensor.element_size() for tensor in tensors)


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_the_estimate_counts_what_the_built_model_holds(name):
    model_class, settings = REGISTRY[name], settings_of(name)
    model = model_class(ML_100K, settings)  # built for real, small
    parameters, buffers = nbytes(model.parameters()), nbytes(model.buffers())
    kept = nbytes(model.state_dict().values())
    working = model_class.working_bytes(ML_100K, settings)  # what a closed-form fit holds beside (ease's inverse)
    expected = parameters * (1 + model_class.optimizer_state_copies) + buffers + kept + working
    assert model_class.training_bytes(ML_100K, settings) == expected
    assert model_class.optimizer_state_copies == {"sweep": 0, "gradient": 2}[model_class.family]


def test_biased_mf_holds_its_tables_four_times_and_its_seen_flags_twice():
    users, movies, dim = 1000, 500, 64
    shape = DataShape(users, movies, 19, 10_000, 3.5)
    weights = 4 * ((users + movies) * (dim + 1) + 1)  # factors, biases, the global logit; float32
    seen = users + movies  # a bool per user and movie
    # The weights, Adam's two moments and the best epoch's copy; the flags and their copy.
    estimate = REGISTRY["biased_mf"].training_bytes(shape, settings_of("biased_mf", embedding_dim=dim))
    assert estimate == 4 * weights + 2 * seen


@pytest.mark.parametrize("chains", [1, 3])
def test_bayes_mf_holds_about_four_plus_four_times_its_chains_factors(chains):
    users, movies, dim = 1000, 500, 64
    factors = 4 * (users + movies) * dim
    settings = settings_of("bayes_mf", embedding_dim=dim, chains=chains)
    shape = DataShape(users, movies, 19, 10_000, 3.5)
    estimate = REGISTRY["bayes_mf"].training_bytes(shape, settings)
    # The current sample and its float64 sums (twice as wide): 3; the bags' vectors (one per movie for the
    # users' bags, one per user for the movies', besides one per genre with `genres`): 1; per chain, the
    # posterior means, their copy for the best epoch, and the chain's float64 means: 4. Besides, averaging the
    # chains' larger side: two float64 arrays.
    temporaries = max(2 * 8 * chains * users * dim, 2 * 8 * GRAM_FLOATS)  # averaging, or a ridge solve's chunk
    # The sessions' tables, at most a session per rating and scale (the committed scales): per rating and scale
    # three int64 indices; per session a key, its int64 count, two float32 biases, a float64 sum and a float64 mean
    # per chain; and a sweep's float64 targets.
    scales = len(settings.session_minutes)
    sessions = 10_000 * (scales * (3 * 8 + 2 * 8 + 2 * 4 + 8 * (1 + chains)) + 2 * 8)
    assert REGISTRY["bayes_mf"].working_bytes(shape, settings) == temporaries + sessions
    assert REGISTRY["bayes_mf"].working_bytes(shape, settings.model_copy(update={"session_minutes": []})) == temporaries
    genre_vectors = 4 * 19 * (1 + dim)
    beside = estimate - temporaries - sessions - genre_vectors
    assert (4 + 4 * chains) * factors < beside < (4.2 + 4 * chains) * factors  # and the biases


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_the_committed_settings_fit_in_4_gib_at_ml_25m_size_as_its_profile_sets_them(name):
    # At ML-25M's size a user selects its profile (`-S profile=ml-25m`), which sets what that size needs.
    profile = read_profiles()["ml-25m"][1]["train"].get(name, {})
    assert REGISTRY[name].training_bytes(ML_25M, settings_of(name, **profile)) < 4 * GIB


def check_memory(params, settings, shape: DataShape, memory_bytes: int | None = None) -> None:
    """The memory check as `train` makes it: for the processes these params train in on the CPU."""
    planned = REGISTRY[params.model].planned_sweeps(settings) if REGISTRY[params.model].family == "sweep" else None
    beside = refits_beside(params, planned, torch.device("cpu"))
    memory.check_memory(params, settings, shape, processes(params, beside), memory_bytes)


def refusal(name: str, shape: DataShape, memory_bytes: int = 16 * GIB, devices: int = 1, **changes) -> str:
    strategy = "ddp" if devices > 1 else "auto"
    params = model_params(name, devices=devices, strategy=strategy, **{name: changes})
    with pytest.raises(ParamsError) as raised:
        check_memory(params, settings_of(name, **changes), shape, memory_bytes)
    return str(raised.value)


def test_a_model_too_big_for_the_memory_is_refused_with_the_setting_the_estimate_and_the_memory():
    shape = DataShape(n_users=10_000_000, n_movies=50_000, n_genres=20, n_train_ratings=20_000_000, train_mean=3.5)
    settings = settings_of("biased_mf", embedding_dim=4096)
    needed = REGISTRY["biased_mf"].training_bytes(shape, settings)
    message = refusal("biased_mf", shape, embedding_dim=4096)
    assert message == (
        f"train.biased_mf.embedding_dim: got 4096; training `biased_mf` on 10,000,000 users and 50,000 movies would "
        f"hold about {needed / GIB:,.1f} GiB (weights, optimiser state, the best epoch's copy, the fit's "
        "temporaries), more than the 16.0 GiB it may use here: lower it"
    )
    assert 600 < needed / GIB < 700  # 10 M x 4096 float32 is 153 GiB, held four times
    assert "\n" not in message


@pytest.mark.parametrize(
    ("name", "changes", "named"),
    [
        ("genre_mlp", {"embedding_dim": 8, "hidden_dim": 65_536}, "hidden_dim"),
        ("genre_mlp", {"embedding_dim": 4096, "hidden_dim": 8}, "embedding_dim"),
        ("autorec", {"hidden_dim": 65_536}, "hidden_dim"),
        ("timesvd", {"embedding_dim": 1, "time_bins": 10_000}, "time_bins"),
        ("als", {"embedding_dim": 4096}, "embedding_dim"),
        ("bayes_mf", {"embedding_dim": 4096}, "embedding_dim"),
    ],
)
def test_the_refusal_names_the_setting_that_sizes_the_tables_most(name, changes, named):
    message = refusal(name, ML_100K, memory_bytes=2**20, **changes)
    assert message.startswith(f"train.{name}.{named}: got {changes[named]}; training `{name}` on 943 users and 1,682")
    assert message.endswith("more than the 0.0 GiB it may use here: lower it")


def test_a_model_whose_size_no_setting_changes_is_refused_for_the_data():
    shape = DataShape(n_users=500_000_000, n_movies=50_000, n_genres=20, n_train_ratings=500_000_000, train_mean=3.5)
    message = refusal("biases", shape, memory_bytes=4 * GIB)
    assert re.fullmatch(
        r"train\.model: got 'biases'; training `biases` on 500,000,000 users and 50,000 movies would hold about "
        r"[\d,]+\.\d GiB \(.*\), more than the 4\.0 GiB it may use here: train it on fewer users and movies",
        message,
    )


def test_each_process_on_the_machine_holds_its_own_copy():
    settings = settings_of("biased_mf", embedding_dim=4096)
    one = REGISTRY["biased_mf"].training_bytes(ML_25M, settings)
    params = model_params("biased_mf", devices=2, strategy="ddp", biased_mf={"embedding_dim": 4096})
    check_memory(params, settings, ML_25M, memory_bytes=2 * one)  # fits exactly
    message = refusal("biased_mf", ML_25M, memory_bytes=2 * one - 1, devices=2, embedding_dim=4096)
    held = "(weights, optimiser state, the best epoch's copy, the fit's temporaries in each of 2 "
    assert f"about {2 * one / GIB:,.1f} GiB {held}" in message
    assert "processes (train.devices))" in message


def test_a_refit_beside_the_first_fit_holds_a_second_copy():
    settings = settings_of("bayes_mf", embedding_dim=512)
    one = REGISTRY["bayes_mf"].training_bytes(ML_25M, settings)
    params = project_params("train", model="bayes_mf", refit=True, bayes_mf={"embedding_dim": 512})
    check_memory(params, settings, ML_25M, memory_bytes=2 * one)  # fits exactly
    with pytest.raises(
        ParamsError, match=r"temporaries in each of 2 processes \(refit trains beside the first fit\)\)"
    ):
        check_memory(params, settings, ML_25M, memory_bytes=2 * one - 1)
    # Without refit, one process holds one copy.
    check_memory(project_params("train", model="bayes_mf", bayes_mf={"embedding_dim": 512}), settings, ML_25M, one)


def test_models_that_fit_pass_and_the_memory_is_what_is_available_less_the_margin():
    available = memory.available_memory()
    assert available is not None and 256 * 2**20 < available <= physical_memory()
    assert memory.usable_memory() == pytest.approx(available * (1 - memory.MEMORY_MARGIN), rel=0.05)  # it moves
    for name in ("bayes_mf", "biased_mf"):  # the committed default, and the end-to-end tests' model, on ML-100K
        check_memory(model_params(name), settings_of(name), ML_100K)


def test_usable_memory_reads_memavailable_and_falls_back_to_physical_memory(tmp_path, monkeypatch):
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       24683700 kB\nMemFree:         1000000 kB\nMemAvailable:    8000000 kB\n")
    monkeypatch.setattr(memory, "MEMINFO", str(meminfo))
    assert memory.usable_memory() == int(8_000_000 * 1024 * (1 - memory.MEMORY_MARGIN))
    monkeypatch.setattr(memory, "MEMINFO", str(tmp_path / "none"))  # not Linux
    assert memory.usable_memory() == int(physical_memory() * (1 - memory.MEMORY_MARGIN))


def test_bayes_mf_counts_the_chains_averaging_temporaries_and_a_run_the_kernel_would_kill_is_refused():
    # The case that once started, grew to 23 GB on a 23.5 GiB machine and was killed: now refused before any work.
    settings = settings_of("bayes_mf", embedding_dim=4096, chains=100, session_minutes=[])
    temporaries = REGISTRY["bayes_mf"].working_bytes(ML_100K, settings)
    assert temporaries == 2 * 8 * 100 * 1682 * 4096  # two chains x movies x dim float64 arrays
    message = refusal("bayes_mf", ML_100K, memory_bytes=int(23.5 * GIB), embedding_dim=4096, chains=100)
    assert message.startswith("train.bayes_mf.embedding_dim: got 4096; training `bayes_mf` on 943 users")


@pytest.fixture(scope="module")
def split_parts() -> tuple[dict[str, pl.DataFrame], pl.DataFrame, pl.DataFrame]:
    ratings, users, movies = index_ratings(ratings_frame(low_rank_rows(n_users=60, n_movies=40, per_user=10)))
    movies = movies.with_columns(genres=pl.Series([["Drama"]] * movies.height))
    return split_ratings(ratings, project_params("split")), users, movies


def test_train_refuses_before_building_a_model_or_writing_anything(split_parts, tmp_path, monkeypatch):
    parts, users, movies = split_parts
    monkeypatch.setattr(memory, "usable_memory", lambda: 10_000)
    monkeypatch.setattr(gradient, "build_model", lambda *args: pytest.fail("a model was built"))
    params = model_params("biased_mf", max_epochs=1)
    checkpoint, live = tmp_path / "model.ckpt", tmp_path / "live"
    with pytest.raises(ParamsError, match=r"^train\.biased_mf\.embedding_dim: got 64; training `biased_mf` on 60 "):
        training.train(params, parts["train"], parts["val"], users, movies, checkpoint, live)
    assert list(tmp_path.iterdir()) == []

"""The names `data.dataset` accepts: the GroupLens releases (`releases.RELEASES` describes each) and `synthetic`.

Kept apart from the releases' URLs and checksums, so that the params schema, which every
stage reads, does not make every stage depend on those.
"""

RELEASE_NAMES = ("ml-100k", "ml-1m", "ml-10m", "ml-20m", "ml-25m", "ml-32m", "ml-latest-small", "ml-latest")
SYNTHETIC = "synthetic"  # generated, not fetched: src/movielens_pipeline/synthetic.py
DATASETS = (*RELEASE_NAMES, SYNTHETIC)
# ML-100K's own folds (its README): u1-u5 for five-fold cross-validation, ua and ub with 10 ratings per user in
# each test part. `split.strategy: given` picks one; no other release defines folds.
GIVEN_FOLDS = ("u1", "u2", "u3", "u4", "u5", "ua", "ub")
FOLDS_RELEASE = "ml-100k"

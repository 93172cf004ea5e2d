"""The names `data.dataset` accepts: the GroupLens releases (`releases.RELEASES` describes each) and `synthetic`.

Kept apart from the releases' URLs and checksums, so that the params schema, which every
stage reads, does not make every stage depend on those.
"""

RELEASE_NAMES = ("ml-100k", "ml-1m", "ml-10m", "ml-20m", "ml-25m", "ml-32m", "ml-latest-small", "ml-latest")
SYNTHETIC = "synthetic"  # generated, not fetched: src/movielens_pipeline/synthetic.py
DATASETS = (*RELEASE_NAMES, SYNTHETIC)

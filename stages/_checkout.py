"""Make each stage import the library from the checkout it belongs to.

`dvc exp run --queue` and `--temp` run the stages in a copy of the repository; without
this, `import movielens_pipeline` would find the editable install, i.e. the code of the
main checkout as it is when the run starts, not the code the experiment was queued with.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

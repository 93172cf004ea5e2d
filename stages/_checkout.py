"""Set up a stage's process, before it imports anything: the library of its own checkout, and torch's CPU kernels.

`dvc exp run --queue` and `--temp` run the stages in a copy of the repository; without
this, `import movielens_pipeline` would find the editable install, i.e. the code of the
main checkout as it is when the run starts, not the code the experiment was queued with.

Torch picks its CPU kernels by the vector extensions of the CPU it runs on, MKL its code path by the CPU's
extensions and maker, and MKL splits a matrix product by its thread count: each adds floats up in its own order,
so the same params would give a checkpoint that differs in its last bits on another machine, and a dirty
`dvc.lock`. Pinned here: torch's AVX2 kernels (every x86-64 CPU of the last decade runs them), MKL's
COMPATIBLE path (the same results on Intel and AMD), and STAGE_THREADS threads for a stage that sets no count of
its own (train.threads and rank.threads do). They are read when torch first dispatches an operation and when MKL
starts, hence before anything imports torch (docs/experiments.md, "The same bytes on any machine").
"""

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
STAGE_THREADS = "2"
os.environ["ATEN_CPU_CAPABILITY"] = "avx2"
os.environ["MKL_CBWR"] = "COMPATIBLE"
os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = STAGE_THREADS

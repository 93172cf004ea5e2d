"""The train stage's outputs: the checkpoint (and an ensemble member's first fit), dvclive's folder with the
params as used, the summary and the timings; each written atomically, by the one process that writes them."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import torch
from dvclive import Live

from ..atomic import atomic_dir, atomic_path, write_json, writing
from ..models import RatingModel, saved_bytes

# The training summary's wall-clock figures, which differ on every run of the same training. They go to
# TIMINGS_FILE in the dvclive folder, which .dvcignore keeps out of the output's hash (dvc.lock) and .gitignore
# out of git: the git-tracked metrics.json holds only what the same params and data reproduce.
TIMINGS = ("train_seconds", "ratings_per_second", "seconds_to_1pct_of_best_val")
TIMINGS_FILE = "timings.json"
# The val figure the model was chosen on, the one file of the dvclive folder dvc.yaml declares as metrics: dvclive's
# own metrics.json has its step and last-epoch losses, columns that would crowd `dvc exp show` (and the train and
# rank folders' would share names, which DVC then prefixes with the file's path).
VAL_FILE = "val.json"


def checkpoint_bytes(model: RatingModel, state: dict[str, torch.Tensor], epochs: int) -> bytes:
    """The checkpoint of `model` with the weights `state`, trained for `epochs` epochs: what `models.load_model` reads.

    Optimiser states are left out (twice the weights' size, and nothing resumes from them)."""
    return saved_bytes(model.checkpoint() | {"state_dict": state, "epochs": epochs})


class Outputs:
    """Staged outputs, published together when the block that opened them ends without an error (`open`)."""

    def __init__(self, checkpoint: Path, live: Live, first_fit: Path | None):
        self.checkpoint, self.live, self.first_fit = checkpoint, live, first_fit

    def write(self, checkpoint: bytes, first_fit: bytes | None, summary: dict, chosen_on: dict) -> None:
        """The checkpoint, the first fit's (if asked for), the summary in dvclive's metrics, the val figure it was
        `chosen_on` and the timings beside."""
        with writing(self.checkpoint, "the best checkpoint"):
            self.checkpoint.write_bytes(checkpoint)
        if self.first_fit is not None:
            with atomic_path(self.first_fit) as staging, writing(staging, "the first fit"):
                staging.write_bytes(first_fit)
        for name, value in summary.items():
            if name not in TIMINGS:
                self.live.summary[name] = value
        write_json(chosen_on, Path(self.live.dir) / VAL_FILE, "the val figure", indent=4)
        timings = {name: summary[name] for name in TIMINGS}
        write_json(timings, Path(self.live.dir) / TIMINGS_FILE, "the training timings", indent=4)

    @staticmethod
    @contextlib.contextmanager
    def open(checkpoint: Path, live_dir: Path, first_fit: Path | None) -> Iterator[Outputs]:
        """The outputs staged beside their places; each appears there, whole, when the block ends without error."""
        with contextlib.ExitStack() as stack:
            staged_checkpoint = stack.enter_context(atomic_path(checkpoint))
            staged_live = stack.enter_context(atomic_dir(live_dir))
            live = stack.enter_context(Live(str(staged_live), dvcyaml=None, save_dvc_exp=False, report=None))
            yield Outputs(staged_checkpoint, live, first_fit)

"""The errors a user can fix, and how a stage reports them."""

from __future__ import annotations

import sys
from collections.abc import Callable


class PipelineError(Exception):
    """Bad params, bad input data or a failed download: the message says what and where."""


def run_stage(main: Callable[[], object]) -> None:
    """Run a stage's `main`; a PipelineError ends it with status 1 and its message, no traceback."""
    try:
        main()
    except PipelineError as error:
        sys.exit(f"error: {error}")

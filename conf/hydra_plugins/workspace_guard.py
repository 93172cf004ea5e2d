"""Hydra loads this plugin (`.dvc/config`'s hydra.plugins_path) each time `dvc exp run` composes params.yaml,
before it writes the file: it refuses while a stage of another run is running in this workspace
(movielens_pipeline.workspace_guard says why)."""

from pathlib import Path

from dvc.exceptions import DvcException
from hydra.core.config_search_path import ConfigSearchPath
from hydra.plugins.search_path_plugin import SearchPathPlugin

from movielens_pipeline.workspace_guard import WorkspaceBusyError, refuse_while_a_stage_runs


class WorkspaceGuard(SearchPathPlugin):
    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        conf = Path(__file__).resolve().parent.parent  # the workspace's conf/, beside its .dvc/
        try:
            refuse_while_a_stage_runs(conf.parent)
        except WorkspaceBusyError as error:
            raise Refused(str(error)) from None


class Refused(WorkspaceBusyError, DvcException):
    """DVC prints a DvcException as one ERROR line; `make params` reports a PipelineError as one line too."""

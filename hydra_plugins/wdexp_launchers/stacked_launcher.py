"""``hydra/launcher=stacked`` (``conf/hydra/launcher/stacked.yaml``): a sweep's jobs trained as
stacked models in the launching process (:mod:`wdexp.stacked_launch`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from hydra.core.utils import JobReturn
from hydra.plugins.launcher import Launcher


class StackedLauncher(Launcher):
    # Every job of a batch is composed before any trains (wdexp.stacked_launch): the basic
    # sweeper need not compose them once more to check them (hydra_plugins/wdexp_basic_sweeper).
    composes_every_job_first = True

    def __init__(self, max_members: int = 256) -> None:
        self.max_members = max_members
        self.config: Any = None
        self.hydra_context: Any = None

    def setup(self, *, hydra_context: Any, task_function: Any, config: Any) -> None:
        # The task is wdexp's own (the stack trains every job), whatever the caller passed.
        self.config, self.hydra_context = config, hydra_context

    def launch(self, job_overrides: Sequence[Sequence[str]],
               initial_job_idx: int) -> Sequence[JobReturn]:
        from wdexp.stacked_launch import launch

        return launch(self, job_overrides, initial_job_idx, self.max_members)

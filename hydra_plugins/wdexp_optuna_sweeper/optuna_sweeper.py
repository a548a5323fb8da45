"""``hydra/sweeper=optuna``. Hydra imports every module under ``hydra_plugins`` at each start,
so this one stays small: Optuna is imported when a search runs (:mod:`wdexp.search`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf


class OptunaSweeper(Sweeper):
    def __init__(self, sampler: Any = None, **settings: Any) -> None:
        # Hydra has built the sampler from its _target_ already (instantiate is recursive).
        self.sampler = sampler
        self.settings = OmegaConf.create(settings)

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction,
              config: DictConfig) -> None:
        self.hydra_context, self.task_function, self.config = hydra_context, task_function, config

    def sweep(self, arguments: Sequence[str]) -> Any:
        from wdexp.search import Search

        return Search(self).run(arguments)

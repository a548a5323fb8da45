"""``hydra/sweeper=basic`` as wdexp ships it (``conf/hydra/sweeper/basic.yaml``): Hydra's grid
sweeper, except that a failed job stops nothing. Hydra's stops at the first batch holding a
failed job (the later batches never run) and prints that job's error once more after its own
line; here every batch runs, and the sweep ends with one line counting the jobs that did not
finish (:func:`wdexp.lost_jobs.sweep_ended`). The loop is Hydra's own (hydra-core 1.3) but for
that."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra._internal.core_plugins import basic_sweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.utils import JobReturn
from omegaconf import OmegaConf


class BasicSweeper(basic_sweeper.BasicSweeper):
    def sweep(self, arguments: list[str]) -> Any:
        from wdexp.lost_jobs import sweep_ended

        assert self.config is not None and self.launcher is not None
        assert self.hydra_context is not None
        params = self._parse_config()
        params.extend(arguments)
        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        self.overrides = self.split_arguments(parser.parse_overrides(params),
                                              self.max_batch_size)
        sweep_dir = Path(self.config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        returns: list[Sequence[JobReturn]] = []
        while not self.is_done():
            batch = self.get_job_batch()
            # Hydra composes every job of the batch once here to catch a bad override before
            # any job runs; a launcher that composes every job before it runs any (stacked)
            # would only repeat it.
            if not getattr(self.launcher, "composes_every_job_first", False):
                self.validate_batch_is_legal(batch)
            returns.append(self.launcher.launch(
                batch, initial_job_idx=sum(len(done) for done in returns)))
        sweep_ended([result for done in returns for result in done])
        return returns

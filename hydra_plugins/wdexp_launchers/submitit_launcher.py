"""``hydra/launcher=submitit_local`` and ``hydra/launcher=slurm`` as wdexp ships them: Hydra's
submitit launchers, except that the sweep waits for every job. The plugin collects results in
order and stops at the first job that died (an ``UncompletedJobError``) while the later ones
still run; here a dead job is one line and a failed result (:func:`wdexp.lost_jobs.lost`), and
the others are waited for. The launch below is the plugin's own (hydra-submitit-launcher 1.2),
but for that last step. A job stopped by its scheduler (``scancel``) ends with wdexp's one line
and exit 128 + signal, not a traceback in its log."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, filter_overrides
from omegaconf import OmegaConf

try:
    from hydra_plugins.hydra_submitit_launcher import submitit_launcher
    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
except ImportError:  # hydra-submitit-launcher is not installed: nothing to define (see below)
    submitit_launcher = None

# Without the ``launchers`` extra this module defines nothing: Hydra imports every module under
# hydra_plugins at each start, and an ImportError here would be a warning every time.
_Base = submitit_launcher.BaseSubmititLauncher if submitit_launcher is not None else object


class _WaitsForEveryJob(_Base):  # type: ignore[misc, valid-type]
    def __call__(self, *args: Any) -> JobReturn:
        """One job, in its submitit process. Stopped by its scheduler (``scancel``'s
        SIGTERM), it exits 128 + signal with wdexp's one line, as on the command line: not a
        traceback through submitit, which would take the stop for a crash of its own."""
        from wdexp.lifecycle import stopped
        from wdexp.signals import Terminated

        try:
            return super().__call__(*args)
        except Terminated as stop:
            raise SystemExit(stopped(stop)) from None

    def launch(self, job_overrides: Sequence[Sequence[str]],
               initial_job_idx: int) -> Sequence[JobReturn]:
        import submitit

        from wdexp.lost_jobs import lost

        assert self.config is not None and job_overrides
        init_keys = {"submitit_folder", "max_num_timeout"}
        executor = submitit.AutoExecutor(
            cluster=self._EXECUTOR, folder=self.params["submitit_folder"],
            **{f"{self._EXECUTOR}_max_num_timeout": self.params["max_num_timeout"]}
            if "max_num_timeout" in self.params else {})
        base = set(OmegaConf.structured(BaseQueueConf).keys())
        executor.update_parameters(**{
            key if key in base else f"{self._EXECUTOR}_{key}": value
            for key, value in self.params.items() if key not in init_keys})
        submitit_launcher.log.info(f"Submitit '{self._EXECUTOR}' sweep output dir : "
                                   f"{self.config.hydra.sweep.dir}")
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        if "mode" in self.config.hydra.sweep:
            os.chmod(sweep_dir, mode=int(str(self.config.hydra.sweep.mode), 8))
        params: list[Any] = []
        for idx, overrides in enumerate(job_overrides, initial_job_idx):
            submitit_launcher.log.info(f"\t#{idx} : {' '.join(filter_overrides(overrides))}")
            params.append((list(overrides), "hydra.sweep.dir", idx, f"job_id_for_{idx}",
                           Singleton.get_state()))
        jobs = executor.map_array(self, *zip(*params, strict=True))
        results = []
        for idx, (job, overrides) in enumerate(zip(jobs, job_overrides, strict=True),
                                               initial_job_idx):
            try:
                results.append(job.results()[0])
            except submitit.core.utils.UncompletedJobError as error:  # killed, or requeued out
                results.append(lost(idx, overrides, error))
        return results


if submitit_launcher is not None:
    class LocalLauncher(_WaitsForEveryJob):
        _EXECUTOR = "local"

    class SlurmLauncher(_WaitsForEveryJob):
        _EXECUTOR = "slurm"

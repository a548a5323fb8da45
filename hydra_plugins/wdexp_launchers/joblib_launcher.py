"""``hydra/launcher=joblib`` as wdexp ships it (``conf/hydra/launcher/joblib.yaml``): Hydra's
joblib launcher, its settings and set-up, with each worker a pool of its own, so that one
worker's death costs one job (:mod:`wdexp.launch`). Hydra imports every module under
``hydra_plugins`` at each start: wdexp's part is imported when jobs launch, and without the
``launchers`` extra this module defines nothing (rather than a warning at every start)."""

from __future__ import annotations

from collections.abc import Sequence

from hydra.core.utils import JobReturn

try:
    from hydra_plugins.hydra_joblib_launcher import joblib_launcher
except ImportError:  # hydra-joblib-launcher is not installed
    joblib_launcher = None

if joblib_launcher is not None:
    class JoblibLauncher(joblib_launcher.JoblibLauncher):
        def launch(self, job_overrides: Sequence[Sequence[str]],
                   initial_job_idx: int) -> Sequence[JobReturn]:
            from wdexp.launch import launch

            return launch(self, job_overrides, initial_job_idx)

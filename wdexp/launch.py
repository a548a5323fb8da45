"""A sweep's jobs on worker processes that may die: one job's death costs that job alone.

Hydra's joblib launcher hands every job to one loky pool; when the operating system kills one
worker (the OOM killer's SIGKILL), loky ends the whole pool, the other running jobs with it, and
the sweep stops with a traceback. Here each of the ``n_jobs`` workers is a pool of its own, kept
for the jobs that follow as joblib keeps its workers: a worker that dies fails the job it ran
(its pair is ended KILLED by the job's tracking process, which sees its job gone), is replaced,
and every other job runs to its end. The lost job is one line and a failed result
(:mod:`wdexp.lost_jobs`): the sweep run ends FAILED with it counted, and the process exits 1.

Used by ``hydra/launcher=joblib`` (``conf/hydra/launcher/joblib.yaml``,
``hydra_plugins/wdexp_launchers``).
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Sequence
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import asdict
from pathlib import Path
from typing import Any

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, configure_log, filter_overrides, setup_globals
from hydra_plugins.hydra_joblib_launcher._core import execute_job
from hydra_plugins.hydra_joblib_launcher.config import JobLibLauncherConf
from joblib import cpu_count, effective_n_jobs
from joblib._parallel_backends import ParallelBackendBase
from joblib.externals.loky import ProcessPoolExecutor

from wdexp.config import quiet_launcher_schema
from wdexp.lost_jobs import lost

log = logging.getLogger("wdexp")
# The plugin's keys (and defaults) that shape joblib.Parallel's batching: a worker here runs
# one job at a time, so of its settings only n_jobs applies.
PARALLEL_ONLY = {key: value for key, value in asdict(JobLibLauncherConf()).items()
                 if key not in ("_target_", "n_jobs")}


def worker_env(n_jobs: int) -> dict[str, str]:
    """Thread pools per worker as joblib's loky backend sets them: the cores shared out."""
    threads = str(max(cpu_count() // n_jobs, 1))
    return {var: threads for var in ParallelBackendBase.MAX_NUM_THREADS_VARS}


def launch(launcher: Any, job_overrides: Sequence[Sequence[str]],
           initial_job_idx: int) -> list[JobReturn]:
    """Run the jobs on ``n_jobs`` workers of their own; ``launcher`` is Hydra's joblib launcher
    (its config, context, task function and ``joblib`` settings)."""
    setup_globals()
    configure_log(launcher.config.hydra.hydra_logging, launcher.config.hydra.verbose)
    sweep_dir = Path(str(launcher.config.hydra.sweep.dir))
    sweep_dir.mkdir(parents=True, exist_ok=True)
    settings = dict(launcher.joblib)
    n_jobs = min(effective_n_jobs(settings.get("n_jobs", -1)), len(job_overrides))
    ignored = [key for key, default in PARALLEL_ONLY.items()
               if settings.get(key, default) != default]
    if ignored:
        log.warning("hydra.launcher: %s do not apply here (each worker runs one job at a "
                    "time); n_jobs does", ", ".join(ignored))
    log.info("%d joblib workers, one job each at a time, are launching %d jobs", n_jobs,
             len(job_overrides))
    log.info("Launching jobs, sweep output dir : %s", sweep_dir)
    for idx, overrides in enumerate(job_overrides):
        log.info("\t#%d : %s", initial_job_idx + idx, " ".join(filter_overrides(overrides)))

    args = (launcher.hydra_context, launcher.config, launcher.task_function,
            Singleton.get_state())
    env = worker_env(n_jobs)
    workers: list[ProcessPoolExecutor | None] = [None] * n_jobs
    waiting = deque(enumerate(job_overrides))
    running: dict[Future[JobReturn], tuple[int, int]] = {}  # future: (worker, job index)
    results: list[JobReturn | None] = [None] * len(job_overrides)
    stopped = True
    try:
        while waiting or running:
            busy = {slot for slot, _ in running.values()}
            for slot in range(n_jobs):
                if waiting and slot not in busy:
                    idx, overrides = waiting.popleft()
                    worker = workers[slot] = workers[slot] or ProcessPoolExecutor(
                        1, env=env, initializer=quiet_launcher_schema)
                    future = worker.submit(execute_job, initial_job_idx + idx, overrides, *args)
                    running[future] = (slot, idx)
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                slot, idx = running.pop(future)
                try:
                    results[idx] = future.result()
                except Exception as error:  # the worker died, or its result could not return
                    results[idx] = lost(initial_job_idx + idx, job_overrides[idx], error)
                    workers[slot].shutdown(wait=False, kill_workers=True)
                    workers[slot] = None
        stopped = False
    finally:
        # A stop (Ctrl-C) reached the workers too, in the same process group: as loky does,
        # they are killed at once, and their jobs' tracking processes end the pairs KILLED.
        for worker in workers:
            if worker is not None:
                worker.shutdown(wait=not stopped, kill_workers=stopped)
    return [result for result in results if result is not None]


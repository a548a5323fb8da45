"""``hydra/launcher=stacked``: a sweep's jobs trained in this process as stacked models
(:mod:`wdexp.stack`), with the run tree of any other launcher.

First every job is prepared as Hydra runs a job — its folder, its ``.hydra`` files, its config
checked and built, its store opened, ``resume=true`` skipping a finished pair — but nothing
trains and no run is created. If any job asks for what the stack cannot train exactly, the
sweep is refused with one line naming the key (exit 2) and its sweep run deleted: the store is
as it was. Then the jobs that differ only in ``seed``, ``optimizer.weight_decay`` and
``optimizer.lr`` (and in ``data.batch_seed`` and what the baseline arm changes) train together,
in chunks of at most ``hydra.launcher.max_members`` members, one chunk after another: each
job's pair run and arm runs as its own job would write them, the arm runs tagged with the
member they are (``wdexp.stack_member``; a baseline shared by several jobs says so).

A stop signal ends every open pair KILLED with each trained step written, and the sweep; an
error in one chunk ends its pairs FAILED and the next chunk goes on. A job that failed on its
own (a bad value) fails alone, as under any launcher.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.core.utils import (
    JobReturn,
    JobStatus,
    configure_log,
    filter_overrides,
    run_job,
    setup_globals,
)
from omegaconf import DictConfig, open_dict

from wdexp import stack, sweep_runs, train
from wdexp.config import positive_int
from wdexp.figures import Drawers
from wdexp.lifecycle import Refused, job
from wdexp.pair_runs import Outcome, PairRun
from wdexp.progress import progress
from wdexp.vocabulary import STACK_MEMBER_TAG, ConfigError

log = logging.getLogger("wdexp")


def _prepare(cfg: DictConfig) -> train.Prepared | Outcome:
    with job(multirun=True):
        return train.prepare(cfg, **train.job_args())


def _refused(error: ConfigError) -> Refused:
    """The sweep refused before any job ran: its sweep run deleted, its one line to tell."""
    sweep_runs.discard_unclosed()
    return Refused(error)


def launch(launcher: Any, job_overrides: Sequence[Sequence[str]], initial_job_idx: int,
           max_members: Any) -> list[JobReturn]:
    """Prepare every job, then train them stacked; ``launcher`` is the Hydra launcher (its
    config and context)."""
    try:
        max_members = positive_int("hydra.launcher.max_members", max_members)
    except ConfigError as error:
        raise _refused(error) from None
    setup_globals()
    config = launcher.config
    configure_log(config.hydra.hydra_logging, config.hydra.verbose)
    Path(str(config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
    log.info("Launching %d jobs stacked in this process", len(job_overrides))
    results = []
    for idx, overrides in enumerate(job_overrides, initial_job_idx):
        log.info("\t#%d : %s", idx, " ".join(filter_overrides(overrides)))
        sweep_config = launcher.hydra_context.config_loader.load_sweep_config(config,
                                                                             list(overrides))
        with open_dict(sweep_config):
            sweep_config.hydra.job.id = idx
            sweep_config.hydra.job.num = idx
        results.append(run_job(hydra_context=launcher.hydra_context, task_function=_prepare,
                               config=sweep_config, job_dir_key="hydra.sweep.dir",
                               job_subdir_key="hydra.sweep.subdir"))
        configure_log(config.hydra.hydra_logging, config.hydra.verbose)
    ready = {i: result._return_value for i, result in enumerate(results)
             if result.status == JobStatus.COMPLETED
             and isinstance(result._return_value, train.Prepared)}
    for result in results:
        if isinstance(result._return_value, Outcome):  # resume=true found it finished
            result.return_value = result._return_value.value
    try:
        for prepared in ready.values():
            stack.check(prepared.study)
    except ConfigError as error:
        raise _refused(error) from None
    groups: dict[str, list[int]] = {}
    for i, prepared in ready.items():
        groups.setdefault(stack.group_key(prepared.study), []).append(i)
    for members in groups.values():
        jobs = [stack.Job(ready[i].study, ready[i].random_state) for i in members]
        start = 0
        for chunk in stack.chunks(jobs, max_members):
            indices = members[start:start + len(chunk)]
            start += len(chunk)
            _train(stack.Stack(chunk), [ready[i] for i in indices],
                   [results[i] for i in indices])
    return results


def _train(trained: stack.Stack, prepared: list[train.Prepared],
           results: list[JobReturn]) -> None:
    """Train one chunk; each job's result becomes its pair's objective, or its error."""
    log.info("stacking %s: %s in %s", _count(len(prepared), "job"),
             _count(len(trained.members), "member"), _count(len(trained.lanes), "lane"))
    # The drawing workers start now: they import matplotlib while this process trains.
    with Drawers(len(prepared)) as drawers:
        runs: list[PairRun] = []
        try:
            for i, job_ in enumerate(prepared):
                runs.append(job_.open({arm: {STACK_MEMBER_TAG: member}
                                       for arm, member in trained.shared(i).items()}))
            steps = progress(trained.train(), trained.epochs, f"{len(prepared)} pairs stacked",
                             lambda _: {})
            for epoch_steps in steps:
                for run, step in zip(runs, epoch_steps, strict=True):
                    if step is not None:
                        run.log_step(step)
            # Every pair's figures at once, in the workers and here, as the pairs close.
            drawings = drawers.submit([run.plot() for run in runs])
        except BaseException as error:
            for run in runs:
                run.end(error)
            if not isinstance(error, Exception):
                raise
            _failed(results, error)
            return
        for done, (run, result, drawing) in enumerate(zip(runs, results, drawings,
                                                          strict=True)):
            try:
                result.return_value = run.finish(drawing).value
            except Exception as error:
                _failed([result], error)
            except BaseException as stop:  # a stop signal: the pairs not yet closed end with it
                for later in runs[done + 1:]:
                    later.end(stop)
                raise


def _count(n: int, thing: str) -> str:
    return f"{n} {thing}{'' if n == 1 else 's'}"


def _failed(results: list[JobReturn], error: Exception) -> None:
    for result in results:
        result.status, result.return_value = JobStatus.FAILED, error

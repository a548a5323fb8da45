"""``python -m wdexp.train``: the seed notebook as a configured, tracked, paired experiment.

Build both arms from the config, train them in lockstep, record every step in MLflow.
"""

from __future__ import annotations

if __name__ == "__main__":
    # MLflow loads in the tracking process while this one imports torch and matplotlib (for the
    # figures, drawn here at the end of each pair); importing this module elsewhere starts
    # nothing. See wdexp.tracking.client.
    from wdexp.tracking import client as _client

    _client.prestart()

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

import wdexp.figures  # noqa: F401
from wdexp import engine, study
from wdexp.config import ROOT, to_yaml
from wdexp.lifecycle import job, run_main
from wdexp.pair_runs import Outcome, PairRun, describe, pair_run
from wdexp.progress import progress
from wdexp.sweep_folder import sweep_run
from wdexp.tracking import client
from wdexp.vocabulary import GROUPS

log = logging.getLogger("wdexp")


@dataclass
class Prepared:
    """A job built and checked, its store open, no run created yet: what training it needs."""

    study: study.Study
    overrides: Sequence[str]
    sweep_dir: str | None
    job_num: int | None
    random_state: engine.RandomState  # torch's, as the job's training starts from it

    def open(self, arm_tags: Mapping[str, Mapping[str, str]] | None = None) -> PairRun:
        """Open the job's pair run (nested under its sweep run, in a multirun); ``arm_tags``
        adds tags to arm runs, by arm name."""
        spec = self.study.job.tracking
        sweep_id = sweep_run(spec, self.sweep_dir) if self.sweep_dir else None
        pair, arms = describe(self.study, self.overrides, self.job_num)
        arms = {name: replace(run, tags={**run.tags, **(arm_tags or {}).get(name, {})})
                for name, run in arms.items()}
        return PairRun(spec, pair, arms,
                       files={"config.yaml": to_yaml(self.study.config),
                              **self.study.artifacts()},
                       figures=self.study.figure_spec(), parent_id=sweep_id)


def prepare(cfg: DictConfig, labels: dict[str, str] | None = None,
            overrides: Sequence[str] = (), sweep_dir: str | None = None,
            job_num: int | None = None) -> Prepared | Outcome:
    """Build and check the job, open its store: what training it needs, or the stored outcome
    of the pair ``resume=true`` finds already finished."""
    tracker = client.ready()
    # The tracking process opens the store while build() imports torch.optim's compiler stack.
    arms = study.build(cfg, labels, checked=lambda job: tracker.start_connect(job.tracking))
    spec = arms.job.tracking
    tracker.connect(spec)  # its errors (an unreachable server, …) are raised here
    if arms.job.resume and (done := tracker.find_finished_pair(spec, arms.config_hash)):
        log.info("skipped: this configuration already finished as pair run %s", done[0])
        return Outcome.stored(*done)
    device = engine.model_device(arms.arms[0].model)
    return Prepared(arms, overrides, sweep_dir, job_num, engine.random_state(device))


def run(cfg: DictConfig, labels: dict[str, str] | None = None,
        overrides: Sequence[str] = (), sweep_dir: str | None = None,
        job_num: int | None = None) -> Outcome:
    """One paired comparison: its pair run's id and objective. Within a multirun,
    ``sweep_dir`` finds the sweep run to nest the pair under and ``job_num`` is its job's."""
    prepared = prepare(cfg, labels, overrides, sweep_dir, job_num)
    if isinstance(prepared, Outcome):
        return prepared
    arms = prepared.study
    with pair_run(prepared.open()) as record:
        steps = engine.train(arms.arms, arms.job.epochs)
        for step in progress(steps, arms.job.epochs, arms.name):
            record.log_step(step)
    return record.outcome()


def job_args() -> dict[str, Any]:
    """What the running Hydra job tells :func:`run` and :func:`prepare` beyond its config: the
    group choices as labels and, in a multirun, its overrides, sweep folder and number."""
    hydra_cfg = HydraConfig.get()
    choices = {group: str(choice) for group, choice in hydra_cfg.runtime.choices.items()
               if group in GROUPS and choice is not None}
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    return {"labels": choices, "overrides": hydra_cfg.overrides.task,
            "sweep_dir": hydra_cfg.sweep.dir if multirun else None,
            "job_num": hydra_cfg.job.num if multirun else None}


def task(cfg: DictConfig) -> Outcome:
    """The job in whatever mode Hydra runs it, its errors raised (:mod:`wdexp.api` runs this)."""
    return run(cfg, **job_args())


def job_task(cfg: DictConfig) -> float:
    """The job Hydra runs for the command line and for every sweep; returns the pair's
    objective (NaN where the decay arm diverged), as any Hydra sweeper expects of its task
    function. Errors are one line (:func:`wdexp.lifecycle.job`)."""
    with job(multirun=HydraConfig.get().mode == RunMode.MULTIRUN):
        return task(cfg).value


# An absolute path, as in wdexp.report: found however this module is imported.
main = hydra.main(version_base="1.3", config_path=str(ROOT / "conf"),
                  config_name="config")(job_task)


if __name__ == "__main__":
    run_main(main)

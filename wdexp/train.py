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
from collections.abc import Sequence

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

import wdexp.figures  # noqa: F401
from wdexp import engine, study
from wdexp.config import ROOT, to_yaml
from wdexp.lifecycle import job, run_main
from wdexp.pair_runs import Outcome, describe, pair_run
from wdexp.progress import progress
from wdexp.sweep_folder import sweep_run
from wdexp.tracking import client
from wdexp.vocabulary import GROUPS

log = logging.getLogger("wdexp")


def run(cfg: DictConfig, labels: dict[str, str] | None = None,
        overrides: Sequence[str] = (), sweep_dir: str | None = None,
        job_num: int | None = None) -> Outcome:
    """One paired comparison: its pair run's id and objective. Within a multirun,
    ``sweep_dir`` finds the sweep run to nest the pair under and ``job_num`` is its job's."""
    tracker = client.ready()
    # The tracking process opens the store while build() imports torch.optim's compiler stack.
    arms = study.build(cfg, labels, checked=lambda job: tracker.start_connect(job.tracking))
    spec = arms.job.tracking
    tracker.connect(spec)  # its errors (an unreachable server, …) are raised here
    if arms.job.resume and (done := tracker.find_finished_pair(spec, arms.config_hash)):
        log.info("skipped: this configuration already finished as pair run %s", done[0])
        return Outcome.stored(*done)
    sweep_id = sweep_run(spec, sweep_dir) if sweep_dir else None
    with pair_run(spec, *describe(arms, overrides, job_num),
                  files={"config.yaml": to_yaml(arms.config), **arms.artifacts()},
                  figures=arms.figure_spec(), parent_id=sweep_id) as record:
        steps = engine.train(arms.arms, arms.job.epochs)
        for step in progress(steps, arms.job.epochs, arms.name):
            record.log_step(step)
    return record.outcome()


def task(cfg: DictConfig) -> Outcome:
    """The job in whatever mode Hydra runs it, its errors raised (:mod:`wdexp.api` runs this)."""
    hydra_cfg = HydraConfig.get()
    choices = {group: str(choice) for group, choice in hydra_cfg.runtime.choices.items()
               if group in GROUPS and choice is not None}
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    return run(cfg, labels=choices, overrides=hydra_cfg.overrides.task,
               sweep_dir=hydra_cfg.sweep.dir if multirun else None,
               job_num=hydra_cfg.job.num if multirun else None)


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

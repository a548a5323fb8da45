"""``python -m wdexp.train``: the seed notebook as a configured, tracked, paired experiment.

Build both arms from the config, train them in lockstep, record every step in MLflow.
"""

from __future__ import annotations

from collections.abc import Sequence

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from wdexp import engine, study, tracking
from wdexp.config import loggable, to_yaml
from wdexp.lifecycle import cli_errors


def run(cfg: DictConfig, labels: dict[str, str] | None = None,
        overrides: Sequence[str] = ()) -> str:
    """One paired comparison; returns the pair run's id."""
    pair = study.build(cfg, labels)
    store = tracking.connect(pair.job.tracking)
    config = loggable(cfg)
    with tracking.pair_run(store, *tracking.describe(pair, config, overrides),
                           config_yaml=to_yaml(config)) as record:
        for step in engine.train(pair.arms, pair.job.epochs):
            record.log_step(step)
    return record.pair_id


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> str:
    hydra_cfg = HydraConfig.get()
    choices = {group: str(choice) for group, choice in hydra_cfg.runtime.choices.items()
               if group in ("model", "optimizer")}
    with cli_errors(exit_on_error=hydra_cfg.mode != RunMode.MULTIRUN):
        return run(cfg, labels=choices, overrides=hydra_cfg.overrides.task)


if __name__ == "__main__":
    main()

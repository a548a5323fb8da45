"""``python -m wdexp.report``: one row per paired run, read from the MLflow store alone.

Takes the same ``tracking.uri=`` / ``tracking.experiment=`` overrides as ``wdexp.train``::

    python -m wdexp.report                                  # every pair, as a table
    python -m wdexp.report report.sweep=<sweep run id or name>
    python -m wdexp.report report.format=csv report.output=pairs.csv

A sweep that varies ``seed`` is reported one row per setting, as mean and standard deviation
over its seeds (``report.seeds=each`` for one row per pair).
"""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
import pandas as pd
from omegaconf import DictConfig

from wdexp.analysis import SEED, over_seeds, pair_table
from wdexp.config import ConfigError, parse_tracking
from wdexp.lifecycle import job, run_main
from wdexp.tracking.records import RUN_KIND_TAG
from wdexp.tracking.store import Store, connect, search_all

# Config keys shown for every pair, under short column names.
COLUMNS = {"model": "model", "optimizer": "optimizer", "optimizer.decay_mode": "decay_mode",
           "optimizer.lr": "lr", "optimizer.weight_decay": "weight_decay", "seed": "seed"}
FORMATS = ("table", "csv")
SEEDS = ("aggregate", "each")


def find_sweep(store: Store, ref: str) -> tuple[str, list[str]]:
    """A sweep run's id and swept keys, given its id or its name (the latest of that name)."""
    sweeps = search_all(store, f"tags.`{RUN_KIND_TAG}` = 'sweep'")
    for run in reversed(sweeps):
        if ref in (run.info.run_id, run.info.run_name):
            keys = [key.removeprefix("sweep.") for key in run.data.params
                    if key.startswith("sweep.")]
            return run.info.run_id, keys
    raise ConfigError("report.sweep", "names no sweep run in this experiment", ref)


def report(store: Store, sweep: str | None = None, seeds: str = "aggregate") -> pd.DataFrame:
    sweep_id, swept = find_sweep(store, sweep) if sweep else (None, [])
    keys = [*COLUMNS, *(key for key in swept if key not in COLUMNS)]
    table = pair_table(store, sweep_id, keys=keys).drop(columns=["run_name"])
    if SEED in swept and seeds == "aggregate":
        # Within one sweep only the swept keys differ, so equal keys but the seed = one setting.
        table = over_seeds(table.drop(columns=["run_id", "status"]), keys)
    return table.rename(columns=COLUMNS)


def render(table: pd.DataFrame, fmt: str) -> str:
    if fmt == "csv":
        return table.to_csv(index=False)
    if table.empty:
        return "no paired runs\n"
    return table.to_string(index=False, float_format=lambda v: f"{v:.6g}") + "\n"


@hydra.main(version_base="1.3", config_path="../conf", config_name="report")
def main(cfg: DictConfig) -> None:
    with job(multirun=False):
        fmt = cfg.report.format
        if fmt not in FORMATS:
            raise ConfigError("report.format", f"must be one of {', '.join(FORMATS)}", fmt)
        if cfg.report.seeds not in SEEDS:
            raise ConfigError("report.seeds", f"must be one of {', '.join(SEEDS)}",
                              cfg.report.seeds)
        store = connect(parse_tracking(cfg), create=False)
        text = render(report(store, cfg.report.sweep, cfg.report.seeds), fmt)
        if cfg.report.output:
            Path(cfg.report.output).write_text(text)
        else:
            sys.stdout.write(text)


if __name__ == "__main__":
    run_main(main)

"""Read wdexp results back from an MLflow store as pandas tables."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from wdexp.store import RUN_KIND_TAG, Store, search_all
from wdexp.study import BASELINE, DECAY

ARMS = (BASELINE, DECAY)
PAIR_METRICS = ("final_loss", "final_weight_norm", "final_test_loss", "final_test_accuracy")


def pair_table(store: Store, sweep_run_id: str | None = None,
               keys: Sequence[str] = ()) -> pd.DataFrame:
    """One row per pair run (of one sweep, if given): ``keys`` (config keys such as
    ``optimizer.weight_decay``, or group names such as ``optimizer``), each arm's final loss
    and weight norm (and test loss and accuracy, for models that report them), and whether it
    diverged."""
    query = f"tags.`{RUN_KIND_TAG}` = 'pair'"
    if sweep_run_id is not None:
        query += f" and tags.`mlflow.parentRunId` = '{sweep_run_id}'"
    rows = []
    runs = search_all(store, query)
    # Every model has a final loss and weight norm; test metrics only where a model has them.
    names = [name for name in PAIR_METRICS if name in PAIR_METRICS[:2] or any(
        f"{arm}.{name}" in run.data.metrics for run in runs for arm in ARMS)]
    for run in runs:
        params, tags, metrics = run.data.params, run.data.tags, run.data.metrics
        row: dict[str, object] = {"run_id": run.info.run_id, "run_name": run.info.run_name,
                                  "status": run.info.status}
        for key in keys:
            row[key] = params.get(key, tags.get(f"wdexp.{key}"))
        for arm in ARMS:
            for name in names:
                row[f"{arm}.{name}"] = metrics.get(f"{arm}.{name}")
            diverged = metrics.get(f"{arm}.diverged")
            row[f"{arm}.diverged"] = None if diverged is None else bool(diverged)
        rows.append(row)
    columns = ["run_id", "run_name", "status", *keys,
               *(f"{arm}.{name}" for arm in ARMS
                 for name in (*names, "diverged"))]
    return pd.DataFrame(rows, columns=columns)

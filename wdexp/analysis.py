"""Read wdexp results back from an MLflow store as pandas tables — for the report, the sweep
summary and notebooks::

    from wdexp import analysis
    store = analysis.open_store()                       # the checkout's mlflow.db
    arms = analysis.arm_table(store, sweep="<sweep run id>")
    curves = analysis.histories(store, arms["run_id"], keys=["loss", "weight_norm"])
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import pandas as pd
from mlflow.entities import Run

from wdexp.config import ROOT
from wdexp.tracking.store import Store, connect, quoted, search_all
from wdexp.vocabulary import (
    ARM_TAG,
    ARMS,
    DIVERGED_TAG,
    GROUPS,
    HIGHER_IS_BETTER,
    PAIR_METRICS,
    RUN_KIND_TAG,
    SEED,
    SUPERSEDED_TAG,
    TrackingSpec,
    tag,
)

CONFIDENCE = 0.95


def open_store(uri: str = f"sqlite:///{ROOT}/mlflow.db",
               experiment: str = "weight-decay") -> Store:
    """An existing store and experiment (the defaults are ``conf/tracking/default.yaml``'s)."""
    return connect(TrackingSpec(uri, experiment), create=False)


def _query(kind: str, parent_id: str | None) -> str:
    query = f"tags.`{RUN_KIND_TAG}` = {quoted(kind)}"
    if parent_id is not None:
        query += f" and tags.`mlflow.parentRunId` = {quoted(parent_id)}"
    return query


def pair_runs(store: Store, sweep_run_id: str | None = None) -> list[Run]:
    """The pair runs (of one sweep, if given), each job once: a retried job's earlier attempts,
    tagged as superseded, are left out."""
    return [run for run in search_all(store, _query("pair", sweep_run_id))
            if SUPERSEDED_TAG not in run.data.tags]


def find_sweep(store: Store, ref: str = "latest") -> tuple[str, list[str]]:
    """A sweep run's id and swept keys, given its run id, its name (the latest of that name) or
    ``latest`` (the most recently started sweep run); LookupError if there is none."""
    sweeps = search_all(store, f"tags.`{RUN_KIND_TAG}` = 'sweep'")  # oldest first
    for run in reversed(sweeps):
        if ref in (run.info.run_id, run.info.run_name, "latest"):
            keys = [key.removeprefix("sweep.") for key in run.data.params
                    if key.startswith("sweep.")]
            return run.info.run_id, keys
    raise LookupError(f"no sweep run {ref!r} in this experiment")


def pair_table(store: Store, sweep_run_id: str | None = None,
               keys: Sequence[str] = ()) -> pd.DataFrame:
    """One row per pair run (of one sweep, if given): ``keys`` (config keys such as
    ``optimizer.weight_decay``, or group names such as ``optimizer``; numbers as numbers), each
    arm's final loss and weight norm (and test loss and accuracy, for models that report them),
    and whether it diverged."""
    rows = []
    runs = pair_runs(store, sweep_run_id)
    # Every model has a final loss and weight norm; test metrics only where a model has them.
    names = [name for name in PAIR_METRICS if name in PAIR_METRICS[:2] or any(
        f"{arm}.{name}" in run.data.metrics for run in runs for arm in ARMS)]
    for run in runs:
        params, tags, metrics = run.data.params, run.data.tags, run.data.metrics
        row: dict[str, object] = {"run_id": run.info.run_id, "run_name": run.info.run_name,
                                  "status": run.info.status}
        for key in keys:
            value = params.get(key, tags.get(tag(key)))
            row[key] = None if value is None else _number(value)
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


def config_values(store: Store, sweep_run_id: str | None = None) -> dict[str, set[str]]:
    """Each config key the pair runs (of one sweep, if given) recorded — every param, and the
    group choices ``model`` and ``optimizer`` — with the values recorded for it, as strings."""
    values: dict[str, set[str]] = {}
    for run in pair_runs(store, sweep_run_id):
        groups = {group: run.data.tags.get(tag(group)) for group in GROUPS}
        for key, value in {**groups, **run.data.params}.items():
            if value is not None:
                values.setdefault(key, set()).add(value)
    return values


def arm_table(store: Store, sweep: str | None = None) -> pd.DataFrame:
    """One row per arm run (of one sweep's pairs, if ``sweep`` is its run id): ``run_id``,
    ``run_name`` (e.g. ``decay (wd=0.1)``, a legend label), ``pair_id``, ``arm``, ``status``,
    ``diverged``, every param under its config key
    (``optimizer.lr``, ``seed``, …; numbers as numbers) and every metric's final value."""
    pair_ids = {run.info.run_id for run in pair_runs(store, sweep)}
    rows = []
    for run in search_all(store, _query("arm", None)):
        tags = run.data.tags
        if tags.get("mlflow.parentRunId") not in pair_ids:
            continue
        rows.append({"run_id": run.info.run_id, "run_name": run.info.run_name,
                     "pair_id": tags.get("mlflow.parentRunId"),
                     "arm": tags.get(ARM_TAG), "status": run.info.status,
                     "diverged": tags.get(DIVERGED_TAG) == "true",
                     **{key: _number(value) for key, value in run.data.params.items()
                        if key != "arm"},
                     **run.data.metrics})
    return pd.DataFrame(rows)


def arm_runs(store: Store, pair_id: str) -> dict[str, Run]:
    """A pair run's arm runs by arm name (``baseline``, ``decay``)."""
    return {run.data.tags.get(ARM_TAG): run for run in search_all(store, _query("arm", pair_id))}


def pair_history(store: Store, pair_id: str) -> pd.DataFrame:
    """Every metric both arms of a pair logged, every step: indexed by ``step``, a column per
    (arm, metric) — ``frame["decay"]["loss"]``, or both arms side by side with ``frame.loc[:,
    [("baseline", "loss"), ("decay", "loss")]]``."""
    frames = {}
    for arm, run in sorted(arm_runs(store, pair_id).items()):
        long = histories(store, [run.info.run_id], sorted(run.data.metrics))
        frames[arm] = long.pivot_table(index="step", columns="key", values="value",
                                       aggfunc="last")
    return pd.concat(frames, axis=1, names=["arm", "metric"])


def _number(value: str) -> object:
    try:
        return int(value)
    except ValueError:
        pass
    try:
        return float(value)
    except ValueError:
        return value


def histories(store: Store, run_ids: Iterable[str],
              keys: Sequence[str] = ("loss",)) -> pd.DataFrame:
    """Every logged value of ``keys`` for each run: long format with columns ``run_id``,
    ``key``, ``step``, ``value`` — ``.pivot_table(index="step", columns="run_id")`` for curves."""
    rows = [(run_id, metric.key, metric.step, metric.value)
            for run_id in run_ids for key in keys
            for metric in store.client.get_metric_history(run_id, key)]
    return (pd.DataFrame(rows, columns=["run_id", "key", "step", "value"])
            .sort_values(["run_id", "key", "step"], ignore_index=True))


def paired(differences: Iterable[float], higher_is_better: bool = False) -> dict[str, float]:
    """Statistics of paired differences decay - baseline (one per seed, NaN where an arm
    diverged): ``mean``, ``std``, the ``ci_low``/``ci_high`` of a two-sided 95 % Student t
    interval on their mean, ``n`` and ``wins`` (seeds where the decay arm did better)."""
    from scipy import stats  # imported where used: the report and the sweep's end only

    values = pd.Series(list(differences), dtype=float).dropna()
    n = len(values)
    mean = values.mean() if n else math.nan
    std = values.std(ddof=1) if n > 1 else math.nan
    low = high = math.nan
    if n > 1:
        # A zero spread has a zero-width interval (scipy returns NaN for it).
        low, high = ((mean, mean) if std == 0 else
                     stats.t.interval(CONFIDENCE, n - 1, loc=mean, scale=std / math.sqrt(n)))
    wins = int((values > 0).sum() if higher_is_better else (values < 0).sum())
    return {"mean": mean, "std": std, "ci_low": float(low), "ci_high": float(high), "n": n,
            "wins": wins}


def with_differences(table: pd.DataFrame) -> pd.DataFrame:
    """A :func:`pair_table` plus ``diff.<metric>`` = decay - baseline per pair, for each final
    metric both arms have (NaN where either diverged)."""
    frame = table.copy()
    for name in PAIR_METRICS:
        columns = [f"{arm}.{name}" for arm in ARMS]
        if not all(c in frame for c in columns):
            continue
        values = [pd.to_numeric(frame[c], errors="coerce") for c in columns]
        diverged = frame.get("baseline.diverged", False) | frame.get("decay.diverged", False)
        frame[f"diff.{name}"] = (values[1] - values[0]).where(~diverged.astype(bool))
    return frame


def over_seeds(table: pd.DataFrame, keys: Sequence[str]) -> pd.DataFrame:
    """A :func:`pair_table` with one row per setting instead of per seed: ``seeds`` (how many),
    the mean and standard deviation (``<column>.std``) of every final metric over the seeds
    that did not diverge, each arm's count of diverged seeds, and the paired difference
    decay - baseline of each final metric (:func:`paired`): ``diff.<metric>`` (its mean),
    ``.std``, ``.ci_low``, ``.ci_high``, ``.n`` and ``.wins``."""
    by = [key for key in keys if key != SEED]
    metrics = [c for c in table.columns if c.split(".", 1)[-1] in PAIR_METRICS]
    frame = with_differences(table.assign(**{c: pd.to_numeric(table[c], errors="coerce")
                                             for c in metrics}))
    if not by:  # only the seed varies: one row for the lot
        frame = frame.assign(_all=0)
        by = ["_all"]
    groups = frame.groupby(by, sort=False, dropna=False)
    result = groups.size().rename("seeds").to_frame()
    for column in metrics:
        result[column] = groups[column].mean()
        result[f"{column}.std"] = groups[column].std()
    for arm in ARMS:
        result[f"{arm}.diverged"] = groups[f"{arm}.diverged"].agg(lambda s: int(s.eq(True).sum()))
    for column in (c for c in frame.columns if c.startswith("diff.")):
        higher = column.removeprefix("diff.") in HIGHER_IS_BETTER
        stats = groups[column].apply(lambda s, h=higher: pd.Series(paired(s, h))).unstack()
        result[column] = stats["mean"]
        for part in ("std", "ci_low", "ci_high", "n", "wins"):
            result[f"{column}.{part}"] = stats[part].astype(int if part in ("n", "wins")
                                                            else float)
    return result.reset_index().drop(columns=["_all"], errors="ignore")


def summary(table: pd.DataFrame, keys: Sequence[str]) -> pd.DataFrame:
    """A sweep's ``summary.csv``: one row per pair with its ``diff.<metric>``; when the sweep
    varies the seed, each row also carries its setting's paired statistics over the seeds,
    ``paired.<metric>.{mean,std,ci_low,ci_high,n,wins}``."""
    frame = with_differences(table)
    if SEED not in keys or table.empty:
        return frame
    by = [key for key in keys if key != SEED]
    settings = over_seeds(table, keys)
    parts = [c for c in settings.columns if c.startswith("diff.")]
    settings = settings[[*by, *parts]].rename(columns={
        c: "paired." + (c.removeprefix("diff.") + ".mean" if c.count(".") == 1
                        else c.removeprefix("diff.")) for c in parts})
    if not by:
        return frame.assign(**{c: settings[c].iloc[0] for c in settings.columns})
    return frame.merge(settings, on=by, how="left")

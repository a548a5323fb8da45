"""The run tree in MLflow: pair runs with their arms, sweep runs, metrics, figures and statuses.

One job is one **pair run** (tag ``wdexp.kind=pair``) with an **arm run** nested under it per
arm (``wdexp.kind=arm``, ``mlflow.parentRunId``); a multirun adds a **sweep run** above its pairs
(``wdexp.kind=sweep``). Per-step metrics are sent with ``log_batch``, up to MLflow's 1000 values a
call, never one request per value. Every run ends with a terminal status: none is left RUNNING.

This module runs in the tracking process (:mod:`wdexp.writer`), never in the training process.
"""

from __future__ import annotations

import functools
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from mlflow.entities import Metric, RunTag
from mlflow.tracking.context.registry import resolve_tags

from wdexp.runs import FigureSpec, RunSpec, Step
from wdexp.store import Store, create_run, terminate

MAX_METRICS_PER_BATCH = 1000  # MLflow's limit for one log_batch call
FIGURE_POINTS = 2000  # per arm kept for the figures, evenly spaced, however long the run
# Logged on the pair run as <arm>.final_<name>, for those a model reports.
SUMMARY_METRICS = ("loss", "weight_norm", "test_loss", "test_accuracy")


@functools.cache
def _source_tags() -> dict[str, str]:
    """MLflow's own context tags (user, source, git commit): fixed for the process, and probing
    git costs time, so the jobs of a multirun share one lookup."""
    return resolve_tags({})


def _log_files(store: Store, run_id: str, files: Mapping[str, str | bytes],
               folder: str | None = None) -> None:
    """Every file in one artifact upload instead of one per file."""
    if not files:
        return
    with tempfile.TemporaryDirectory() as tmp:
        for name, content in files.items():
            path = Path(tmp, name)
            path.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(content, bytes):
                path.write_bytes(content)
            else:
                path.write_text(content)
        store.client.log_artifacts(run_id, tmp, folder)


class PairRecorder:
    """An open pair run and its arms: per-step metrics buffered for ``log_batch``, and kept for
    the figures."""

    def __init__(self, store: Store, pair_id: str, arm_ids: dict[str, str]) -> None:
        self.store, self.pair_id, self.arm_ids = store, pair_id, arm_ids
        # For the figures: every stride-th step (the stride doubles as a run grows) and the last.
        self.history: dict[str, list[tuple[int, dict[str, float]]]] = {a: [] for a in arm_ids}
        self.last: dict[str, tuple[int, dict[str, float]]] = {}
        self._stride = 1
        self.diverged_at: dict[str, int] = {}
        self._buffer: dict[str, list[Metric]] = {run_id: [] for run_id in arm_ids.values()}
        self.pending = 0

    @property
    def run_ids(self) -> list[str]:
        return [self.pair_id, *self.arm_ids.values()]

    def log_step(self, step: Step) -> None:
        timestamp = int(time.time() * 1000)
        for arm, values in step.metrics.items():
            self._buffer[self.arm_ids[arm]].extend(
                Metric(key, value, timestamp, step.epoch) for key, value in values.items())
            self.pending += len(values)
            self.last[arm] = (step.epoch, values)
            if step.epoch % self._stride == 0:
                self.history[arm].append((step.epoch, values))
                if len(self.history[arm]) > FIGURE_POINTS:
                    self._thin()
        for arm in step.diverged:
            self.diverged_at[arm] = step.epoch
            self.store.client.log_batch(self.arm_ids[arm], tags=[
                RunTag("wdexp.diverged", "true"), RunTag("wdexp.diverged_at", str(step.epoch))])

    def _thin(self) -> None:
        self._stride *= 2
        for arm, rows in self.history.items():
            self.history[arm] = [row for row in rows if row[0] % self._stride == 0]

    def flush(self) -> None:
        for run_id, metrics in self._buffer.items():
            for start in range(0, len(metrics), MAX_METRICS_PER_BATCH):
                batch = metrics[start:start + MAX_METRICS_PER_BATCH]
                self.store.client.log_batch(run_id, metrics=batch)
            metrics.clear()
        self.pending = 0

    def summarize(self) -> None:
        """Final values and a 0/1 ``<arm>.diverged`` of each arm on the pair run; a diverged tag
        on every arm."""
        timestamp = int(time.time() * 1000)
        summary = [Metric(f"{arm}.final_{name}", values[name], timestamp, 0)
                   for arm, (_, values) in self.last.items()
                   for name in SUMMARY_METRICS if name in values]
        summary += [Metric(f"{arm}.diverged", float(arm in self.diverged_at), timestamp, 0)
                    for arm in self.arm_ids]
        self.store.client.log_batch(self.pair_id, metrics=summary)
        for arm, run_id in self.arm_ids.items():
            if arm not in self.diverged_at:
                self.store.client.set_tag(run_id, "wdexp.diverged", "false")

    def histories(self) -> dict[str, pd.DataFrame]:
        """Each arm's kept records and its last, as a DataFrame indexed by step."""
        frames = {}
        for arm, rows in self.history.items():
            if arm in self.last and (not rows or rows[-1][0] != self.last[arm][0]):
                rows = [*rows, self.last[arm]]
            frames[arm] = pd.DataFrame([values for _, values in rows],
                                       index=pd.Index([epoch for epoch, _ in rows], name="step"))
        return frames

    def draw(self, spec: FigureSpec) -> None:
        """``figures/`` of the pair run: loss, weights and, for two weights, the trajectory."""
        from wdexp.figures import PairPlot, pair_figures  # matplotlib: only once a pair is done

        predicted = None
        if spec.predicted is not None:
            predicted = {arm: pd.DataFrame(dict(columns)).set_index("step")
                         for arm, columns in spec.predicted.items()}
        plot = PairPlot(spec.title, self.histories(), spec.weight_decay, predicted, spec.surface)
        _log_files(self.store, self.pair_id, pair_figures(plot), "figures")


def open_pair(store: Store, pair: RunSpec, arms: Mapping[str, RunSpec],
              files: Mapping[str, str], parent_id: str | None = None) -> PairRecorder:
    """Create the pair run (under a sweep run, if given), its arm runs and its files."""
    created: list[str] = []
    try:
        created.append(create_run(store, _with_source(pair), parent_id))
        for arm in arms.values():
            created.append(create_run(store, _with_source(arm), parent_id=created[0]))
        _log_files(store, created[0], files)
    except BaseException:
        terminate(store.client, created, "FAILED")
        raise
    return PairRecorder(store, created[0], dict(zip(arms, created[1:], strict=True)))


def close_pair(recorder: PairRecorder, status: str, figures: FigureSpec | None) -> None:
    """Flush, and for a finished pair summarise and draw; then end every run with ``status``."""
    try:
        recorder.flush()
        if status == "FINISHED":
            recorder.summarize()
            if figures is not None:
                recorder.draw(figures)
    except BaseException:
        terminate(recorder.store.client, recorder.run_ids, "FAILED")
        raise
    terminate(recorder.store.client, recorder.run_ids, status)


def _with_source(spec: RunSpec) -> RunSpec:
    return RunSpec(spec.name, spec.params, {**_source_tags(), **spec.tags})


@dataclass(frozen=True)
class SweepOutcome:
    status: str
    pairs: int
    not_finished: int
    deleted: bool = False  # nothing ran (a full resume): the empty sweep run was removed


def close_sweep(store: Store, run_id: str, keys: list[str], resume: bool,
                status: str) -> SweepOutcome:
    """``summary.csv`` and the sweep figures, counts as metrics, and the sweep's end status:
    FINISHED only if every pair finished."""
    from wdexp.analysis import ARMS, pair_table  # pandas work happens once, when a sweep ends
    from wdexp.figures import sweep_figures

    table = pair_table(store, run_id, keys)
    client = store.client
    if table.empty and resume and status == "FINISHED":
        client.delete_run(run_id)
        return SweepOutcome(status, 0, 0, deleted=True)
    failed = int((table["status"] != "FINISHED").sum())
    if status == "FINISHED" and failed:
        status = "FAILED"
    try:
        outcome = ("final_test_loss" if "decay.final_test_loss" in table.columns
                   else "final_loss")
        files: dict[str, str | bytes] = {
            "summary.csv": table.drop(columns=["run_name"]).to_csv(index=False)}
        if not table.empty:
            files.update({f"figures/{name}": png
                          for name, png in sweep_figures(table, keys, outcome).items()})
        _log_files(store, run_id, files)
        counts = {"pairs": len(table), "failed_pairs": failed,
                  **{f"{arm}.diverged_pairs": int(table[f"{arm}.diverged"].eq(True).sum())
                     for arm in ARMS}}
        timestamp = int(time.time() * 1000)
        client.log_batch(run_id, metrics=[Metric(name, value, timestamp, 0)
                                          for name, value in counts.items()])
    finally:
        terminate(client, [run_id], status)
    return SweepOutcome(status, len(table), failed)

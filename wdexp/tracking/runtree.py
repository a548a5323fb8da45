"""Tracking process: the run tree in MLflow — pair runs with their arms, sweep runs, metrics,
files and statuses.

One job is one **pair run** (tag ``wdexp.kind=pair``) with an **arm run** nested under it per
arm (``wdexp.kind=arm``, ``mlflow.parentRunId``); a multirun adds a **sweep run** above its pairs
(``wdexp.kind=sweep``). Per-step metrics go in batches (:mod:`wdexp.tracking.ingest`: into sqlite
directly, else MLflow's ``log_batch`` of up to 1000 values), never one request per value. Store
I/O only: what is worth drawing or summing up is decided in the training process.
"""

from __future__ import annotations

import contextlib
import functools
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking.context.registry import resolve_tags

from wdexp.tracking.artifacts import ArtifactsFailed
from wdexp.tracking.orphans import owner
from wdexp.tracking.records import RunSpec, Step
from wdexp.tracking.store import Store, create_run, one_line, quoted, search_all, terminate
from wdexp.vocabulary import (
    DEFAULT_ORPHAN_AFTER_S,
    DIVERGED_AT_TAG,
    DIVERGED_TAG,
    FAILURE_TAG,
    HEARTBEAT_TAG,
    JOB,
    ORPHAN_AFTER_TAG,
    OWNER_TAG,
    RUN_KIND_TAG,
    SUMMARY_METRICS,
    SUPERSEDED_TAG,
    tag,
)

RATIO = "equilibrium_ratio/"


@functools.cache
def _source_tags() -> dict[str, str]:
    """MLflow's own context tags (user, source, git commit): fixed for the process, and probing
    git costs time, so the jobs of a multirun share one lookup."""
    return resolve_tags({})


def log_files(store: Store, run_id: str, files: Mapping[str, str | bytes]) -> None:
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
        try:
            store.client.log_artifacts(run_id, tmp)
        except Exception as error:  # the files' place failed, not the store: say which
            raise ArtifactsFailed(store.artifact_location, one_line(error)) from None


class PairRecorder:
    """An open pair run and its arms: per-step metrics buffered for the store's writer.

    ``wrote`` is called after every store write: the tracking process's sign of progress.
    """

    def __init__(self, store: Store, pair_id: str, arm_ids: dict[str, str],
                 wrote: Callable[[], None] = lambda: None) -> None:
        self.store, self.pair_id, self.arm_ids = store, pair_id, arm_ids
        self.wrote = wrote
        self.last: dict[str, dict[str, float]] = {}
        self.diverged_at: dict[str, int] = {}
        self._buffer: dict[str, list[Metric]] = {run_id: [] for run_id in arm_ids.values()}
        self.pending = 0
        self.oldest: float | None = None  # monotonic time the oldest buffered value arrived

    @property
    def run_ids(self) -> list[str]:
        return [self.pair_id, *self.arm_ids.values()]

    def log_step(self, step: Step, timestamp: int) -> None:
        if self.oldest is None:
            self.oldest = time.monotonic()
        for arm, values in step.metrics.items():
            self._buffer[self.arm_ids[arm]].extend(
                Metric(key, value, timestamp, step.epoch) for key, value in values.items())
            self.pending += len(values)
            self.last[arm] = values
        for arm in step.diverged:
            self.diverged_at[arm] = step.epoch
            self.store.client.log_batch(self.arm_ids[arm], tags=[
                RunTag(DIVERGED_TAG, "true"), RunTag(DIVERGED_AT_TAG, str(step.epoch))])
            self.wrote()

    def flush(self, full_batches_only: bool = False) -> None:
        """Write the buffer, the arms in turn batch by batch, so a write that fails leaves them
        at most a batch apart; with ``full_batches_only`` keep each run's last partial batch (a
        call costs about the same for 10 values as for 1000)."""
        writer = self.store.metrics
        ends = {}
        for run_id, metrics in self._buffer.items():
            ends[run_id] = len(metrics) - (len(metrics) % writer.batch
                                           if full_batches_only else 0)
        starts = dict.fromkeys(ends, 0)
        while any(starts[r] < ends[r] for r in ends):
            for run_id, end in ends.items():
                start = starts[run_id]
                if start >= end:
                    continue
                stop = min(start + writer.batch, end)
                writer.log_metrics(run_id, self._buffer[run_id][start:stop])
                starts[run_id] = stop
                self.wrote()
        for run_id, end in ends.items():
            del self._buffer[run_id][:end]
        written = sum(ends.values())
        self.pending -= written
        if not self.pending:
            self.oldest = None
        elif written:  # what is left arrived after what was written: about now
            self.oldest = time.monotonic()

    def summarize(self) -> None:
        """``<arm>.final_<name>`` and a 0/1 ``<arm>.diverged`` on the pair run; a diverged tag
        on every arm."""
        timestamp = int(time.time() * 1000)
        summary = [Metric(f"{arm}.final_{name}", values[name], timestamp, 0)
                   for arm, values in self.last.items()
                   for name in SUMMARY_METRICS if name in values]
        # The measured/predicted equilibrium angle per layer (wdexp.geometry), last step only.
        summary += [Metric(f"{arm}.{name.removeprefix(RATIO)}.equilibrium_ratio", value,
                           timestamp, 0)
                    for arm, values in self.last.items()
                    for name, value in values.items() if name.startswith(RATIO)]
        summary += [Metric(f"{arm}.diverged", float(arm in self.diverged_at), timestamp, 0)
                    for arm in self.arm_ids]
        self.store.client.log_batch(self.pair_id, metrics=summary)
        for arm, run_id in self.arm_ids.items():
            if arm not in self.diverged_at:
                self.store.client.set_tag(run_id, DIVERGED_TAG, "false")
        self.wrote()


def owned(spec: RunSpec, orphan_after_s: float) -> RunSpec:
    """``spec`` with MLflow's context tags and this process as its owner, which promises a
    heartbeat within ``orphan_after_s`` (see orphans)."""
    return RunSpec(spec.name, spec.params, {**_source_tags(), **spec.tags, OWNER_TAG: owner(),
                                            HEARTBEAT_TAG: str(int(time.time())),
                                            ORPHAN_AFTER_TAG: f"{orphan_after_s:g}"})


def supersede(store: Store, parent_id: str, job: str, pair_id: str) -> None:
    """The earlier attempts of job ``job`` under the sweep run ``parent_id`` (a launcher that
    retried it, a requeued task), tagged as replaced by ``pair_id``: every reader sees the job
    once. Their ends are their owners' (or, for a dead owner, a later job's: orphans)."""
    earlier = search_all(store, f"tags.`{RUN_KIND_TAG}` = 'pair' and tags.`mlflow.parentRunId` "
                                f"= {quoted(parent_id)} and tags.`{tag(JOB)}` = {quoted(job)}")
    for run in earlier:
        if run.info.run_id != pair_id and SUPERSEDED_TAG not in run.data.tags:
            store.client.set_tag(run.info.run_id, SUPERSEDED_TAG, pair_id)


def open_pair(store: Store, pair: RunSpec, arms: Mapping[str, RunSpec],
              files: Mapping[str, str], parent_id: str | None = None,
              wrote: Callable[[], None] = lambda: None,
              orphan_after_s: float = DEFAULT_ORPHAN_AFTER_S) -> PairRecorder:
    """Create the pair run (under a sweep run, if given), its arm runs and its files."""
    created: list[str] = []
    try:
        created.append(create_run(store, owned(pair, orphan_after_s), parent_id))
        if parent_id is not None and tag(JOB) in pair.tags:
            supersede(store, parent_id, pair.tags[tag(JOB)], created[0])
        for arm in arms.values():
            created.append(create_run(store, owned(arm, orphan_after_s), parent_id=created[0]))
        log_files(store, created[0], files)
    except BaseException as error:
        fail(store, created, error)
        raise
    return PairRecorder(store, created[0], dict(zip(arms, created[1:], strict=True)), wrote)


def annotate(store: Store, run_id: str, params: Mapping[str, str] = {},
             metrics: Mapping[str, float] = {}, files: Mapping[str, str | bytes] = {}) -> None:
    """Params and metrics (step 0) in one call, then the files, on an open run."""
    if params or metrics:
        timestamp = int(time.time() * 1000)
        store.client.log_batch(run_id, params=[Param(k, v) for k, v in params.items()],
                               metrics=[Metric(k, v, timestamp, 0) for k, v in metrics.items()])
    log_files(store, run_id, files)


def fail(store: Store, run_ids: list[str], error: BaseException) -> None:
    """End ``run_ids`` FAILED after ``error``, kept as their failure tag."""
    with contextlib.suppress(Exception):  # the store may be what failed
        for run_id in run_ids:
            store.client.set_tag(run_id, FAILURE_TAG, one_line(error))
    terminate(store.client, run_ids, "FAILED")


def close_run(store: Store, run_ids: list[str], status: str,
              files: Mapping[str, str | bytes] = {}, metrics: Mapping[str, float] = {},
              failure: str | None = None) -> None:
    """Log the last files and metrics on the first run, then end every run with ``status``
    (FAILED if logging fails); ``failure`` is kept as a tag on each."""
    try:
        annotate(store, run_ids[0], metrics=metrics, files=files)
    except BaseException as error:
        fail(store, run_ids, error)
        raise
    try:
        if failure:
            for run_id in run_ids:
                store.client.set_tag(run_id, FAILURE_TAG, failure[:5000])
    finally:
        terminate(store.client, run_ids, status)

"""MLflow: the store, the run tree of a paired comparison, batched metrics and run status.

One job is one **pair run** (tag ``wdexp.kind=pair``) with an **arm run** nested under it per
arm (``wdexp.kind=arm``, ``mlflow.parentRunId``). Per-step metrics are buffered and sent with
``log_batch`` — never one request per value — at least every :data:`FLUSH_SECONDS`. However the
job ends (success, exception, SIGTERM, Ctrl-C) the buffer is flushed and every run is given a
terminal status: no run is left RUNNING.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from filelock import FileLock
from mlflow.entities import Metric, Param
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from mlflow.tracking.context.registry import resolve_tags
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

from wdexp.config import ConfigError, TrackingSpec, flatten, redact
from wdexp.engine import Step
from wdexp.lifecycle import Terminated
from wdexp.study import Study

FLUSH_SECONDS = 5.0
MAX_METRICS_PER_BATCH = 1000  # MLflow's limit for one log_batch call
MAX_PARAMS_PER_BATCH = 100
RUN_KIND_TAG, ARM_TAG = "wdexp.kind", "wdexp.arm"
SUMMARY_METRICS = ("loss", "weight_norm")  # logged on the pair run as <arm>.final_<name>
PREFLIGHT_TIMEOUT_S = "10"

log = logging.getLogger("wdexp")  # with no retries: an unreachable server fails well inside 30 s


def sqlite_path(uri: str) -> Path | None:
    prefix = "sqlite:///"
    return Path(uri[len(prefix):]) if uri.startswith(prefix) else None


@contextmanager
def _fail_fast_http() -> Iterator[None]:
    """MLflow retries a dead server for minutes by default; the first contact should not."""
    overrides = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
                 "MLFLOW_HTTP_REQUEST_TIMEOUT": PREFLIGHT_TIMEOUT_S}
    saved = {key: os.environ.get(key) for key in overrides}
    os.environ.update(overrides)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@dataclass(frozen=True)
class Store:
    client: MlflowClient
    experiment_id: str
    uri: str


def connect(spec: TrackingSpec) -> Store:
    """Reach the store and get (or create) the experiment, failing with one line naming the URI.

    On a new sqlite file the schema is created under a file lock, so parallel jobs that start
    together neither race the migration nor each create the experiment.
    """
    # MLflow prints a raw "View run at <uri>" per finished run, credentials included; wdexp logs
    # one redacted link per job instead (see pair_run).
    os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = "true"
    db = sqlite_path(spec.uri)
    artifact_location = spec.artifact_location
    if db is not None:
        db.parent.mkdir(parents=True, exist_ok=True)
        artifact_location = artifact_location or str(db.parent / "mlartifacts")
    guard = FileLock(f"{db}.lock") if db is not None else _fail_fast_http()
    try:
        with guard:
            client = MlflowClient(tracking_uri=spec.uri)
            experiment = client.get_experiment_by_name(spec.experiment)
            if experiment is None:
                try:
                    client.create_experiment(spec.experiment, artifact_location=artifact_location)
                except MlflowException as error:  # created meanwhile by another job
                    if error.error_code != "RESOURCE_ALREADY_EXISTS":
                        raise
                experiment = client.get_experiment_by_name(spec.experiment)
    except Exception as error:  # any failure to reach the store is the URI's fault to the user
        reason = redact(" ".join(str(error).split()))[:300]
        raise ConfigError("tracking.uri", f"cannot be used: {reason}", redact(spec.uri)) from None
    if experiment is None or experiment.lifecycle_stage != "active":
        raise ConfigError("tracking.experiment", "is deleted in this store; restore it or pick "
                          "another name", spec.experiment)
    return Store(client, experiment.experiment_id, spec.uri)


@dataclass(frozen=True)
class RunSpec:
    """What a run is created with: its name, params and tags."""

    name: str
    params: Mapping[str, str]
    tags: Mapping[str, str] = field(default_factory=dict)


class PairRecorder:
    """The open pair run and its arms: buffers per-step metrics and sends them in batches."""

    def __init__(self, client: MlflowClient, pair_id: str, arm_ids: dict[str, str]) -> None:
        self.client, self.pair_id, self.arm_ids = client, pair_id, arm_ids
        self.last: dict[str, dict[str, float]] = {}
        self.diverged_at: dict[str, int] = {}
        self._buffer: dict[str, list[Metric]] = {run_id: [] for run_id in arm_ids.values()}
        self._pending = 0
        self._last_flush = time.monotonic()

    def log_step(self, step: Step) -> None:
        timestamp = int(time.time() * 1000)
        for arm, values in step.metrics.items():
            self._buffer[self.arm_ids[arm]].extend(
                Metric(key, value, timestamp, step.epoch) for key, value in values.items())
            self._pending += len(values)
            self.last[arm] = values
        for arm in step.diverged:
            self.diverged_at[arm] = step.epoch
            self.client.set_tag(self.arm_ids[arm], "wdexp.diverged", "true")
            self.client.set_tag(self.arm_ids[arm], "wdexp.diverged_at", str(step.epoch))
        if (self._pending >= MAX_METRICS_PER_BATCH
                or time.monotonic() - self._last_flush >= FLUSH_SECONDS):
            self.flush()

    def flush(self) -> None:
        # A signal landing inside log_batch could leave a batch half-sent and then resent by the
        # cleanup; hold SIGINT/SIGTERM until the batch is in (they are delivered right after).
        held = {signal.SIGINT, signal.SIGTERM}
        signal.pthread_sigmask(signal.SIG_BLOCK, held)
        try:
            for run_id, metrics in self._buffer.items():
                for start in range(0, len(metrics), MAX_METRICS_PER_BATCH):
                    batch = metrics[start:start + MAX_METRICS_PER_BATCH]
                    self.client.log_batch(run_id, metrics=batch)
                metrics.clear()
            self._pending = 0
            self._last_flush = time.monotonic()
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, held)

    def summarize(self) -> None:
        """Final values of each arm on the pair run, and a diverged tag on every arm."""
        timestamp = int(time.time() * 1000)
        summary = [Metric(f"{arm}.final_{name}", values[name], timestamp, 0)
                   for arm, values in self.last.items() for name in SUMMARY_METRICS
                   if name in values]
        self.client.log_batch(self.pair_id, metrics=summary)
        for arm, run_id in self.arm_ids.items():
            if arm not in self.diverged_at:
                self.client.set_tag(run_id, "wdexp.diverged", "false")

    def outcome(self) -> str:
        """One line: each arm's final values, or where it diverged."""
        parts = []
        for arm in self.arm_ids:
            values = self.last.get(arm, {})
            finals = " ".join(f"{name}={values[name]:.6g}" for name in SUMMARY_METRICS
                              if name in values)
            if arm in self.diverged_at:
                finals += f" (diverged at step {self.diverged_at[arm]})"
            parts.append(f"{arm}: {finals}")
        return "; ".join(parts)


def _create_run(store: Store, spec: RunSpec, parent_id: str | None = None) -> str:
    tags = dict(spec.tags)
    if parent_id is not None:
        tags[MLFLOW_PARENT_RUN_ID] = parent_id
    run = store.client.create_run(store.experiment_id, tags=tags, run_name=spec.name)
    params = [Param(k, v) for k, v in spec.params.items()]
    for start in range(0, len(params), MAX_PARAMS_PER_BATCH):
        store.client.log_batch(run.info.run_id, params=params[start:start + MAX_PARAMS_PER_BATCH])
    return run.info.run_id


def _status_for(error: BaseException) -> str:
    return "KILLED" if isinstance(error, KeyboardInterrupt | Terminated) else "FAILED"


@contextmanager
def pair_run(store: Store, pair: RunSpec, arms: Mapping[str, RunSpec],
             config_yaml: str) -> Iterator[PairRecorder]:
    """Open the pair run and its arm runs; close them all with an honest status."""
    client = store.client
    pair_id = _create_run(store, pair)
    created: list[str] = [pair_id]
    log.info("pair run %s started: %s (experiment %s at %s)", pair_id, pair.name,
             store.experiment_id, redact(store.uri))
    recorder: PairRecorder | None = None
    try:
        for arm in arms.values():
            created.append(_create_run(store, arm, parent_id=pair_id))
        client.log_text(pair_id, config_yaml, "config.yaml")
        recorder = PairRecorder(client, pair_id, dict(zip(arms, created[1:], strict=True)))
        yield recorder
        recorder.flush()
        recorder.summarize()
    except BaseException as error:
        status = _status_for(error)
        log.error("pair run %s ended %s: %s", pair_id, status, error or type(error).__name__)
        with _ignore_signals():
            if recorder is not None:
                try:
                    recorder.flush()
                finally:
                    _terminate(client, created, status)
            else:
                _terminate(client, created, status)
        raise
    _terminate(client, created, "FINISHED")
    log.info("pair run %s finished: %s", pair_id, recorder.outcome())
    if store.uri.startswith(("http://", "https://")):
        log.info("view it at %s/#/experiments/%s/runs/%s", redact(store.uri).rstrip("/"),
                 store.experiment_id, pair_id)


def _terminate(client: MlflowClient, run_ids: list[str], status: str) -> None:
    for run_id in reversed(run_ids):
        client.set_terminated(run_id, status)


@contextmanager
def _ignore_signals() -> Iterator[None]:
    """A second Ctrl-C must not abandon the cleanup that gives the runs their status."""
    previous = {}
    try:
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, signal.SIG_IGN)
    except ValueError:  # not the main thread: signals are not ours to handle
        pass
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def describe(study: Study, config: dict[str, Any],
             overrides: Sequence[str] = ()) -> tuple[RunSpec, dict[str, RunSpec]]:
    """The pair run and its arm runs for ``study``: names, params and tags.

    ``config`` is the loggable (already redacted) resolved config. Arm runs carry the same
    params as the pair, with the arm's effective ``optimizer.weight_decay``, so arms of any two
    pairs compare directly in the MLflow UI.
    """
    params = flatten(config)
    context = resolve_tags({
        RUN_KIND_TAG: "pair",
        "wdexp.model": study.labels["model"],
        "wdexp.optimizer": study.labels["optimizer"],
        "wdexp.overrides": " ".join(redact(o) for o in overrides),
    })
    pair = RunSpec(study.name, params, context)
    arms = {}
    for arm in study.arms:
        arm_params = {**params, "optimizer.weight_decay": str(arm.weight_decay), "arm": arm.name}
        arm_tags = {**context, RUN_KIND_TAG: "arm", ARM_TAG: arm.name}
        arms[arm.name] = RunSpec(f"{arm.name} (wd={arm.weight_decay:g})", arm_params, arm_tags)
    return pair, arms

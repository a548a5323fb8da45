"""The run tree of a paired comparison in MLflow: batched metrics and honest run status.

One job is one **pair run** (tag ``wdexp.kind=pair``) with an **arm run** nested under it per
arm (``wdexp.kind=arm``, ``mlflow.parentRunId``). Per-step metrics are buffered and sent with
``log_batch`` — never one request per value — at least every :data:`FLUSH_SECONDS`. However the
job ends (success, exception, SIGTERM, Ctrl-C) the buffer is flushed and every run is given a
terminal status: no run is left RUNNING.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from mlflow.entities import Metric, RunTag
from mlflow.tracking import MlflowClient
from mlflow.tracking.context.registry import resolve_tags

from wdexp.config import config_hash, flatten, redact
from wdexp.engine import Step
from wdexp.lifecycle import Terminated, critical
from wdexp.store import (
    ARM_TAG,
    CONFIG_HASH_TAG,
    RUN_KIND_TAG,
    RunSpec,
    Store,
    create_run,
    terminate,
)
from wdexp.study import Study

FLUSH_SECONDS = 5.0
MAX_METRICS_PER_BATCH = 1000  # MLflow's limit for one log_batch call
# Logged on the pair run as <arm>.final_<name>, for those a model reports.
SUMMARY_METRICS = ("loss", "weight_norm", "test_loss", "test_accuracy")

log = logging.getLogger("wdexp")


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
            with critical():
                self.client.log_batch(self.arm_ids[arm], tags=[
                    RunTag("wdexp.diverged", "true"), RunTag("wdexp.diverged_at", str(step.epoch))])
        if (self._pending >= MAX_METRICS_PER_BATCH
                or time.monotonic() - self._last_flush >= FLUSH_SECONDS):
            self.flush()

    def flush(self) -> None:
        with critical():
            for run_id, metrics in self._buffer.items():
                for start in range(0, len(metrics), MAX_METRICS_PER_BATCH):
                    batch = metrics[start:start + MAX_METRICS_PER_BATCH]
                    self.client.log_batch(run_id, metrics=batch)
                metrics.clear()
            self._pending = 0
            self._last_flush = time.monotonic()

    def summarize(self) -> None:
        """Final values and a 0/1 ``<arm>.diverged`` of each arm on the pair run; a diverged tag
        on every arm."""
        timestamp = int(time.time() * 1000)
        summary = [Metric(f"{arm}.final_{name}", values[name], timestamp, 0)
                   for arm, values in self.last.items() for name in SUMMARY_METRICS
                   if name in values]
        summary += [Metric(f"{arm}.diverged", float(arm in self.diverged_at), timestamp, 0)
                    for arm in self.arm_ids]
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


def _status_for(error: BaseException) -> str:
    return "KILLED" if isinstance(error, KeyboardInterrupt | Terminated) else "FAILED"


@contextmanager
def pair_run(store: Store, pair: RunSpec, arms: Mapping[str, RunSpec],
             artifacts: Mapping[str, str], parent_id: str | None = None,
             ) -> Iterator[PairRecorder]:
    """Open the pair run (under a sweep run, if given) and its arm runs; close them all with an
    honest status. Store writes run as critical sections: a signal only interrupts training."""
    client = store.client
    created: list[str] = []
    recorder: PairRecorder | None = None
    try:
        with critical():
            created.append(create_run(store, pair, parent_id))
            pair_id = created[0]
            log.info("pair run %s started: %s (experiment %s at %s)", pair_id, pair.name,
                     store.experiment_id, redact(store.uri))
            for arm in arms.values():
                created.append(create_run(store, arm, parent_id=pair_id))
            for path, text in artifacts.items():
                client.log_text(pair_id, text, path)
        recorder = PairRecorder(client, pair_id, dict(zip(arms, created[1:], strict=True)))
        yield recorder
        with critical():
            recorder.flush()
            recorder.summarize()
    except BaseException as error:
        status = _status_for(error)
        with critical():
            if created:
                log.error("pair run %s ended %s: %s", created[0], status,
                          error or type(error).__name__)
            try:
                if recorder is not None:
                    recorder.flush()
            finally:
                terminate(client, created, status)
        raise
    with critical():
        terminate(client, created, "FINISHED")
    log.info("pair run %s finished: %s", pair_id, recorder.outcome())
    if store.uri.startswith(("http://", "https://")):
        log.info("view it at %s/#/experiments/%s/runs/%s", redact(store.uri).rstrip("/"),
                 store.experiment_id, pair_id)


@functools.cache
def _source_tags() -> dict[str, str]:
    """MLflow's own context tags (user, source, git commit): fixed for the process, and probing
    git costs time, so the jobs of a sequential multirun share one lookup."""
    return resolve_tags({})


def describe(study: Study, config: dict[str, Any],
             overrides: Sequence[str] = ()) -> tuple[RunSpec, dict[str, RunSpec]]:
    """The pair run and its arm runs for ``study``: names, params and tags.

    ``config`` is the loggable (already redacted) resolved config. Arm runs carry the same
    params as the pair, with the arm's effective ``optimizer.weight_decay``, so arms of any two
    pairs compare directly in the MLflow UI.
    """
    params = flatten(config)
    context = {
        **_source_tags(),
        RUN_KIND_TAG: "pair",
        "wdexp.model": study.labels["model"],
        "wdexp.optimizer": study.labels["optimizer"],
        "wdexp.overrides": " ".join(redact(o) for o in overrides),
        CONFIG_HASH_TAG: config_hash(config),
    }
    pair = RunSpec(study.name, params, context)
    arms = {}
    for arm in study.arms:
        arm_params = {**params, "optimizer.weight_decay": str(arm.weight_decay), "arm": arm.name}
        arm_tags = {**context, RUN_KIND_TAG: "arm", ARM_TAG: arm.name}
        arms[arm.name] = RunSpec(f"{arm.name} (wd={arm.weight_decay:g})", arm_params, arm_tags)
    return pair, arms

"""The tracking process: it owns the MLflow store while the training process trains.

Started by :mod:`wdexp.tracker` as ``python -m wdexp.writer REQUESTS REPLIES`` (two pipe file
descriptors) before the training process imports torch, so importing MLflow and opening the
store — seconds of work — run on another core at the same time. It then serves requests in
order: calls get a reply (a value, or the error to raise in the training process), metric
batches do not. While no request is waiting it writes buffered metrics to the store, so
training never waits for sqlite.

It ignores SIGINT and SIGTERM: a Ctrl-C or a scheduler's signal reaches the whole process group,
and the training process decides the runs' status (KILLED) and asks for it. If the training
process vanishes without asking (SIGKILL), the end of its pipe ends every open run KILLED.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import time
import traceback
from multiprocessing.connection import Connection
from typing import Any

import pandas as pd

from wdexp import analysis, store, tracking
from wdexp.config import ConfigError, TrackingSpec
from wdexp.runs import RunSpec, Step

IDLE_S = 0.05  # with nothing to read for this long, write what is buffered …
LIVE_S = 1.0  # … in full batches, or all of it once its oldest value waited this long

log = logging.getLogger("wdexp.writer")


class Writer:
    """The requests the training process can make, by name."""

    def __init__(self) -> None:
        self.unusable: dict[TrackingSpec, ConfigError] = {}  # asked twice: fail once
        self.pairs: dict[str, tracking.PairRecorder] = {}
        self.sweeps: dict[str, tuple[store.Store, str]] = {}  # run id -> (store, sweep dir)

    def connect(self, spec: TrackingSpec, create: bool = True) -> str:
        if spec in self.unusable:
            raise self.unusable[spec]
        try:
            return store.connect(spec, create=create).experiment_id
        except ConfigError as error:
            self.unusable[spec] = error
            raise

    def find_finished_pair(self, spec: TrackingSpec, config_hash: str) -> str | None:
        return store.find_finished_pair(store.connect(spec), config_hash)

    def find_sweep_run(self, spec: TrackingSpec, sweep_dir: str) -> str | None:
        for run_id, (_, opened_in) in self.sweeps.items():  # opened here: no query needed
            if opened_in == sweep_dir:
                return run_id
        return store.find_sweep_run(store.connect(spec), sweep_dir)

    def open_pair(self, spec: TrackingSpec, pair: RunSpec, arms: dict[str, RunSpec],
                  files: dict[str, str], parent_id: str | None) -> tuple[str, dict[str, str]]:
        recorder = tracking.open_pair(store.connect(spec), pair, arms, files, parent_id)
        self.pairs[recorder.pair_id] = recorder
        return recorder.pair_id, recorder.arm_ids

    def log(self, pair_id: str, steps: list[Step]) -> None:
        recorder = self.pairs[pair_id]
        for step in steps:
            recorder.log_step(step)
        if recorder.pending >= 2 * tracking.MAX_METRICS_PER_BATCH:
            recorder.flush(full_batches_only=True)

    def summarize(self, pair_id: str) -> None:
        recorder = self.pairs[pair_id]
        recorder.flush()
        recorder.summarize()

    def close_pair(self, pair_id: str, status: str, files: dict[str, bytes]) -> None:
        recorder = self.pairs.pop(pair_id, None)
        if recorder is None:  # a failed close already ended its runs FAILED
            return
        try:
            recorder.flush()
        finally:
            tracking.close_run(recorder.store, recorder.run_ids, status, files)

    def open_sweep(self, spec: TrackingSpec, sweep: RunSpec, sweep_dir: str) -> str:
        sweep_store = store.connect(spec)
        run_id = store.create_run(sweep_store, sweep)
        self.sweeps[run_id] = (sweep_store, sweep_dir)
        return run_id

    def sweep_table(self, run_id: str, keys: list[str]) -> pd.DataFrame:
        return analysis.pair_table(self.sweeps[run_id][0], run_id, keys)

    def delete_sweep(self, run_id: str) -> None:
        sweep_store, _ = self.sweeps.pop(run_id)
        sweep_store.client.delete_run(run_id)

    def close_sweep(self, run_id: str, status: str, files: dict[str, str | bytes],
                    metrics: dict[str, float]) -> None:
        sweep_store, _ = self.sweeps.pop(run_id)
        tracking.close_run(sweep_store, [run_id], status, files, metrics)

    def idle(self) -> None:
        for recorder in self.pairs.values():
            if recorder.oldest is not None:
                recorder.flush(full_batches_only=time.monotonic() - recorder.oldest < LIVE_S)

    def abandon(self) -> None:
        """The training process is gone without closing its runs."""
        for pair_id in list(self.pairs):
            self.close_pair(pair_id, "KILLED", {})
        for run_id, (sweep_store, _) in self.sweeps.items():
            store.terminate(sweep_store.client, [run_id], "KILLED")


def _error(error: Exception) -> tuple[str, Any]:
    if isinstance(error, ConfigError):
        return "config_error", (error.key, error.requirement, error.value, error.show_value)
    return "error", (f"{type(error).__name__}: {error}", traceback.format_exc())


def serve(requests: Connection, replies: Connection) -> None:
    writer = Writer()
    failure: tuple[str, Any] | None = None  # of a request that had no reply to carry it
    while True:
        try:
            if not requests.poll(IDLE_S):
                writer.idle()
                continue
            op, args, wants_reply = requests.recv()
        except EOFError:
            writer.abandon()
            return
        except Exception as error:  # a failed idle flush: report it with the next reply
            failure = failure or _error(error)
            continue
        try:
            reply: tuple[str, Any] = ("ok", getattr(writer, op)(*args))
        except Exception as error:
            reply = _error(error)
        if not wants_reply:
            failure = failure or (reply if reply[0] != "ok" else None)
            continue
        if failure is not None:
            reply, failure = failure, None
        replies.send(reply)


def main() -> None:
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
    logging.basicConfig(level=logging.WARNING, format="wdexp tracking process: %(message)s")
    requests, replies = (Connection(int(fd), readable=r, writable=not r)
                         for fd, r in zip(sys.argv[1:3], (True, False), strict=True))
    serve(requests, replies)
    # Every write is committed; tearing down MLflow's and SQLAlchemy's modules one by one would
    # add over a second to every job's exit, which the training process waits for.
    logging.shutdown()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main()

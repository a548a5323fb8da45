"""Tracking process: it owns the MLflow store while the training process trains.

Started by :class:`wdexp.tracking.client.TrackingClient` as ``python -m wdexp.tracking.server
REQUESTS REPLIES`` (two pipe file descriptors) before the training process imports torch, so
importing MLflow and opening the store run on another core at the same time. It forks once at
start and the parent exits, so it runs detached: a launcher that kills the training process's
tree does not reach it, and the closed pipe tells it to end every run it still holds KILLED.

It serves requests in order (:mod:`wdexp.tracking.messages`): calls get a :class:`Reply`, metric
batches a :class:`Progress`; while no request waits it writes buffered metrics, so training
never waits for sqlite, and refreshes the heartbeat of its open runs. Each store operation is
bounded: with no store write finishing for ``tracking.timeout_s`` (a dead server, a hung disk)
the operation is interrupted; that, or a store refusing a write, is reported at once
(:class:`Broken`) and the job stops — nothing keeps training into a store that stopped taking it.
"""

from __future__ import annotations

import os
import signal
import sys

# Detach before anything else: the launching child exits at once and the training process goes
# on; from here the tracking process is in its own session and nobody's child.
if __name__ == "__main__" and os.fork():
    os._exit(0)

import contextlib
import logging
import time
from typing import Any, assert_never

from wdexp.credentials import Redacting
from wdexp.tracking import first_contact, orphans, runtree, store
from wdexp.tracking import messages as m
from wdexp.tracking.channel import Closed, Receiver, Sender
from wdexp.tracking.records import RunSpec, sweep_key
from wdexp.tracking.watchdog import Watchdog, failure_of
from wdexp.vocabulary import (
    DEFAULT_TIMEOUT_S,
    SWEEP_DIR_TAG,
    SWEEP_KEY_TAG,
    ConfigError,
    TrackingSpec,
)

IDLE_S = 0.05  # with nothing to read for this long, write what is buffered …
LIVE_S = 1.0  # … in full batches, or all of it once its oldest value waited this long
REPLY_WAIT_S = 30.0  # a training process that reads no reply for this long is gone

log = logging.getLogger("wdexp.tracking")


class Service:
    """The store work the training process asks for, one request at a time."""

    def __init__(self, sender: Sender) -> None:
        self.sender = sender
        self.client_gone = False
        self.pairs: dict[str, runtree.PairRecorder] = {}
        self.sweeps: dict[str, tuple[store.Store, str]] = {}  # run id -> (store, sweep dir)
        self.unusable: dict[TrackingSpec, ConfigError] = {}  # asked twice: fail once
        self.reached_servers: set[TrackingSpec] = set()  # HTTP servers that answered once
        self.opened: set[store.Store] = set()
        self.told: set[store.Store] = set()  # stores whose metric writer the job was told of
        self.reaped: set[store.Store] = set()  # by this job's OpenStore, not yet reported
        self.unreported: list[str] = []
        self.broken: set[str] = set()  # pairs whose writes failed: nothing more is written
        self.timeout_s = DEFAULT_TIMEOUT_S
        self.uri = ""
        self.done = 0
        self.watchdog = Watchdog(lambda: self.send(m.Progress(self.done)))
        self._last_beat = time.monotonic()
        self._beat_s = orphans.HEARTBEAT_S  # the shortest any open run's staleness asks for

    def send(self, message: Any) -> None:
        if self.client_gone:
            return
        try:
            self.sender.put(message)
            if not self.sender.drain(deadline=time.monotonic() + REPLY_WAIT_S):
                self.client_gone = True
        except Closed:
            self.client_gone = True

    # --- one request ---------------------------------------------------------------------------

    def serve(self, envelope: m.Envelope) -> None:
        value, failure = None, None
        try:
            with self.watchdog.armed(self.timeout_s):
                value = self.handle(envelope.request)
        except Exception as error:
            failure = failure_of(error, self.uri)
            if isinstance(envelope.request, m.LogSteps | m.Summarize):
                self.broken.add(envelope.request.pair_id)
        self.done = envelope.seq
        if envelope.wants_reply:
            self.send(m.Reply(envelope.seq, value, failure))
        elif failure is not None and failure.key is None:
            self.send(m.Broken(failure))
        else:
            self.send(m.Progress(envelope.seq))

    def handle(self, request: m.Request) -> Any:
        match request:
            case m.OpenStore(spec):
                with contextlib.suppress(ConfigError):  # raised again for the Connect
                    self.reap(self.store(spec))
            case m.Connect(spec):
                return self.connect(spec)
            case m.FindFinishedPair(spec, config_hash):
                return store.find_finished_pair(self.store(spec), config_hash)
            case m.FindSweepRun(spec, sweep_dir):
                for run_id, (_, opened_in) in self.sweeps.items():  # opened here: no query
                    if opened_in == sweep_dir:
                        return run_id
                return store.find_sweep_run(self.store(spec), sweep_dir)
            case m.OpenPair(spec, pair, arms, files, parent_id):
                recorder = runtree.open_pair(self.store(spec), pair, arms, files, parent_id,
                                             wrote=self.watchdog.kick,
                                             orphan_after_s=spec.orphan_after_s)
                self.pairs[recorder.pair_id] = recorder
                return recorder.pair_id, recorder.arm_ids
            case m.LogSteps(pair_id, steps, timestamps):
                self.log_steps(pair_id, steps, timestamps)
            case m.Summarize(pair_id):
                if pair_id not in self.broken:
                    recorder = self.pairs[pair_id]
                    recorder.flush()
                    recorder.summarize()
            case m.ClosePair(spec, pair_id, arm_ids, status, files, failure):
                self.close_pair(spec, pair_id, arm_ids, status, files, failure)
            case m.OpenSweep(spec, sweep, sweep_dir):
                return self.open_sweep(spec, sweep, sweep_dir)
            case m.DeleteSweep(spec, run_id):
                self.sweeps.pop(run_id, None)
                self.store(spec).client.delete_run(run_id)
            case m.Annotate(spec, run_id, params, metrics, files):
                runtree.annotate(self.store(spec), run_id, params, metrics, files)
            case m.CloseSweep(spec, run_id, status, files, metrics):
                self.sweeps.pop(run_id, None)
                runtree.close_run(self.store(spec), [run_id], status, files, metrics)
            case _:
                assert_never(request)
        return None

    def connect(self, spec: TrackingSpec) -> m.Connected:
        """Each job's first call: its store, and the lines about the orphans ended for it."""
        connected = self.store(spec)
        if connected not in self.reaped:  # no OpenStore came first
            self.reap(connected)
        self.reaped.discard(connected)  # the next job looks again
        lines, self.unreported = self.unreported, []
        ingestion = None
        if connected not in self.told:  # said once per store and process
            self.told.add(connected)
            ingestion = connected.metrics.how
        return m.Connected(connected.experiment_id, lines, ingestion)

    def reap(self, connected: store.Store) -> None:
        """End the experiment's runs whose owner is gone: once per job, so a long multirun
        sees the jobs that died beside it."""
        self.reaped.add(connected)
        self.unreported += orphans.reap(connected)

    def store(self, spec: TrackingSpec) -> store.Store:
        """The spec's store, opened once per process."""
        self.timeout_s, self.uri = spec.timeout_s, spec.uri
        self._beat_s = min(self._beat_s, orphans.beat_period(spec.orphan_after_s))
        if spec in self.unusable:
            raise self.unusable[spec]
        try:
            if spec.uri.startswith(("http://", "https://")) and spec not in self.reached_servers:
                first_contact.wait_for_server(spec, self._wanted)
                self.reached_servers.add(spec)
            connected = store.connect(spec)
        except ConfigError as error:
            self.unusable[spec] = error
            raise
        if connected not in self.opened:
            self.opened.add(connected)
            os.environ.update(store.http_limits(spec.timeout_s))
        return connected

    def _wanted(self) -> bool:
        """While waiting for a server: the wait is progress (no timeout), and the training
        process is still there to want it."""
        self.watchdog.kick()
        return not self.client_gone

    def log_steps(self, pair_id: str, steps: list[Any], timestamps: list[int]) -> None:
        if pair_id in self.broken:
            return
        recorder = self.pairs[pair_id]
        for step, timestamp in zip(steps, timestamps, strict=True):
            recorder.log_step(step, timestamp)
        if recorder.pending >= 2 * recorder.store.metrics.batch:
            recorder.flush(full_batches_only=True)

    def close_pair(self, spec: TrackingSpec, pair_id: str, arm_ids: list[str], status: str,
                   files: dict[str, bytes], failure: str | None) -> None:
        recorder = self.pairs.pop(pair_id, None)
        target = self.store(spec)
        if pair_id in self.broken and status == "FINISHED":  # its metrics are incomplete
            status = "FAILED"
        try:
            if recorder is not None and pair_id not in self.broken:
                recorder.flush()
        finally:
            runtree.close_run(target, [pair_id, *arm_ids], status, files, failure=failure)

    def open_sweep(self, spec: TrackingSpec, sweep: RunSpec, sweep_dir: str) -> str:
        tags = {**sweep.tags, SWEEP_DIR_TAG: sweep_dir, SWEEP_KEY_TAG: sweep_key(sweep_dir)}
        target = self.store(spec)
        run_id = store.create_run(target, runtree.owned(RunSpec(sweep.name, sweep.params, tags),
                                                        spec.orphan_after_s))
        self.sweeps[run_id] = (target, sweep_dir)
        return run_id

    # --- between requests ----------------------------------------------------------------------

    def idle(self) -> None:
        """Write what waited long enough; refresh the open runs' heartbeat."""
        for pair_id, recorder in self.pairs.items():
            if recorder.oldest is None or pair_id in self.broken:
                continue
            try:
                with self.watchdog.armed(self.timeout_s):
                    recorder.flush(full_batches_only=time.monotonic() - recorder.oldest < LIVE_S)
            except Exception as error:
                self.broken.add(pair_id)
                self.send(m.Broken(failure_of(error, recorder.store.uri)))
                return
        if time.monotonic() - self._last_beat >= self._beat_s:
            self._last_beat = time.monotonic()
            self.heartbeat()

    def heartbeat(self) -> None:
        held: dict[store.Store, list[str]] = {}
        for pair_id, recorder in self.pairs.items():
            held.setdefault(recorder.store, []).append(pair_id)
        for run_id, (sweep_store, _) in self.sweeps.items():
            held.setdefault(sweep_store, []).append(run_id)
        for target, run_ids in held.items():
            with contextlib.suppress(Exception), self.watchdog.armed(self.timeout_s):
                orphans.beat(target, run_ids)

    def abandon(self) -> None:
        """The training process is gone without closing its runs: they end KILLED. A store
        that fails once is left alone: the next job into it ends what is left (orphans)."""
        reason = "the training process exited without closing this run"
        down: set[str] = set()
        open_runs = [(recorder.store, recorder.run_ids, recorder)
                     for recorder in self.pairs.values()]
        open_runs += [(sweep_store, [run_id], None)
                      for run_id, (sweep_store, _) in self.sweeps.items()]
        for target, run_ids, recorder in open_runs:
            if target.uri in down:
                continue
            try:
                with self.watchdog.armed(self.timeout_s):
                    try:
                        if recorder is not None and recorder.pair_id not in self.broken:
                            recorder.flush()
                    finally:
                        runtree.close_run(target, run_ids, "KILLED", failure=reason)
            except Exception:
                down.add(target.uri)
        self.pairs.clear()
        self.sweeps.clear()


def serve(receiver: Receiver, sender: Sender) -> None:
    service = Service(sender)
    while True:
        if not receiver.wait(IDLE_S):
            service.idle()
            continue
        for envelope in receiver.take():
            service.serve(envelope)
        if receiver.closed:
            _let_go_of_streams()
            service.abandon()
            return


def _let_go_of_streams() -> None:
    """The training process is done or gone: whatever still reads its output (a shell's pipe,
    a test) must not wait for this process to finish closing runs in the background."""
    sys.stderr.flush()
    devnull = os.open(os.devnull, os.O_WRONLY)
    for fd in (1, 2):
        os.dup2(devnull, fd)
    os.close(devnull)


def main() -> None:
    # Ctrl-C and a scheduler's SIGTERM are the training process's to handle: it decides the
    # runs' status and asks for it; a closed pipe is the only way this process is told to stop.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
    logging.basicConfig(level=logging.WARNING, format="wdexp tracking process: %(message)s")
    for handler in logging.getLogger().handlers:
        handler.addFilter(Redacting())
    # MLflow logs each store error with its traceback, and alembic each migration: the job
    # reports a failure once, as one line (see _failure).
    for noisy in ("alembic", "mlflow", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.CRITICAL)
    requests_fd, replies_fd = (int(fd) for fd in sys.argv[1:3])
    serve(Receiver(requests_fd), Sender(replies_fd))
    # Every write is committed; tearing down MLflow's and SQLAlchemy's modules one by one would
    # add over a second to every job's exit, which the training process waits for.
    logging.shutdown()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main()

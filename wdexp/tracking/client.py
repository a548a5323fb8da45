"""Training process: its handle on the tracking process (:mod:`wdexp.tracking.server`).

Importing MLflow and opening its store cost more than importing torch; done in this process they
would come before the first epoch. The training process starts the tracking process instead,
which imports MLflow on another core while this one imports torch, and every store operation
becomes a request to it (:mod:`wdexp.tracking.messages`).

The tracking process runs detached (its own session, not a child of this process), so a launcher
that kills this process's tree — loky on Ctrl-C, a scheduler — does not take it along: it sees
the pipe close and ends every run it holds KILLED. While it works, this side never waits without
a bound: a reply that does not come, or a write that makes no progress, for ``tracking.timeout_s``
fails the job; once a stop signal arrived, waits shrink to :data:`STOP_WAIT_S`.
"""

from __future__ import annotations

import atexit
import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, TypeVar

from wdexp import signals
from wdexp.tracking import messages as m
from wdexp.tracking.channel import SLICE_S, Closed, Receiver, Sender, widen
from wdexp.tracking.records import RunSpec, Step
from wdexp.vocabulary import DEFAULT_TIMEOUT_S, ConfigError, JobFailed, TrackingSpec, redact

# After SIGTERM or Ctrl-C, how long the training process waits for its runs to be closed before
# it exits anyway (the tracking process goes on and closes them).
STOP_WAIT_S = 5.0
SILENCE_MARGIN_S = 5.0
BACKLOG_BYTES = 8 << 20  # queued beyond this, training waits for the tracking process
T = TypeVar("T")

log = logging.getLogger("wdexp")


class TrackingFailed(JobFailed):
    """The store failed the job: one line, naming the URI (redacted) and the reason."""


class TrackingProcessGone(TrackingFailed):
    """The tracking process exited without being asked (it was killed)."""


class TrackingClient:
    """One tracking process and the typed requests it serves."""

    def __init__(self) -> None:
        requests_read, requests_write = os.pipe()
        replies_read, replies_write = os.pipe()
        widen(requests_write)
        env = {**os.environ,
               "PYTHONPATH": os.pathsep.join(filter(None, [str(Path(__file__).parents[2]),
                                                           os.environ.get("PYTHONPATH")]))}
        # The server forks once more and this child exits: the tracking process is then in its
        # own session and no descendant of this one.
        self._launcher = subprocess.Popen(
            [sys.executable, "-m", "wdexp.tracking.server", str(requests_read),
             str(replies_write)],
            pass_fds=(requests_read, replies_write), env=env, stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, start_new_session=True)  # it reports through the pipe
        os.close(requests_read)
        os.close(replies_write)
        self._sender = Sender(requests_write)
        self._receiver = Receiver(replies_read)
        self.owner = os.getpid()
        self.spec: TrackingSpec | None = None  # the store last asked for: names it in errors
        self.timeout_s = DEFAULT_TIMEOUT_S
        self._seq = 0
        self._done = 0
        self._replies: dict[int, m.Reply] = {}
        self._broken: m.Failure | None = None
        self._heard = time.monotonic()
        self._used = False
        self._closed = False

    # --- the requests --------------------------------------------------------------------------

    def start_connect(self, spec: TrackingSpec) -> None:
        """Begin opening the store while this process does other work; :meth:`connect` waits."""
        self._post(m.OpenStore(spec), wants_reply=False)

    def connect(self, spec: TrackingSpec) -> str:
        """The experiment's id; a store that cannot be used raises its ConfigError here."""
        connected: m.Connected = self._call(m.Connect(spec))
        for line in connected.reaped:
            log.warning("wdexp: %s", line)
        if connected.ingestion:
            log.info("%s", connected.ingestion)
        return connected.experiment_id

    def find_finished_pair(self, spec: TrackingSpec, config_hash: str,
                           ) -> tuple[str, dict[str, float]] | None:
        """A finished pair run of this computation: its id and summary metrics."""
        return self._call(m.FindFinishedPair(spec, config_hash))

    def find_sweep_run(self, spec: TrackingSpec, sweep_dir: str) -> str | None:
        return self._call(m.FindSweepRun(spec, sweep_dir))

    def open_pair(self, spec: TrackingSpec, pair: RunSpec, arms: dict[str, RunSpec],
                  files: dict[str, str], parent_id: str | None) -> tuple[str, dict[str, str]]:
        return self._call(m.OpenPair(spec, pair, arms, files, parent_id))

    def queue_steps(self, pair_id: str, steps: list[Step], timestamps: list[int]) -> None:
        """Queue a batch without sending it: nothing here waits, so a caller can hand its
        buffer over inside :func:`wdexp.signals.critical`; :meth:`keep_pace` sends it."""
        self._queue(m.LogSteps(pair_id, steps, timestamps), wants_reply=False)

    def keep_pace(self) -> None:
        """Send what the pipe takes; wait while the store is far behind training."""
        self._pump()
        if self._sender.backlog > BACKLOG_BYTES:
            self._wait(lambda: self._sender.backlog <= BACKLOG_BYTES)

    def summarize(self, pair_id: str) -> None:
        self._post(m.Summarize(pair_id), wants_reply=False)

    def close_pair(self, spec: TrackingSpec, pair_id: str, arm_ids: list[str], status: str,
                   files: dict[str, bytes] | None = None, failure: str | None = None) -> None:
        self._call(m.ClosePair(spec, pair_id, arm_ids, status, files or {}, failure))

    def open_sweep(self, spec: TrackingSpec, sweep: RunSpec, sweep_dir: str) -> str:
        return self._call(m.OpenSweep(spec, sweep, sweep_dir))

    def delete_sweep(self, spec: TrackingSpec, run_id: str) -> None:
        self._call(m.DeleteSweep(spec, run_id))

    def annotate(self, spec: TrackingSpec, run_id: str, params: dict[str, str],
                 metrics: dict[str, float], files: dict[str, str | bytes]) -> None:
        self._call(m.Annotate(spec, run_id, params, metrics, files))

    def close_sweep(self, spec: TrackingSpec, run_id: str, status: str,
                    files: dict[str, str | bytes], metrics: dict[str, float]) -> None:
        self._call(m.CloseSweep(spec, run_id, status, files, metrics))

    # --- the pipe ------------------------------------------------------------------------------

    def _post(self, request: m.Request, *, wants_reply: bool) -> int:
        seq = self._queue(request, wants_reply=wants_reply)
        self.keep_pace()
        return seq

    def _queue(self, request: m.Request, *, wants_reply: bool) -> int:
        if self._closed:
            raise TrackingProcessGone("the tracking process was closed")
        if isinstance(request, m.OpenStore | m.Connect):
            self.spec, self.timeout_s = request.spec, request.spec.timeout_s
        self._used = True
        self._launcher.poll()  # reaps the launching child, long exited
        if not self._outstanding():
            self._heard = time.monotonic()  # the silence that counts starts with the request
        self._seq += 1
        self._sender.put(m.Envelope(self._seq, request, wants_reply))
        return self._seq

    def _call(self, request: m.Request) -> Any:
        seq = self._post(request, wants_reply=True)
        self._wait(lambda: seq in self._replies)
        reply = self._replies.pop(seq)
        if reply.failure is not None:
            raise self._error(reply.failure)
        return reply.value

    def _outstanding(self) -> bool:
        return self._done < self._seq or self._sender.backlog > 0

    def _pump(self) -> None:
        """Send what the pipe takes, read what arrived; raise what the tracking process
        reported broken."""
        try:
            self._sender.drain()
        except Closed:
            raise self._gone() from None
        for message in self._receiver.take():
            self._heard = time.monotonic()
            if isinstance(message, m.Reply):
                self._replies[message.seq] = message
                self._done = max(self._done, message.seq)
            elif isinstance(message, m.Progress):
                self._done = max(self._done, message.done)
            elif isinstance(message, m.Broken):
                self._broken = self._broken or message.failure
        if self._broken is not None:  # raised once: the runs can still be closed after it
            failure, self._broken = self._broken, None
            raise self._error(failure)
        if self._receiver.closed:
            raise self._gone()

    def _wait(self, ready: Any) -> None:
        """Until ``ready()``; fails once the tracking process is silent for ``timeout_s`` while
        work is outstanding, or, when stopping, after :data:`STOP_WAIT_S`."""
        while True:
            stop_by = _stop_deadline()
            self._pump()
            if ready():
                return
            now = time.monotonic()
            if stop_by is not None and now > stop_by:
                raise TrackingFailed("stopped while the tracking process was still writing; it "
                                     "ends the runs once its writes are done")
            # The tracking process's own watchdog fires first and says why; this one is for a
            # tracking process stuck where no alarm reaches it (a hung file system).
            if now - self._heard > self.timeout_s + SILENCE_MARGIN_S:
                raise TrackingFailed(f"{self._where()} stopped answering: nothing was written "
                                     f"for {self.timeout_s:g} s (tracking.timeout_s)")
            if self._sender.backlog:
                try:
                    self._sender.drain(deadline=now + SLICE_S)
                except Closed:
                    raise self._gone() from None
            else:
                self._receiver.wait(SLICE_S)

    def _where(self) -> str:
        return f"tracking.uri {redact(self.spec.uri)}" if self.spec else "the tracking store"

    def _gone(self) -> TrackingProcessGone:
        self._closed = True
        return TrackingProcessGone(f"the tracking process for {self._where()} exited "
                                   "unexpectedly (was it killed?)")

    def _error(self, failure: m.Failure) -> Exception:
        if failure.key is not None:
            return ConfigError(failure.key, failure.requirement, failure.value,
                               show_value=failure.show_value)
        if failure.detail:  # a bug rather than a store's refusal: keep where it happened
            log.error("in the tracking process:\n%s", failure.detail.rstrip())
        return TrackingFailed(failure.message)

    @property
    def alive(self) -> bool:
        return not self._closed and not self._receiver.closed

    def close(self) -> None:
        """Let the tracking process finish what was sent (it exits when the pipe closes) and
        wait until it did, unless stopping or nothing was ever asked of it."""
        if self._closed:
            return
        self._closed = True
        limit = self.timeout_s
        deadline = _stop_deadline() or time.monotonic() + limit
        try:
            if self._used:
                self._sender.drain(deadline=deadline)
        except Closed:
            pass
        self._sender.close()
        # The pipe's end closing is the tracking process exiting; its progress messages while it
        # writes the last batches extend the wait, silence does not.
        while self._used and not self._receiver.closed and time.monotonic() < deadline:
            if self._receiver.wait(SLICE_S) and self._receiver.take():
                deadline = _stop_deadline() or time.monotonic() + limit
        self._receiver.close()
        self._launcher.wait()


def _stop_deadline() -> float | None:
    """Once a stop signal arrived, every wait ends :data:`STOP_WAIT_S` after it: SIGTERM and
    Ctrl-C are honoured in seconds whatever the store does."""
    since = signals.stopping_since
    return None if since is None else since + STOP_WAIT_S


_client: TrackingClient | None = None


def get() -> TrackingClient:
    """This process's tracking process, started on first use — again after one died. (A forked
    child gets its own.)"""
    global _client
    if _client is None or _client.owner != os.getpid() or not _client.alive:
        if _client is not None and _client.owner == os.getpid():
            _client.close()
        _client = TrackingClient()
        atexit.register(_client.close)
    return _client


def prestart() -> None:
    """Start the tracking process now, so MLflow loads while this process imports torch."""
    get()


def ready() -> TrackingClient:
    """This process's tracking process, ready for a new job: one that died, or that still owes
    replies because the job before this one was stopped mid-write, is replaced (a notebook or a
    sequential multirun runs job after job in one process)."""
    current = _client
    if (current is not None and current.owner == os.getpid()
            and (current._outstanding() or current._replies)):
        current.close()
    return get()

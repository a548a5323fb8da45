"""How a process and its jobs end: signals become exceptions, errors an exit status and a line.

SIGTERM (what schedulers and ``kill`` send) is raised as :class:`Terminated`, like Ctrl-C's
KeyboardInterrupt, so the tracking layer's cleanup runs and marks the runs KILLED.
"""

from __future__ import annotations

import atexit
import logging
import multiprocessing
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType

from wdexp.config import ConfigError

log = logging.getLogger("wdexp")

stop_signal: int | None = None
"""The signal that is stopping this process, once one arrived (read by the sweep's cleanup)."""
stopping_since: float | None = None
"""When (``time.monotonic()``) the first stop signal arrived: cleanup waits count from it."""


class JobFailed(RuntimeError):
    """A failure whose message is the whole story (a store that refused a write, a tracking
    process that died): reported as one line, without a traceback."""


class Terminated(BaseException):
    """SIGTERM arrived. A BaseException, like KeyboardInterrupt, so ``except Exception`` in
    library code cannot swallow it."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"received {signal.Signals(signum).name}")
        self.signum = signum


_critical_depth = 0
_deferred_signal: int | None = None


def _stop(signum: int) -> BaseException:
    return KeyboardInterrupt() if signum == signal.SIGINT else Terminated(signum)


def _on_signal(signum: int, _frame: FrameType | None) -> None:
    global stop_signal, stopping_since, _deferred_signal
    stop_signal = signum
    if stopping_since is None:
        stopping_since = time.monotonic()
    if _critical_depth:
        _deferred_signal = signum
        return
    raise _stop(signum)


@contextmanager
def critical() -> Iterator[None]:
    """A store write that a signal must not cut in half: SIGINT/SIGTERM arriving inside are
    raised when it ends. (Blocking the signal is not enough: the kernel hands it to another
    thread, e.g. torch's, and Python still runs the handler mid-write in the main thread.)"""
    global _critical_depth, _deferred_signal
    _critical_depth += 1
    try:
        yield
    finally:
        _critical_depth -= 1
        if not _critical_depth and _deferred_signal is not None:
            signum, _deferred_signal = _deferred_signal, None
            raise _stop(signum)


@contextmanager
def signals_as_exceptions() -> Iterator[None]:
    """SIGTERM raises Terminated and SIGINT KeyboardInterrupt, except inside critical()."""
    try:
        previous = {sig: signal.signal(sig, _on_signal) for sig in (signal.SIGINT,
                                                                      signal.SIGTERM)}
    except ValueError:  # not the main thread: the host process owns signals
        yield
        return
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@contextmanager
def job(*, multirun: bool) -> Iterator[None]:
    """Around one job. A ConfigError prints ``wdexp: <key> <requirement> (got <value>)`` and
    exits 2, a JobFailed ``wdexp: <message>`` and exits 1, no traceback; inside a multirun they
    are logged and re-raised instead, so the launcher records this job as failed and goes on
    with the others."""
    with signals_as_exceptions():
        try:
            yield
        except (ConfigError, JobFailed) as error:
            if multirun:
                log.error("wdexp: %s", error)
                raise
            print(f"wdexp: {error}", file=sys.stderr)
            sys.exit(2 if isinstance(error, ConfigError) else 1)


def run_main(main: Callable[[], object]) -> None:
    """The process entry: SIGTERM and Ctrl-C exit 143 and 130 (128 + signal) with one line.

    When nothing else runs (no launcher threads or worker processes, which the interpreter's
    own shutdown stops in order), the process ends with ``os._exit`` once every atexit handler
    has run and the streams are flushed: tearing down torch's module graph object by object
    takes seconds and releases nothing the operating system would not.
    """
    code = _exit_code(main)
    if threading.active_count() > 1 or multiprocessing.active_children():
        sys.exit(code)
    atexit._run_exitfuncs()
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    os._exit(code)


def _exit_code(main: Callable[[], object]) -> int:
    global stop_signal
    try:
        with signals_as_exceptions():
            main()
    except Terminated as stop:
        log.warning("wdexp: stopped by %s", signal.Signals(stop.signum).name)
        return 128 + stop.signum
    except KeyboardInterrupt:  # also raised by Python's own handler, outside ours
        stop_signal = signal.SIGINT
        log.warning("wdexp: interrupted")
        return 128 + signal.SIGINT
    except SystemExit as done:  # Hydra's exit after reporting an error, or sys.exit(2) above
        if done.code is None or isinstance(done.code, int):
            return done.code or 0
        print(done.code, file=sys.stderr)
        return 1
    except BaseException:
        traceback.print_exc()
        return 1
    return 0

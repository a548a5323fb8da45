"""Stop signals as exceptions, in the training process.

SIGTERM (what schedulers and ``kill`` send) is raised as :class:`Terminated`, like Ctrl-C's
KeyboardInterrupt, so the pair's cleanup runs and marks its runs KILLED; a store write inside
:func:`critical` is never cut in half. Only the standard library: the pipe to the tracking
process (:mod:`wdexp.tracking.channel`) uses :func:`critical`, and the tracking process imports
nothing heavier than this.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

stop_signal: int | None = None
"""The signal that is stopping this process, once one arrived (read by the sweep's cleanup)."""
stopping_since: float | None = None
"""When (``time.monotonic()``) the first stop signal arrived: cleanup waits count from it."""


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


def reset() -> None:
    """Forget a stop that was handled (a notebook's next call is not stopping)."""
    global stop_signal, stopping_since, _deferred_signal
    stop_signal = stopping_since = _deferred_signal = None


def interrupted() -> None:
    """Python's own handler raised KeyboardInterrupt outside ours: remember it all the same."""
    global stop_signal
    stop_signal = signal.SIGINT

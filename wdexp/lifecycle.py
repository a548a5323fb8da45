"""How a process and its jobs end: signals become exceptions, errors an exit status and a line.

SIGTERM (what schedulers and ``kill`` send) is raised as :class:`Terminated`, like Ctrl-C's
KeyboardInterrupt, so the tracking layer's cleanup runs and marks the runs KILLED.
"""

from __future__ import annotations

import logging
import signal
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType

from wdexp.config import ConfigError

log = logging.getLogger("wdexp")

stop_signal: int | None = None
"""The signal that is stopping this process, once one arrived (read by the sweep's cleanup)."""


class Terminated(BaseException):
    """SIGTERM arrived. A BaseException, like KeyboardInterrupt, so ``except Exception`` in
    library code cannot swallow it."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"received {signal.Signals(signum).name}")
        self.signum = signum


def _raise_terminated(signum: int, _frame: FrameType | None) -> None:
    global stop_signal
    stop_signal = signum
    raise Terminated(signum)


@contextmanager
def terminate_on_sigterm() -> Iterator[None]:
    try:
        previous = signal.signal(signal.SIGTERM, _raise_terminated)
    except ValueError:  # not the main thread: the host process owns signals
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextmanager
def job(*, multirun: bool) -> Iterator[None]:
    """Around one job. A ConfigError prints ``wdexp: <key> <requirement> (got <value>)`` and
    exits 2, no traceback; inside a multirun it is logged and re-raised instead, so the launcher
    records this job as failed and goes on with the others."""
    with terminate_on_sigterm():
        try:
            yield
        except ConfigError as error:
            if multirun:
                log.error("wdexp: %s", error)
                raise
            print(f"wdexp: {error}", file=sys.stderr)
            sys.exit(2)


def run_main(main: Callable[[], object]) -> None:
    """The process entry: SIGTERM and Ctrl-C exit 143 and 130 (128 + signal) with one line."""
    global stop_signal
    try:
        with terminate_on_sigterm():
            main()
    except Terminated as stop:
        log.warning("wdexp: stopped by %s", signal.Signals(stop.signum).name)
        sys.exit(128 + stop.signum)
    except KeyboardInterrupt:
        stop_signal = signal.SIGINT
        log.warning("wdexp: interrupted")
        sys.exit(128 + signal.SIGINT)

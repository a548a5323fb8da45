"""How a job ends: signals become exceptions, and errors become an exit status and one line.

SIGTERM (what schedulers and ``kill`` send) is raised as :class:`Terminated`, like Ctrl-C's
KeyboardInterrupt, so the tracking layer's cleanup runs and marks the runs KILLED.
"""

from __future__ import annotations

import logging
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

from wdexp.config import ConfigError

log = logging.getLogger("wdexp")


class Terminated(BaseException):
    """SIGTERM arrived. A BaseException, like KeyboardInterrupt, so ``except Exception`` in
    library code cannot swallow it."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"received {signal.Signals(signum).name}")
        self.signum = signum


def _raise_terminated(signum: int, _frame: FrameType | None) -> None:
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
def cli_errors(*, exit_on_error: bool = True) -> Iterator[None]:
    """Turn a job's known endings into the exit a shell user expects.

    A ConfigError prints ``wdexp: <key> <requirement> (got <value>)`` and exits 2, no
    traceback. SIGTERM and Ctrl-C exit 143 and 130 (128 + signal number). With
    ``exit_on_error=False`` (inside a multirun) errors propagate so the launcher can record the
    job as failed and go on with the others.
    """
    try:
        with terminate_on_sigterm():
            yield
    except ConfigError as error:
        if not exit_on_error:
            log.error("wdexp: %s", error)
            raise
        print(f"wdexp: {error}", file=sys.stderr)
        sys.exit(2)
    except Terminated as stop:
        log.warning("wdexp: stopped by %s", signal.Signals(stop.signum).name)
        sys.exit(128 + stop.signum)
    except KeyboardInterrupt:
        log.warning("wdexp: interrupted")
        sys.exit(128 + signal.SIGINT)

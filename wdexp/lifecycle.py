"""How a process and its jobs end: errors become an exit status and one line, stop signals
(raised as exceptions by :mod:`wdexp.signals`) 128 + the signal's number."""

from __future__ import annotations

import atexit
import logging
import multiprocessing
import os
import signal
import sys
import threading
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from wdexp.signals import Terminated, interrupted, signals_as_exceptions
from wdexp.vocabulary import ConfigError, JobFailed

log = logging.getLogger("wdexp")


class Refused(SystemExit):
    """An exit before anything ran, with its one line: printed by :func:`run_main` on the
    command line, raised as :class:`wdexp.api.WdexpError` from Python."""

    def __init__(self, error: ConfigError | JobFailed) -> None:
        super().__init__(2 if isinstance(error, ConfigError) else 1)
        self.line = f"wdexp: {error}"


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


def stopped(stop: Terminated) -> int:
    """A stop signal's one line; the exit code it makes (128 + signal)."""
    log.warning("wdexp: stopped by %s", signal.Signals(stop.signum).name)
    return 128 + stop.signum


def _exit_code(main: Callable[[], object]) -> int:
    try:
        with signals_as_exceptions():
            main()
    except Terminated as stop:
        return stopped(stop)
    except KeyboardInterrupt:  # also raised by Python's own handler, outside ours
        interrupted()
        log.warning("wdexp: interrupted")
        return 128 + signal.SIGINT
    except Refused as refused:
        print(refused.line, file=sys.stderr)
        return refused.code
    except SystemExit as done:  # Hydra's exit after reporting an error, or sys.exit(2) above
        if done.code is None or isinstance(done.code, int):
            return done.code or 0
        print(done.code, file=sys.stderr)
        return 1
    except BaseException:
        traceback.print_exc()
        return 1
    return 0

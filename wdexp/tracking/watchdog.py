"""Tracking process: store operations with a bound, and their failures as one line.

Every store operation runs under :class:`Watchdog`: with no write finishing for
``tracking.timeout_s`` (a dead server MLflow keeps retrying, a hung disk), SIGALRM interrupts it
as :class:`StoreTimeout`. :func:`failure_of` turns whatever went wrong into what the training
process shows the user.
"""

from __future__ import annotations

import contextlib
import signal
import time
import traceback
from collections.abc import Callable, Iterator
from types import FrameType

from mlflow.exceptions import MlflowException

from wdexp.tracking import messages as m
from wdexp.tracking.artifacts import ArtifactsFailed
from wdexp.tracking.store import one_line
from wdexp.vocabulary import ConfigError, redact

PROGRESS_EVERY_S = 1.0  # during a long write, tell the training process it goes on


class StoreTimeout(Exception):
    """No store operation finished within ``tracking.timeout_s``."""


class Watchdog:
    """Interrupts a store operation that makes no progress (SIGALRM): every finished write
    re-arms it. Both sqlite's and the HTTP client's waits return to Python often enough for
    the alarm to raise."""

    def __init__(self, progress: Callable[[], None]) -> None:
        self.limit_s: float | None = None
        self._progress = progress
        self._last_progress = time.monotonic()
        signal.signal(signal.SIGALRM, self._fire)

    def _fire(self, _signum: int, _frame: FrameType | None) -> None:
        raise StoreTimeout(f"no answer for {self.limit_s:g} s (tracking.timeout_s)")

    @contextlib.contextmanager
    def armed(self, limit_s: float) -> Iterator[None]:
        self.limit_s = limit_s
        signal.setitimer(signal.ITIMER_REAL, limit_s)
        try:
            yield
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            self.limit_s = None

    def kick(self) -> None:
        if self.limit_s is not None:
            signal.setitimer(signal.ITIMER_REAL, self.limit_s)
        if time.monotonic() - self._last_progress >= PROGRESS_EVERY_S:
            self._last_progress = time.monotonic()
            self._progress()


_STORE_ERRORS = ("sqlalchemy", "sqlite3", "requests", "urllib3", "alembic")


def failure_of(error: BaseException, uri: str) -> m.Failure:
    """What the training process is told of ``error``: a ConfigError as itself, a store's
    error as one line naming the URI, anything else (a bug) with its traceback too."""
    if isinstance(error, ConfigError):
        return m.Failure(str(error), error.key, error.requirement, error.value, error.show_value)
    if isinstance(error, ArtifactsFailed):  # its message names the artifact location
        return m.Failure(str(error))
    reason = one_line(error)
    expected = (isinstance(error, MlflowException | OSError | StoreTimeout)
                or type(error).__module__.split(".")[0] in _STORE_ERRORS)
    return m.Failure(f"tracking.uri {redact(uri)} failed: {reason}",
                     detail="" if expected else redact(traceback.format_exc()))

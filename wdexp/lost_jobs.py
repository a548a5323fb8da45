"""What a sweep says of its jobs that did not finish: one line per lost job as it is lost, one
line at the sweep's end counting them, and no launcher traceback.

A job is *lost* when its process died before it returned (a worker killed by the out-of-memory
killer, a task cancelled by its scheduler): :func:`lost` tells it and makes its failed result.
A job that *failed* raised; wdexp's own errors (:class:`~wdexp.vocabulary.ConfigError`,
:class:`~wdexp.vocabulary.JobFailed`) were told by the job itself (:func:`wdexp.lifecycle.job`).
:func:`sweep_ended` runs after every job of the sweep has ended, in Hydra's basic sweeper as
wdexp ships it (``hydra_plugins/wdexp_basic_sweeper``).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence

from hydra.core.utils import JobReturn, JobStatus, filter_overrides
from hydra.errors import CompactHydraException

from wdexp.vocabulary import ConfigError, JobFailed

log = logging.getLogger("wdexp")


class JobLost(CompactHydraException):
    """A job whose process died before it returned; its line was logged when it was lost."""


class SweepFailed(SystemExit):
    """Some jobs did not finish: exit 1, their line told. (Hydra would add a hint about stack
    traces to any ``Exception``; it lets ``SystemExit`` through.)"""


def death(error: BaseException) -> str:
    """Why a worker's job never returned, in words: the signal that ended it, where known."""
    # submitit's, a Slurm state: "(state: FAILED)", "(state: CANCELLED by 0)"
    state = re.search(r"\(state: ([A-Z_]+)[^)]*\)", str(error))
    if state is not None:
        return f"its process ended without a result (state {state[1]})"
    codes = re.search(r"exit codes of the workers are \{([^}]*)\}", str(error))  # loky's
    if codes is None:
        return f"its worker failed ({type(error).__name__})"
    named = re.search(r"(SIG[A-Z]+)", codes[1])
    how = f"killed by {named[1]}" if named else f"exit code {codes[1]}"
    if named and named[1] == "SIGKILL":
        how += " (the out-of-memory killer's way)"
    return f"its worker process was {how}"


def lost(number: int, overrides: Sequence[str], error: BaseException) -> JobReturn:
    """The result of job #``number``, whose process died: its line now, a failure for the
    sweeper."""
    shown = " ".join(filter_overrides(overrides))
    log.error("wdexp: job #%d (%s) lost: %s", number, shown, death(error))
    return JobReturn(overrides=list(overrides), status=JobStatus.FAILED,
                     _return_value=JobLost(f"wdexp: job #{number} ({shown}) was lost"))


def sweep_ended(results: Sequence[JobReturn]) -> None:
    """After the sweep's last job: nothing if every job finished; else one line counting the
    jobs that did not, and exit 1 (``SweepFailed``). A job that failed with an error nobody has told
    yet (a bug, not wdexp's own error) is raised as Hydra raises it, with its traceback."""
    failed = [(number, result) for number, result in enumerate(results)
              if result.status != JobStatus.COMPLETED]
    if not failed:
        return
    for _, result in failed:
        if not isinstance(result._return_value, JobLost | ConfigError | JobFailed):
            result.return_value  # noqa: B018 - raises the job's error, as Hydra's sweeper does
    numbers = ", ".join(f"#{number}" for number, _ in failed)
    log.error("wdexp: %d of %d jobs did not finish (%s: their lines are above); the others ran "
              "to their end", len(failed), len(results), numbers)
    raise SweepFailed(1)

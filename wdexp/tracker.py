"""The training process's handle on the tracking process (:mod:`wdexp.writer`).

Importing MLflow and opening its store cost more than importing torch; done in this process they
would come before the first epoch. :func:`prestart` starts the tracking process instead, which
imports MLflow on another core while this one imports torch, and every store operation becomes a
message to it: calls wait for their reply (run ids, lookups, errors — a ConfigError is raised
here as if raised locally), metric batches do not. Messages are sent inside
:func:`~wdexp.lifecycle.critical`, so a signal never cuts one in half.
"""

from __future__ import annotations

import atexit
import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from multiprocessing.connection import Connection
from pathlib import Path
from typing import TYPE_CHECKING, Any

from wdexp.config import ConfigError, TrackingSpec, config_hash, flatten, redact
from wdexp.lifecycle import Terminated, critical
from wdexp.runs import ARM_TAG, CONFIG_HASH_TAG, RUN_KIND_TAG, SUMMARY_METRICS, RunSpec, Step

if TYPE_CHECKING:
    import pandas as pd

    from wdexp.study import FigureSpec, Study

SEND_EVERY_S = 0.5  # metric batches reach the store at least this often, plus its write time
SEND_STEPS = 256
FIGURE_POINTS = 2000  # per arm, evenly spaced, however long the run
# A finished pair's figures (matplotlib's first import included) take a few seconds at most.
EXIT_TIMEOUT_S = 60

log = logging.getLogger("wdexp")


class TrackingProcessError(RuntimeError):
    """The tracking process failed a request; the message carries its traceback."""


class Tracker:
    def __init__(self) -> None:
        requests_read, requests_write = os.pipe()
        replies_read, replies_write = os.pipe()
        env = {**os.environ,
               "PYTHONPATH": os.pathsep.join(filter(None, [str(Path(__file__).parent.parent),
                                                           os.environ.get("PYTHONPATH")]))}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "wdexp.writer", str(requests_read), str(replies_write)],
            pass_fds=(requests_read, replies_write), env=env, stdin=subprocess.DEVNULL)
        os.close(requests_read)
        os.close(replies_write)
        self._requests = Connection(requests_write, readable=False)
        self._replies = Connection(replies_read, writable=False)
        self.owner = os.getpid()
        self._used = False

    def send(self, op: str, *args: Any) -> None:
        self._used = True
        with critical():
            self._requests.send((op, args, False))

    def call(self, op: str, *args: Any) -> Any:
        self._used = True
        with critical():
            try:
                self._requests.send((op, args, True))
                kind, value = self._replies.recv()
            except (EOFError, BrokenPipeError, ConnectionResetError):
                raise TrackingProcessError(
                    f"the tracking process exited (code {self.process.poll()}); see its "
                    "messages above") from None
        if kind == "config_error":
            key, requirement, got, show_value = value
            raise ConfigError(key, requirement, got, show_value=show_value)
        if kind == "error":
            message, remote_traceback = value
            raise TrackingProcessError(f"{message}\n--- in the tracking process ---\n"
                                       f"{remote_traceback}")
        return value

    def close(self) -> None:
        """End the tracking process: it finishes what was sent, then sees the pipe close."""
        if not self._used:  # --help, --cfg, a config error: nothing to finish, no import to await
            self.process.kill()
        self._requests.close()
        try:
            self.process.wait(timeout=EXIT_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self._replies.close()


_tracker: Tracker | None = None


def get() -> Tracker:
    """This process's tracking process, started on first use. (A forked child gets its own.)"""
    global _tracker
    if _tracker is None or _tracker.owner != os.getpid():
        _tracker = Tracker()
        atexit.register(_tracker.close)
    return _tracker


def prestart() -> None:
    """Start the tracking process now, so MLflow loads while this process imports torch."""
    get()


def describe(study: Study, config: dict[str, Any],
             overrides: Sequence[str] = ()) -> tuple[RunSpec, dict[str, RunSpec]]:
    """The pair run and its arm runs for ``study``: names, params and tags.

    ``config`` is the loggable (already redacted) resolved config. Arm runs carry the same
    params as the pair, with the arm's effective ``optimizer.weight_decay``, so arms of any two
    pairs compare directly in the MLflow UI.
    """
    params = flatten(config)
    context = {
        RUN_KIND_TAG: "pair",
        "wdexp.model": study.labels["model"],
        "wdexp.optimizer": study.labels["optimizer"],
        "wdexp.overrides": " ".join(redact(o) for o in overrides),
        CONFIG_HASH_TAG: config_hash(config),
    }
    pair = RunSpec(study.name, params, context)
    arms = {}
    for arm in study.arms:
        arm_params = {**params, "optimizer.weight_decay": str(arm.weight_decay), "arm": arm.name}
        arm_tags = {**context, RUN_KIND_TAG: "arm", ARM_TAG: arm.name}
        arms[arm.name] = RunSpec(f"{arm.name} (wd={arm.weight_decay:g})", arm_params, arm_tags)
    return pair, arms


class History:
    """Each arm's records for the figures: every ``stride``-th step (the stride doubles as a run
    grows, so at most ~:data:`FIGURE_POINTS` are kept) and the last."""

    def __init__(self) -> None:
        self.rows: dict[str, list[tuple[int, dict[str, float]]]] = {}
        self.last: dict[str, tuple[int, dict[str, float]]] = {}
        self._stride = 1

    def add(self, step: Step) -> None:
        for arm, values in step.metrics.items():
            self.last[arm] = (step.epoch, values)
            if step.epoch % self._stride:
                continue
            rows = self.rows.setdefault(arm, [])
            rows.append((step.epoch, values))
            if len(rows) > FIGURE_POINTS:
                self._stride *= 2
                self.rows = {a: [r for r in kept if r[0] % self._stride == 0]
                             for a, kept in self.rows.items()}

    def frames(self) -> dict[str, pd.DataFrame]:
        """Each arm's kept records and its last, as a DataFrame indexed by step."""
        import pandas as pd  # not at import time: this module loads before the tracking process

        frames = {}
        for arm, (epoch, values) in self.last.items():
            rows = self.rows.get(arm, [])
            if not rows or rows[-1][0] != epoch:
                rows = [*rows, (epoch, values)]
            frames[arm] = pd.DataFrame([v for _, v in rows],
                                       index=pd.Index([e for e, _ in rows], name="step"))
        return frames


class PairLog:
    """The training side of an open pair run: steps go to the tracking process in batches and
    into a :class:`History` for the figures."""

    def __init__(self, tracker: Tracker, pair_id: str, arms: Sequence[str]) -> None:
        self.tracker, self.pair_id, self.arms = tracker, pair_id, arms
        self.history = History()
        self.diverged_at: dict[str, int] = {}
        self._steps: list[Step] = []
        self._last_send = time.monotonic()

    def log_step(self, step: Step) -> None:
        self._steps.append(step)
        self.history.add(step)
        self.diverged_at.update(dict.fromkeys(step.diverged, step.epoch))
        if (len(self._steps) >= SEND_STEPS or step.diverged
                or time.monotonic() - self._last_send >= SEND_EVERY_S):
            self.send()

    def send(self) -> None:
        steps, self._steps = self._steps, []  # a signal deferred by send() raises as it returns
        self._last_send = time.monotonic()
        if steps:
            self.tracker.send("log", self.pair_id, steps)

    def figures(self, spec: FigureSpec) -> dict[str, bytes]:
        """``figures/*.png`` of the pair, drawn here while the tracking process writes."""
        import pandas as pd

        from wdexp.figures import PairPlot, pair_figures

        predicted = None
        if spec.predicted is not None:
            predicted = {arm: pd.DataFrame(dict(columns)).set_index("step")
                         for arm, columns in spec.predicted.items()}
        plot = PairPlot(spec.title, self.history.frames(), spec.weight_decay, predicted,
                        spec.surface)
        return {f"figures/{name}": png for name, png in pair_figures(plot).items()}

    def outcome(self) -> str:
        """One line: each arm's final loss and weight norm, or where it diverged."""
        parts = []
        for arm in self.arms:
            values = self.history.last.get(arm, (0, {}))[1]
            finals = " ".join(f"{name}={values[name]:.6g}"
                              for name in SUMMARY_METRICS if name in values)
            if arm in self.diverged_at:
                finals += f" (diverged at step {self.diverged_at[arm]})"
            parts.append(f"{arm}: {finals}")
        return "; ".join(parts)


def _status_for(error: BaseException) -> str:
    return "KILLED" if isinstance(error, KeyboardInterrupt | Terminated) else "FAILED"


@contextmanager
def pair_run(spec: TrackingSpec, pair: RunSpec, arms: Mapping[str, RunSpec],
             files: Mapping[str, str], figures: FigureSpec | None = None,
             parent_id: str | None = None) -> Iterator[PairLog]:
    """Open the pair run (under a sweep run, if given) and its arm runs; close them all with an
    honest status: FINISHED (with summary metrics and figures), FAILED or KILLED. The figures
    are drawn here while the tracking process writes the last metrics and the summary."""
    tracker = get()
    pair_id, _ = tracker.call("open_pair", spec, pair, dict(arms), dict(files), parent_id)
    log.info("pair run %s started: %s (experiment %s at %s)", pair_id, pair.name,
             spec.experiment, redact(spec.uri))
    record = PairLog(tracker, pair_id, list(arms))
    try:
        yield record
        record.send()
        tracker.send("summarize", pair_id)
        files = record.figures(figures) if figures is not None else {}
        tracker.call("close_pair", pair_id, "FINISHED", files)
    except BaseException as error:
        status = _status_for(error)
        log.error("pair run %s ended %s: %s", pair_id, status, error or type(error).__name__)
        with critical():
            record.send()
            tracker.call("close_pair", pair_id, status, {})
        raise
    log.info("pair run %s finished: %s", pair_id, record.outcome())
    if spec.uri.startswith(("http://", "https://")):
        experiment_id = tracker.call("connect", spec)
        log.info("view it at %s/#/experiments/%s/runs/%s", redact(spec.uri).rstrip("/"),
                 experiment_id, pair_id)

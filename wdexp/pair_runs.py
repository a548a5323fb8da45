"""Training process: pair runs' lives — open one, stream its steps, draw its figures, end it
with an honest status (FINISHED, FAILED or KILLED) whatever stops the job.

Each :class:`PairRun` holds its own run ids, batches, history and end status, so one process
can hold many open pairs at once (a stacked sweep); they share the process's tracking process
(:mod:`wdexp.tracking.client`), which writes each pair's batches to the store.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from wdexp.config import flatten
from wdexp.signals import Terminated, critical
from wdexp.tracking import client
from wdexp.tracking.records import RunSpec, Step
from wdexp.vocabulary import (
    ARM_TAG,
    CONFIG_HASH_TAG,
    DECAY,
    FIGURE_POINTS,
    GROUPS,
    JOB,
    LR,
    OVERRIDES_TAG,
    RUN_KIND_TAG,
    SEED,
    SUMMARY_METRICS,
    WEIGHT_DECAY,
    TrackingSpec,
    objective,
    override_key,
    redact,
    short_key,
    source_tags,
    tag,
)

if TYPE_CHECKING:
    import pandas as pd

    from wdexp.figures import Drawing, PairPlot
    from wdexp.study import FigureSpec, Study

SEND_EVERY_S = 0.5  # metric batches reach the store at least this often, plus its write time
SEND_STEPS = 256
# Overrides a pair's name already shows (study.name), or that change where, not what, it runs.
NAMED = {*GROUPS, LR, WEIGHT_DECAY, "optimizer.decay_mode", SEED, "experiment", "resume",
         "device"}
UNNAMED_PREFIXES = ("tracking.", "paths.", "hydra.", "hydra/", "arms.")
ARM_PREFIXES = ("optimizer.", "scheduler.")  # what each arm's params state as that arm ran them

log = logging.getLogger("wdexp")


def describe(study: Study, overrides: Sequence[str] = (),
             job: int | None = None) -> tuple[RunSpec, dict[str, RunSpec]]:
    """The pair run and its arm runs for ``study``: names, params and tags.

    Arm runs carry the same params as the pair, with the arm's effective ``optimizer.*`` and
    ``scheduler.*``, so arms of any two pairs compare directly in the MLflow UI; both carry
    what identifies the model's data (``data.sha256``, …). The pair's name adds every override
    its study name does not show (``epochs=100``), so the pairs of any sweep are told apart by
    name. ``job`` is the pair's job number in its multirun.
    """
    params = {**study.config_params, **study.params()}
    shown = [redact(o) for o in overrides]
    extra = [f"{short_key(override_key(o))}={o.split('=', 1)[1]}" for o in shown
             if "=" in o and override_key(o) not in NAMED
             and not override_key(o).startswith(UNNAMED_PREFIXES)]
    context = {
        RUN_KIND_TAG: "pair",
        **{tag(group): study.labels[group] for group in GROUPS if group in study.labels},
        OVERRIDES_TAG: " ".join(shown),
        CONFIG_HASH_TAG: study.config_hash,
        **({} if job is None else {tag(JOB): str(job)}),
        **source_tags(*shown),
    }
    pair = RunSpec(" ".join([study.name, *extra]), params, context)
    arms = {}
    for arm in study.arms:
        arm_overrides = shown
        if arm.weight_decay != study.optimizer.weight_decay:  # the baseline: what it really ran
            arm_overrides = [*(o for o in shown if override_key(o) != WEIGHT_DECAY),
                             f"{WEIGHT_DECAY}={arm.weight_decay:g}"]
        arm_params = {**{k: v for k, v in params.items() if not k.startswith(ARM_PREFIXES)},
                      **flatten(_present(arm.spec.config)),
                      WEIGHT_DECAY: str(arm.weight_decay), "arm": arm.name}
        arm_tags = {**context, RUN_KIND_TAG: "arm", ARM_TAG: arm.name,
                    OVERRIDES_TAG: " ".join(arm_overrides)}
        arms[arm.name] = RunSpec(f"{arm.name} (wd={arm.weight_decay:g})", arm_params, arm_tags)
    return pair, arms


def _present(groups: Mapping[str, Any]) -> dict[str, Any]:
    return {group: node for group, node in groups.items() if node is not None}


@dataclass(frozen=True)
class Outcome:
    """What a finished (or skipped) pair gives its caller: its run id and its objective, the
    decay arm's final ``test_loss`` or ``loss`` (:func:`wdexp.vocabulary.objective`); NaN
    where the decay arm diverged — a sweeper must not rank it."""

    pair_id: str
    objective: str
    value: float

    @classmethod
    def stored(cls, pair_id: str, metrics: Mapping[str, float]) -> Outcome:
        """The outcome of a finished pair run from its summary metrics in the store."""
        prefix = f"{DECAY}.final_"
        name = objective({k.removeprefix(prefix) for k in metrics if k.startswith(prefix)})
        diverged = metrics.get(f"{DECAY}.diverged", 0.0) > 0
        return cls(pair_id, name,
                   math.nan if diverged else float(metrics.get(prefix + name, math.nan)))


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


class PairRun:
    """The training side of one open pair run: steps go to the tracking process in batches and
    into a :class:`History` for the figures; :meth:`finish` or :meth:`end` closes it, once."""

    def __init__(self, spec: TrackingSpec, pair: RunSpec, arms: Mapping[str, RunSpec],
                 files: Mapping[str, str], figures: FigureSpec | None = None,
                 parent_id: str | None = None) -> None:
        """Open the pair run (under a sweep run, if given) and its arm runs."""
        self.spec, self.name, self.figure_spec = spec, pair.name, figures
        self.tracker = client.get()
        self.pair_id, arm_ids = self.tracker.open_pair(spec, pair, dict(arms), dict(files),
                                                       parent_id)
        self.arm_ids = dict(arm_ids)
        self.status: str | None = None  # FINISHED, FAILED or KILLED once ended
        self.history = History()
        self.diverged_at: dict[str, int] = {}
        self.last_step: int | None = None
        self._steps: list[Step] = []
        self._stamps: list[int] = []
        self._last_send = time.monotonic()
        log.info("pair run %s started: %s (experiment %s at %s)", self.pair_id, pair.name,
                 spec.experiment, redact(spec.uri))

    def log_step(self, step: Step) -> None:
        # A stop signal lands before or after a step, never inside: the step is buffered (and
        # so written by end()) exactly when last_step names it.
        with critical():
            self._steps.append(step)
            self._stamps.append(int(time.time() * 1000))
            self.history.add(step)
            self.last_step = step.epoch
            self.diverged_at.update(dict.fromkeys(step.diverged, step.epoch))
        if (len(self._steps) >= SEND_STEPS or step.diverged
                or time.monotonic() - self._last_send >= SEND_EVERY_S):
            self.send()

    def send(self) -> None:
        with critical():  # steps leave the buffer only into the pipe's queue: none lost, none twice
            steps, stamps = self._steps, self._stamps
            self._steps, self._stamps = [], []
            if steps:
                self.tracker.queue_steps(self.pair_id, steps, stamps)
        self._last_send = time.monotonic()
        if steps:
            self.tracker.keep_pace()

    def finish(self, drawing: Drawing | None = None) -> Outcome:
        """End the pair FINISHED, with its summary metrics and figures (drawn here while the
        tracking process writes the last metrics and the summary, or by ``drawing``, the
        :meth:`plot` given to :class:`wdexp.figures.Drawers`); what fails on the way ends it as
        :meth:`end` does, and is raised."""
        try:
            self.send()
            self.tracker.summarize(self.pair_id)
            if drawing is not None:
                figures = drawing.result()
            elif (plot := self.plot()) is not None:
                from wdexp.figures import pair_figures

                figures = pair_figures(plot)
            else:
                figures = {}
            drawn = {f"figures/{name}": png for name, png in figures.items()}
            self.tracker.close_pair(self.spec, self.pair_id, list(self.arm_ids.values()),
                                    "FINISHED", drawn)
        except BaseException as error:
            self.end(error)
            raise
        self.status = "FINISHED"
        log.info("pair run %s finished: %s", self.pair_id, self.summary())
        if self.spec.uri.startswith(("http://", "https://")):
            experiment_id = self.tracker.connect(self.spec)
            log.info("view it at %s/#/experiments/%s/runs/%s",
                     redact(self.spec.uri).rstrip("/"), experiment_id, self.pair_id)
        return self.outcome()

    def end(self, error: BaseException) -> None:
        """End the pair's runs after ``error``: KILLED for a stop signal, else FAILED. What was
        trained is written first, unless the tracking side itself failed; a tracking process
        that died is replaced to end them."""
        status, reason = _status_for(error), _reason(error)
        self.status = status
        trained = "before step 0" if self.last_step is None else f"after step {self.last_step}"
        # A tracking failure is the job's one error line (wdexp.lifecycle); others are said here.
        tracking_failed = isinstance(error, client.TrackingFailed)
        log.error("pair run %s ended %s %s%s", self.pair_id, status, trained,
                  "" if tracking_failed else f": {reason}")
        try:
            if not tracking_failed:
                self.send()
            client.get().close_pair(self.spec, self.pair_id, list(self.arm_ids.values()),
                                    status, failure=reason)
        except client.TrackingFailed as failed:
            log.error("wdexp: could not end pair run %s (%s); a later job into this experiment "
                      "will end it", self.pair_id, failed)

    def plot(self) -> PairPlot | None:
        """What the pair's figures show, from the history kept here; None for a pair that
        draws none."""
        import pandas as pd

        from wdexp.figures import PairPlot

        spec = self.figure_spec
        if spec is None:
            return None
        predicted = None
        if spec.predicted is not None:
            predicted = {arm: pd.DataFrame(dict(columns)).set_index("step")
                         for arm, columns in spec.predicted.items()}
        return PairPlot(spec.title, self.history.frames(), spec.weight_decay, predicted,
                        spec.surface, spec.equilibrium)

    def outcome(self) -> Outcome:
        values = self.history.last.get(DECAY, (0, {}))[1]
        name = objective(values)
        value = math.nan if DECAY in self.diverged_at else values.get(name, math.nan)
        return Outcome(self.pair_id, name, float(value))

    def summary(self) -> str:
        """One line: each arm's final loss and weight norm, or where it diverged."""
        parts = []
        for arm in self.arm_ids:
            values = self.history.last.get(arm, (0, {}))[1]
            finals = " ".join(f"{name}={values[name]:.6g}"
                              for name in SUMMARY_METRICS if name in values)
            if arm in self.diverged_at:
                finals += f" (diverged at step {self.diverged_at[arm]})"
            parts.append(f"{arm}: {finals}")
        return "; ".join(parts)


def _status_for(error: BaseException) -> str:
    return "KILLED" if isinstance(error, KeyboardInterrupt | Terminated) else "FAILED"


def _reason(error: BaseException) -> str:
    return redact(" ".join(str(error).split())) or type(error).__name__


@contextmanager
def pair_run(run: PairRun) -> Iterator[PairRun]:
    """An open pair run around a block that trains it: FINISHED when the block ends, FAILED or
    KILLED (and the error raised on) when it raises; :attr:`PairRun.status` says which."""
    try:
        yield run
    except BaseException as error:
        run.end(error)
        raise
    run.finish()

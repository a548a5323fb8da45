"""``hydra/sweeper=optuna``: a search instead of a grid, each trial one pair run of the sweep.

Hydra's own Optuna plugin (``hydra-optuna-sweeper`` 1.3.0) pins ``optuna<3``; on this stack
(SQLAlchemy 2) that Optuna cannot create its sqlite storage, a trial returning NaN (a diverged
run) crashes the whole sweep, and there is no pruned state. So wdexp drives the current Optuna
through ask-and-tell behind the same interface: ``hydra.sweeper.params`` in Hydra's override
grammar (``tag(log, interval(1e-5, 1))``, ``interval(a, b)``, ``choice(…)``, ``range(…)``; any
other value is passed to every trial), ``n_trials``, ``n_jobs`` (trials per batch handed to the
launcher, so ``hydra/launcher=joblib`` runs them in parallel), ``direction``, ``sampler`` (any
``optuna.samplers`` class by ``_target_``; TPE seeded from ``seed`` by default), ``storage``,
``study_name``, ``max_failure_rate``. wdexp adds ``objective``.

Each trial's objective is what its job returns (``wdexp.train.main``, as Hydra's sweepers
expect): the decay arm's final test loss for models with test data, its final loss otherwise;
``hydra.sweeper.objective`` names any other ``pair_table`` column, read from the trial's pair
run, which the sweep table finds by its job number. A trial whose decay arm diverged is told
PRUNED — the sampler learns that region is bad — and one whose job failed is told FAIL;
neither gets a made-up value. When the search ends the sweep run gets the best parameters
(``best.<key>`` params, ``best_value``), ``trials.csv`` and ``figures/optimization_history.png``.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, Override, RangeSweep
from omegaconf import DictConfig

from wdexp.vocabulary import DECAY, JOB, ConfigError, objective_column, redact

log = logging.getLogger("wdexp")

TARGET = "hydra_plugins.wdexp_optuna_sweeper.optuna_sweeper.OptunaSweeper"
PRUNED, FAIL, COMPLETE = "PRUNED", "FAIL", "COMPLETE"
DIRECTIONS = ("minimize", "maximize")
KNOWN = {"_target_", "params", "n_trials", "n_jobs", "direction", "sampler", "storage",
         "study_name", "max_failure_rate", "objective"}


@dataclass(frozen=True)
class Dimension:
    """One searched key: a float interval (log-scaled or not) or a list of choices."""

    key: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: tuple[Any, ...] = ()

    def distribution(self) -> Any:
        from optuna.distributions import CategoricalDistribution, FloatDistribution

        if self.choices:
            return CategoricalDistribution(self.choices)
        return FloatDistribution(self.low, self.high, log=self.log)


@dataclass(frozen=True)
class SearchSpec:
    dimensions: tuple[Dimension, ...]
    fixed: tuple[str, ...]  # overrides every trial gets
    n_trials: int
    n_jobs: int
    direction: str
    objective: str | None
    storage: str | None
    study_name: str | None
    max_failure_rate: float


def _dimension(override: Override, where: str) -> Dimension:
    sweep = override.value()
    key = override.key_or_group
    if isinstance(sweep, IntervalSweep):
        low, high = float(sweep.start), float(sweep.end)
        log_scale = "log" in sweep.tags
        if not low < high:
            raise ConfigError(where, "needs interval(low, high) with low < high",
                              override.input_line)
        if log_scale and low <= 0:
            raise ConfigError(where, "is log-scaled: its interval must be above 0",
                              override.input_line)
        return Dimension(key, low, high, log_scale)
    if isinstance(sweep, ChoiceSweep):
        return Dimension(key, choices=tuple(sweep.list))
    if isinstance(sweep, RangeSweep):
        values = list(range(int(sweep.start), int(sweep.stop), int(sweep.step or 1)))
        if not values:
            raise ConfigError(where, "is an empty range", override.input_line)
        return Dimension(key, choices=tuple(values))
    raise ConfigError(where, "must be interval(…), tag(log, interval(…)), choice(…) or range(…)",
                      override.input_line)


def parse(sweeper: DictConfig, arguments: Sequence[str]) -> SearchSpec:
    """The search as configured, or a ConfigError naming the ``hydra.sweeper`` key."""
    unknown = sorted(set(sweeper) - KNOWN)
    if unknown:
        raise ConfigError(f"hydra.sweeper.{unknown[0]}", "is not a setting of the optuna sweeper "
                          f"(known: {', '.join(sorted(KNOWN - {'_target_'}))})", show_value=False)
    parser = OverridesParser.create()
    lines = [(f"hydra.sweeper.params.{key}", f"{key}={value}")
             for key, value in (sweeper.get("params") or {}).items()]
    lines += [(line.split("=", 1)[0], line) for line in arguments]
    dimensions, fixed = {}, []
    for where, line in lines:
        try:
            override = parser.parse_overrides([line])[0]
        except Exception as error:  # Hydra's grammar errors are several lines
            raise ConfigError(where, f"cannot be parsed: {str(error).splitlines()[0]}",
                              line) from None
        if override.is_sweep_override():
            dimensions[override.key_or_group] = _dimension(override, where)
        else:
            fixed.append(line)
    if not dimensions:
        raise ConfigError("hydra.sweeper.params", "names nothing to search, e.g. "
                          "optimizer.weight_decay: tag(log, interval(1e-5, 1))", show_value=False)
    spec = SearchSpec(
        tuple(dimensions.values()), tuple(fixed), sweeper.get("n_trials", 20),
        sweeper.get("n_jobs", 1), sweeper.get("direction", "minimize"),
        sweeper.get("objective"), sweeper.get("storage"), sweeper.get("study_name"),
        sweeper.get("max_failure_rate", 1.0))
    for key, value in (("n_trials", spec.n_trials), ("n_jobs", spec.n_jobs)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ConfigError(f"hydra.sweeper.{key}", "must be a whole number ≥ 1", value)
    if spec.direction not in DIRECTIONS:
        raise ConfigError("hydra.sweeper.direction", "must be minimize or maximize",
                          spec.direction)
    if not isinstance(spec.max_failure_rate, int | float) or not 0 <= spec.max_failure_rate <= 1:
        raise ConfigError("hydra.sweeper.max_failure_rate", "must be between 0 and 1",
                          spec.max_failure_rate)
    sampler = sweeper.get("sampler")
    if sampler is not None and not (isinstance(sampler, DictConfig) and "_target_" in sampler):
        raise ConfigError("hydra.sweeper.sampler", "needs a _target_, e.g. "
                          "optuna.samplers.TPESampler", show_value=False)
    return spec


@dataclass(frozen=True)
class Told:
    state: str
    value: float | None
    why: str = ""


def outcome(row: Mapping[str, Any] | None, value: Any, failure: str | None,
            objective: str) -> Told:
    """What Optuna is told of one trial: from its job (``value`` returned, or ``failure``
    raised) and its pair run's ``row`` in the sweep table."""
    if failure is not None:
        return Told(FAIL, None, failure)
    if row is None:
        return Told(FAIL, None, "no pair run in the store")
    if row.get("status") != "FINISHED":
        return Told(FAIL, None, f"the pair run ended {row.get('status')}")
    if row.get(f"{DECAY}.diverged"):
        return Told(PRUNED, None, "the decay arm diverged")
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return Told(FAIL, None, f"the pair run has no {objective}")
    if not math.isfinite(value):
        return Told(PRUNED, None, f"{objective} is not finite")
    return Told(COMPLETE, float(value))


class Search:
    """One search: batches of trials asked of Optuna, launched by Hydra's launcher, told back
    from the store."""

    def __init__(self, sweeper: Any) -> None:
        # The plugin (hydra_plugins.wdexp_optuna_sweeper): its settings, the sampler Hydra
        # built, and what Hydra's setup gave it.
        self.sweeper = sweeper
        self.config: DictConfig = sweeper.config

    def run(self, arguments: Sequence[str]) -> list[Sequence[Any]]:
        import optuna
        from hydra.core.plugins import Plugins

        from wdexp.analysis import pair_table
        from wdexp.config import parse_tracking
        from wdexp.sweep_folder import sweep_run
        from wdexp.tracking import client, store

        spec = parse(self.sweeper.settings, arguments)
        launcher = Plugins.instance().instantiate_launcher(
            hydra_context=self.sweeper.hydra_context, task_function=self.sweeper.task_function,
            config=self.config)
        optuna.logging.set_verbosity(optuna.logging.WARNING)  # wdexp logs each trial itself
        study = optuna.create_study(storage=spec.storage, sampler=self.sweeper.sampler,
                                    study_name=spec.study_name, direction=spec.direction,
                                    load_if_exists=True)
        space = {d.key: d.distribution() for d in spec.dimensions}
        tracking = parse_tracking(self.config)
        sweep_id = sweep_run(tracking, str(self.config.hydra.sweep.dir))
        keys = [d.key for d in spec.dimensions]
        objective = spec.objective
        returns: list[Sequence[Any]] = []
        done = 0
        while done < spec.n_trials:
            trials = [study.ask(space) for _ in range(min(spec.n_jobs, spec.n_trials - done))]
            batch = [tuple(f"{k}={v!r}" if isinstance(v, str) else f"{k}={v}"
                           for k, v in trial.params.items()) + spec.fixed for trial in trials]
            self.sweeper.validate_batch_is_legal(batch)
            results = launcher.launch(batch, initial_job_idx=done)
            returns.append(results)
            # Each job's pair run carries its job number: the trial's row, read as any reader
            # would once the batch has ended.
            rows: dict[int, dict[str, Any]] = {}
            if sweep_id is not None:
                with store.reading(tracking) as results_store:
                    table = pair_table(results_store, sweep_id, [*keys, JOB])
                rows = {int(r[JOB]): r for r in table.to_dict("records")
                        if isinstance(r[JOB], int | float) and not math.isnan(r[JOB])}
                objective = spec.objective or objective_column(table.columns)
            objective = objective or objective_column(())
            failed = 0
            for number, (trial, result) in enumerate(zip(trials, results, strict=True), done):
                value, failure = None, None
                try:  # a failed job's return_value raises what the job raised
                    value = result.return_value
                except Exception as error:
                    failure = _one_line(error)
                row = rows.get(number)
                if row is not None:
                    trial.set_user_attr("pair_run_id", row["run_id"])
                    if spec.objective:  # not the job's own objective: read from its pair
                        value = row.get(spec.objective)
                told = outcome(row, value, failure, objective)
                if told.why:
                    trial.set_user_attr("why", told.why)
                study.tell(trial, told.value, state=_state(told.state))
                failed += told.state == FAIL
                log.info("trial %d: %s → %s", trial.number,
                         " ".join(f"{k}={v}" for k, v in trial.params.items()),
                         f"{objective}={told.value:.6g}" if told.value is not None
                         else f"{told.state} ({told.why})")
            done += len(trials)
            if failed / len(trials) > spec.max_failure_rate:
                log.error("wdexp: %d of %d trials in a batch failed (hydra.sweeper."
                          "max_failure_rate=%g): the search stops", failed, len(trials),
                          spec.max_failure_rate)
                break
        if sweep_id is not None:
            client.get().annotate(tracking, sweep_id, *record(study, objective, keys))
        return returns


def _state(name: str) -> Any:
    from optuna.trial import TrialState

    return None if name == COMPLETE else TrialState[name]


def _one_line(error: BaseException) -> str:
    """A failed trial's reason as kept in trials.csv: one line, passwords out."""
    text = " ".join(str(error).split()) or type(error).__name__
    return redact(text)[:300]


def record(study: Any, objective: str, keys: Sequence[str],
           ) -> tuple[dict[str, str], dict[str, float], dict[str, str | bytes]]:
    """What the sweep run keeps of a search: the best trial's parameters and value (params
    ``best.<key>``, metric ``best_value``), every trial (``trials.csv``) and Optuna's
    optimisation-history figure."""
    import matplotlib.pyplot as plt
    import optuna
    from optuna.trial import TrialState

    from wdexp.figures.canvas import png

    states = [t.state for t in study.trials]
    metrics = {"trials": float(len(states)),
               **{f"trials_{s.name.lower()}": float(states.count(s))
                  for s in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)}}
    params = {"search.objective": objective, "search.direction": study.direction.name.lower()}
    files: dict[str, str | bytes] = {"trials.csv": study.trials_dataframe().to_csv(index=False)}
    if TrialState.COMPLETE in states:
        best = study.best_trial
        metrics["best_value"] = float(best.value)
        params.update({f"best.{key}": str(best.params[key]) for key in keys})
        params["best.pair_run_id"] = str(best.user_attrs.get("pair_run_id"))
        log.info("best of %d trials: %s → %s=%.6g (pair run %s)", len(states),
                 " ".join(f"{k}={v}" for k, v in best.params.items()), objective, best.value,
                 best.user_attrs.get("pair_run_id"))
        with warnings.catch_warnings():  # Optuna marks its matplotlib plots experimental
            warnings.simplefilter("ignore")
            axes = optuna.visualization.matplotlib.plot_optimization_history(
                study, target_name=objective)
        files["figures/optimization_history.png"] = png(axes.figure)
        plt.close(axes.figure)  # Optuna draws through pyplot, which keeps every figure
    else:
        log.warning("wdexp: no trial of %d completed: no best value", len(states))
    return params, metrics, files

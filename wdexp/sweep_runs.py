"""Hydra multirun → one MLflow **sweep run**, with every job's pair run nested under it.

:class:`SweepCallback` is registered in ``conf/config.yaml``. When a multirun starts — in the
launching process, before any worker exists — it connects to the store, which creates a new
sqlite schema and the experiment exactly once (parallel workers then never race the migration),
and opens the sweep run (tag ``wdexp.kind=sweep``), tagged with the sweep directory: each job, in
whatever process or machine a launcher puts it, finds its parent by that tag. When the multirun
ends it logs ``summary.csv`` (one row per pair) and the sweep figures — drawn once, not per job —
and ends the sweep run FINISHED if every job finished, FAILED otherwise (KILLED on a signal, with
the summary but no figures, so that a Ctrl-C ends it within seconds).
Hydra skips ``on_multirun_end`` when a job failed, so the same close also runs at exit, or when
``wdexp.sweep`` returns (:func:`close_unclosed`). The store work itself happens in the tracking
process (:mod:`wdexp.tracking`).
"""

from __future__ import annotations

import atexit
import contextlib
import logging
from dataclasses import dataclass
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from wdexp import search, signals, study
from wdexp.config import parse_tracking
from wdexp.lifecycle import Refused
from wdexp.results import preload
from wdexp.sweep_folder import SweepFolder
from wdexp.tracking import client
from wdexp.tracking.records import RunSpec
from wdexp.vocabulary import (
    ARMS,
    DECAY,
    OVERRIDES_TAG,
    RUN_KIND_TAG,
    ConfigError,
    TrackingSpec,
    objective_column,
    redact,
    short_key,
    source_tags,
)

log = logging.getLogger("wdexp")
MAX_NAME = 250
MAX_VALUES = 24  # characters of one key's swept values in the sweep run's name
# Launchers that run the jobs in the launching process itself (Hydra's default, wdexp's stacked)
IN_PROCESS = ("hydra._internal.core_plugins.basic_launcher.BasicLauncher",
              "hydra_plugins.wdexp_launchers.stacked_launcher.StackedLauncher")


def swept_overrides(task_overrides: list[str]) -> dict[str, str]:
    """``{key: "v1,v2,…"}`` for each override that sweeps (a list, range(), glob(), …)."""
    parsed = OverridesParser.create().parse_overrides(task_overrides)
    return {o.key_or_group: o.input_line.split("=", 1)[1]
            for o in parsed if o.is_sweep_override() and o.input_line}


def sweep_name(swept: dict[str, str]) -> str:
    """``sweep wd=0,0.001,0.01,0.1 lr=0.01,0.1``: short keys, long value lists as first…last with
    their count, so sweeps differ within the first characters the MLflow UI shows."""
    parts = []
    for key, values in swept.items():
        listed = values.split(",")
        if len(values) > MAX_VALUES and len(listed) > 2:
            values = f"{listed[0]}…{listed[-1]} ({len(listed)})"
        parts.append(f"{short_key(key)}={values}")
    return " ".join(["sweep", *parts])[:MAX_NAME]


@dataclass
class _OpenSweep:
    spec: TrackingSpec
    run_id: str
    keys: list[str]
    resume: bool
    folder: SweepFolder


_UNCLOSED: set[SweepCallback] = set()


def close_unclosed(status: str = "FAILED") -> None:
    """End every sweep run this process opened that Hydra did not close (a sweep with a failed
    job skips ``on_multirun_end``): KILLED instead where a stop signal ended it."""
    for callback in list(_UNCLOSED):
        callback._close(status)


def discard_unclosed() -> None:
    """Delete every sweep run this process opened that nothing ran under yet: a launcher that
    refuses a sweep before its first job leaves the store as it was."""
    for callback in list(_UNCLOSED):
        callback._close("FAILED", discard=True)


class SweepCallback(Callback):
    def __init__(self) -> None:
        self._open: _OpenSweep | None = None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        # Hydra turns a callback's exception into a warning and launches the jobs anyway; a
        # store the sweep cannot use stops the multirun here, with its one line.
        try:
            self._open_sweep(config)
        except (ConfigError, client.TrackingFailed) as error:
            raise Refused(error) from None

    def _open_sweep(self, config: DictConfig) -> None:
        tracker = client.get()
        spec = parse_tracking(config)
        task = [str(o) for o in config.hydra.overrides.task]
        if config.hydra.sweeper.get("_target_") == search.TARGET:
            search.parse(config.hydra.sweeper, task)  # a bad search space: before any run
        # Swept keys come from the command line and from hydra.sweeper.params (experiments).
        params = config.hydra.sweeper.get("params") or {}
        swept = {**{str(k): str(v) for k, v in params.items()}, **swept_overrides(task)}
        name = sweep_name({key: redact(values) for key, values in swept.items()})
        shown = [redact(o) for o in task]
        tags = {RUN_KIND_TAG: "sweep", OVERRIDES_TAG: " ".join(shown),
                **source_tags("-m", *shown)}
        params = {f"sweep.{key}": values for key, values in swept.items()}
        folder = SweepFolder(str(config.hydra.sweep.dir))  # before any run: a folder in use
        # The tracking process opens the store and the sweep run (MLflow's import, a new
        # store's schema: seconds) while a thread here loads what comes next: torch's compiler
        # stack where the jobs train in this process, then what the sweep's end reads with
        # (MLflow, pandas), so that neither the first job nor the end — a Ctrl-C's too — waits.
        preload(study.warm_up if config.hydra.launcher.get("_target_") in IN_PROCESS else None)
        run_id = tracker.open_sweep(spec, RunSpec(name, params, tags),
                                    str(config.hydra.sweep.dir))
        folder.hand_over(run_id)
        self._open = _OpenSweep(spec, run_id, list(swept), config.get("resume") is True, folder)
        _UNCLOSED.add(self)
        atexit.register(self._close, "FAILED")
        log.info("sweep run %s started: %s", run_id, name)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        self._close("FINISHED")

    def _close(self, status: str, discard: bool = False) -> None:
        """End the sweep run with ``status`` (or delete it, with ``discard``); release the
        folder."""
        if self._open is None:
            return
        sweep, self._open = self._open, None
        _UNCLOSED.discard(self)
        try:
            if discard:
                client.get().delete_sweep(sweep.spec, sweep.run_id)
            else:
                self._end(sweep, status)
        finally:
            sweep.folder.release()

    def _end(self, sweep: _OpenSweep, status: str) -> None:
        # MLflow and pandas: loaded by the launching process alone (a thread began at the
        # sweep's start), never in a job's start-up.
        from wdexp.analysis import pair_table, summary
        from wdexp.tracking import store

        if signals.stop_signal is not None:
            status = "KILLED"
        tracker = client.get()
        try:  # every job has ended: its pair is in the store, read here like any reader would
            with store.reading(sweep.spec) as results:
                table = pair_table(results, sweep.run_id, sweep.keys)
        except Exception as error:
            log.error("wdexp: sweep run %s: its pairs could not be read: %s", sweep.run_id,
                      store.one_line(error))
            with contextlib.suppress(client.TrackingFailed):
                tracker.close_sweep(sweep.spec, sweep.run_id,
                                    "KILLED" if status == "KILLED" else "FAILED", {}, {})
            return
        if table.empty and sweep.resume and status == "FINISHED":
            # Every job was skipped as already finished: a re-run adds nothing to the store.
            tracker.delete_sweep(sweep.spec, sweep.run_id)
            log.info("nothing to run: every job of this sweep had already finished")
            return
        failed = int((table["status"] != "FINISHED").sum())
        if status == "FINISHED" and failed:
            status = "FAILED"
        files: dict[str, str | bytes] = {
            "summary.csv": summary(table.drop(columns=["run_name"]), sweep.keys).to_csv(
                index=False)}
        # A stopped sweep ends promptly: its summary says how far it got; no figures are drawn.
        if not table.empty and status != "KILLED":
            from wdexp.figures import sweep_figures

            outcome = objective_column(table.columns).removeprefix(f"{DECAY}.")
            files.update({f"figures/{name}": png
                          for name, png in sweep_figures(table, sweep.keys, outcome).items()})
        counts = {"pairs": len(table), "failed_pairs": failed,
                  **{f"{arm}.diverged_pairs": int(table[f"{arm}.diverged"].eq(True).sum())
                     for arm in ARMS}}
        tracker.close_sweep(sweep.spec, sweep.run_id, status, files, counts)
        log.info("sweep run %s ended %s: %d pairs, %d not finished", sweep.run_id, status,
                 len(table), failed)

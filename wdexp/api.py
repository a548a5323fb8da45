"""wdexp from Python and Jupyter: :func:`run` one paired comparison, :func:`sweep` a multirun.

The command line's configs, store and launchers, its overrides written exactly as there, through
Hydra's own run and multirun (``hydra._internal.hydra.Hydra``: what ``@hydra.main`` calls, and
what hydra-zen's ``launch`` wraps for configs built in Python — wdexp's are YAML, so the plain
call keeps every launcher, the sweep run and ``resume`` as they are). What the command line does
to its process is not done here: no ``os._exit``, no change of working directory, and the
signal handlers, logging, environment and Hydra's global state are put back when a call
returns, however it returns, and a Ray connection a launcher made is closed. The kernel's
interrupt (SIGINT) ends the runs KILLED with every trained step written and raises
``KeyboardInterrupt``; the next call works. Every result is read back from the store
(:mod:`wdexp.results`). Calls in one process share one tracking process.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import signal
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from wdexp import signals
from wdexp.config import ROOT, parse_tracking  # and ${wdexp.root:}, which conf/ uses
from wdexp.results import PairResult, StoredFigure, SweepResult, preload, read_pair, read_sweep
from wdexp.vocabulary import ConfigError, JobFailed

__all__ = ["PairResult", "StoredFigure", "SweepResult", "WdexpError", "run", "sweep"]

CONF = ROOT / "conf"


class WdexpError(RuntimeError):
    """What the command line would print as its one line (``wdexp: …``) and exit on."""


def run(*overrides: str, config_dir: str | Path | None = None,
        searchpath: Sequence[str] = ()) -> PairResult:
    """One paired comparison into the configured store, e.g.
    ``wdexp.run("optimizer.weight_decay=0.1", "epochs=100")``. ``config_dir`` adds a config
    folder as ``--config-dir`` does, ``searchpath`` folders as ``hydra.searchpath`` does
    (see "Your own model")."""
    from hydra.types import RunMode

    from wdexp.tracking import client

    with _process_kept():
        preload()  # the result is read back once the pair ends
        client.prestart()  # MLflow loads in the tracking process while Hydra composes
        hydra = _hydra(config_dir)
        overrides = [*_with_searchpath(overrides, searchpath), "hydra.mode=RUN"]
        _check(hydra, overrides, RunMode.RUN)
        with signals.signals_as_exceptions():
            done = hydra.run(config_name="config", task_function=_task,
                             overrides=list(overrides))
        outcome = done.return_value
        if isinstance(outcome, ConfigError | JobFailed):
            raise WdexpError(f"wdexp: {outcome}") from None
        return read_pair(parse_tracking(done.cfg), outcome.pair_id)


def sweep(*overrides: str, launcher: str | None = None, config_dir: str | Path | None = None,
          searchpath: Sequence[str] = ()) -> SweepResult:
    """A multirun, e.g. ``wdexp.sweep("optimizer.weight_decay=0,0.01,0.1", "seed=range(5)")``;
    ``launcher`` picks ``hydra/launcher`` (``joblib``, ``submitit_local``, …). A sweep whose
    jobs did not all finish still returns (its ``status`` says so, each pair's row too)."""
    from hydra.types import RunMode

    from wdexp import train
    from wdexp.lifecycle import Refused
    from wdexp.lost_jobs import SweepFailed
    from wdexp.sweep_folder import sweep_run_of
    from wdexp.sweep_runs import close_unclosed

    with _process_kept():
        hydra = _hydra(config_dir)
        overrides = _with_searchpath(overrides, searchpath)
        if launcher is not None:
            overrides = [f"hydra/launcher={launcher}", *overrides]
        cfg = _check(hydra, overrides, RunMode.MULTIRUN)
        folder = str(cfg.hydra.sweep.dir)
        # One folder for the whole call: the composed default holds the time of composing.
        overrides = [*overrides, f"hydra.sweep.dir={_quoted(folder)}", "hydra.mode=MULTIRUN"]
        try:
            with signals.signals_as_exceptions(), contextlib.suppress(SweepFailed):
                hydra.multirun(config_name="config", task_function=train.job_task,
                               overrides=list(overrides))
        except Refused as refused:  # the store or a search space, before any job
            raise WdexpError(refused.line) from None
        finally:
            close_unclosed()  # what the command line's exit would close
        sweep_id = sweep_run_of(folder)
        if sweep_id is None:
            raise WdexpError("wdexp: the sweep ended before it created its sweep run")
        try:
            return read_sweep(parse_tracking(cfg), sweep_id)
        except LookupError:  # deleted at its end, as the command line deletes it
            raise WdexpError("wdexp: nothing to run: every job of this sweep had already "
                             "finished (resume=true); their pairs are in the sweep runs that "
                             "ran them") from None


# --- what a call leaves as it found it -----------------------------------------------------

@contextlib.contextmanager
def _process_kept() -> Iterator[None]:
    """Logging, stop-signal handlers and state, the environment, the working directory,
    torch's grad mode and Hydra's global state, as they were before the call."""
    import torch
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from hydra.core.singleton import Singleton
    from hydra.core.utils import JobRuntime

    environment, cwd = dict(os.environ), os.getcwd()
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    loggers = _loggers()
    # What a Hydra job sets for its run; the config store and the plugins stay as the call's
    # imports left them (a plugin registers its configs once, when it is first imported).
    per_job = {cls: Singleton._instances.get(cls) for cls in (HydraConfig, JobRuntime)}
    ray_before = _ray_connected()
    # Training needs grad mode whatever the caller's (a cell inside ``torch.no_grad()``), and an
    # interrupt that lands inside torch's own switching of it (``optimizer.step`` sets and
    # resets it every step) can leave it off: the caller gets back the mode it had.
    grad_before = torch.is_grad_enabled()
    torch.set_grad_enabled(True)
    try:
        yield
    finally:
        torch.set_grad_enabled(grad_before)
        if _ray_connected() and not ray_before:
            # Hydra's Ray launchers connect this process to a cluster (or start one) and never
            # let go: the next call would reuse that connection whatever its address, and a
            # driver whose cluster goes away ends its own process.
            sys.modules["ray"].shutdown()
        GlobalHydra.instance().clear()
        for cls, instance in per_job.items():
            if instance is None:
                Singleton._instances.pop(cls, None)
            else:
                Singleton._instances[cls] = instance
        _restore_loggers(loggers)
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
        signals.reset()
        os.chdir(cwd)
        os.environ.clear()
        os.environ.update(environment)


def _ray_connected() -> bool:
    ray = sys.modules.get("ray")  # never imported here: only a Ray launcher brings it
    return ray is not None and ray.is_initialized()


_LoggerState = tuple[int, list[logging.Handler], bool, bool]


def _loggers() -> dict[str | None, _LoggerState]:
    names = [None, *(name for name, logger in logging.root.manager.loggerDict.items()
                     if isinstance(logger, logging.Logger))]
    return {name: (lg.level, list(lg.handlers), lg.propagate, lg.disabled)
            for name in names for lg in [logging.getLogger(name)]}


def _restore_loggers(before: dict[str | None, _LoggerState]) -> None:
    """Every logger that existed before the call as it was, the handlers the call added to it
    (Hydra's console and job log file) closed. Loggers the call's imports created are their
    libraries' own, and stay."""
    for name, (level, handlers, propagate, disabled) in before.items():
        logger = logging.getLogger(name)
        for handler in logger.handlers:
            if handler not in handlers:
                handler.close()
        logger.handlers[:] = handlers
        logger.setLevel(level)
        logger.propagate, logger.disabled = propagate, disabled


# --- Hydra ----------------------------------------------------------------------------------

def _hydra(config_dir: str | Path | None) -> Any:
    from hydra import version
    from hydra._internal.hydra import Hydra
    from hydra._internal.utils import create_config_search_path
    from hydra.core.config_search_path import SearchPathQuery
    from hydra.core.global_hydra import GlobalHydra

    version.setbase("1.3")
    search_path = create_config_search_path(str(CONF))
    if config_dir is not None:
        folder = Path(config_dir).expanduser().resolve()
        if not folder.is_dir():
            raise WdexpError(f"wdexp: config_dir {folder} is not a folder")
        search_path.prepend(provider="command-line", path=f"file://{folder}",
                            anchor=SearchPathQuery(provider="schema"))
    GlobalHydra.instance().clear()
    return Hydra.create_main_hydra2(task_name="train", config_search_path=search_path)


def _with_searchpath(overrides: Sequence[str], searchpath: Sequence[str]) -> list[str]:
    if not searchpath:
        return list(overrides)
    folders = ",".join(f"file://{Path(p).expanduser().resolve()}" for p in searchpath)
    return [*overrides, f"hydra.searchpath=[{folders}]"]


def _quoted(value: str) -> str:
    """``value`` as one quoted override value of Hydra's grammar: a backslash escapes a quote,
    so backslashes before a quote or at the end are doubled."""
    escaped = re.sub(r"(\\*)'", lambda m: m[1] * 2 + "\\'", value)
    return "'" + re.sub(r"(\\+)$", lambda m: m[1] * 2, escaped) + "'"


def _check(hydra: Any, overrides: Sequence[str], mode: Any) -> DictConfig:
    """The composed config, or the command line's one line for an override Hydra refuses."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    try:
        return hydra.compose_config("config", list(overrides), run_mode=mode)
    except (HydraException, OmegaConfBaseException) as error:
        # Hydra's message and its cause's, as the command line prints them, unindented lines
        # only (the rest repeats the key): "Could not override 'x'. To append … Key 'x' is …"
        lines = [line for part in (error, error.__cause__) if part is not None
                 for line in str(part).splitlines() if line and not line[0].isspace()]
        raise WdexpError(" ".join(dict.fromkeys(lines))) from None


def _task(cfg: DictConfig) -> Any:
    """The job, its own errors returned (Hydra would print a failed job's error, then raise)."""
    from wdexp import train

    try:
        return train.task(cfg)
    except (ConfigError, JobFailed) as error:
        return error


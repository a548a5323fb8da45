"""Shared helpers: the real config, the real entrypoint, a real sqlite store in a temp dir."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from hydra import compose, initialize_config_dir
from mlflow.entities import Run
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig, open_dict

from wdexp.config import ROOT

if TYPE_CHECKING:
    from wdexp.results import SweepResult

PYTHON = sys.executable

# What a user may have exported for their own work changes what MLflow (tracking URI,
# experiment, retries), Hydra, Ray (address, auth), matplotlib (rc file, backend) and libpq
# (PGHOST, PGSSLMODE, … for a PostgreSQL-backed server) do.
USER_PREFIXES = ("MLFLOW_", "HYDRA_", "RAY_", "MPL", "PG")
# Each of these leads a library to the user's files: ~/.ray/auth_token, ~/.mlflow,
# ~/.config/matplotlib/matplotlibrc, caches.
HOME_VARIABLES = ("HOME", "XDG_CACHE_HOME", "XDG_CONFIG_HOME", "XDG_DATA_HOME", "XDG_STATE_HOME")
# The xdist workers and the processes their tests start share the cores: torch's OpenMP pool of
# a thread per core in each oversubscribes them, and a parallel region then waits for a thread
# the kernel has set aside (a test of 0.5 s alone took 35 s in a full run). One thread each.
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")

_isolation = pytest.MonkeyPatch()
_HOME_PREFIX = "wdexp-tests-home-"
_home_key = pytest.StashKey[Path]()


def pytest_configure(config: pytest.Config) -> None:
    """Start the session with no user setting and a private, empty home.

    This runs before collection: test modules import matplotlib, which reads its rc file from
    the home at import, so an isolation begun by a session fixture would come too late.
    """
    home = Path(tempfile.mkdtemp(prefix=_HOME_PREFIX))
    config.stash[_home_key] = home
    for name in [name for name in os.environ if name.startswith(USER_PREFIXES)]:
        _isolation.delenv(name)
    _isolation.setenv("HOME", str(home))
    for name in HOME_VARIABLES[1:]:
        folder = home / name.removeprefix("XDG_").removesuffix("_HOME").lower()
        folder.mkdir()
        _isolation.setenv(name, str(folder))
    for name in THREAD_VARIABLES:
        _isolation.setenv(name, "1")


def pytest_unconfigure(config: pytest.Config) -> None:
    _isolation.undo()
    if (home := config.stash.get(_home_key, None)) is not None:
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="session", autouse=True)
def isolated_home(pytestconfig: pytest.Config) -> Path:
    """The session's private HOME, made by pytest_configure; every test runs with it."""
    return pytestconfig.stash[_home_key]


@pytest.fixture(autouse=True)
def _clean_environment_per_test(isolated_home: Path) -> Iterator[None]:
    # In-process jobs set variables of their own (wdexp's store sets
    # MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT): no test may see what an earlier one left.
    before = dict(os.environ)
    yield
    if dict(os.environ) != before:
        os.environ.clear()
        os.environ.update(before)


def child_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for a process a test starts: the session's, without any variable the
    test process set for itself in the meantime, plus what the test asks for."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(USER_PREFIXES)}
    return {**clean, **(extra or {})}


# Creating an sqlite store runs MLflow's schema migrations (seconds each): the session migrates
# one, in a process of its own started in its own folder, and each test gets a copy of it.
_TEMPLATE = """
from mlflow.tracking import MlflowClient
assert [e.name for e in MlflowClient(tracking_uri="sqlite:///mlflow.db").search_experiments()] \\
    == ["Default"]
"""


@pytest.fixture(scope="session")
def template_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An sqlite store as MLflow creates it (its schema, the Default experiment), made once
    per session (once per xdist worker); never written to after."""
    folder = tmp_path_factory.mktemp("template-store")
    subprocess.run([PYTHON, "-c", _TEMPLATE], cwd=folder, env=child_env(), check=True,
                   capture_output=True, timeout=300)
    return folder / "mlflow.db"


def copy_store(template_store: Path, db: Path) -> str:
    """A copy of the template store at ``db`` (its folder made): its sqlite URI."""
    db.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(template_store, db)
    return f"sqlite:///{db}"


@pytest.fixture
def store_uri(tmp_path: Path, template_store: Path) -> str:
    """An sqlite store in tmp_path, as MLflow creates it: a copy of the session's template."""
    return copy_store(template_store, tmp_path / "mlflow.db")


@pytest.fixture
def new_store_uri(tmp_path: Path) -> str:
    """The URI of an sqlite store in tmp_path that does not exist yet: for the tests of what
    happens before and while a job creates one."""
    return f"sqlite:///{tmp_path}/mlflow.db"


def compose_config(*overrides: str) -> DictConfig:
    """The real conf/ composed with overrides, as Hydra would for `python -m wdexp.train`."""
    return compose_with_choices(*overrides)[0]


def compose_with_choices(*overrides: str) -> tuple[DictConfig, dict[str, str]]:
    """The composed job config and its group choices (e.g. optimizer=sgd_wd), hydra node off."""
    with initialize_config_dir(version_base="1.3", config_dir=str(ROOT / "conf")):
        cfg = compose(config_name="config", overrides=list(overrides), return_hydra_config=True)
    choices = {k: str(v) for k, v in cfg.hydra.runtime.choices.items()
               if "/" not in k and v is not None}
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg, choices


class Trained:
    """A job's numbers as the engine hands them to the store, trained in this process with no
    tracking process and no store: the real config through ``wdexp.study.build`` and
    ``wdexp.engine.train``, as ``wdexp.train.run`` calls them. For the tests of the numbers;
    what the store keeps of them is tested end to end through ``run_job`` once per kind."""

    def __init__(self, *overrides: str) -> None:
        from wdexp import engine, study

        cfg, choices = compose_with_choices(*overrides)
        self.study = study.build(cfg, labels=choices)
        self.steps = list(engine.train(self.study.arms, self.study.job.epochs))

    def history(self, arm: str, key: str) -> list[tuple[int, float]]:
        """(step, value) of one arm's metric, as ``StoreReader.history`` reads them back."""
        return [(step.epoch, step.metrics[arm][key]) for step in self.steps
                if key in step.metrics.get(arm, {})]

    def values(self, arm: str, key: str) -> list[float]:
        return [value for _, value in self.history(arm, key)]


@pytest.fixture
def run_job(store_uri: str) -> Iterator[Callable[..., str]]:
    """Run one job in this process through wdexp.train.run; returns the pair run id.

    The jobs of a session share this process's tracking process, as a sequential multirun's
    do; one that a test left dead or busy is replaced by the next job (``client.ready``), and
    this process's own store connections are dropped, so no test inherits another's state.
    """
    from wdexp.tracking import store
    from wdexp.train import run

    def _run(*overrides: str) -> str:
        cfg, choices = compose_with_choices(f"tracking.uri={store_uri}", *overrides)
        return run(cfg, labels=choices, overrides=overrides).pair_id

    yield _run
    store.connect.cache_clear()


def cli(*args: str, tmp_path: Path, timeout: float = 120,
        env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`python -m wdexp.train ARGS` as a user runs it, with Hydra's outputs kept in tmp_path."""
    return subprocess.run(
        [PYTHON, "-m", "wdexp.train", f"hydra.run.dir={tmp_path}/outputs", *args],
        capture_output=True, text=True, timeout=timeout, cwd=tmp_path, env=child_env(env),
    )


def popen(*args: str, tmp_path: Path, env: dict[str, str] | None = None,
          ) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [PYTHON, "-m", "wdexp.train", f"hydra.run.dir={tmp_path}/outputs", *args],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp_path,
        env=child_env(env),
    )


class StoreReader:
    """Reads a wdexp job back from the store with MLflow's own client."""

    def __init__(self, uri: str, experiment: str = "weight-decay") -> None:
        self.client = MlflowClient(tracking_uri=uri)
        self.experiment = self.client.get_experiment_by_name(experiment)

    def runs(self, kind: str | None = None) -> list[Run]:
        if self.experiment is None:
            return []
        query = f"tags.`wdexp.kind` = '{kind}'" if kind else ""
        return self.client.search_runs([self.experiment.experiment_id], query)

    def arms(self, pair_id: str) -> dict[str, Run]:
        runs = self.client.search_runs(
            [self.experiment.experiment_id], f"tags.`mlflow.parentRunId` = '{pair_id}'")
        return {run.data.tags["wdexp.arm"]: run for run in runs}

    def history(self, run_id: str, key: str) -> list[tuple[int, float]]:
        points = self.client.get_metric_history(run_id, key)
        return sorted((m.step, m.value) for m in points)


@pytest.fixture
def read_store(store_uri: str) -> Callable[[], StoreReader]:
    return lambda: StoreReader(store_uri)


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def mlflow_server(tmp_path: Path) -> Iterator[str]:
    """A real `mlflow server` on 127.0.0.1 with its own sqlite store; yields its URL."""
    from tests.servers import start_mlflow_server

    server = start_mlflow_server(tmp_path, free_port())
    try:
        yield server.url
    finally:
        server.kill()


def sweep_here(*args: str, tmp_path: Path, store_uri: str,
               launcher: str | None = None) -> SweepResult:
    """``wdexp.sweep(ARGS)`` into store_uri in this process, sweep outputs kept in tmp_path:
    Hydra's multirun as the command line runs it, without a process start per sweep."""
    import wdexp

    return wdexp.sweep(f"hydra.sweep.dir={tmp_path}/multirun", f"tracking.uri={store_uri}",
                       *args, launcher=launcher)


def multirun(*args: str, tmp_path: Path, store_uri: str, timeout: float = 600,
             env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`python -m wdexp.train -m ARGS` into store_uri, sweep outputs kept in tmp_path."""
    return subprocess.run(
        [PYTHON, "-m", "wdexp.train", "-m", f"hydra.sweep.dir={tmp_path}/multirun",
         f"tracking.uri={store_uri}", *args],
        capture_output=True, text=True, timeout=timeout, cwd=tmp_path, env=child_env(env))

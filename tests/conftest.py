"""Shared helpers: the real config, the real entrypoint, a real sqlite store in a temp dir."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from mlflow.entities import Run
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig, open_dict

from wdexp.config import ROOT

PYTHON = sys.executable


@pytest.fixture
def store_uri(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/mlflow.db"


def compose_config(*overrides: str) -> DictConfig:
    """The real conf/ composed with overrides, as Hydra would for `python -m wdexp.train`."""
    return compose_with_choices(*overrides)[0]


def compose_with_choices(*overrides: str) -> tuple[DictConfig, dict[str, str]]:
    """The composed job config and its group choices (e.g. optimizer=sgd_wd), hydra node off."""
    with initialize_config_dir(version_base="1.3", config_dir=str(ROOT / "conf")):
        cfg = compose(config_name="config", overrides=list(overrides), return_hydra_config=True)
    choices = {k: str(v) for k, v in cfg.hydra.runtime.choices.items() if "/" not in k}
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg, choices


@pytest.fixture
def run_job(store_uri: str) -> Callable[..., str]:
    """Run one job in this process through wdexp.train.run; returns the pair run id."""
    from wdexp.train import run

    def _run(*overrides: str) -> str:
        cfg, choices = compose_with_choices(f"tracking.uri={store_uri}", *overrides)
        return run(cfg, labels=choices, overrides=overrides)

    return _run


def cli(*args: str, tmp_path: Path, timeout: float = 120,
        env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`python -m wdexp.train ARGS` as a user runs it, with Hydra's outputs kept in tmp_path."""
    return subprocess.run(
        [PYTHON, "-m", "wdexp.train", f"hydra.run.dir={tmp_path}/outputs", *args],
        capture_output=True, text=True, timeout=timeout, cwd=tmp_path,
        env={**os.environ, **(env or {})},
    )


def popen(*args: str, tmp_path: Path, env: dict[str, str] | None = None,
          ) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [PYTHON, "-m", "wdexp.train", f"hydra.run.dir={tmp_path}/outputs", *args],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp_path,
        env={**os.environ, **(env or {})},
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
def mlflow_server(tmp_path: Path):
    """A real `mlflow server` on 127.0.0.1 with its own sqlite store; yields its URL."""
    import time
    import urllib.request

    port = free_port()
    log = open(tmp_path / "server.log", "w")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [PYTHON, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
         "--backend-store-uri", f"sqlite:///{tmp_path}/server.db",
         "--artifacts-destination", str(tmp_path / "server-artifacts"), "--workers", "1"],
        stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError((tmp_path / "server.log").read_text())
            time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def multirun(*args: str, tmp_path: Path, store_uri: str, timeout: float = 600,
             ) -> subprocess.CompletedProcess[str]:
    """`python -m wdexp.train -m ARGS` into store_uri, sweep outputs kept in tmp_path."""
    return subprocess.run(
        [PYTHON, "-m", "wdexp.train", "-m", f"hydra.sweep.dir={tmp_path}/multirun",
         f"tracking.uri={store_uri}", *args],
        capture_output=True, text=True, timeout=timeout, cwd=tmp_path)

"""A real ``mlflow server`` on 127.0.0.1 for tests: started, paused, killed by the test."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tests.conftest import child_env


@dataclass
class MlflowServer:
    process: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def pause(self) -> None:
        """Every process of the server stops: requests hang, unanswered."""
        os.killpg(self.process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.killpg(self.process.pid, signal.SIGCONT)

    def kill(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=30)


def start_mlflow_server(folder: Path, port: int, *args: str,
                        env: dict[str, str] | None = None,
                        backend_store_uri: str | None = None) -> MlflowServer:
    """``mlflow server`` with its own sqlite store and artifacts in ``folder`` (reused when
    started again there), its own process group, and MLflow's background job runner off (a
    pool of workers that would compete with the tests for two cores).

    ``backend_store_uri`` replaces the sqlite store (e.g. a PostgreSQL database, its password
    passed in ``env`` as PGPASSWORD: in the URI it would show in the command line)."""
    log = folder / f"server-{port}.log"
    with open(log, "ab") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
             "--backend-store-uri", backend_store_uri or f"sqlite:///{folder}/server.db",
             "--artifacts-destination", str(folder / "server-artifacts"), "--workers", "1",
             *args],
            stdout=output, stderr=subprocess.STDOUT, cwd=folder, start_new_session=True,
            env=child_env({"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", **(env or {})}))
    server = MlflowServer(process, port, log)
    deadline = time.monotonic() + 90
    while True:
        try:
            with urllib.request.urlopen(f"{server.url}/health", timeout=2) as response:
                if response.status == 200:
                    return server
        except OSError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            server.kill()
            raise RuntimeError(log.read_text())
        time.sleep(0.5)

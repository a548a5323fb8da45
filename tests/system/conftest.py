"""System tests: processes killed mid-run, real servers (MLflow, its basic-auth app, PostgreSQL,
Ray), the launchers, the UI in a browser, a job watched while it runs, the benchmark's smoke run.

Each is marked ``system``: ``make test`` runs them, ``make test-fast`` leaves them out. The
helpers and fixtures of tests/conftest.py apply here as everywhere.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import PYTHON, child_env, free_port
from tests.system.ray_nodes import RAY_LOOPBACK, RayCluster, stop_session

HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(item.path).resolve().parents:
            item.add_marker(pytest.mark.system)


@pytest.fixture
def ray_cluster(tmp_path: Path) -> Iterator[RayCluster]:
    """A real one-node Ray cluster of this test's own on loopback; only it is stopped after.

    `ray start --block` keeps the head in the foreground, in a session of its own, so its
    process group is exactly this cluster: `ray stop` would stop every Ray of the machine.
    """
    ray = [PYTHON, "-m", "ray.scripts.scripts"]
    port = free_port()
    temp_dir = Path(tempfile.mkdtemp(prefix="ray", dir="/tmp"))  # Ray's sockets need short paths
    log_path = tmp_path / "ray-head.log"
    with open(log_path, "wb") as log:
        head = subprocess.Popen(
            [*ray, "start", "--head", "--block", f"--port={port}",
             "--node-ip-address=127.0.0.1", "--num-cpus=2", "--include-dashboard=false",
             "--disable-usage-stats", f"--temp-dir={temp_dir}",
             # Fixed by default (10001, 52365): a second cluster on the machine would clash.
             f"--ray-client-server-port={free_port()}",
             f"--dashboard-agent-listen-port={free_port()}"],
            stdout=log, stderr=subprocess.STDOUT, env=child_env(RAY_LOOPBACK),
            start_new_session=True)
    try:
        # Ray writes the address file once the whole node is up; the GCS port opens earlier,
        # and a SIGTERM before the node is up is not always honoured.
        address_file = temp_dir / "ray_current_cluster"
        deadline = time.monotonic() + 180
        while not (address_file.exists() and address_file.read_text()):
            if head.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(log_path.read_text(errors="replace"))
            time.sleep(0.5)
        with socket.create_connection(("127.0.0.1", port), timeout=10):
            pass
        yield RayCluster(address_file.read_text().strip(), head.pid)
    finally:
        survivors = stop_session(head)
        shutil.rmtree(temp_dir, ignore_errors=True)
    assert survivors == [], f"Ray processes outlived SIGTERM: {survivors}"

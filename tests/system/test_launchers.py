"""The same sweep through Hydra's real launcher plugins: every pair lands exactly once."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import PYTHON, StoreReader, child_env, free_port, multirun


def assert_landed_once(store_uri: str, n_pairs: int) -> None:
    reader = StoreReader(store_uri)
    runs = reader.runs()
    kinds = Counter((r.data.tags["wdexp.kind"], r.info.status) for r in runs)
    assert kinds == {("sweep", "FINISHED"): 1, ("pair", "FINISHED"): n_pairs,
                     ("arm", "FINISHED"): 2 * n_pairs}
    (sweep,) = reader.runs("sweep")
    pairs = reader.runs("pair")
    assert {p.data.tags["mlflow.parentRunId"] for p in pairs} == {sweep.info.run_id}
    seeds = Counter(p.data.params["seed"] for p in pairs)
    assert set(seeds.values()) == {1}  # no job ran twice


def test_joblib_with_four_workers_on_a_brand_new_store(tmp_path, new_store_uri):
    assert not (tmp_path / "mlflow.db").exists()
    # Four workers open a store that does not exist yet, all at once: the race is at the start.
    result = multirun("hydra/launcher=joblib", "hydra.launcher.n_jobs=4", "seed=range(8)",
                      "epochs=100", tmp_path=tmp_path, store_uri=new_store_uri)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "database is locked" not in output
    assert_landed_once(new_store_uri, 8)


def test_submitit_local(tmp_path, store_uri):
    result = multirun("hydra/launcher=submitit_local", "seed=0,1", "epochs=10",
                      tmp_path=tmp_path, store_uri=store_uri)
    assert result.returncode == 0, result.stdout + result.stderr
    assert_landed_once(store_uri, 2)


def test_slurm_launcher_config_composes_with_its_settings(tmp_path):
    result = subprocess.run(
        [PYTHON, "-m", "wdexp.train", "hydra/launcher=slurm", "hydra.launcher.partition=cpu",
         "--cfg", "hydra", "--package", "hydra.launcher"],
        capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "SlurmLauncher" in result.stdout
    for setting in ("partition: cpu", "timeout_min: 60", "cpus_per_task: 1"):
        assert setting in result.stdout


# Ray 2.x turns --node-ip-address=127.0.0.1 into the machine's outward address unless its
# single-machine mode is on; the driver must be in that mode too to find the node.
RAY_LOOPBACK = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
                # SIGTERM otherwise drains the node for 30 s before stopping it.
                "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0"}


def _session_members(sid: int) -> list[int]:
    """Live processes of a session: what a Ray cluster started with start_new_session left."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            # Fields after the parenthesised command: state, ppid, pgrp, session.
            fields = (entry / "stat").read_text().rpartition(")")[2].split()
        except OSError:  # gone meanwhile
            continue
        if int(fields[3]) == sid and fields[0] != "Z":
            members.append(int(entry.name))
    return members


def _stop_session(head: subprocess.Popen[bytes]) -> list[int]:
    """SIGTERM the cluster's process group, SIGKILL what is left; returns what outlived SIGTERM."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(head.pid, signal.SIGTERM)
    deadline = time.monotonic() + 30
    while _session_members(head.pid) and time.monotonic() < deadline:
        head.poll()  # reap the head: a zombie leader would count as alive
        time.sleep(0.2)
    survivors = _session_members(head.pid)
    for pid in survivors:  # a process of ours that left the group is still in the session
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    head.wait(timeout=30)
    return survivors


@pytest.fixture
def ray_cluster(tmp_path: Path) -> Iterator[str]:
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
        yield address_file.read_text().strip()
    finally:
        survivors = _stop_session(head)
        shutil.rmtree(temp_dir, ignore_errors=True)
    assert survivors == [], f"Ray processes outlived SIGTERM: {survivors}"


@pytest.mark.slow
def test_ray_cluster(tmp_path, store_uri, ray_cluster):
    assert ray_cluster.startswith("127.0.0.1:"), ray_cluster  # loopback only
    result = multirun("hydra/launcher=ray_cluster",
                      f"hydra.launcher.ray.init.address={ray_cluster}",
                      "seed=0,1", "epochs=10", tmp_path=tmp_path, store_uri=store_uri,
                      env=RAY_LOOPBACK)
    assert result.returncode == 0, result.stdout + result.stderr
    assert_landed_once(store_uri, 2)


def test_joblib_sweep_into_a_tracking_server(tmp_path, mlflow_server):
    result = multirun("hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "seed=0,1,2",
                      "epochs=10", tmp_path=tmp_path, store_uri=mlflow_server)
    assert result.returncode == 0, result.stdout + result.stderr
    assert_landed_once(mlflow_server, 3)

"""The same sweep through Hydra's real launcher plugins: every pair lands exactly once."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import PYTHON, StoreReader, copy_store, multirun, sweep_here
from tests.jobs import Job, start, training_metrics, wait_for
from tests.system.ray_nodes import RAY_LOOPBACK, session_members


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


def assert_ctrl_c_ends_it_killed(job: Job, store_uri: str) -> None:
    """Ctrl-C to a sweep's group while both of its jobs train: exit 130 within 10 s, every run
    KILLED, the sweep run with its summary.csv and no figures."""
    training_metrics(store_uri, job, pairs=2)
    os.killpg(job.pid, signal.SIGINT)
    output, took = job.finish(timeout=60)
    assert job.returncode == 130, output
    assert took < 10, f"{took:.1f} s"
    wait_for(lambda: {r.info.status for r in StoreReader(store_uri).runs()} == {"KILLED"},
             "every run of the stopped sweep KILLED", timeout=30)
    assert len(StoreReader(store_uri).runs("pair")) == 2
    (sweep,) = StoreReader(store_uri).runs("sweep")
    listed = StoreReader(store_uri).client.list_artifacts(sweep.info.run_id)
    assert [a.path for a in listed] == ["summary.csv"]  # kept; no figures when stopped


@pytest.fixture
def own_ray() -> Iterator[tuple[str, ...]]:
    """``hydra/launcher=ray``'s settings for a Ray of the test's own: 2 CPUs, no dashboard, its
    files in a short folder (Ray's sockets need short paths), removed after."""
    temp_dir = Path(tempfile.mkdtemp(prefix="ray", dir="/tmp"))
    yield ("+hydra.launcher.ray.init.num_cpus=2",
           "+hydra.launcher.ray.init.include_dashboard=false",
           f"+hydra.launcher.ray.init._temp_dir={temp_dir}")
    shutil.rmtree(temp_dir, ignore_errors=True)


def test_joblib_with_four_workers_on_a_brand_new_store(tmp_path, new_store_uri):
    assert not (tmp_path / "mlflow.db").exists()
    # Four workers open a store that does not exist yet, all at once: the race is at the start.
    result = multirun("hydra/launcher=joblib", "hydra.launcher.n_jobs=4", "seed=range(4)",
                      "epochs=100", tmp_path=tmp_path, store_uri=new_store_uri)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "database is locked" not in output
    assert_landed_once(new_store_uri, 4)


def test_submitit_local_from_python(tmp_path, store_uri):
    """Through wdexp.sweep, as a notebook launches it (the command line's submitit sweep is
    tests/system/test_lost_jobs.py's): each job a process of its own, the result read back."""
    result = sweep_here("seed=0,1", "epochs=10", launcher="submitit_local", tmp_path=tmp_path,
                        store_uri=store_uri)
    assert_landed_once(store_uri, 2)
    assert result.status == "FINISHED" and sorted(result.table["seed"]) == [0, 1]


def test_slurm_launcher_config_composes_with_its_settings(tmp_path):
    result = subprocess.run(
        [PYTHON, "-m", "wdexp.train", "hydra/launcher=slurm", "hydra.launcher.partition=cpu",
         "--cfg", "hydra", "--package", "hydra.launcher"],
        capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "SlurmLauncher" in result.stdout
    for setting in ("partition: cpu", "timeout_min: 60", "cpus_per_task: 1"):
        assert setting in result.stdout


@pytest.mark.slow
@pytest.mark.xdist_group("ray")  # one Ray cluster on the machine at a time
def test_ray_cluster(tmp_path, store_uri, template_store, ray_cluster, monkeypatch):
    """A sweep through wdexp.sweep, as a notebook launches it (the command line's Ray sweeps:
    below and tests/system/test_lost_jobs.py), then Ctrl-C to a command-line sweep."""
    assert ray_cluster.address.startswith("127.0.0.1:"), ray_cluster  # loopback only
    for name, value in RAY_LOOPBACK.items():
        monkeypatch.setenv(name, value)
    import ray  # after RAY_LOOPBACK: Ray reads it once, on import
    from ray._private import ray_constants

    # Else the driver looks for the node at the machine's outward address and hangs.
    assert not ray_constants.ENABLE_RAY_CLUSTER, "ray was imported before RAY_LOOPBACK was set"
    assert not ray.is_initialized()
    result = sweep_here(f"hydra.launcher.ray.init.address={ray_cluster.address}", "seed=0,1",
                        "epochs=10", launcher="ray_cluster", tmp_path=tmp_path,
                        store_uri=store_uri)
    assert_landed_once(store_uri, 2)
    assert result.status == "FINISHED"
    assert not ray.is_initialized()  # the call let go of the cluster it connected to

    # Ctrl-C to a second sweep on the same cluster while both of its jobs train.
    other = copy_store(template_store, tmp_path / "stopped" / "mlflow.db")
    job = start(f"tracking.uri={other}", "hydra/launcher=ray_cluster",
                f"hydra.launcher.ray.init.address={ray_cluster.address}",
                "optimizer.weight_decay=0.01,0.1", "epochs=100000000",
                tmp_path=tmp_path / "stopped", multirun=True, env=RAY_LOOPBACK)
    assert_ctrl_c_ends_it_killed(job, other)


@pytest.mark.slow
@pytest.mark.xdist_group("ray")  # one Ray cluster on the machine at a time
def test_ray_from_python_starts_a_ray_of_its_own_and_stops_it(tmp_path, store_uri, own_ray,
                                                               monkeypatch):
    """``wdexp.sweep(launcher="ray")``: the plugin's own launcher starts a Ray in the calling
    process for the sweep; the call lands every pair once and stops that Ray when it returns
    (a kernel keeps no cluster it did not ask for)."""
    for name, value in RAY_LOOPBACK.items():
        monkeypatch.setenv(name, value)
    # A Ray started by ray.init writes its token to ~/.ray/auth_token, and a `ray start` cluster
    # that later finds it there wants it from every client: not in the session's HOME.
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    import psutil
    import ray  # after RAY_LOOPBACK: Ray reads it once, on import

    assert not ray.is_initialized()

    def its_processes() -> list[psutil.Process]:
        return [p for p in psutil.Process().children(recursive=True)
                if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]

    try:
        result = sweep_here("seed=0,1", "epochs=10", *own_ray, launcher="ray",
                            tmp_path=tmp_path, store_uri=store_uri)
        assert_landed_once(store_uri, 2)
        assert result.status == "FINISHED" and sorted(result.table["seed"]) == [0, 1]
        assert not ray.is_initialized()
        wait_for(lambda: not its_processes(), "the Ray it started to end", timeout=15)
    finally:
        for process in its_processes():
            process.kill()


@pytest.mark.slow
@pytest.mark.xdist_group("ray")  # one Ray cluster on the machine at a time
def test_ctrl_c_to_a_sweep_on_a_ray_of_its_own_ends_it_and_its_ray_within_10_s(tmp_path,
                                                                                store_uri,
                                                                                own_ray):
    """``hydra/launcher=ray``, the plugin's own: the sweep's process starts a Ray for the sweep
    (raylet, GCS, workers). Ctrl-C to the group while both jobs train ends every run KILLED and
    the sweep within 10 s, and nothing of that Ray is left."""
    job = start(f"tracking.uri={store_uri}", "hydra/launcher=ray", *own_ray,
                "optimizer.weight_decay=0.01,0.1", "epochs=100000000",
                tmp_path=tmp_path, multirun=True,
                env={**RAY_LOOPBACK, "HOME": str(tmp_path / "home")})  # its Ray's token: above
    try:
        assert_ctrl_c_ends_it_killed(job, store_uri)
        wait_for(lambda: not session_members(job.pid), "its Ray's processes to end", timeout=10)
    finally:
        for pid in session_members(job.pid):
            os.kill(pid, signal.SIGKILL)

"""Past one machine: hosts of our own (tests/system/hosts.py) — a tracking host (PostgreSQL 15 and
``mlflow server`` proxying artifacts: jobs upload through it and never see its disk), a login
host where the user types the command, and two worker hosts, each with its own address in
198.18.0.0/15, its own host name, and the tracking host's disk hidden from it.

The database password is the secret: it lives in the server's environment only, and must show
in no table, artifact, log or job file.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import PYTHON
from tests.postgres import running_postgres
from tests.system.hosts import Network, network, unavailable
from tests.system.ray_nodes import RAY_LOOPBACK

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
TRACKING, LOGIN, WORKERS = "tracking", "login", ("worker-1", "worker-2")
PAIR_FIGURES = {"loss.png", "weights.png", "trajectory.png"}
ARM_METRICS = {"loss", "weight_norm", "w_1", "w_2", "lr", "grad_norm", "decay_grad_ratio"}


@dataclass(frozen=True)
class Cluster:
    net: Network
    url: str  # the tracking server, as the other hosts reach it
    secret: str  # the database password: in the server's environment only
    disk: Path  # the tracking host's own folder: the server's log and artifacts

    def dump(self, folder: Path, experiment: str = "weight-decay") -> list[dict]:
        """The store as a user on the login host reads it, artifacts downloaded into folder."""
        done = self.net.run(LOGIN, [PYTHON, "-m", "tests.system.store_dump", self.url,
                                    experiment, str(folder)], cwd=ROOT, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        return json.loads(done.stdout)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    if reason := unavailable():
        pytest.skip(reason)
    disk = tmp_path / "tracking-host"
    disk.mkdir()
    with network(TRACKING, LOGIN, *WORKERS) as net:
        others = (LOGIN, *WORKERS)
        net.hide(disk, *others)
        with running_postgres(on=lambda argv: net.command(TRACKING, argv)) as postgres:
            net.hide(postgres.log.parent, *others)  # its data folder
            address = net[TRACKING].address
            url = f"http://{address}:5000"
            server = net.start(
                TRACKING,
                [PYTHON, "-m", "mlflow", "server", "--host", address, "--port", "5000",
                 "--allowed-hosts", f"{address}:5000", "--backend-store-uri", postgres.uri,
                 "--serve-artifacts", "--artifacts-destination", str(disk / "artifacts"),
                 "--workers", "1"],
                log=disk / "server.log", cwd=disk,
                env={"PGPASSWORD": postgres.password,
                     "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"})
            try:
                net.wait_http(LOGIN, f"{url}/health")
                yield Cluster(net, url, postgres.password, disk)
            finally:
                net.stop(server)  # before its database goes


@contextmanager
def ray_cluster(net: Network, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """Ray's head on the login host (no CPU of its own: it runs no job), a one-CPU Ray node on
    each worker host; yields the head's address once both workers have joined, and the
    folder of the nodes' files (their logs)."""
    ray = [PYTHON, "-m", "ray.scripts.scripts", "start", "--block", "--disable-usage-stats",
           "--object-store-memory=100000000"]
    head = f"{net[LOGIN].address}:6379"
    env = {"RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S":
           RAY_LOOPBACK["RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S"]}
    temp = Path(tempfile.mkdtemp(prefix="ray", dir="/tmp"))  # Ray's sockets need short paths
    try:
        net.start(LOGIN, [*ray, "--head", f"--node-ip-address={net[LOGIN].address}",
                          "--port=6379", "--num-cpus=0", "--include-dashboard=false",
                          f"--temp-dir={temp}/login"],
                  log=tmp_path / "ray-login.log", env=env)
        for worker in WORKERS:
            net.start(worker, [*ray, f"--address={head}",
                               f"--node-ip-address={net[worker].address}", "--num-cpus=1",
                               f"--temp-dir={temp}/{worker}"],
                      log=tmp_path / f"ray-{worker}.log", env=env)
        joined = net.run(LOGIN, [PYTHON, "-c", _WAIT_FOR_WORKERS, head], timeout=240)
        assert joined.returncode == 0, joined.stderr[-3000:] + "".join(
            (tmp_path / f"ray-{h}.log").read_text() for h in (LOGIN, *WORKERS))
        yield head, temp
    finally:
        # The nodes are stopped with the network; their logs are read by the test first.
        shutil.rmtree(temp, ignore_errors=True)


_WAIT_FOR_WORKERS = """
import sys, time, ray
ray.init(address=sys.argv[1], logging_level="ERROR")
deadline = time.monotonic() + 180
while sum(n["Alive"] and n["Resources"].get("CPU", 0) >= 1 for n in ray.nodes()) < 2:
    if time.monotonic() > deadline:
        sys.exit(f"the worker nodes did not join: {ray.nodes()}")
    time.sleep(0.5)
"""


def leaks(secret: str, *folders: Path) -> list[str]:
    return [str(path) for folder in folders for path in folder.rglob("*")
            if path.is_file() and secret.encode() in path.read_bytes()]


def test_a_ray_sweep_from_the_login_host_runs_on_both_workers_into_the_team_server(
        cluster: Cluster, tmp_path: Path) -> None:
    net, epochs = cluster.net, 200
    with ray_cluster(net, tmp_path) as (head, ray_files):
        sweep = net.run(LOGIN, [PYTHON, "-m", "wdexp.train", "-m", "hydra/launcher=ray_cluster",
                                f"hydra.launcher.ray.init.address={head}",
                                f"tracking.uri={cluster.url}", "seed=0,1", f"epochs={epochs}",
                                f"hydra.sweep.dir={tmp_path}/multirun"],
                        cwd=tmp_path, timeout=600)
        output = sweep.stdout + sweep.stderr
        assert sweep.returncode == 0, output[-5000:]
        assert leaks(cluster.secret, ray_files) == []  # the nodes' logs

    runs = cluster.dump(tmp_path / "downloaded")
    kinds = Counter((r["tags"]["wdexp.kind"], r["status"]) for r in runs)
    assert kinds == {("sweep", "FINISHED"): 1, ("pair", "FINISHED"): 2, ("arm", "FINISHED"): 4}
    by_id = {r["run_id"]: r for r in runs}
    host = {run_id: r["tags"]["wdexp.owner"].split()[0] for run_id, r in by_id.items()}
    (sweep_run,) = [r for r in runs if r["tags"]["wdexp.kind"] == "sweep"]
    pairs = [r for r in runs if r["tags"]["wdexp.kind"] == "pair"]
    assert host[sweep_run["run_id"]] == LOGIN  # the sweep run is the login host's
    assert sorted(host[p["run_id"]] for p in pairs) == sorted(WORKERS)  # a job on each worker
    assert sorted(p["params"]["seed"] for p in pairs) == ["0", "1"]
    for arm in (r for r in runs if r["tags"]["wdexp.kind"] == "arm"):
        parent = by_id[arm["tags"]["mlflow.parentRunId"]]
        assert parent["tags"]["wdexp.kind"] == "pair"
        assert set(arm["steps"]) == ARM_METRICS
        assert all(steps == list(range(epochs + 1)) for steps in arm["steps"].values()), arm
    for pair in pairs:
        # Uploaded through the server (its artifact store is the server's own), read back
        # through it from the login host, and lying on the tracking host's disk.
        assert pair["artifact_uri"].startswith("mlflow-artifacts:"), pair["artifact_uri"]
        assert {Path(p).name for p in pair["artifacts"]} >= PAIR_FIGURES, pair["artifacts"]
        stored = {p.name for p in (cluster.disk / "artifacts").rglob("*.png")
                  if pair["run_id"] in p.parts}
        assert stored >= PAIR_FIGURES
    assert "summary.csv" in sweep_run["artifacts"]

    assert cluster.secret not in json.dumps(runs) + output
    assert leaks(cluster.secret, tmp_path / "downloaded", tmp_path / "multirun",
                 *tmp_path.glob("ray-*.log")) == []

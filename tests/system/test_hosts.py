"""Past one machine: hosts of our own (tests/system/hosts.py, tests/system/team_hosts.py) — a
tracking host (PostgreSQL 15 and ``mlflow server`` proxying artifacts: jobs upload through it and
never see its disk), a login host where the user types the command, and two worker hosts, each
with its own address in 198.18.0.0/15, its own host name, and the tracking host's disk hidden
from it. Jobs reach the workers through Ray or a Slurm cluster (tests/system/slurm_nodes.py).

The database password is the secret: it lives in the server's environment only, and must show
in no table, artifact, log or job file.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import PYTHON, StoreReader
from tests.jobs import training, wait_for
from tests.processes import tracking_processes
from tests.system.hosts import Network, unavailable
from tests.system.ray_nodes import RAY_LOOPBACK, session_members
from tests.system.slurm_nodes import slurm_cluster
from tests.system.slurm_nodes import unavailable as slurm_unavailable
from tests.system.team_hosts import LOGIN, TRACKING, WORKERS, Cluster, team_cluster
from wdexp.vocabulary import ORPHANED_TAG, OWNER_TAG, SUPERSEDED_TAG

# One worker runs this module under pytest-xdist: its hosts and server start once.
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("hosts")]

PAIR_FIGURES = {"loss.png", "weights.png", "trajectory.png"}
CUT_EPOCHS = 3000
ARM_METRICS = {"loss", "weight_norm", "w_1", "w_2", "lr", "grad_norm", "decay_grad_ratio"}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """The hosts, PostgreSQL and the MLflow server on the tracking host (each test its own
    experiment); every test that pulls a cable plugs it back."""
    if reason := unavailable():
        pytest.skip(reason)
    with team_cluster(tmp_path_factory.mktemp("tracking-host")) as cluster:
        yield cluster


@dataclass(frozen=True)
class RayNodes:
    head: str  # the address jobs are sent to
    files: Path  # the nodes' temp folders (their logs)
    sessions: dict[str, int]  # each host's node: the session id of its processes


@contextmanager
def ray_cluster(net: Network, tmp_path: Path) -> Iterator[RayNodes]:
    """Ray's head on the login host (no CPU of its own: it runs no job), a one-CPU Ray node on
    each worker host, yielded once both workers have joined."""
    ray = [PYTHON, "-m", "ray.scripts.scripts", "start", "--block", "--disable-usage-stats",
           "--object-store-memory=100000000"]
    head = f"{net[LOGIN].address}:6379"
    env = {"RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S":
           RAY_LOOPBACK["RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S"],
           # A node that stops answering is dead after about 10 s, not Ray's minute.
           "RAY_health_check_period_ms": "1000", "RAY_health_check_timeout_ms": "2000",
           "RAY_health_check_failure_threshold": "5"}
    temp = Path(tempfile.mkdtemp(prefix="ray", dir="/tmp"))  # Ray's sockets need short paths
    nodes = []
    try:
        nodes.append(net.start(LOGIN, [*ray, "--head", f"--node-ip-address={net[LOGIN].address}",
                          "--port=6379", "--num-cpus=0", "--include-dashboard=false",
                          f"--temp-dir={temp}/login"],
                  log=tmp_path / "ray-login.log", env=env))
        nodes += [net.start(worker, [*ray, f"--address={head}",
                                     f"--node-ip-address={net[worker].address}",
                                     "--num-cpus=1", f"--temp-dir={temp}/{worker}"],
                            log=tmp_path / f"ray-{worker}.log", env=env)
                  for worker in WORKERS]
        joined = net.run(LOGIN, [PYTHON, "-c", _WAIT_FOR_WORKERS, head], timeout=240)
        assert joined.returncode == 0, joined.stderr[-3000:] + "".join(
            (tmp_path / f"ray-{h}.log").read_text() for h in (LOGIN, *WORKERS))
        yield RayNodes(head, temp, {host: node.pid
                                    for host, node in zip((LOGIN, *WORKERS), nodes, strict=True)})
    finally:
        survivors = [pid for node in reversed(nodes) for pid in net.stop(node)]
        shutil.rmtree(temp, ignore_errors=True)
    assert survivors == [], f"Ray processes outlived SIGTERM: {survivors}"


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
    with ray_cluster(net, tmp_path) as ray:
        sweep = net.run(LOGIN, [PYTHON, "-m", "wdexp.train", "-m", "hydra/launcher=ray_cluster",
                                f"hydra.launcher.ray.init.address={ray.head}",
                                f"tracking.uri={cluster.url}", "seed=0,1", f"epochs={epochs}",
                                f"hydra.sweep.dir={tmp_path}/multirun"],
                        cwd=tmp_path, timeout=600)
        output = sweep.stdout + sweep.stderr
        assert sweep.returncode == 0, output[-5000:]
        assert leaks(cluster.secret, ray.files) == []  # the nodes' logs

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


def test_a_worker_cut_off_mid_sweep_loses_one_pair_which_resume_reruns(
        cluster: Cluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Worker 1's cable pulled while both jobs train: its job cannot reach the server, fails
    within tracking.timeout_s and exits after another trying to end its runs, left RUNNING;
    the next job into the experiment, from worker 2 while worker 1 is still away, ends them:
    their heartbeat is older than tracking.orphan_after_s. Once the cable is back, Ray either
    delivers the lost job's failure (the sweep ends, exit 1, one job not finished) or, had it
    declared the node dead first, runs the task again on worker 2 (exit 0); ``resume=true``
    reruns exactly the pair not finished, leaving each seed one finished pair."""
    net, experiment = cluster.net, "cut"
    cluster.watch(experiment, monkeypatch)
    with ray_cluster(net, tmp_path) as ray:
        sweep = [PYTHON, "-m", "wdexp.train", "-m", "hydra/launcher=ray_cluster",
                 f"hydra.launcher.ray.init.address={ray.head}", f"tracking.uri={cluster.url}",
                 f"tracking.experiment={experiment}", "tracking.orphan_after_s=6",
                 "tracking.timeout_s=10", "seed=0,1", f"epochs={CUT_EPOCHS}",
                 f"hydra.sweep.dir={tmp_path}/multirun"]
        first = net.start(LOGIN, sweep, log=tmp_path / "sweep.log", cwd=tmp_path)
        try:
            wait_for(lambda: training(StoreReader(cluster.database, experiment), 2),
                     "both jobs training", timeout=180)
            net.cut(WORKERS[0])
            try:
                cut_at = time.monotonic()
                wait_for(lambda: not running_jobs(ray.sessions[WORKERS[0]]),
                         "the job on the cut-off worker to end", timeout=90)
                ended = time.monotonic() - cut_at
                # The next job into the experiment, from another host, while worker 1 is away
                # (back, its tracking process would beat again, or end the runs itself).
                later = net.run(WORKERS[1], [PYTHON, "-m", "wdexp.train",
                                             f"tracking.uri={cluster.url}",
                                             f"tracking.experiment={experiment}", "seed=7",
                                             "epochs=1", f"hydra.run.dir={tmp_path}/later"],
                                cwd=tmp_path, timeout=180)
                assert later.returncode == 0, later.stdout + later.stderr
                # Ended by it, or by a job of the sweep that ended after the heartbeat went stale.
                (away,) = [p for p in StoreReader(cluster.database, experiment).runs("pair")
                           if p.data.tags[OWNER_TAG].split()[0] == WORKERS[0]]
                assert away.info.status == "KILLED", away.info
            finally:
                net.plug(WORKERS[0])
            first.wait(timeout=300)
        finally:
            if first.poll() is None:
                net.stop(first)
        output = (tmp_path / "sweep.log").read_text()
        assert (first.returncode, "1 of 2 jobs did not finish" in output) in (
            (0, False), (1, True)), output[-5000:]
        again = net.run(LOGIN, [*sweep, "resume=true"], cwd=tmp_path, timeout=300)
        assert again.returncode == 0, (again.stdout + again.stderr)[-5000:]
    # Its failure within tracking.timeout_s, one more timeout_s trying to end its runs, a margin.
    assert ended < 2 * 10 + 15, f"{ended:.0f} s"

    store = StoreReader(cluster.database, experiment)
    assert "RUNNING" not in {r.info.status for r in store.runs()}
    pairs = [p for p in store.runs("pair") if p.data.params["seed"] != "7"]  # not the later job
    host = {p.info.run_id: p.data.tags[OWNER_TAG].split()[0] for p in pairs}
    (cut_off,) = [p for p in pairs if host[p.info.run_id] == WORKERS[0]]
    # The job that ended it said so; its own job may still end it FAILED after all, when its
    # last write goes through with the cable back.
    ended_line = (f"ended orphaned pair run {cut_off.info.run_id} ({cut_off.info.run_name}) "
                  f"KILLED: no heartbeat from {WORKERS[0]} for ")
    assert ended_line in later.stdout + later.stderr + output
    reason = cut_off.data.tags[ORPHANED_TAG]
    assert reason.startswith(f"no heartbeat from {WORKERS[0]} for "), reason
    assert reason.endswith("(tracking.orphan_after_s=6)"), reason
    ended_as = {cut_off.info.status, *(a.info.status
                                       for a in store.arms(cut_off.info.run_id).values())}
    assert ended_as <= {"KILLED", "FAILED"}, ended_as
    finished = [p for p in pairs if p.info.status == "FINISHED"]
    assert sorted(p.data.params["seed"] for p in finished) == ["0", "1"], pairs  # once each
    assert len(pairs) == 3  # and nothing more was run
    for pair in finished:
        for arm in store.arms(pair.info.run_id).values():
            steps = [step for step, _ in store.history(arm.info.run_id, "loss")]
            assert steps == list(range(CUT_EPOCHS + 1))
    rerun = next(p for p in finished if p.data.params["seed"] == cut_off.data.params["seed"])
    sweeps = {s.info.run_id: s for s in store.runs("sweep")}
    if first.returncode == 0:  # Ray ran it again in the same sweep, which says so
        assert cut_off.data.tags[SUPERSEDED_TAG] == rerun.info.run_id
        assert [s.info.status for s in sweeps.values()] == ["FINISHED"]  # resume: nothing left
    else:  # resume=true ran just that job, in a sweep run of its own
        resumed = sweeps[rerun.data.tags["mlflow.parentRunId"]]
        assert resumed.info.status == "FINISHED"
        assert [p for p in pairs if p.data.tags["mlflow.parentRunId"] == resumed.info.run_id
                ] == [rerun]


def wait_training(cluster: Cluster, experiment: str, job: subprocess.Popen[bytes]) -> None:
    """Until the job's pair is training (both arms have logged), or fail if it exited."""
    def ready() -> bool:
        assert job.poll() is None, f"the job exited with {job.returncode} before training"
        return training(StoreReader(cluster.database, experiment), 1)

    wait_for(ready, "the job training", timeout=180)


def running_jobs(session: int) -> list[int]:
    """The Ray workers of a node's session running a job (an idle one is ``ray::IDLE``)."""
    return [pid for pid in session_members(session)
            if Path(f"/proc/{pid}/cmdline").read_bytes().startswith(b"ray::_run_job")]


def test_the_tracking_hosts_cable_out_for_20_s_mid_run_loses_nothing(
        cluster: Cluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A job on worker 1 while the tracking host is off the network for 20 s, in its training
    and (had training ended) its closing: within tracking.timeout_s it rides the outage out
    (MLflow's HTTP retries) and every point and figure lands."""
    net, experiment = cluster.net, "outage"
    cluster.watch(experiment, monkeypatch)
    job = net.start(WORKERS[0], [PYTHON, "-m", "wdexp.train", f"tracking.uri={cluster.url}",
                                 f"tracking.experiment={experiment}", "tracking.timeout_s=60",
                                 f"epochs={CUT_EPOCHS}", f"hydra.run.dir={tmp_path}/run"],
                    log=tmp_path / "job.log", cwd=tmp_path)
    try:
        wait_training(cluster, experiment, job)
        net.cut(TRACKING)
        try:
            time.sleep(20)
        finally:
            net.plug(TRACKING)
        job.wait(timeout=300)
    finally:
        if job.poll() is None:
            net.stop(job)
    output = (tmp_path / "job.log").read_text()
    assert job.returncode == 0, output[-5000:]
    assert "Traceback" not in output

    store = StoreReader(cluster.database, experiment)
    (pair,) = store.runs("pair")
    assert pair.info.status == "FINISHED"
    for arm in store.arms(pair.info.run_id).values():
        assert arm.info.status == "FINISHED"
        for key in ARM_METRICS:
            steps = [step for step, _ in store.history(arm.info.run_id, key)]
            assert steps == list(range(CUT_EPOCHS + 1)), key  # each once, none lost
    stored = {p.name for p in (cluster.disk / "artifacts").rglob("*.png")
              if pair.info.run_id in p.parts}
    assert stored >= PAIR_FIGURES


def test_the_tracking_host_away_past_timeout_s_fails_the_job_and_its_runs_end_once_back(
        cluster: Cluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The tracking host off the network for longer than ``tracking.timeout_s`` (10 s): the job
    on worker 1 fails with one line naming ``tracking.uri`` (exit 1), its runs left RUNNING;
    once the link is back, the next job into the experiment, from worker 2, ends them (their
    heartbeat is older than ``tracking.orphan_after_s``) or its own tracking process, still
    trying, does; every point kept once."""
    net, experiment = cluster.net, "long-outage"
    cluster.watch(experiment, monkeypatch)
    args = [f"tracking.uri={cluster.url}", f"tracking.experiment={experiment}",
            "tracking.timeout_s=10", "tracking.orphan_after_s=6"]
    job = net.start(WORKERS[0], [PYTHON, "-m", "wdexp.train", *args, f"epochs={CUT_EPOCHS}",
                                 f"hydra.run.dir={tmp_path}/run"],
                    log=tmp_path / "job.log", cwd=tmp_path)
    try:
        wait_training(cluster, experiment, job)
        net.cut(TRACKING)
        try:
            cut_at = time.monotonic()
            job.wait(timeout=120)
            ended = time.monotonic() - cut_at
            (left,) = StoreReader(cluster.database, experiment).runs("pair")
            assert left.info.status == "RUNNING"  # nobody could tell the server
            time.sleep(6)  # its heartbeat is older than tracking.orphan_after_s by now
        finally:
            net.plug(TRACKING)
    finally:
        if job.poll() is None:
            net.stop(job)
    output = (tmp_path / "job.log").read_text()
    assert job.returncode == 1, output[-5000:]
    assert "Traceback" not in output
    assert f"wdexp: tracking.uri {cluster.url} " in output, output[-5000:]
    # Its line within timeout_s, then a timeout_s trying to end its runs and one letting its
    # tracking process finish what was sent, and a margin.
    assert ended < 3 * 10 + 15, f"{ended:.0f} s"

    later = net.run(WORKERS[1], [PYTHON, "-m", "wdexp.train", *args, "seed=7", "epochs=1",
                                 f"hydra.run.dir={tmp_path}/later"], cwd=tmp_path, timeout=180)
    assert later.returncode == 0, later.stdout + later.stderr
    # The job's tracking process, still trying when the link came back, ends its runs itself
    # (FAILED, as its job asked, or KILLED: its job is gone), unless the later job found them
    # stale first and ended them KILLED.
    wait_for(lambda: not tracking_processes(tmp_path), "its tracking process to exit",
             timeout=120)
    store = StoreReader(cluster.database, experiment)
    assert "RUNNING" not in {r.info.status for r in store.runs()}
    (pair,) = [p for p in store.runs("pair") if p.info.run_id == left.info.run_id]
    arms = store.arms(left.info.run_id).values()
    assert {pair.info.status, *(a.info.status for a in arms)} <= {"KILLED", "FAILED"}
    if pair.data.tags.get(ORPHANED_TAG):  # ended by the later job, which said so
        assert (f"ended orphaned pair run {left.info.run_id} ({left.info.run_name}) KILLED: "
                f"no heartbeat from {WORKERS[0]} for ") in later.stdout + later.stderr
    for arm in arms:
        steps = [step for step, _ in store.history(arm.info.run_id, "loss")]
        assert 0 < len(steps) <= CUT_EPOCHS + 1 and steps == list(range(len(steps)))  # once each


def behind(reader: StoreReader) -> int:
    """The seed of the pair that has trained the fewest epochs so far."""
    trained = {int(pair.data.params["seed"]):
               min(len(reader.history(arm.info.run_id, "loss"))
                   for arm in reader.arms(pair.info.run_id).values())
               for pair in reader.runs("pair")}
    return min(trained, key=trained.__getitem__)


RESUME_FROM_PYTHON = """import sys, wdexp
result = wdexp.sweep(*sys.argv[1:], launcher="slurm")
print(result.status, sorted(result.table["seed"]))"""


def test_a_slurm_array_runs_on_both_workers_and_a_cancelled_task_costs_its_pair_alone(
        cluster: Cluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``hydra/launcher=slurm`` typed on the login host submits a real job array (slurmctld
    and slurmdbd there, a slurmd on each worker host); ``scancel`` of one task while both
    train (the one that started last: Slurm starts the two seconds apart, and a task cancelled
    after its training would test the close, not the cut) ends its runs KILLED with every
    trained step written, the sweep waits for the other,
    which lands whole, and says which job did not finish; ``resume=true``, sent from Python
    (``wdexp.sweep(…, launcher="slurm")``), reruns just that pair."""
    if reason := slurm_unavailable():
        pytest.skip(reason)
    net, experiment = cluster.net, "slurm"
    cluster.watch(experiment, monkeypatch)
    with slurm_cluster(net, LOGIN, WORKERS) as slurm:
        overrides = [f"tracking.uri={cluster.url}", f"tracking.experiment={experiment}",
                     "seed=0,1", f"epochs={CUT_EPOCHS}", f"hydra.sweep.dir={tmp_path}/multirun"]
        sweep = [PYTHON, "-m", "wdexp.train", "-m", "hydra/launcher=slurm", *overrides]
        first = net.start(LOGIN, sweep, log=tmp_path / "sweep.log", cwd=tmp_path, env=slurm.env)
        try:
            try:
                wait_for(lambda: training(StoreReader(cluster.database, experiment), 2),
                         "both array tasks training", timeout=180)
            except AssertionError as error:  # where the jobs are, in Slurm's and their words
                jobs = slurm.run(net, LOGIN, "squeue", "-a", "-r", "-o", "%i %T %R %M")
                logs = "".join(f"--- {log}\n{log.read_text()[-1500:]}" for log in
                               sorted((tmp_path / "multirun").rglob("*_log.*")))
                raise AssertionError(f"{jobs}\n{logs}\n{slurm.logs()}\n"
                                     f"{(tmp_path / 'sweep.log').read_text()[-3000:]}") from error
            tasks = slurm.run(net, LOGIN, "squeue", "-h", "-r", "-o", "%i %N").split()
            running = dict(zip(tasks[::2], tasks[1::2], strict=True))
            seed = behind(StoreReader(cluster.database, experiment))  # its job index, too
            (cancelled,) = [task for task in running if task.endswith(f"_{seed}")]
            assert sorted(running.values()) == sorted(WORKERS), running  # one on each
            slurm.run(net, LOGIN, "scancel", cancelled)
            first.wait(timeout=300)
        finally:
            if first.poll() is None:
                net.stop(first)
        output = (tmp_path / "sweep.log").read_text()
        assert first.returncode == 1, output[-5000:]
        assert f"1 of 2 jobs did not finish (#{seed}" in output, output[-5000:]
        states = slurm.run(net, LOGIN, "sacct", "-n", "-X", "-P", "-o", "JobID,State")
        assert f"{cancelled}|CANCELLED" in states, states
        assert (f"wdexp: job #{seed} (tracking.uri=http\\://{net[TRACKING].address}\\:5000 "
                f"tracking.experiment={experiment} seed={seed} epochs={CUT_EPOCHS}) lost: its "
                "process ended without a result (state CANCELLED)") in output, output[-5000:]
        # The cancelled job's own words: its line, and no traceback where submitit keeps stderr.
        assert (tmp_path / "multirun" / str(seed) / "train.log").read_text().rstrip().endswith(
            "wdexp: stopped by SIGTERM")
        (stderr,) = (tmp_path / "multirun" / ".submitit" / cancelled).glob("*_log.err")
        assert "Traceback" not in stderr.read_text(), stderr.read_text()[-5000:]
        # The rerun from Python, as a notebook would send it to the cluster: wdexp.sweep.
        again = net.run(LOGIN, [PYTHON, "-c", RESUME_FROM_PYTHON, *overrides, "resume=true"],
                        cwd=tmp_path, env=slurm.env, timeout=300)
        assert again.returncode == 0, (again.stdout + again.stderr)[-5000:]
        assert again.stdout.splitlines()[-1] == f"FINISHED [{seed}]", again.stdout[-3000:]
        assert leaks(cluster.secret, slurm.folder) == []  # the daemons' logs and state

    runs = cluster.dump(tmp_path / "downloaded", experiment)
    assert "RUNNING" not in {r["status"] for r in runs}
    by_id = {r["run_id"]: r for r in runs}
    pairs = [r for r in runs if r["tags"]["wdexp.kind"] == "pair"]
    host = {p["run_id"]: p["tags"][OWNER_TAG].split()[0] for p in pairs}
    (lost,) = [p for p in pairs if p["status"] != "FINISHED"]
    assert lost["status"] == "KILLED" and lost["params"]["seed"] == str(seed)
    assert host[lost["run_id"]] == running[cancelled]  # where Slurm said it ran
    lost_arms = [r for r in runs if r["tags"].get("mlflow.parentRunId") == lost["run_id"]]
    assert sorted(a["status"] for a in lost_arms) == ["KILLED", "KILLED"]
    trained = {len(a["steps"]["loss"]) for a in lost_arms}
    assert len(trained) == 1 and 0 < trained.pop() <= CUT_EPOCHS, lost_arms  # both arms alike
    for arm in lost_arms:
        assert arm["steps"]["loss"] == list(range(len(arm["steps"]["loss"])))  # none skipped
    finished = [p for p in pairs if p["status"] == "FINISHED"]
    assert sorted(p["params"]["seed"] for p in finished) == ["0", "1"]  # each once, no more
    for pair in finished:
        assert host[pair["run_id"]] in WORKERS
        assert pair["artifact_uri"].startswith("mlflow-artifacts:"), pair["artifact_uri"]
        assert {Path(p).name for p in pair["artifacts"]} >= PAIR_FIGURES, pair["artifacts"]
        for arm in (r for r in runs if r["tags"].get("mlflow.parentRunId") == pair["run_id"]):
            assert set(arm["steps"]) == ARM_METRICS
            assert all(steps == list(range(CUT_EPOCHS + 1)) for steps in arm["steps"].values())
    sweeps = [r for r in runs if r["tags"]["wdexp.kind"] == "sweep"]
    assert sorted(s["status"] for s in sweeps) == ["FAILED", "FINISHED"], sweeps
    (resumed,) = [s for s in sweeps if s["status"] == "FINISHED"]
    rerun = [p for p in pairs if p["tags"]["mlflow.parentRunId"] == resumed["run_id"]]
    assert [p["params"]["seed"] for p in rerun] == [str(seed)]  # just the lost pair
    assert by_id[lost["tags"]["mlflow.parentRunId"]]["status"] == "FAILED"

    assert cluster.secret not in json.dumps(runs) + output + again.stdout + again.stderr
    assert leaks(cluster.secret, tmp_path) == []  # job files, Slurm's and the jobs' logs

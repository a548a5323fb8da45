"""Faults on real processes and real stores: each process killed at its dangerous moments, a
store that fills up or refuses writes, a server that dies or hangs mid-run, a parallel sweep
interrupted from the keyboard. After each: the exit status, the time it took, no run left
RUNNING (or, where nobody survived to close them, the next job ending them), the data kept."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import psutil
import pytest

from tests.conftest import PYTHON, StoreReader, child_env, free_port
from tests.jobs import start, training_metrics, wait_for
from tests.servers import start_mlflow_server
from wdexp.config import ROOT

# Deadlines and timings: under pytest-xdist these run one at a time, on one worker.
pytestmark = pytest.mark.xdist_group("timing")

LONG = "epochs=100000000"


def statuses(uri: str) -> dict[str, str]:
    return {run.info.run_id: run.info.status for run in StoreReader(uri).runs()}


def tracking_pid(uri: str) -> int:
    """The tracking process that owns the (only) pair run, from its owner tag."""
    (pair,) = StoreReader(uri).runs("pair")
    return int(pair.data.tags["wdexp.owner"].split()[1])


def last_step(output: str) -> int:
    match = re.search(r"ended KILLED after step (\d+)", output)
    assert match, output
    return int(match.group(1))


def assert_steps_through(reader: StoreReader, last: int) -> None:
    """Every arm holds steps 0..last, each once: the buffered tail was written."""
    for arm in reader.runs("arm"):
        steps = [step for step, _ in reader.history(arm.info.run_id, "loss")]
        assert steps == list(range(last + 1))


# --- signals ------------------------------------------------------------------------------------

@pytest.mark.parametrize(("signum", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_to_the_process_group_ends_every_run_killed_with_all_trained_steps(
        tmp_path, store_uri, signum, code):
    proc = start(f"tracking.uri={store_uri}", LONG, tmp_path=tmp_path)
    training_metrics(store_uri, proc)
    os.killpg(proc.pid, signum)  # what Ctrl-C in a shell, or a scheduler, does
    output, took = proc.finish(timeout=30)
    assert proc.returncode == code, output
    assert took < 10, f"stopping took {took:.1f} s"
    assert "Traceback" not in output
    assert set(statuses(store_uri).values()) == {"KILLED"}
    assert_steps_through(StoreReader(store_uri), last_step(output))


# --- the training process killed ------------------------------------------------------------

def bulky_model(tmp_path: Path) -> tuple[str, dict[str, str]]:
    """A user model whose data file is large, so opening its pair run takes a while: the
    training process is then waiting for the tracking process's reply."""
    module = tmp_path / "bulky.py"
    module.write_text(
        "from wdexp.models import Quadratic\n\n"
        "class Bulky(Quadratic):\n"
        "    def artifacts(self):\n"
        "        return {'data.txt': 'x' * 300_000_000}\n")
    return "model._target_=bulky.Bulky", {"PYTHONPATH": f"{tmp_path}{os.pathsep}{ROOT}"}


def test_training_process_killed_while_waiting_for_a_reply_leaves_no_run_running(
        tmp_path, store_uri):
    model, env = bulky_model(tmp_path)
    StoreReader(store_uri).runs()  # the schema exists before the job: the polls below read it
    proc = start(f"tracking.uri={store_uri}", model, "epochs=5", tmp_path=tmp_path, env=env)
    # The pair run exists before its 300 MB file is written: the training process is waiting.
    wait_for(lambda: StoreReader(store_uri).runs("pair"), "the pair run", job=proc)
    os.kill(proc.pid, signal.SIGKILL)
    proc.finish(timeout=10)
    wait_for(lambda: set(statuses(store_uri).values()) == {"KILLED"}
             and len(statuses(store_uri)) == 3, "the runs to end KILLED", timeout=60)


def test_training_process_killed_mid_run_leaves_its_runs_killed(tmp_path, store_uri):
    proc = start(f"tracking.uri={store_uri}", LONG, tmp_path=tmp_path)
    training_metrics(store_uri, proc)
    os.kill(proc.pid, signal.SIGKILL)
    proc.finish(timeout=10)
    wait_for(lambda: set(statuses(store_uri).values()) == {"KILLED"}, "the runs to end KILLED",
             timeout=30)
    reader = StoreReader(store_uri)
    for arm in reader.runs("arm"):  # what reached the tracking process was written, gap-free
        steps = [step for step, _ in reader.history(arm.info.run_id, "loss")]
        assert steps == list(range(len(steps))) and steps


# --- the tracking process killed -----------------------------------------------------------

def test_tracking_process_killed_mid_run_fails_the_job_and_its_runs(tmp_path, store_uri):
    proc = start(f"tracking.uri={store_uri}", LONG, tmp_path=tmp_path)
    training_metrics(store_uri, proc)
    os.kill(tracking_pid(store_uri), signal.SIGKILL)
    output, took = proc.finish(timeout=60)
    assert proc.returncode == 1, output
    assert took < 30, f"{took:.0f} s"  # a new tracking process starts to end the runs
    assert "Traceback" not in output
    assert "wdexp: the tracking process for tracking.uri" in output
    reader = StoreReader(store_uri)
    assert set(statuses(store_uri).values()) == {"FAILED"}
    (pair,) = reader.runs("pair")
    assert "tracking process" in pair.data.tags["wdexp.failure"]


def test_both_processes_killed_leave_runs_a_later_job_ends_and_resume_reruns(tmp_path,
                                                                              store_uri):
    proc = start(f"tracking.uri={store_uri}", "epochs=100000000", tmp_path=tmp_path)
    training_metrics(store_uri, proc)
    (orphan,) = StoreReader(store_uri).runs("pair")
    os.kill(tracking_pid(store_uri), signal.SIGKILL)
    os.kill(proc.pid, signal.SIGKILL)
    proc.finish(timeout=10)
    assert set(statuses(store_uri).values()) == {"RUNNING"}  # nobody left to close them

    later = start(f"tracking.uri={store_uri}", "epochs=100000000", "resume=true",
                  tmp_path=tmp_path)
    wait_for(lambda: "ended orphaned pair run" in later.output, "the orphans to be ended",
             job=later)
    # Stopped once its own pair run exists: on a loaded machine a SIGTERM right after the
    # orphans were ended could come before it.
    wait_for(lambda: len(StoreReader(store_uri).runs("pair")) == 2, "the rerun's pair run",
             job=later)
    os.killpg(later.pid, signal.SIGTERM)
    output, _ = later.finish(timeout=30)
    assert output.count("ended orphaned pair run") == 1, output
    reader = StoreReader(store_uri)
    ended = reader.client.get_run(orphan.info.run_id)
    assert "is gone" in ended.data.tags["wdexp.orphaned"]
    assert {arm.info.status for arm in reader.arms(orphan.info.run_id).values()} == {"KILLED"}
    assert len(reader.runs("pair")) == 2  # resume ran the killed configuration again


# --- a sweep interrupted from the keyboard --------------------------------------------------

def test_ctrl_c_in_a_joblib_sweep_leaves_no_run_running(tmp_path, store_uri):
    proc = start(f"tracking.uri={store_uri}", "optimizer.weight_decay=0,0.01,0.1,1",
                 "epochs=3000000", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
                 tmp_path=tmp_path, multirun=True)
    training_metrics(store_uri, proc, pairs=2)
    os.killpg(proc.pid, signal.SIGINT)
    output, took = proc.finish(timeout=60)
    assert proc.returncode != 0, output
    assert took < 10, f"{took:.1f} s"
    # loky kills its workers' trees at once; their detached tracking processes end the runs.
    wait_for(lambda: "RUNNING" not in statuses(store_uri).values(), "no run RUNNING",
             timeout=60)
    reader = StoreReader(store_uri)
    runs = reader.runs()
    assert {run.info.status for run in runs} == {"KILLED"}
    assert len([r for r in runs if r.data.tags["wdexp.kind"] == "pair"]) == 2
    # The stopped sweep keeps its summary and draws no figures (docs/failures-and-secrets.md).
    (sweep,) = reader.runs("sweep")
    assert [a.path for a in reader.client.list_artifacts(sweep.info.run_id)] == ["summary.csv"]


def test_ctrl_c_in_a_stacked_sweep_ends_every_open_pair_killed_with_all_trained_steps(
        tmp_path, store_uri):
    proc = start(f"tracking.uri={store_uri}", "optimizer.weight_decay=0.01,0.1", "seed=0,1",
                 "hydra/launcher=stacked", LONG, tmp_path=tmp_path, multirun=True)
    training_metrics(store_uri, proc, pairs=4)
    workers = drawing_workers(proc.pid)
    os.killpg(proc.pid, signal.SIGINT)
    output, took = proc.finish(timeout=60)
    assert proc.returncode == 130, output
    assert took < 10, f"{took:.1f} s"
    assert "Traceback" not in output
    assert not psutil.wait_procs(workers, timeout=5)[1], "a drawing worker outlived the sweep"
    assert set(statuses(store_uri).values()) == {"KILLED"}
    reader = StoreReader(store_uri)
    ended = dict(re.findall(r"pair run (\w+) ended KILLED after step (\d+)", output))
    assert len(ended) == 4 == len(reader.runs("pair"))
    for pair_id, last in ended.items():  # every pair: each of its arms holds steps 0..last
        for arm in reader.arms(pair_id).values():
            steps = [step for step, _ in reader.history(arm.info.run_id, "loss")]
            assert steps == list(range(int(last) + 1))
    (sweep,) = reader.runs("sweep")
    assert [a.path for a in reader.client.list_artifacts(sweep.info.run_id)] == ["summary.csv"]


def drawing_workers(pid: int) -> list[psutil.Process]:
    """The stacked sweep's figure-drawing workers (wdexp/figures/drawers.py): with 4 pairs,
    one where this machine has a spare core."""
    found = [child for child in psutil.Process(pid).children(recursive=True)
             if "loky" in " ".join(child.cmdline())]
    assert len(found) >= (len(os.sched_getaffinity(0)) > 1), "no drawing worker"
    return found


def test_a_stacked_sweep_killed_outright_leaves_no_drawing_worker_behind(tmp_path, store_uri):
    proc = start(f"tracking.uri={store_uri}", "optimizer.weight_decay=0.01,0.1", "seed=0,1",
                 "hydra/launcher=stacked", LONG, tmp_path=tmp_path, multirun=True)
    training_metrics(store_uri, proc, pairs=4)
    workers = drawing_workers(proc.pid)
    os.kill(proc.pid, signal.SIGKILL)  # the OOM killer's way: nothing in it can clean up
    proc.finish(timeout=30)
    assert not psutil.wait_procs(workers, timeout=3)[1], "a drawing worker outlived its sweep"


# --- stores that fail ------------------------------------------------------------------------

@pytest.fixture
def small_disk(tmp_path):
    """A 2 MB tmpfs, where the machine lets us mount one."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if done.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def test_a_full_disk_fails_the_job_fast_with_one_line(tmp_path, small_disk):
    uri = f"sqlite:///{small_disk}/mlflow.db"
    proc = start(f"tracking.uri={uri}", LONG, "tracking.timeout_s=20", tmp_path=tmp_path)
    output, took = proc.finish(timeout=120)  # the 2 MB fill up within seconds
    assert proc.returncode == 1, output
    assert took < 45, f"{took:.0f} s"
    lines = [line for line in output.splitlines() if line.startswith("wdexp: ")]
    assert lines == [f"wdexp: tracking.uri {uri} failed: (sqlite3.OperationalError) database "
                     "or disk is full"] or "disk is full" in lines[-1], output
    assert "Traceback" not in output and len(output.splitlines()) < 10, output
    reader = StoreReader(uri)
    arms = reader.runs("arm")
    assert len(arms) == 2
    for arm in arms:  # what got in before the disk filled (maybe nothing): from step 0, no gap
        steps = [step for step, _ in reader.history(arm.info.run_id, "loss")]
        assert steps == list(range(len(steps)))
    # Once the disk has room again, the next job ends whatever the full disk left RUNNING.
    subprocess.run(["mount", "-o", "remount,size=64m", str(small_disk)], check=True)
    later = subprocess.run([PYTHON, "-m", "wdexp.train", f"tracking.uri={uri}", "epochs=2",
                            f"hydra.run.dir={tmp_path}/later"], capture_output=True, text=True,
                           cwd=tmp_path, timeout=120, env=child_env())
    assert later.returncode == 0, later.stderr
    assert "RUNNING" not in statuses(uri).values()


@pytest.mark.parametrize("case", ["folder", "parent is a file", "read-only"])
def test_an_unusable_sqlite_store_is_one_line_exit_2_and_leaves_nothing(tmp_path, case):
    target = tmp_path / "place"
    target.mkdir()
    db = target / "mlflow.db"
    if case == "folder":
        db.mkdir()
    elif case == "parent is a file":
        (target / "file").write_text("")
        db = target / "file" / "mlflow.db"
    else:
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs",
                               str(target)], capture_output=True, text=True)
        if done.returncode:
            pytest.skip(f"cannot mount a read-only tmpfs here: {done.stderr.strip()}")
    before = sorted(p.name for p in target.iterdir())
    try:
        started = time.monotonic()
        result = subprocess.run([PYTHON, "-m", "wdexp.train", f"tracking.uri=sqlite:///{db}",
                                 f"hydra.run.dir={tmp_path}/outputs"], capture_output=True,
                                text=True, cwd=tmp_path, timeout=120, env=child_env())
        took = time.monotonic() - started
        after = sorted(p.name for p in target.iterdir())
    finally:
        if case == "read-only":
            subprocess.run(["umount", "-l", str(target)], capture_output=True)
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines()[-1].startswith("wdexp: tracking.uri "), result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert after == before  # no store, no lock file
    assert took < 30, f"{took:.0f} s"


# --- a tracking server that dies or hangs ---------------------------------------------------

def test_a_server_killed_mid_run_fails_the_job_within_its_timeout(tmp_path):
    server = start_mlflow_server(tmp_path, free_port())
    proc = start(f"tracking.uri={server.url}", LONG, "tracking.timeout_s=10",
                 tmp_path=tmp_path)
    try:
        training_metrics(server.url, proc)
        owner = tracking_pid(server.url)
        server.kill()
        output, took = proc.finish(timeout=90)
    finally:
        server.kill()
    # Its tracking process gives up on the dead server too, leaving the runs RUNNING.
    wait_for(lambda: not Path(f"/proc/{owner}").exists(), "the tracking process to exit",
             timeout=60)
    assert proc.returncode == 1, output
    assert took < 10 + 15, f"{took:.0f} s"
    assert "Traceback" not in output
    assert f"wdexp: tracking.uri {server.url} " in output
    # The same store behind a new server: the next job ends the runs the dead one left open.
    again = start_mlflow_server(tmp_path, server.port)
    try:
        later = subprocess.run([PYTHON, "-m", "wdexp.train", f"tracking.uri={again.url}",
                                "epochs=2", f"hydra.run.dir={tmp_path}/later"],
                               capture_output=True, text=True, cwd=tmp_path, timeout=120,
                               env=child_env())
        assert later.returncode == 0, later.stderr
        assert "ended orphaned pair run" in later.stdout + later.stderr
        assert "RUNNING" not in statuses(again.url).values()
    finally:
        again.kill()


@pytest.mark.parametrize("server_is", ["stalled", "killed"])
def test_sigterm_is_honoured_while_the_server_hangs_or_is_gone(tmp_path, server_is):
    server = start_mlflow_server(tmp_path, free_port())
    proc = start(f"tracking.uri={server.url}", LONG, "tracking.timeout_s=10", tmp_path=tmp_path)
    try:
        training_metrics(server.url, proc)
        if server_is == "stalled":
            server.pause()  # requests now hang: no answer, no error
        else:
            server.kill()  # requests now fail, and are retried
        time.sleep(5)
        os.killpg(proc.pid, signal.SIGTERM)
        took = proc.exit_within(timeout=60)
    finally:
        server.kill()  # the tracking process, still waiting on it, gives up and lets go
    output, _ = proc.finish(timeout=10)
    assert proc.returncode == 143, output
    assert took < 10, f"{took:.1f} s\n{output}"
    assert "Traceback" not in output

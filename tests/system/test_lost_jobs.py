"""One job's death costs one pair: a sweep's job process killed the way the out-of-memory killer
does it (SIGKILL), on each real launcher that runs jobs on this machine, into a real store. The
dead job's pair ends KILLED with what it had written, every other job runs to its end, the sweep
run ends FAILED counting the lost pair, and the process exits non-zero with a line naming the
lost job."""

from __future__ import annotations

import csv
import os
import signal
import time

import psutil
import pytest

from tests.conftest import StoreReader
from tests.jobs import start, training, wait_for
from tests.system.ray_nodes import RAY_LOOPBACK, cluster_processes
from wdexp.vocabulary import JOB, SUPERSEDED_TAG, tag

EPOCHS = 3000


def _workers(pid: int, name: str) -> list[psutil.Process]:
    return [child for child in psutil.Process(pid).children(recursive=True)
            if name in " ".join(child.cmdline())]


# launcher, the processes that run its jobs, how many train at once, how the lost one is told
LAUNCHERS = {
    # Two workers: the third job waits for one, and runs on the worker that replaces the dead.
    "joblib": (("hydra/launcher=joblib", "hydra.launcher.n_jobs=2"), "LokyProcess", 2,
               "its worker process was killed by SIGKILL (the out-of-memory killer's way)"),
    # A process per job, all at once; the plugin alone would end the sweep at the dead one.
    "submitit_local": (("hydra/launcher=submitit_local",), "submitit.core._submit", 3,
                       "its process ended without a result (state "),  # as submitit saw it
}


@pytest.mark.parametrize("launcher", list(LAUNCHERS))
def test_a_killed_job_loses_its_own_pair_and_the_sweep_goes_on(tmp_path, store_uri, launcher):
    args, process, at_once, told = LAUNCHERS[launcher]
    job = start(f"tracking.uri={store_uri}", *args, "optimizer.weight_decay=0.01,0.1,0.2",
                f"epochs={EPOCHS}", tmp_path=tmp_path, multirun=True)
    # (A submitit job's log goes to its own folder, not to this output: the store says.)
    wait_for(lambda: training(StoreReader(store_uri), at_once), "the jobs training", job=job)
    victim = wait_for(lambda: _workers(job.pid, process), "the jobs' processes", job=job)[0]
    victim.send_signal(signal.SIGKILL)
    killed_at = time.monotonic()
    output, _ = job.finish(timeout=300)
    took = time.monotonic() - killed_at
    assert job.returncode == 1, output
    assert "Traceback" not in output and "Error executing job" not in output, output

    reader = StoreReader(store_uri)
    (sweep,) = reader.runs("sweep")
    pairs = {int(p.data.tags[tag(JOB)]): p for p in reader.runs("pair")}
    assert sorted(pairs) == [0, 1, 2]
    (lost,) = [n for n, p in pairs.items() if p.info.status != "FINISHED"]
    (line,) = [line for line in output.splitlines() if " lost: " in line]
    assert f"wdexp: job #{lost} (" in line and f"lost: {told}" in line, line
    assert (f"wdexp: 1 of 3 jobs did not finish (#{lost}: their lines are above); the others "
            "ran to their end") in output, output

    print(f"{launcher}: from the death to the sweep's end: {took:.1f} s")
    assert pairs[lost].info.status == "KILLED"
    assert sweep.info.status == "FAILED"
    assert sweep.data.metrics["failed_pairs"] == 1 and sweep.data.metrics["pairs"] == 3
    summary = reader.client.download_artifacts(sweep.info.run_id, "summary.csv", str(tmp_path))
    with open(summary) as handle:
        statuses = sorted(row["status"] for row in csv.DictReader(handle))
    assert statuses == ["FINISHED", "FINISHED", "KILLED"]
    for number, pair in pairs.items():
        for arm in reader.arms(pair.info.run_id).values():
            steps = [step for step, _ in reader.history(arm.info.run_id, "loss")]
            if number == lost:  # what it wrote before it died, in order, none twice
                assert arm.info.status == "KILLED"
                assert steps == list(range(len(steps))) and steps
            else:
                assert arm.info.status == "FINISHED"
                assert steps == list(range(EPOCHS + 1))


def test_the_basic_launcher_killed_ends_its_runs_and_resume_runs_exactly_the_rest(tmp_path,
                                                                                  store_uri):
    """The basic launcher runs every job in the sweep's own process, so one SIGKILL ends them
    all: nothing can go on. The running pair and the sweep run end KILLED at once (the tracking
    process sees its job gone), the jobs not started have no run, and ``resume=true`` reruns
    exactly the killed one and those."""
    decays = [0.01, 0.1, 0.2]
    sweep = (f"tracking.uri={store_uri}", f"optimizer.weight_decay={','.join(map(str, decays))}",
             f"epochs={EPOCHS}")
    job = start(*sweep, tmp_path=tmp_path, multirun=True)
    wait_for(lambda: training(StoreReader(store_uri), 2), "the second job training", job=job)
    job.proc.send_signal(signal.SIGKILL)
    job.finish(timeout=30)
    reader = StoreReader(store_uri)
    wait_for(lambda: {r.info.status for r in reader.runs()} <= {"FINISHED", "KILLED"},
             "every run ended", timeout=30)
    (killed,) = reader.runs("sweep")
    assert killed.info.status == "KILLED"
    ended = {float(p.data.params["optimizer.weight_decay"]): p.info.status
             for p in reader.runs("pair")}
    # The kill lands in the second job, or in the third where the second finished while the
    # store was read (a fast machine): the jobs before it finished, the later ones never began.
    running = len(ended) - 1
    assert running >= 1, ended
    assert ended == {**{d: "FINISHED" for d in decays[:running]}, decays[running]: "KILLED"}

    again = start(*sweep, "resume=true", tmp_path=tmp_path, multirun=True)
    output, _ = again.finish(timeout=300)
    assert again.returncode == 0, output
    (resumed,) = [s for s in reader.runs("sweep") if s.info.run_id != killed.info.run_id]
    assert resumed.info.status == "FINISHED"
    rerun = {float(p.data.params["optimizer.weight_decay"]): p.info.status
             for p in reader.runs("pair")
             if p.data.tags["mlflow.parentRunId"] == resumed.info.run_id}
    assert rerun == {d: "FINISHED" for d in decays[running:]}


@pytest.mark.xdist_group("ray")  # one Ray cluster on the machine at a time
def test_a_ray_task_killed_and_retried_is_one_pair_in_every_table(tmp_path, store_uri,
                                                                  ray_cluster):
    """Ray retries a task whose worker died: the job's second attempt replaces the first in
    the store's tables, and the sweep ends as if it had run once."""
    job = start(f"tracking.uri={store_uri}", "hydra/launcher=ray_cluster",
                f"hydra.launcher.ray.init.address={ray_cluster.address}",
                "optimizer.weight_decay=0.01,0.1", f"epochs={EPOCHS}", tmp_path=tmp_path,
                multirun=True, env=RAY_LOOPBACK)
    wait_for(lambda: training(StoreReader(store_uri), 2), "the jobs training", job=job)
    (victim, *_) = wait_for(lambda: cluster_processes(ray_cluster, "ray::_run_job"),
                            "the Ray tasks", job=job)
    os.kill(victim, signal.SIGKILL)
    output, _ = job.finish(timeout=300)
    assert job.returncode == 0, output

    reader = StoreReader(store_uri)
    (sweep,) = reader.runs("sweep")
    attempts = reader.runs("pair")
    assert len(attempts) == 3  # the killed attempt is kept, as it ended
    (replaced,) = [p for p in attempts if SUPERSEDED_TAG in p.data.tags]
    (retry,) = [p for p in attempts if p.info.run_id == replaced.data.tags[SUPERSEDED_TAG]]
    assert replaced.data.tags[tag(JOB)] == retry.data.tags[tag(JOB)]
    wait_for(lambda: reader.client.get_run(replaced.info.run_id).info.status == "KILLED",
             "the killed attempt to be ended KILLED", timeout=60)
    assert {p.info.status for p in attempts if p is not replaced} == {"FINISHED"}
    assert sweep.info.status == "FINISHED", output
    assert sweep.data.metrics["pairs"] == 2 and sweep.data.metrics["failed_pairs"] == 0
    summary = reader.client.download_artifacts(sweep.info.run_id, "summary.csv", str(tmp_path))
    with open(summary) as handle:
        rows = list(csv.DictReader(handle))
    assert sorted(float(row["optimizer.weight_decay"]) for row in rows) == [0.01, 0.1]
    assert {row["status"] for row in rows} == {"FINISHED"}

"""A sweep's identity is its own: jobs nest under the sweep run their launching process created
(not the first RUNNING sweep run tagged with their folder), and a second sweep into a folder
still in use is a one-line error naming hydra.sweep.dir before it creates anything."""

from __future__ import annotations

import subprocess
import time

from mlflow.tracking import MlflowClient

from tests.conftest import PYTHON, StoreReader, child_env, multirun
from tests.jobs import wait_for
from wdexp.sweep_folder import sweep_run_of
from wdexp.tracking.orphans import owner
from wdexp.tracking.records import sweep_key
from wdexp.vocabulary import OWNER_TAG, RUN_KIND_TAG, SWEEP_DIR_TAG, SWEEP_KEY_TAG


def test_a_second_sweep_into_a_folder_in_use_is_refused_before_any_run(tmp_path, store_uri):
    folder = tmp_path / "multirun"
    first = subprocess.Popen(
        [PYTHON, "-m", "wdexp.train", "-m", f"hydra.sweep.dir={folder}",
         f"tracking.uri={store_uri}", "optimizer.weight_decay=0.01,0.1", "epochs=3000"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
        env=child_env())
    try:
        first_sweep = wait_for(lambda: sweep_run_of(str(folder)), "the first sweep's claim",
                               timeout=120)
        second = multirun("optimizer.weight_decay=0.2", "epochs=5", tmp_path=tmp_path,
                          store_uri=store_uri, timeout=120)
        # multirun() puts its sweep into tmp_path/multirun too: the first sweep's folder.
        assert second.returncode == 2, second.stderr
        (line,) = second.stderr.strip().splitlines()
        assert line == ("wdexp: hydra.sweep.dir is the folder of another sweep that is still "
                        f"running: give this sweep a folder of its own (got '{folder}')")
        _, err = first.communicate(timeout=300)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    assert first.returncode == 0, err
    reader = StoreReader(store_uri)
    (sweep,) = reader.runs("sweep")
    assert sweep.info.run_id == first_sweep and sweep.info.status == "FINISHED"
    pairs = reader.runs("pair")
    assert sorted(p.data.params["optimizer.weight_decay"] for p in pairs) == ["0.01", "0.1"]
    assert {p.data.tags["mlflow.parentRunId"] for p in pairs} == {first_sweep}


def test_jobs_nest_under_their_own_sweep_run_not_another_running_one_of_the_folder(
        tmp_path, store_uri):
    folder = tmp_path / "multirun"
    client = MlflowClient(tracking_uri=store_uri)
    experiment = client.create_experiment("weight-decay",
                                          artifact_location=str(tmp_path / "mlartifacts"))
    # A RUNNING sweep run tagged with this folder, whose owner (this test) is alive: another
    # sweep the store cannot tell apart by folder. It started "later" (an hour ahead), so a
    # search by folder, newest first, would find it before the sweep's own run.
    other = client.create_run(experiment, run_name="another sweep",
                              start_time=int(time.time() * 1000) + 3_600_000, tags={
        RUN_KIND_TAG: "sweep", SWEEP_DIR_TAG: str(folder), SWEEP_KEY_TAG: sweep_key(str(folder)),
        OWNER_TAG: owner()}).info.run_id
    # joblib: each job in a worker process of its own, which must be told its sweep run.
    result = multirun("optimizer.weight_decay=0.01,0.1", "epochs=5", "hydra/launcher=joblib",
                      "hydra.launcher.n_jobs=2", tmp_path=tmp_path, store_uri=store_uri)
    assert result.returncode == 0, result.stderr
    reader = StoreReader(store_uri)
    sweeps = {run.info.run_id: run for run in reader.runs("sweep")}
    (own,) = set(sweeps) - {other}
    assert sweeps[own].info.status == "FINISHED" and sweeps[own].data.metrics["pairs"] == 2
    pairs = reader.runs("pair")
    assert len(pairs) == 2
    assert {p.data.tags["mlflow.parentRunId"] for p in pairs} == {own}
    assert sweeps[other].info.status == "RUNNING"

"""Multirun sweeps: one sweep run per multirun, pair runs nested, a summary, resume."""

from __future__ import annotations

import socket

import pandas as pd
import pytest
from hydra import compose, initialize_config_dir

import wdexp
from tests.conftest import ROOT, StoreReader, multirun, sweep_here
from wdexp.sweep_runs import sweep_name
from wdexp.vocabulary import ConfigError


def sweep_summary(reader: StoreReader, sweep_id: str, tmp_path) -> pd.DataFrame:
    path = reader.client.download_artifacts(sweep_id, "summary.csv", str(tmp_path))
    return pd.read_csv(path)


def test_the_launchers_that_train_here_are_warmed_up_and_the_warm_up_draws_nothing():
    """A sweep's launching process builds a throwaway optimizer on a thread while it waits for
    its sweep run, beside the first job's build: it must not move torch's random state, and it
    is done for exactly the launchers whose jobs train in this process."""
    import torch

    from wdexp import study
    from wdexp.sweep_runs import IN_PROCESS

    torch.manual_seed(3)
    before = torch.get_rng_state()
    study.warm_up()
    assert torch.equal(torch.get_rng_state(), before)
    targets = {}
    for launcher in ("basic", "stacked", "joblib", "submitit_local", "ray"):
        with initialize_config_dir(version_base="1.3", config_dir=str(ROOT / "conf")):
            cfg = compose(config_name="config", overrides=[f"hydra/launcher={launcher}"],
                          return_hydra_config=True)
        targets[launcher] = cfg.hydra.launcher._target_ in IN_PROCESS
    assert targets == {"basic": True, "stacked": True, "joblib": False,
                       "submitit_local": False, "ray": False}


def assert_sweep_tree(reader: StoreReader, n_pairs: int, status: str = "FINISHED"):
    (sweep,) = reader.runs("sweep")
    assert sweep.info.status == status
    pairs = reader.runs("pair")
    assert len(pairs) == n_pairs
    assert {p.data.tags["mlflow.parentRunId"] for p in pairs} == {sweep.info.run_id}
    for pair in pairs:
        assert set(reader.arms(pair.info.run_id)) == {"baseline", "decay"}
    return sweep, pairs


@pytest.mark.slow
def test_multirun_nests_pairs_under_one_sweep_run_with_a_summary(tmp_path, store_uri):
    result = multirun("optimizer.weight_decay=0,0.01,0.1", "epochs=5", tmp_path=tmp_path,
                      store_uri=store_uri)
    assert result.returncode == 0, result.stderr
    reader = StoreReader(store_uri)
    sweep, pairs = assert_sweep_tree(reader, 3)
    assert sweep.info.run_name == "sweep wd=0,0.01,0.1"
    assert sweep.data.tags["mlflow.source.name"] == (
        f"wdexp.train -m tracking.uri={store_uri} "
        "optimizer.weight_decay=0,0.01,0.1 epochs=5")
    assert {p.info.run_name for p in pairs} == {f"sgd_wd lr=0.01 wd={wd} seed=0 epochs=5"
                                                for wd in ("0", "0.01", "0.1")}
    assert sweep.data.metrics["pairs"] == 3
    summary = sweep_summary(reader, sweep.info.run_id, tmp_path)
    assert summary["optimizer.weight_decay"].tolist() == [0.0, 0.01, 0.1]
    by_id = {p.info.run_id: p for p in pairs}
    for _, row in summary.iterrows():
        pair = by_id[row["run_id"]]
        assert float(pair.data.params["optimizer.weight_decay"]) == row["optimizer.weight_decay"]
        for column in ("baseline.final_loss", "baseline.final_weight_norm",
                       "decay.final_loss", "decay.final_weight_norm"):
            assert row[column] == pair.data.metrics[column]
    assert not summary["decay.diverged"].any()


def test_a_single_job_has_no_sweep_run(run_job, read_store):
    run_job("epochs=2")
    reader = read_store()
    assert reader.runs("sweep") == []
    (pair,) = reader.runs("pair")
    assert "mlflow.parentRunId" not in pair.data.tags


@pytest.mark.slow
def test_failing_and_diverging_jobs_do_not_stop_the_others(tmp_path, store_uri):
    # lr=-1 is rejected by validation, lr=2 diverges, the others finish; in batches of two, so
    # the batch after the failed job runs too (Hydra's own sweeper would stop there).
    result = multirun("optimizer.lr=0.01,-1,2,0.02", "epochs=100",
                      "hydra.sweeper.max_batch_size=2", tmp_path=tmp_path, store_uri=store_uri)
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "wdexp: optimizer.lr must be a finite number > 0 (got -1)" in output
    assert ("wdexp: 1 of 4 jobs did not finish (#1: their lines are above); the others ran to "
            "their end") in output
    assert "Traceback" not in output and "Error executing job" not in output, output
    reader = StoreReader(store_uri)
    sweep, pairs = assert_sweep_tree(reader, 3, status="FAILED")
    assert {p.info.status for p in pairs} == {"FINISHED"}
    summary = sweep_summary(reader, sweep.info.run_id, tmp_path)
    assert summary["optimizer.lr"].tolist() == [0.01, 2.0, 0.02]
    assert summary["decay.diverged"].tolist() == [False, True, False]
    assert reader.runs("pair") and not [r for r in reader.runs() if r.info.status == "RUNNING"]


@pytest.mark.slow
def test_resume_skips_finished_jobs_and_an_extended_sweep_runs_only_new_ones(tmp_path,
                                                                             store_uri, capfd):
    first = sweep_here("optimizer.weight_decay=0,0.01", "epochs=3", "resume=true",
                       tmp_path=tmp_path, store_uri=store_uri)
    assert first.status == "FINISHED"
    reader = StoreReader(store_uri)
    before = {r.info.run_id for r in reader.runs()}
    assert len(before) == 1 + 2 * 3
    capfd.readouterr()

    with pytest.raises(wdexp.WdexpError) as nothing:
        sweep_here("optimizer.weight_decay=0,0.01", "epochs=3", "resume=true",
                   tmp_path=tmp_path, store_uri=store_uri)
    assert str(nothing.value).startswith("wdexp: nothing to run: every job of this sweep had "
                                         "already finished (resume=true)")
    assert capfd.readouterr().out.count("skipped: this configuration already finished") == 2
    assert {r.info.run_id for r in StoreReader(store_uri).runs()} == before  # no empty sweep

    extended = sweep_here("optimizer.weight_decay=0,0.01,0.1", "epochs=3", "resume=true",
                          tmp_path=tmp_path, store_uri=store_uri)
    reader = StoreReader(store_uri)
    assert extended.run_id != first.run_id
    new_pairs = [r for r in reader.runs("pair") if r.info.run_id not in before]
    assert [float(r.data.params["optimizer.weight_decay"]) for r in new_pairs] == [0.1]
    assert {r.data.tags["mlflow.parentRunId"] for r in new_pairs} == {extended.run_id}
    summary = sweep_summary(reader, extended.run_id, tmp_path)
    assert summary["optimizer.weight_decay"].tolist() == [0.1]


@pytest.mark.parametrize("ended", ["FAILED", "KILLED", "orphaned"])
def test_resume_reruns_a_pair_that_did_not_finish(store_uri, run_job, ended):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(store_uri)
    pair_id = run_job("epochs=3", "resume=true")
    runs = [pair_id, *(r.info.run_id for r in StoreReader(store_uri).arms(pair_id).values())]
    for run_id in runs:
        if ended == "orphaned":  # RUNNING, owned by a process that no longer exists
            client.update_run(run_id, status="RUNNING")
            client.set_tag(run_id, "wdexp.owner", f"{socket.gethostname()} 4194304 1")
        else:
            client.set_terminated(run_id, ended)
    again = run_job("epochs=3", "resume=true")
    assert again != pair_id
    statuses = {client.get_run(run_id).info.status for run_id in runs}
    assert statuses == {"KILLED" if ended == "orphaned" else ended}
    assert run_job("epochs=3", "resume=true") == again  # now finished: skipped
    assert run_job("epochs=4", "resume=true") not in (pair_id, again)


@pytest.mark.slow
def test_an_experiments_sweeper_params_name_the_sweep_and_its_summary(tmp_path, store_uri):
    result = sweep_here("+experiment=decay_sweep", "epochs=3", tmp_path=tmp_path,
                        store_uri=store_uri)
    reader = StoreReader(store_uri)
    sweep, _ = assert_sweep_tree(reader, 5)
    assert result.run_id == sweep.info.run_id
    assert sweep.info.run_name == "sweep wd=0,0.001,0.01,0.1,1"
    summary = sweep_summary(reader, sweep.info.run_id, tmp_path)
    assert summary["optimizer.weight_decay"].tolist() == [0.0, 0.001, 0.01, 0.1, 1.0]


@pytest.mark.slow
def test_a_sweep_folder_with_quotes_still_nests_its_pairs_under_joblib(tmp_path, store_uri):
    # Each worker finds its sweep run in the store by the folder's digest, never by pasting
    # the folder into a search filter.
    folder = tmp_path / "it's a \"sweep\""
    quoted = str(folder).replace("'", "\\'")
    sweep_here(f"hydra.sweep.dir='{quoted}'", "hydra.launcher.n_jobs=2", "seed=0,1", "epochs=3",
               launcher="joblib", tmp_path=tmp_path, store_uri=store_uri)
    sweep, _ = assert_sweep_tree(StoreReader(store_uri), 2)
    assert sweep.data.tags["wdexp.sweep_dir"] == str(folder)
    assert (folder / "0").is_dir()


def test_a_store_the_sweep_cannot_use_stops_it_before_any_job(tmp_path):
    (tmp_path / "folder").mkdir()
    result = multirun("seed=0,1", "epochs=2", tmp_path=tmp_path,
                      store_uri=f"sqlite:///{tmp_path}/folder")
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.strip().splitlines() == [
        f"wdexp: tracking.uri names a folder, not an sqlite file "
        f"(got 'sqlite:///{tmp_path}/folder')"]
    assert "Launching" not in result.stdout + result.stderr


def test_sweep_names_use_short_keys_and_shorten_long_value_lists():
    assert sweep_name({"optimizer.lr": "0.01,0.1", "optimizer.weight_decay": "0,0.1"}) == (
        "sweep lr=0.01,0.1 wd=0,0.1")
    assert sweep_name({"seed": "range(10)", "model.coefficients": "[1,2]"}) == (
        "sweep seed=range(10) coefficients=[1,2]")
    long = ",".join(str(10.0 ** -k) for k in range(8))
    assert sweep_name({"optimizer.weight_decay": long}) == "sweep wd=1.0…1e-07 (8)"


def test_a_job_that_failed_with_an_error_nobody_told_is_raised_with_its_traceback():
    """wdexp's own errors were told by the job; any other (a bug) is Hydra's to show."""
    from hydra.core.utils import JobReturn, JobStatus

    from wdexp.lost_jobs import SweepFailed, sweep_ended

    done = JobReturn(overrides=["seed=0"], status=JobStatus.COMPLETED, _return_value=0.5)
    bug = JobReturn(overrides=["seed=1"], status=JobStatus.FAILED,
                    _return_value=ZeroDivisionError("a bug"))
    told = JobReturn(overrides=["seed=2"], status=JobStatus.FAILED,
                     _return_value=ConfigError("seed", "must be an integer", "x"))
    sweep_ended([done, done])  # every job finished: nothing to say
    with pytest.raises(SweepFailed) as failed:
        sweep_ended([done, told])
    assert failed.value.code == 1
    with pytest.raises(ZeroDivisionError, match="a bug"):
        sweep_ended([done, told, bug])


@pytest.mark.parametrize(("message", "told"), [
    # submitit's words for a job with no result (submitit/core/core.py), Slurm's state in them
    ("Job 2_0 (task: 0) with path /f/2_0_0_result.pkl\nhas not produced any output "
     "(state: CANCELLED by 0)", "its process ended without a result (state CANCELLED)"),
    ("Job 7 (task: 0) with path /f/7_0_result.pkl\nhas not produced any output (state: FAILED)",
     "its process ended without a result (state FAILED)"),
    # loky's, for a worker the out-of-memory killer ended
    ("A worker process managed by the executor was unexpectedly terminated.\nThe exit codes of "
     "the workers are {SIGKILL(-9)}",
     "its worker process was killed by SIGKILL (the out-of-memory killer's way)"),
    ("something else", "its worker failed (RuntimeError)"),
])
def test_a_lost_job_is_told_by_the_state_its_launcher_saw(message, told):
    from wdexp.lost_jobs import death

    assert death(RuntimeError(message)) == told


def test_submitit_local_writes_each_jobs_log_into_a_folder_made_before_its_job_starts(tmp_path):
    """submitit's local controller opens ``<folder>/<job id>_0_log.out`` as it starts; a folder
    per job (``.submitit/%j``) is made by the submitting process only after that start, and a
    controller that won the race died with FileNotFoundError (a CI run lost a job so). The
    folder the controller writes into must be the one made before: the job-independent one."""
    from submitit.core.utils import JobPaths

    with initialize_config_dir(version_base="1.3", config_dir=str(ROOT / "conf")):
        cfg = compose(config_name="config", return_hydra_config=True,
                      overrides=["hydra/launcher=submitit_local",
                                 f"hydra.sweep.dir={tmp_path}"])
    folder = str(cfg.hydra.launcher.submitit_folder)
    assert JobPaths(folder, job_id="4242", task_id=0).stdout.parent == \
        JobPaths.get_first_id_independent_folder(folder)

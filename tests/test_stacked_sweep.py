"""``hydra/launcher=stacked`` end to end: the run tree of any launcher, every step as the job's
own run records it, resume per pair, and a sweep the stack cannot train refused before any run."""

from __future__ import annotations

import pandas as pd
import pytest

import wdexp
from tests.conftest import StoreReader, Trained, multirun, sweep_here
from tests.test_sweep import assert_sweep_tree, sweep_summary
from wdexp.vocabulary import STACK_MEMBER_TAG

KEYS = ("loss", "w_1", "w_2", "weight_norm", "grad_norm", "decay_grad_ratio", "lr")


@pytest.mark.slow
def test_a_stacked_sweep_stores_the_run_tree_and_every_step_of_each_jobs_own_run(tmp_path,
                                                                                   store_uri):
    # λ = 2000 diverges at lr 0.01; seeds 0 and 1 share one baseline each among 3 jobs.
    result = multirun("hydra/launcher=stacked", "optimizer.weight_decay=0.01,0.1,2000",
                      "seed=0,1", "epochs=40", tmp_path=tmp_path, store_uri=store_uri)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "stacking 6 jobs: 8 members in 1 lane" in result.stdout
    reader = StoreReader(store_uri)
    sweep, pairs = assert_sweep_tree(reader, 6)
    summary = sweep_summary(reader, sweep.info.run_id, tmp_path)
    assert (summary["decay.diverged"] == (summary["optimizer.weight_decay"] == 2000)).all()
    for pair in pairs:
        params = pair.data.params
        expected = Trained(f"optimizer.weight_decay={params['optimizer.weight_decay']}",
                           f"seed={params['seed']}", "epochs=40")
        arms = reader.arms(pair.info.run_id)
        assert arms["baseline"].data.tags[STACK_MEMBER_TAG].endswith(" of 3 jobs")
        for arm, run in arms.items():
            for key in KEYS:
                assert reader.history(run.info.run_id, key) == expected.history(arm, key), (
                    pair.info.run_name, arm, key)
        diverged = params["optimizer.weight_decay"] == "2000"
        assert arms["decay"].data.tags["wdexp.diverged"] == str(diverged).lower()
        assert arms["baseline"].data.tags["wdexp.diverged"] == "false"
        assert {f.path for f in reader.client.list_artifacts(pair.info.run_id, "figures")}


@pytest.mark.slow
def test_resume_skips_finished_pairs_and_stacks_only_the_rest(tmp_path, store_uri, capfd):
    sweep_here("optimizer.weight_decay=0.01", "seed=0,1", "epochs=3", "resume=true",
               tmp_path=tmp_path, store_uri=store_uri, launcher="stacked")
    before = {r.info.run_id for r in StoreReader(store_uri).runs("pair")}
    capfd.readouterr()
    extended = sweep_here("optimizer.weight_decay=0.01,0.1", "seed=0,1", "epochs=3",
                          "resume=true", tmp_path=tmp_path, store_uri=store_uri,
                          launcher="stacked")
    out = capfd.readouterr().out
    assert out.count("skipped: this configuration already finished") == 2
    assert "stacking 2 jobs: 4 members in 1 lane" in out
    reader = StoreReader(store_uri)
    new = [r for r in reader.runs("pair") if r.info.run_id not in before]
    assert sorted((r.data.params["optimizer.weight_decay"], r.data.params["seed"])
                  for r in new) == [("0.1", "0"), ("0.1", "1")]
    assert {r.data.tags["mlflow.parentRunId"] for r in new} == {extended.run_id}
    assert extended.status == "FINISHED" and len(extended.table) == 2


@pytest.mark.parametrize(("overrides", "line"), [
    (("optimizer._target_=torch.optim.RMSprop",), "wdexp: optimizer._target_ must be "
     "torch.optim.SGD, Adam or AdamW for hydra/launcher=stacked; use hydra/launcher=joblib (or "
     "the default launcher) for it (got 'torch.optim.rmsprop.RMSprop')"),
    (("hydra.launcher.max_members=0",), "wdexp: hydra.launcher.max_members must be a positive "
     "integer (got 0)"),
])
def test_a_sweep_the_stack_cannot_train_is_refused_in_one_line_before_any_run(
        tmp_path, store_uri, overrides, line):
    with pytest.raises(wdexp.WdexpError) as refused:
        sweep_here("optimizer.weight_decay=0.01,0.1", "epochs=3", *overrides,
                   tmp_path=tmp_path, store_uri=store_uri, launcher="stacked")
    assert str(refused.value) == line
    assert StoreReader(store_uri).runs() == []


@pytest.mark.slow
def test_an_optuna_search_stacks_each_batch_of_trials(tmp_path, store_uri, capfd):
    result = sweep_here("hydra/sweeper=optuna", "optimizer.weight_decay=interval(0, 0.5)",
                        "hydra.sweeper.n_jobs=3", "hydra.sweeper.n_trials=6", "epochs=50",
                        tmp_path=tmp_path, store_uri=store_uri, launcher="stacked")
    assert capfd.readouterr().out.count("stacking 3 jobs: 4 members in 1 lane") == 2
    reader = StoreReader(store_uri)
    pairs = {run.info.run_id: run for run in reader.runs("pair")}
    trials = reader.client.download_artifacts(result.run_id, "trials.csv", str(tmp_path))
    trials = pd.read_csv(trials)
    assert list(trials["state"]) == ["COMPLETE"] * 6 and len(pairs) == 6
    for trial in trials.to_dict("records"):
        pair = pairs[trial["user_attrs_pair_run_id"]]
        assert trial["value"] == pair.data.metrics["decay.final_loss"]
        assert float(pair.data.params["optimizer.weight_decay"]) == trial[
            "params_optimizer.weight_decay"]


def test_a_job_with_a_bad_value_fails_alone_and_the_others_stack(tmp_path, store_uri, capfd):
    result = sweep_here("optimizer.lr=0.01,-1", "epochs=5", tmp_path=tmp_path,
                        store_uri=store_uri, launcher="stacked")
    assert result.status == "FAILED" and len(result.table) == 1
    out = capfd.readouterr().out
    assert "wdexp: optimizer.lr must be a finite number > 0 (got -1)" in out
    assert "wdexp: 1 of 2 jobs did not finish (#1: their lines are above)" in out
    assert "stacking 1 job: 2 members in 1 lane" in out
    reader = StoreReader(store_uri)
    (pair,) = reader.runs("pair")
    (sweep,) = reader.runs("sweep")
    assert pair.info.status == "FINISHED" and sweep.info.status == "FAILED"


def test_a_stacked_network_sweep_stores_every_pair_close_to_its_own_run(tmp_path, store_uri):
    common = ("model=mlp", "data.fraction=0.1", "epochs=2")
    result = sweep_here(*common, "optimizer.weight_decay=0.01,0.1", "seed=0,1",
                        tmp_path=tmp_path, store_uri=store_uri, launcher="stacked")
    assert result.status == "FINISHED" and len(result.table) == 4
    reader = StoreReader(store_uri)
    for pair in reader.runs("pair"):
        params = pair.data.params
        expected = Trained(*common, f"optimizer.weight_decay={params['optimizer.weight_decay']}",
                           f"seed={params['seed']}")
        for arm, run in reader.arms(pair.info.run_id).items():
            for key in ("loss", "test_loss", "test_accuracy", "weight_norm"):
                got = reader.history(run.info.run_id, key)
                want = expected.history(arm, key)
                assert [s for s, _ in got] == [s for s, _ in want] == [0, 1, 2]
                assert [v for _, v in got] == pytest.approx([v for _, v in want], rel=1e-4), (
                    arm, key)
        assert {f.path for f in reader.client.list_artifacts(pair.info.run_id, "figures")}


def test_jobs_that_differ_beyond_seed_and_decay_train_in_groups_and_chunks(tmp_path, store_uri,
                                                                          capfd):
    # Two lrs are two groups; max_members=2 splits each group's 3 members into two chunks.
    result = sweep_here("optimizer.lr=0.01,0.02", "optimizer.weight_decay=0.1,0.2", "epochs=20",
                        "hydra.launcher.max_members=2", tmp_path=tmp_path, store_uri=store_uri,
                        launcher="stacked")
    assert result.status == "FINISHED" and len(result.table) == 4
    assert capfd.readouterr().out.count("stacking 1 job: 2 members in 1 lane") == 4
    reader = StoreReader(store_uri)
    for pair in reader.runs("pair"):
        params = pair.data.params
        expected = Trained(f"optimizer.lr={params['optimizer.lr']}", "epochs=20",
                           f"optimizer.weight_decay={params['optimizer.weight_decay']}")
        for arm, run in reader.arms(pair.info.run_id).items():
            assert reader.history(run.info.run_id, "w_1") == expected.history(arm, "w_1")

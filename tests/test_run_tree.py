"""The MLflow run tree of one job: a pair run with two nested arm runs."""

from __future__ import annotations

import yaml

from tests.conftest import compose_config
from wdexp.config import loggable


def test_pair_run_nests_two_arm_runs_with_params_metrics_and_config(run_job, read_store,
                                                                     store_uri):
    pair_id = run_job("epochs=7", "optimizer.weight_decay=0.05")
    reader = read_store()
    (pair,) = reader.runs("pair")
    assert pair.info.run_id == pair_id
    assert pair.info.status == "FINISHED"
    assert pair.info.run_name == "sgd_wd lr=0.01 wd=0.05 seed=0"
    params = pair.data.params
    assert params["optimizer.lr"] == "0.01"
    assert params["optimizer.weight_decay"] == "0.05"
    assert params["model.coefficients"] == "[0.05, 1.0]"
    assert params["epochs"] == "7"
    assert params["tracking.uri"] == store_uri

    artifact = reader.client.download_artifacts(pair_id, "config.yaml")
    with open(artifact) as handle:
        logged = yaml.safe_load(handle)
    assert logged == loggable(compose_config(f"tracking.uri={store_uri}", "epochs=7",
                                             "optimizer.weight_decay=0.05"))

    arms = reader.arms(pair_id)
    assert set(arms) == {"baseline", "decay"}
    assert {run.info.run_id for run in reader.runs("arm")} == {r.info.run_id for r in arms.values()}
    for name, weight_decay in (("baseline", "0.0"), ("decay", "0.05")):
        arm = arms[name]
        assert arm.info.status == "FINISHED"
        assert arm.data.tags["wdexp.kind"] == "arm"
        assert arm.data.tags["wdexp.diverged"] == "false"
        assert arm.data.params["optimizer.weight_decay"] == weight_decay
        assert arm.data.params["optimizer.lr"] == "0.01"
        for key in ("loss", "w_1", "w_2", "weight_norm"):
            assert [step for step, _ in reader.history(arm.info.run_id, key)] == list(range(8))
        final = {key: reader.history(arm.info.run_id, key)[-1][1]
                 for key in ("loss", "weight_norm")}
        assert pair.data.metrics[f"{name}.final_loss"] == final["loss"]
        assert pair.data.metrics[f"{name}.final_weight_norm"] == final["weight_norm"]


def test_run_names_and_tags_say_what_ran(run_job, read_store):
    pair_id = run_job("optimizer=sgd_wd", "seed=3")
    reader = read_store()
    pair = reader.client.get_run(pair_id)
    assert pair.data.tags["wdexp.kind"] == "pair"
    assert pair.data.tags["wdexp.model"] == "quadratic"
    arms = reader.arms(pair_id)
    assert arms["baseline"].info.run_name == "baseline (wd=0)"
    assert arms["decay"].info.run_name == "decay (wd=0.01)"
    assert pair.data.tags["wdexp.optimizer"] == "sgd_wd"
    assert pair.info.run_name == "sgd_wd lr=0.01 wd=0.01 seed=3"


def test_jobs_share_one_experiment_and_store(run_job, read_store):
    first, second = run_job("seed=1"), run_job("seed=2")
    reader = read_store()
    assert {run.info.run_id for run in reader.runs("pair")} == {first, second}
    assert len(reader.runs("arm")) == 4

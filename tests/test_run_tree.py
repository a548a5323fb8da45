"""The MLflow run tree of one job: a pair run with two nested arm runs."""

from __future__ import annotations

import base64
import json
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from mlflow.tracking import MlflowClient

from tests.conftest import StoreReader
from wdexp.tracking import view

CHECKOUT = Path(__file__).resolve().parent.parent


def _conf(name: str) -> dict[str, Any]:
    """A file of conf/ as YAML alone reads it: no Hydra, no wdexp."""
    return yaml.safe_load((CHECKOUT / "conf" / f"{name}.yaml").read_text())


def _leaves(tree: dict[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            yield from _leaves(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def test_pair_run_nests_two_arm_runs_with_params_metrics_and_config(run_job, read_store,
                                                                     store_uri):
    pair_id = run_job("epochs=7", "optimizer.weight_decay=0.05")
    reader = read_store()
    (pair,) = reader.runs("pair")
    assert pair.info.run_id == pair_id
    assert pair.info.status == "FINISHED"
    assert pair.info.run_name == "sgd_wd lr=0.01 wd=0.05 seed=0 epochs=7"
    params = pair.data.params
    assert params["optimizer.lr"] == "0.01"
    assert params["optimizer.weight_decay"] == "0.05"
    assert params["model.coefficients"] == "[0.05, 1.0]"
    assert params["epochs"] == "7"
    assert params["tracking.uri"] == store_uri

    artifact = reader.client.download_artifacts(pair_id, "config.yaml")
    with open(artifact) as handle:
        logged = yaml.safe_load(handle)
    # The defaults as the conf/ files state them, with this job's overrides on top.
    assert "defaults" not in _conf("optimizer/sgd")  # sgd_wd is sgd with a weight decay
    assert logged == {
        "model": _conf("model/quadratic"),
        "optimizer": {**_conf("optimizer/sgd"), "weight_decay": 0.05},
        "scheduler": _conf("scheduler/constant"),
        "arms": {"baseline": {"optimizer": {"lr": 0.01, "weight_decay": 0}}},
        "tracking": {"uri": store_uri, "experiment": "weight-decay", "artifact_location": None,
                     "timeout_s": 60, "upgrade_store": False, "connect_wait_s": 30,
                     "orphan_after_s": 600},
        "seed": 0, "epochs": 7, "device": "cpu", "resume": False,
        "geometry": {"steps_per_epoch": 8},
        "paths": {"root": str(CHECKOUT)},
    }
    assert logged["optimizer"]["lr"] == 0.01 and logged["model"]["coefficients"] == [0.05, 1.0]
    # The params are that same config flattened: every leaf and nothing else, each param read
    # back as YAML equal to the leaf's value.
    leaves = dict(_leaves(logged))
    # Beside the config: the decay's timescale 1/(ηλ) in steps (one step per epoch here).
    assert params.pop("tau_iter") == params.pop("tau_epoch") == "2000"
    assert set(params) == set(leaves)
    for key, value in leaves.items():
        assert yaml.safe_load(params[key]) == value, (key, params[key])

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
    pair_id = run_job("optimizer=sgd_wd", "seed=3", "optimizer.weight_decay=0.1", "epochs=4",
                      "+optimizer.nesterov=false")
    reader = read_store()
    pair = reader.client.get_run(pair_id)
    assert pair.data.tags["wdexp.kind"] == "pair"
    assert pair.data.tags["wdexp.model"] == "quadratic"
    arms = reader.arms(pair_id)
    assert arms["baseline"].info.run_name == "baseline (wd=0)"
    assert arms["decay"].info.run_name == "decay (wd=0.1)"
    assert pair.data.tags["wdexp.optimizer"] == "sgd_wd"
    # Overrides the study's name does not show are added, so the pairs of any sweep differ.
    assert pair.info.run_name == "sgd_wd lr=0.01 wd=0.1 seed=3 epochs=4 nesterov=false"
    command = ("optimizer=sgd_wd seed=3 optimizer.weight_decay=0.1 epochs=4 "
               "+optimizer.nesterov=false")
    for run in (pair, *arms.values()):  # MLflow's Source column: the command that ran
        assert run.data.tags["mlflow.source.name"] == f"wdexp.train {command}"
        assert run.data.tags["mlflow.source.type"] == "JOB"
    # Each arm's overrides say what it ran: the baseline's weight decay is 0.
    assert arms["decay"].data.tags["wdexp.overrides"] == command
    assert arms["baseline"].data.tags["wdexp.overrides"] == (
        "optimizer=sgd_wd seed=3 epochs=4 +optimizer.nesterov=false optimizer.weight_decay=0")


def test_jobs_share_one_experiment_and_store(run_job, read_store):
    first, second = run_job("seed=1"), run_job("seed=2")
    reader = read_store()
    assert {run.info.run_id for run in reader.runs("pair")} == {first, second}
    assert len(reader.runs("arm")) == 4
    # The experiment says it is model training, so MLflow's UI opens it on its runs table.
    assert reader.experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    assert "baseline arm" in reader.experiment.tags["mlflow.note.content"]


def test_the_comparison_view_is_added_to_an_experiment_made_elsewhere(store_uri, run_job):
    client = MlflowClient(tracking_uri=store_uri)
    client.create_experiment("weight-decay", tags={"mlflow.note.content": "mine"})
    pair_id = run_job("epochs=2")
    tags = client.get_experiment_by_name("weight-decay").tags
    assert tags["mlflow.note.content"] == "mine"  # what a user wrote stays
    assert tags["mlflow.experimentKind"] == "custom_model_development"
    # The saved view as MLflow's UI stores one: its columns name what a pair run logged.
    saved = json.loads(tags[f"mlflow.sharedViewState.{view.VIEW_ID}"])
    assert saved["name"] == view.VIEW_NAME
    packed = saved["state"].removeprefix("deflate;")
    state = json.loads(zlib.decompress(base64.b64decode(packed)))
    runs = [client.get_run(pair_id), *StoreReader(store_uri).arms(pair_id).values()]
    logged = {"params": {key for run in runs for key in run.data.params},
              "metrics": {key for run in runs for key in run.data.metrics},
              "attributes": {"Source"}}
    for column in state["selectedColumns"]:
        kind, key = column.split(".", 1)
        assert key.strip("`") in logged[kind], column


def test_a_pair_whose_files_cannot_be_written_at_its_start_ends_failed_saying_why(
        tmp_path, store_uri):
    from wdexp.tracking import runtree, store
    from wdexp.tracking.artifacts import ArtifactsFailed
    from wdexp.tracking.records import RunSpec
    from wdexp.vocabulary import FAILURE_TAG, TrackingSpec

    location = tmp_path / "art"
    opened = store.connect(TrackingSpec(store_uri, "files-fail", str(location)))
    location.rmdir()
    location.write_text("not a folder any more")  # after the experiment took it
    arms = {"baseline": RunSpec("baseline", {}, {}), "decay": RunSpec("decay", {}, {})}
    with pytest.raises(ArtifactsFailed, match=r"tracking\.artifact_location .*/art failed"):
        runtree.open_pair(opened, RunSpec("pair", {}, {}), arms, {"config.yaml": "a: 1\n"})
    runs = opened.client.search_runs([opened.experiment_id])
    assert len(runs) == 3
    for run in runs:
        assert run.info.status == "FAILED"
        assert str(location) in run.data.tags[FAILURE_TAG]

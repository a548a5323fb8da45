"""Models with closed forms, and every named experiment on a tiny budget."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.conftest import Trained
from wdexp import data
from wdexp.config import ROOT
from wdexp.models import MLP, Quadratic, Ridge, contract
from wdexp.models.supervised import supervised

EXPERIMENTS = sorted(p.stem for p in (ROOT / "experiments").glob("*.yaml"))


def test_ridge_converges_to_the_closed_form_recomputed_from_the_logged_data(
        run_job, read_store, tmp_path):
    lr, weight_decay, epochs = 0.1, 0.3, 400
    pair_id = run_job("model=ridge", "model.dtype=float64", "model.n_features=4",
                      f"optimizer.lr={lr}", f"optimizer.weight_decay={weight_decay}",
                      f"epochs={epochs}")
    reader = read_store()
    data = pd.read_csv(reader.client.download_artifacts(pair_id, "data/train.csv",
                                                        str(tmp_path)))
    assert list(data.columns) == ["x_1", "x_2", "x_3", "x_4", "y"]
    x, y = data[["x_1", "x_2", "x_3", "x_4"]].to_numpy(), data["y"].to_numpy()
    n = len(y)
    for arm, lam in (("baseline", 0.0), ("decay", weight_decay)):
        solution = np.linalg.solve(x.T @ x / n + lam / 2 * np.eye(4), x.T @ y / n)
        run_id = reader.arms(pair_id)[arm].info.run_id
        weights = np.array([[v for _, v in reader.history(run_id, f"w_{i}")]
                            for i in range(1, 5)]).T
        np.testing.assert_allclose(weights[-1], solution, atol=1e-10)
        distance = [v for _, v in reader.history(run_id, "distance_to_solution")]
        np.testing.assert_allclose(distance, np.linalg.norm(weights - solution, axis=1),
                                   rtol=1e-9, atol=1e-13)
        loss = [v for _, v in reader.history(run_id, "loss")]
        np.testing.assert_allclose(loss, ((x @ weights.T - y[:, None]) ** 2).mean(axis=0),
                                   rtol=1e-12)


def test_ridge_data_depends_on_data_seed_only(run_job, read_store, tmp_path):
    ids = [run_job("model=ridge", "epochs=1", *extra)
           for extra in ([], ["seed=5"], ["model.data_seed=1"])]
    reader = read_store()
    frames = [Path(reader.client.download_artifacts(i, "data/train.csv", str(tmp_path / i)))
              .read_text() for i in ids]
    assert frames[0] == frames[1] != frames[2]


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_every_experiment_composes_and_trains_in_this_process(name):
    """Both arms built and trained, every step recorded (the end-to-end run below is slow)."""
    trained = Trained(f"+experiment={name}", "epochs=2")
    assert len(trained.study.arms) == 2
    assert [step.epoch for step in trained.steps] == [0, 1, 2]
    for arm in trained.study.arms:
        assert trained.history(arm.name, "loss"), arm.name


@pytest.mark.slow
@pytest.mark.parametrize("name", EXPERIMENTS)
def test_every_experiment_composes_and_runs_on_a_tiny_budget(run_job, read_store, name):
    pair_id = run_job(f"+experiment={name}", "epochs=2")
    reader = read_store()
    assert reader.client.get_run(pair_id).info.status == "FINISHED"
    assert len(reader.arms(pair_id)) == 2


@pytest.mark.slow
def test_mlp_learns_digits_and_both_arms_see_the_same_batches(run_job, read_store):
    pair_id = run_job("model=mlp", "optimizer=sgd_momentum", "optimizer.lr=0.05", "epochs=15")
    reader = read_store()
    for arm in reader.arms(pair_id).values():
        accuracy = reader.history(arm.info.run_id, "test_accuracy")
        assert [s for s, _ in accuracy] == list(range(16))
        assert max(v for _, v in accuracy) >= 0.9
        keys = set(arm.data.metrics)
        assert {"loss", "test_loss", "weight_norm", "norm.layers.0.weight"} <= keys
        assert not any(key.startswith("w_") for key in keys)  # too many weights to log each


def test_mlp_arms_without_decay_are_identical(run_job, read_store):
    pair_id = run_job("model=mlp", "optimizer=sgd_momentum", "optimizer.weight_decay=0",
                      "epochs=2")
    reader = read_store()
    arms = reader.arms(pair_id)
    for key in ("loss", "test_accuracy", "weight_norm"):
        assert (reader.history(arms["baseline"].info.run_id, key)
                == reader.history(arms["decay"].info.run_id, key))


def test_network_biases_are_exempt_from_decay_by_default():
    from tests.conftest import compose_config
    from wdexp import study

    decay_arm = study.build(compose_config("model=mlp", "optimizer=adamw")).arms[1]
    groups = decay_arm.optimizer.param_groups
    assert [g["weight_decay"] for g in groups] == [0.01, 0.0]
    assert all(p.ndim == 2 for p in groups[0]["params"])
    assert all(p.ndim == 1 for p in groups[1]["params"])
    explicit = study.build(compose_config("model=mlp", "optimizer.no_decay=[]")).arms[1]
    assert len(explicit.optimizer.param_groups) == 1


def test_a_model_with_more_than_16_weights_logs_their_norm_not_each(run_job, read_store):
    pair_id = run_job("model=ridge", "model.n_features=17", "epochs=1")
    reader = read_store()
    keys = set(reader.arms(pair_id)["decay"].data.metrics)
    assert "weight_norm" in keys
    assert not any(key.startswith("w_") for key in keys)


@pytest.mark.parametrize(("model", "capabilities"), [
    (lambda: Quadratic([0.05, 1.0]), {"ClosedForm"}),
    (lambda: Ridge(), {"ClosedForm", "KnownSolution", "Artifacts"}),
    (lambda: supervised(MLP(64, 10), data.digits(), data.Task("mse", 32, 0, 10)),
     {"MiniBatched", "DefaultNoDecay", "Identified"}),
    (lambda: supervised(MLP(64, 10), data.digits(), data.Task("mse", None, 0, 10)),
     {"DefaultNoDecay", "Identified"}),
])
def test_each_model_meets_the_contract_with_exactly_its_capabilities(model, capabilities):
    built = model()
    assert isinstance(built, contract.Model)
    optional = {"MiniBatched", "KnownSolution", "ClosedForm", "Artifacts", "DefaultNoDecay",
                "Identified"}
    assert {name for name in optional if isinstance(built, getattr(contract, name))} == (
        capabilities)

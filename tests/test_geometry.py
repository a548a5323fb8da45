"""Per-layer step geometry against a direct computation on the same weights, and rotational
equilibrium against its prediction (wdexp/geometry.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch.nn import functional

from tests.conftest import compose_config
from wdexp import data, engine, study
from wdexp.geometry import predicted_angular_update
from wdexp.models import BNMLP
from wdexp.optimizers import parse_optimizer


def test_geometry_metrics_equal_a_direct_computation_on_the_same_weights():
    """Full batch (one step per epoch), float64: each logged value against numpy on the
    weights and gradient of a plain torch loop."""
    lr, weight_decay, epochs = 0.5, 0.05, 3
    pair = study.build(compose_config(
        "model=bn_mlp", "model.dtype=float64", "model.hidden=[16]", "model.bn_eps=1e-12",
        "data.batch_size=null",
        "optimizer=sgd_momentum", f"optimizer.lr={lr}", f"optimizer.weight_decay={weight_decay}",
        f"epochs={epochs}", "seed=3"))
    logged = [s.metrics["decay"] for s in engine.train(pair.arms, epochs)]
    assert not any(k.startswith("angular_update/") for k in logged[0])  # no step before step 0

    study.seed_everything(3)
    net = BNMLP(64, 10, [16], bn_eps=1e-12, dtype="float64")
    digits = data.digits()
    x, y = digits.x_train.double(), digits.y_train
    optimizer = torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9, weight_decay=weight_decay)
    for epoch in range(epochs):
        loss = functional.cross_entropy(net(x), y)
        loss.backward()
        before = {n: p.detach().numpy().copy() for n, p in net.named_parameters()}
        grads = {n: p.grad.numpy().copy() for n, p in net.named_parameters()}
        optimizer.step()
        optimizer.zero_grad()
        for name, param in net.named_parameters():
            w, g, after = before[name], grads[name], param.detach().numpy()
            norm, grad_norm = np.linalg.norm(w, axis=1), np.linalg.norm(g, axis=1)
            cos_turn = (w * after).sum(1) / (norm * np.linalg.norm(after, axis=1))
            expected = {
                "angular_update": np.arccos(np.clip(cos_turn, -1, 1)).mean(),
                "effective_lr": (lr / norm**2).mean(),
                "grad_to_weight": (grad_norm / norm).mean(),
                "cos_grad_weight": ((w * g).sum(1) / (norm * grad_norm)).mean(),
            }
            for key, value in expected.items():
                assert logged[epoch + 1][f"{key}/{name}"] == pytest.approx(value, rel=1e-9,
                                                                           abs=1e-12), key
            # Every layer of bn_mlp is scale-invariant: its gradient is orthogonal to it.
            assert abs(logged[epoch + 1][f"cos_grad_weight/{name}"]) < 1e-9


@pytest.mark.parametrize(("optimizer", "overrides", "expected"), [
    ("sgd_momentum", {"lr": 0.1, "weight_decay": 0.01}, math.sqrt(2 * 0.001 / 1.9)),
    ("sgd", {"lr": 0.1, "weight_decay": 0.01}, math.sqrt(2 * 0.001)),
    ("sgd_momentum", {"lr": 0.1, "weight_decay": 0.01, "decay_mode": "independent"},
     math.sqrt(2 * 0.01 / 1.9)),
    ("adamw", {"lr": 0.001, "weight_decay": 1.0}, math.sqrt(2 * 0.001 * 0.1 / 1.9)),
    ("adam", {"lr": 0.001, "weight_decay": 1.0, "decay_mode": "decoupled"},
     math.sqrt(2 * 0.001 * 0.1 / 1.9)),
    ("adam", {"lr": 0.001, "weight_decay": 1.0}, None),  # coupled into Adam: no prediction
    ("sgd", {"lr": 0.1, "weight_decay": 0.0}, None),
])
def test_the_equilibrium_prediction_by_hand(optimizer, overrides, expected):
    cfg = compose_config(f"optimizer={optimizer}",
                         *(f"optimizer.{k}={v}" for k, v in overrides.items()))
    predicted = predicted_angular_update(parse_optimizer(cfg.optimizer))
    assert predicted == (None if expected is None else pytest.approx(expected, rel=1e-12))


@pytest.mark.slow
def test_sgd_momentum_reaches_rotational_equilibrium_on_a_scale_invariant_net(run_job,
                                                                            read_store):
    """ηλ = 0.01: the norm settles within ~100 steps; 25 epochs of 43 steps are 10 timescales,
    in the noise-dominated regime (BatchNorm on the logits keeps the loss from reaching 0)."""
    pair_id = run_job("model=bn_mlp", "optimizer=sgd_momentum", "optimizer.lr=0.1",
                      "optimizer.weight_decay=0.1", "epochs=25")
    reader = read_store()
    metrics = reader.client.get_run(pair_id).data.metrics
    ratios = {k: v for k, v in metrics.items() if k.endswith(".equilibrium_ratio")}
    assert set(ratios) == {"decay.layers.0.weight.equilibrium_ratio",
                           "decay.layers.1.weight.equilibrium_ratio"}
    for value in ratios.values():
        assert value == pytest.approx(1.0, abs=0.15)
    arms = reader.arms(pair_id)
    # Without decay nothing pulls the norm back: the rows turn ever more slowly.
    baseline = [v for _, v in reader.history(arms["baseline"].info.run_id,
                                             "angular_update/layers.0.weight")]
    decay = [v for _, v in reader.history(arms["decay"].info.run_id,
                                          "angular_update/layers.0.weight")]
    assert baseline[-1] < 0.5 * decay[-1]
    figures = {f.path for f in reader.client.list_artifacts(pair_id, "figures")}
    assert "figures/geometry.png" in figures


def test_an_epoch_of_steps_reads_nothing_back_from_the_device(monkeypatch):
    """What the engine and the geometry compute per step stays a tensor: no .item(),
    .tolist(), float() or truth test of one (each a host-device sync on CUDA) until the
    epoch's record."""
    pair = study.build(compose_config("model=bn_mlp", "optimizer=sgd_momentum", "epochs=1",
                                      "scheduler=cosine"))
    arm = pair.arms[1]
    generators = engine.shared_streams(pair.arms)

    def sync(*args, **kwargs):
        raise AssertionError("a per-step host sync")

    with monkeypatch.context() as patch:
        for name in ("item", "tolist", "__float__", "__bool__", "__int__"):
            patch.setattr(torch.Tensor, name, sync)
        loss, grads = engine._minibatch_record(arm, 1, generators)  # an epoch of 43 steps
    assert arm.geometry is not None and arm.geometry.step == 43
    assert arm.geometry._count == 8  # geometry.steps_per_epoch of the 43, spread evenly
    assert math.isfinite(loss.item()) and len(grads) == 2
    assert set(arm.geometry.flush(arm.equilibrium_angle, last=True)) >= {
        "angular_update/layers.0.weight", "equilibrium_ratio/layers.1.weight"}

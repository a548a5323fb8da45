"""Scale-invariant nets: bn_mlp's invariance, and Li & Arora's equivalence between weight
decay and an exponentially growing learning rate (experiments/exp_lr_equivalence.yaml)."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from torch.nn import functional

from wdexp.models import BNMLP

ETA, LAMBDA, STEPS_PER_EPOCH = 0.1, 0.02, 43  # the experiment's; digits: 1347 samples / 32


def test_bn_mlp_loss_and_gradients_are_invariant_to_each_layers_scale():
    torch.manual_seed(0)
    net = BNMLP(64, 10, [32, 16], bn_eps=1e-12, dtype="float64")
    x, y = torch.randn(50, 64, dtype=torch.float64), torch.randint(0, 10, (50,))
    scaled = copy.deepcopy(net)
    with torch.no_grad():
        for layer, factor in zip(scaled.layers, (3.0, 0.2, 7.0), strict=True):
            layer.weight.mul_(factor)
    losses = [functional.cross_entropy(n(x), y) for n in (net, scaled)]
    for loss in losses:
        loss.backward()
    assert math.isclose(losses[0].item(), losses[1].item(), rel_tol=1e-10)
    for layer, twin, factor in zip(net.layers, scaled.layers, (3.0, 0.2, 7.0), strict=True):
        # ∇L(cw) = ∇L(w)/c, and the gradient is orthogonal to the weight.
        torch.testing.assert_close(twin.weight.grad * factor, layer.weight.grad, rtol=1e-6,
                                   atol=1e-10)
        assert abs((layer.weight * layer.weight.grad).sum()) < 1e-10
    assert not any(p.ndim <= 1 for p in net.parameters())  # no bias, no affine BatchNorm


@pytest.mark.slow
def test_weight_decay_equals_an_exponential_lr_schedule_on_a_scale_invariant_net(
        run_job, read_store):
    epochs = 6
    pair_id = run_job("+experiment=exp_lr_equivalence", f"epochs={epochs}")
    reader = read_store()
    pair = reader.client.get_run(pair_id)
    assert pair.info.run_name.endswith("| baseline lr=0.10020040080160321 ExponentialLR "
                                       "gamma=1.0040120320801924 epochs=6")
    arms = {arm: run.info.run_id for arm, run in reader.arms(pair_id).items()}
    assert reader.client.get_run(arms["baseline"]).data.params["scheduler._target_"] == (
        "torch.optim.lr_scheduler.ExponentialLR")

    def series(arm: str, key: str) -> np.ndarray:
        return np.array([v for _, v in reader.history(arms[arm], key)])

    np.testing.assert_allclose(series("baseline", "loss"), series("decay", "loss"), rtol=1e-9)
    # The weights differ by (1 - ηλ)^(-t) after t steps, in every layer alike.
    steps = np.arange(epochs + 1) * STEPS_PER_EPOCH
    for key in ("weight_norm", "norm.layers.0.weight", "norm.layers.1.weight"):
        np.testing.assert_allclose(series("baseline", key) / series("decay", key),
                                   (1 - ETA * LAMBDA) ** -steps, rtol=1e-8)
    # The baseline's lr is η(1-ηλ)^(-2t-1) at the start of each epoch.
    np.testing.assert_allclose(series("baseline", "lr"),
                               ETA * (1 - ETA * LAMBDA) ** (-2 * steps - 1), rtol=1e-12)
    assert set(series("decay", "lr")) == {ETA}


@pytest.mark.slow
def test_without_the_schedule_the_arms_part(run_job, read_store):
    """The control: the same pair with the baseline at a constant lr is not equivalent."""
    pair_id = run_job("+experiment=exp_lr_equivalence", "epochs=3", "~arms.baseline.scheduler")
    reader = read_store()
    arms = {arm: run.info.run_id for arm, run in reader.arms(pair_id).items()}
    losses = [np.array([v for _, v in reader.history(arms[arm], "loss")])
              for arm in ("baseline", "decay")]
    assert np.max(np.abs(losses[0] - losses[1]) / losses[1]) > 1e-4

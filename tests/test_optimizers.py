"""Every optimizer and decay mode against torch.optim, and the relations between the modes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.conftest import Trained

COEFFICIENTS = [0.05, 1.0, 0.3]
INIT = [0.8, -0.6, 0.25]
EPOCHS = 20
WD = 0.05
OPTIMIZERS = {
    "sgd": (torch.optim.SGD, {"lr": 0.01}),
    "sgd_wd": (torch.optim.SGD, {"lr": 0.01}),
    "sgd_momentum": (torch.optim.SGD, {"lr": 0.01, "momentum": 0.9, "nesterov": False}),
    "adam": (torch.optim.Adam, {"lr": 0.001, "betas": (0.9, 0.999), "eps": 1e-8}),
    "adamw": (torch.optim.AdamW, {"lr": 0.001, "betas": (0.9, 0.999), "eps": 1e-8}),
}


def reference(cls, kwargs, weight_decay: float, mode: str) -> np.ndarray:
    """The weights per step from torch.optim directly, decay applied as each mode defines."""
    w = torch.tensor(INIT, dtype=torch.float64, requires_grad=True)
    c = torch.tensor(COEFFICIENTS, dtype=torch.float64)
    native = weight_decay if mode == "native" else 0.0
    optimizer = cls([w], weight_decay=native, **kwargs)
    history = []
    for step in range(EPOCHS + 1):
        history.append(w.detach().clone().numpy())
        loss = (c * w**2).sum()
        if mode == "penalty":
            loss = loss + weight_decay / 2 * (w**2).sum()
        loss.backward()
        if step == EPOCHS:
            break
        with torch.no_grad():
            if mode == "coupled":
                w.grad.add_(w, alpha=weight_decay)
            elif mode == "decoupled":
                w.mul_(1 - kwargs["lr"] * weight_decay)
        optimizer.step()
        optimizer.zero_grad()
    return np.array(history)


def logged_weights(history, arm: str) -> np.ndarray:
    """One arm's weights per step (rows) from ``history(arm, key)`` → [(step, value)]."""
    columns = [[v for _, v in history(arm, f"w_{i + 1}")] for i in range(len(INIT))]
    return np.array(columns).T


QUADRATIC = ("model.dtype=float64", f"model.coefficients={COEFFICIENTS}", f"model.init={INIT}",
             f"epochs={EPOCHS}")


def trained_arms(*overrides: str) -> dict[str, np.ndarray]:
    """Each arm's weights per step as the engine records them (in this process, no store)."""
    trained = Trained(*QUADRATIC, *overrides)
    return {arm.name: logged_weights(trained.history, arm.name) for arm in trained.study.arms}


@pytest.mark.parametrize("mode", ["native", "coupled", "decoupled", "penalty"])
@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_both_arms_equal_torch_optim(name, mode):
    cls, kwargs = OPTIMIZERS[name]
    arms = trained_arms(f"optimizer={name}", f"optimizer.weight_decay={WD}",
                        f"optimizer.decay_mode={mode}")
    np.testing.assert_array_equal(arms["baseline"], reference(cls, kwargs, 0.0, "native"))
    np.testing.assert_array_equal(arms["decay"], reference(cls, kwargs, WD, mode))


def test_both_arms_read_back_from_the_store_equal_torch_optim(run_job, read_store):
    """The same comparison end to end: the weights as a job logged them, read back from a real
    store with MLflow's client."""
    cls, kwargs = OPTIMIZERS["adam"]
    pair_id = run_job(*QUADRATIC, "optimizer=adam", f"optimizer.weight_decay={WD}",
                      "optimizer.decay_mode=decoupled")
    reader = read_store()
    runs = {arm: run.info.run_id for arm, run in reader.arms(pair_id).items()}
    assert set(runs) == {"baseline", "decay"}
    arms = {arm: logged_weights(lambda _, key, run_id=run_id: reader.history(run_id, key), arm)
            for arm, run_id in runs.items()}
    np.testing.assert_array_equal(arms["baseline"], reference(cls, kwargs, 0.0, "native"))
    np.testing.assert_array_equal(arms["decay"], reference(cls, kwargs, WD, "decoupled"))


def test_for_sgd_coupled_penalty_and_decoupled_agree():
    decay = {mode: trained_arms("optimizer=sgd_momentum", "optimizer.momentum=0",
                                f"optimizer.weight_decay={WD}",
                                f"optimizer.decay_mode={mode}")["decay"]
             for mode in ("coupled", "penalty", "decoupled")}
    np.testing.assert_allclose(decay["penalty"], decay["coupled"], rtol=1e-13)
    np.testing.assert_allclose(decay["decoupled"], decay["coupled"], rtol=1e-13)


def test_adam_decoupled_is_adamw_and_adam_coupled_is_not():
    adamw = trained_arms("optimizer=adamw", f"optimizer.weight_decay={WD}")
    decoupled = trained_arms("optimizer=adam", f"optimizer.weight_decay={WD}",
                             "optimizer.decay_mode=decoupled")
    coupled = trained_arms("optimizer=adam", f"optimizer.weight_decay={WD}",
                           "optimizer.decay_mode=coupled")
    np.testing.assert_array_equal(decoupled["decay"], adamw["decay"])
    assert np.abs(coupled["decay"] - adamw["decay"]).max() > 1e-4


def test_no_decay_pattern_exempts_parameters():
    arms = trained_arms("optimizer.weight_decay=0.5", "optimizer.no_decay=[weig*]")
    np.testing.assert_array_equal(arms["decay"], arms["baseline"])


def test_decay_grad_ratio_is_the_pull_of_decay_against_the_gradient(run_job, read_store):
    pair_id = run_job("model.dtype=float64", "model.init=[0.4,0.2]", "epochs=3",
                      "optimizer.weight_decay=0.1")
    reader = read_store()
    arms = reader.arms(pair_id)
    w = np.array([0.4, 0.2])
    grad = 2 * np.array([0.05, 1.0]) * w
    decay_id = arms["decay"].info.run_id
    assert reader.history(decay_id, "grad_norm")[0] == (0, pytest.approx(np.linalg.norm(grad),
                                                                         rel=1e-14))
    assert reader.history(decay_id, "decay_grad_ratio")[0][1] == pytest.approx(
        0.1 * np.linalg.norm(w) / np.linalg.norm(grad), rel=1e-14)
    assert {v for _, v in reader.history(arms["baseline"].info.run_id, "decay_grad_ratio")} == {0}

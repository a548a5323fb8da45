"""Schedules and decay modes against plain torch.optim + torch.optim.lr_scheduler loops."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from torch.nn import functional
from torch.optim import lr_scheduler

from tests.conftest import compose_config
from wdexp import data, engine, study
from wdexp.models import MLP
from wdexp.schedules import warmup_cosine

COEFFICIENTS = [0.05, 1.0, 0.3]
INIT = [0.8, -0.6, 0.25]
EPOCHS = 40
WD = 0.05
LR = {"sgd_momentum": 0.05, "adamw": 0.01}
TORCH = {"sgd_momentum": (torch.optim.SGD, {"momentum": 0.9, "nesterov": False}),
         "adamw": (torch.optim.AdamW, {"betas": (0.9, 0.999), "eps": 1e-8, "amsgrad": False})}


def torch_schedule(name: str, optimizer: torch.optim.Optimizer, steps: int):
    """Each scheduler config as a user would write it with torch, lengths from ``steps``."""
    return {
        "constant": lambda: None,
        "cosine": lambda: lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps, eta_min=0.0),
        "step": lambda: lr_scheduler.StepLR(optimizer, step_size=steps // 3, gamma=0.1),
        "exponential": lambda: lr_scheduler.ExponentialLR(optimizer, gamma=0.01 ** (1 / steps)),
        "warmup_cosine": lambda: lr_scheduler.SequentialLR(optimizer, [
            lr_scheduler.LinearLR(optimizer, start_factor=0.01, total_iters=round(steps * 0.05)),
            lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps - round(steps * 0.05))],
            milestones=[round(steps * 0.05)]),
    }[name]()


def quadratic_reference(optimizer_name: str, schedule: str, weight_decay: float,
                        ) -> tuple[np.ndarray, list[float]]:
    """Weights and lr per step of the seed notebook's loop, with a scheduler stepped after
    every optimizer step."""
    w = torch.tensor(INIT, dtype=torch.float64, requires_grad=True)
    c = torch.tensor(COEFFICIENTS, dtype=torch.float64)
    cls, kwargs = TORCH[optimizer_name]
    optimizer = cls([w], lr=LR[optimizer_name], weight_decay=weight_decay, **kwargs)
    scheduler = torch_schedule(schedule, optimizer, EPOCHS)
    weights, lrs = [], []
    for step in range(EPOCHS + 1):
        weights.append(w.detach().clone().numpy())
        lrs.append(optimizer.param_groups[0]["lr"])
        (c * w**2).sum().backward()
        if step < EPOCHS:
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
        optimizer.zero_grad()
    return np.array(weights), lrs


def trained(*overrides: str) -> dict[str, tuple[np.ndarray, list[float]]]:
    """Each arm's logged weights and lr per step, through wdexp's study and engine."""
    pair = study.build(compose_config("model.dtype=float64", f"model.coefficients={COEFFICIENTS}",
                                      f"model.init={INIT}", f"epochs={EPOCHS}", *overrides))
    steps = list(engine.train(pair.arms, EPOCHS))
    return {arm.name: (np.array([[s.metrics[arm.name][f"w_{i + 1}"] for i in range(3)]
                                 for s in steps]),
                       [s.metrics[arm.name]["lr"] for s in steps]) for arm in pair.arms}


@pytest.mark.parametrize("schedule", ["constant", "cosine", "step", "exponential",
                                      "warmup_cosine"])
@pytest.mark.parametrize("optimizer", ["sgd_momentum", "adamw"])
def test_every_schedule_equals_torch_bit_for_bit(optimizer, schedule):
    arms = trained(f"optimizer={optimizer}", f"optimizer.lr={LR[optimizer]}",
                   f"optimizer.weight_decay={WD}", f"scheduler={schedule}")
    for arm, weight_decay in (("baseline", 0.0), ("decay", WD)):
        weights, lrs = quadratic_reference(optimizer, schedule, weight_decay)
        np.testing.assert_array_equal(arms[arm][0], weights)
        assert arms[arm][1] == lrs
    if schedule != "constant":
        assert len(set(lrs)) > 2  # the schedule really moved the lr


def test_any_torch_scheduler_class_by_target():
    arms = trained("optimizer=sgd_momentum", f"optimizer.lr={LR['sgd_momentum']}",
                   "scheduler._target_=torch.optim.lr_scheduler.MultiStepLR",
                   "+scheduler.milestones=[10,20]", "+scheduler.gamma=0.5", "~scheduler.factor",
                   "~scheduler.total_iters")
    w = torch.tensor(INIT, dtype=torch.float64, requires_grad=True)
    c = torch.tensor(COEFFICIENTS, dtype=torch.float64)
    optimizer = torch.optim.SGD([w], lr=LR["sgd_momentum"], momentum=0.9, weight_decay=0.01)
    scheduler = lr_scheduler.MultiStepLR(optimizer, milestones=[10, 20], gamma=0.5)
    expected = []
    for step in range(EPOCHS + 1):
        expected.append(w.detach().clone().numpy())
        (c * w**2).sum().backward()
        if step < EPOCHS:
            optimizer.step()
            scheduler.step()
        optimizer.zero_grad()
    np.testing.assert_array_equal(arms["decay"][0], np.array(expected))
    assert arms["decay"][1][9:12] == [LR["sgd_momentum"], LR["sgd_momentum"] * 0.5,
                                      LR["sgd_momentum"] * 0.5]


def test_decoupled_under_cosine_is_torch_adamw_with_the_same_scheduler():
    arms = trained("optimizer=adam", f"optimizer.lr={LR['adamw']}", f"optimizer.weight_decay={WD}",
                   "optimizer.decay_mode=decoupled", "scheduler=cosine")
    weights, _ = quadratic_reference("adamw", "cosine", WD)
    np.testing.assert_array_equal(arms["decay"][0], weights)


def test_independent_decay_is_scaled_by_the_schedule_not_the_lr():
    """θ ← θ(1 - s_t·λ) then Adam's update, s_t = lr_t/lr_0 (Loshchilov & Hutter, Alg. 2)."""
    lam = 0.002
    arms = trained("optimizer=adam", f"optimizer.lr={LR['adamw']}", f"optimizer.weight_decay={lam}",
                   "optimizer.decay_mode=independent", "scheduler=cosine")
    w = torch.tensor(INIT, dtype=torch.float64, requires_grad=True)
    c = torch.tensor(COEFFICIENTS, dtype=torch.float64)
    optimizer = torch.optim.Adam([w], lr=LR["adamw"])
    scheduler = lr_scheduler.CosineAnnealingLR(optimizer, T_max=EPOCHS)
    expected = []
    for step in range(EPOCHS + 1):
        expected.append(w.detach().clone().numpy())
        (c * w**2).sum().backward()
        if step < EPOCHS:
            with torch.no_grad():
                w.mul_(1 - optimizer.param_groups[0]["lr"] / LR["adamw"] * lam)
            optimizer.step()
            scheduler.step()
        optimizer.zero_grad()
    np.testing.assert_array_equal(arms["decay"][0], np.array(expected))
    # At a constant lr, independent decay λ is decoupled decay λ/lr, to rounding.
    constant = trained("optimizer=adam", f"optimizer.lr={LR['adamw']}",
                       f"optimizer.weight_decay={lam}", "optimizer.decay_mode=independent")
    decoupled = trained("optimizer=adam", f"optimizer.lr={LR['adamw']}",
                        f"optimizer.weight_decay={lam / LR['adamw']}",
                        "optimizer.decay_mode=decoupled")
    np.testing.assert_allclose(constant["decay"][0], decoupled["decay"][0], rtol=1e-12)


@pytest.mark.parametrize(("optimizer", "schedule"), [
    pytest.param("adamw", "warmup_cosine", marks=pytest.mark.slow), ("sgd_momentum", "step")])
def test_minibatch_schedule_steps_per_optimizer_step_as_torch(optimizer, schedule):
    """The digits MLP against a plain loop: same init, batches, torch scheduler per batch."""
    epochs = 3
    pair = study.build(compose_config("model=mlp", f"optimizer={optimizer}",
                                      f"optimizer.lr={LR[optimizer]}", f"scheduler={schedule}",
                                      f"epochs={epochs}", "seed=4"))
    list(engine.train(pair.arms, epochs))

    study.seed_everything(4)
    net = MLP(64, 10, [64])
    digits = data.digits()
    x, y = digits.x_train.float(), digits.y_train
    cls, kwargs = TORCH[optimizer]
    decayed = [p for p in net.parameters() if p.ndim > 1]
    exempt = [p for p in net.parameters() if p.ndim <= 1]
    torch_optimizer = cls([{"params": decayed, "weight_decay": 0.01},
                           {"params": exempt, "weight_decay": 0.0}], lr=LR[optimizer], **kwargs)
    per_epoch = math.ceil(len(y) / 32)
    scheduler = torch_schedule(schedule, torch_optimizer, epochs * per_epoch)
    for epoch in range(epochs):
        generator = torch.Generator().manual_seed(4 * 1_000_003 + epoch)
        order = torch.randperm(len(y), generator=generator)
        for start in range(0, len(y), 32):
            index = order[start:start + 32]
            torch_optimizer.zero_grad()
            functional.cross_entropy(net(x[index]), y[index]).backward()
            torch_optimizer.step()
            scheduler.step()
    for mine, theirs in zip(pair.arms[1].model.parameters(), net.parameters(), strict=True):
        assert torch.equal(mine, theirs)
    assert pair.arms[1].optimizer.param_groups[0]["lr"] == torch_optimizer.param_groups[0]["lr"]


def test_warmup_cosine_rises_then_anneals_to_eta_min():
    w = torch.zeros(1, requires_grad=True)
    optimizer = torch.optim.SGD([w], lr=1.0)
    scheduler = warmup_cosine(optimizer, T_max=100, warmup_steps=10, start_factor=0.1)
    lrs = []
    for _ in range(101):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert lrs[0] == pytest.approx(0.1)
    assert lrs[10] == pytest.approx(1.0)
    assert all(a < b for a, b in itertools.pairwise(lrs[:11]))
    assert all(a >= b for a, b in itertools.pairwise(lrs[10:]))
    assert lrs[100] == pytest.approx(0.0, abs=1e-12)
    assert lrs[55] == pytest.approx(0.5)  # halfway through the cosine

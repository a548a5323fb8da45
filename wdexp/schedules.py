"""The scheduler group: a learning-rate schedule, read like the torch call.

``scheduler._target_`` names a ``torch.optim.lr_scheduler`` class (or a function that returns
one, like :func:`warmup_cosine`); every other key is passed to it, so any torch argument is a
CLI override (``scheduler.eta_min=1e-4``). The scheduler steps once per *optimizer* step (per
mini-batch), so its lengths count optimizer steps; the run's number of steps is known only
once the data is, so these keys may be ``null``:

``T_max`` (cosine, warm-up cosine)
    the run's steps: one half-period over the whole run.
``step_size`` (StepLR)
    a third of the run's steps.
``gamma`` (ExponentialLR)
    the factor that takes the lr to 1 % of its initial value over the run.
``warmup_steps`` (warm-up cosine)
    the first 5 % of the run's steps.

``constant`` is ``ConstantLR`` with ``factor: 1``: it never changes the lr, so wdexp builds no
scheduler for it (the same numbers, without a call per step).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from omegaconf import DictConfig
from torch.optim.lr_scheduler import (
    ConstantLR,
    CosineAnnealingLR,
    ExponentialLR,
    LinearLR,
    LRScheduler,
    SequentialLR,
    StepLR,
)

from wdexp.config import finite_number, instantiable, integer, positive_int
from wdexp.vocabulary import ConfigError

WARMUP_FRACTION = 0.05
FINAL_FRACTION = 0.01  # of the initial lr, for an ExponentialLR whose gamma is null


def warmup_cosine(optimizer: torch.optim.Optimizer, T_max: int, warmup_steps: int,
                  start_factor: float = 0.01, eta_min: float = 0.0) -> LRScheduler:
    """Linear warm-up from ``start_factor * lr`` to ``lr`` over ``warmup_steps``, then cosine
    annealing to ``eta_min`` at ``T_max`` (the run's steps): torch's ``SequentialLR`` of
    ``LinearLR`` and ``CosineAnnealingLR``."""
    warmup = LinearLR(optimizer, start_factor=start_factor, end_factor=1.0,
                      total_iters=warmup_steps)
    cosine = CosineAnnealingLR(optimizer, T_max=max(T_max - warmup_steps, 1), eta_min=eta_min)
    return SequentialLR(optimizer, [warmup, cosine], milestones=[warmup_steps])


def _derived(key: str, total_steps: int) -> Any:
    return {
        "T_max": total_steps,
        "step_size": max(total_steps // 3, 1),
        "gamma": FINAL_FRACTION ** (1 / total_steps),
        "warmup_steps": max(round(total_steps * WARMUP_FRACTION), 1),
    }[key]


@dataclass(frozen=True)
class SchedulerSpec:
    target: Callable[..., LRScheduler]
    kwargs: dict[str, Any]

    @property
    def constant(self) -> bool:
        return self.target is ConstantLR and self.kwargs.get("factor") == 1

    def resolved(self, total_steps: int) -> dict[str, Any]:
        """The arguments, with each ``null`` length filled in from the run's steps."""
        return {key: _derived(key, total_steps) if value is None and key in NULLABLE else value
                for key, value in self.kwargs.items()}

    def build(self, optimizer: torch.optim.Optimizer, total_steps: int) -> LRScheduler | None:
        if self.constant:
            return None
        scheduler = self.target(optimizer, **self.resolved(total_steps))
        if not isinstance(scheduler, LRScheduler):
            raise ConfigError("scheduler._target_", "must return a torch.optim.lr_scheduler "
                              "scheduler", type(scheduler).__name__)
        return scheduler


NULLABLE = ("T_max", "step_size", "gamma", "warmup_steps")
_STEPS = ("T_max", "step_size", "warmup_steps")
_CHECKED: dict[type | Callable, tuple[str, ...]] = {
    CosineAnnealingLR: ("T_max",), StepLR: ("step_size",), ExponentialLR: ("gamma",),
    warmup_cosine: ("T_max", "warmup_steps"),
}


def parse_scheduler(cfg: DictConfig | None, group: str = "scheduler") -> SchedulerSpec:
    """``cfg.scheduler`` → spec; raises ConfigError keyed ``scheduler.<key>``."""
    if cfg is None:
        return SchedulerSpec(ConstantLR, {"factor": 1.0, "total_iters": 0})
    target, kwargs = instantiable(group, cfg, LRScheduler,
                                  "torch.optim.lr_scheduler class or a function returning one",
                                  callable_target=True)
    if "optimizer" in kwargs:
        raise ConfigError(f"{group}.optimizer", "is the arm's optimizer, given by wdexp",
                          kwargs["optimizer"])
    for key, value in kwargs.items():
        if value is None and key in NULLABLE:
            continue
        if key in _STEPS:
            positive_int(f"{group}.{key}", value)
        elif key == "total_iters":
            finite_number(f"{group}.{key}", integer(f"{group}.{key}", value), minimum=0)
        elif key in ("gamma", "factor", "start_factor", "end_factor", "eta_min"):
            finite_number(f"{group}.{key}", value, minimum=0)
    for key in _CHECKED.get(target, ()):
        kwargs.setdefault(key, None)
    return SchedulerSpec(target, kwargs)

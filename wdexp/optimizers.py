"""The optimizer group: a ``torch.optim`` class plus its arguments, checked before any run.

``optimizer._target_`` names the class; every other key is passed to it unchanged, so any
torch argument is a CLI override (``+optimizer.nesterov=true``). wdexp checks the keys the
study depends on by name and the rest against the class's signature.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf

from wdexp.config import ConfigError, finite_number


@dataclass(frozen=True)
class OptimizerSpec:
    cls: type[torch.optim.Optimizer]
    kwargs: dict[str, Any]

    @property
    def lr(self) -> float:
        return self.kwargs["lr"]

    @property
    def weight_decay(self) -> float:
        return self.kwargs.get("weight_decay", 0.0)

    def with_weight_decay(self, weight_decay: float) -> OptimizerSpec:
        return OptimizerSpec(self.cls, {**self.kwargs, "weight_decay": weight_decay})

    def build(self, params: Iterable[torch.nn.Parameter]) -> torch.optim.Optimizer:
        return self.cls(params, **self.kwargs)


# The keys the study reads, with the ranges torch itself would accept (or should).
_CHECKS: dict[str, Callable[[str, Any], float]] = {
    "lr": lambda key, v: finite_number(key, v, minimum=0, strict=True),
    "weight_decay": lambda key, v: finite_number(key, v, minimum=0),
    "momentum": lambda key, v: finite_number(key, v, minimum=0, below=1),
}


def parse_optimizer(cfg: DictConfig) -> OptimizerSpec:
    """``cfg.optimizer`` → spec; raises ConfigError keyed ``optimizer.<key>``."""
    kwargs: dict[str, Any] = OmegaConf.to_container(cfg, resolve=True)  # type: ignore[assignment]
    target = kwargs.pop("_target_", None)
    try:
        cls = get_class(target) if isinstance(target, str) else None
    except Exception:
        cls = None
    if cls is None or not (isinstance(cls, type) and issubclass(cls, torch.optim.Optimizer)):
        raise ConfigError("optimizer._target_", "must name a torch.optim.Optimizer class", target)
    if "lr" not in kwargs:
        raise ConfigError("optimizer.lr", "must be set", show_value=False)
    accepted = inspect.signature(cls).parameters
    for key, value in kwargs.items():
        if key not in accepted or key == "params":
            raise ConfigError(f"optimizer.{key}", f"is not an argument of {cls.__module__}."
                              f"{cls.__qualname__}", value)
        if key in _CHECKS:
            kwargs[key] = _CHECKS[key](f"optimizer.{key}", value)
    return OptimizerSpec(cls, kwargs)

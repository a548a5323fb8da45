"""The optimizer group: a ``torch.optim`` class plus its arguments, checked before any run.

``optimizer._target_`` names the class; every other key is passed to it unchanged, so any
torch argument is a CLI override (``+optimizer.nesterov=true``), except wdexp's own two:
``decay_mode`` and ``no_decay`` (see :mod:`wdexp.decay`). wdexp checks the keys the study depends
on by name and the rest against the class's signature.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from omegaconf import DictConfig

from wdexp.config import finite_number, instantiable
from wdexp.decay import MODES, WeightDecay, split_parameters
from wdexp.models.contract import DefaultNoDecay
from wdexp.vocabulary import ConfigError


@dataclass(frozen=True)
class OptimizerSpec:
    cls: type[torch.optim.Optimizer]
    kwargs: dict[str, Any]
    decay_mode: str = "native"
    no_decay: tuple[str, ...] | None = None  # None: the model's default_no_decay(), if any

    @property
    def lr(self) -> float:
        return self.kwargs["lr"]

    @property
    def weight_decay(self) -> float:
        return self.kwargs.get("weight_decay", 0.0)

    def build(self, model: torch.nn.Module) -> tuple[torch.optim.Optimizer, WeightDecay]:
        """The torch optimizer over ``model`` and the decay applied around its steps."""
        no_decay = self.no_decay
        if no_decay is None:
            no_decay = model.default_no_decay() if isinstance(model, DefaultNoDecay) else ()
        decayed, exempt = split_parameters(model, no_decay)
        decay = WeightDecay(self.decay_mode, self.weight_decay, decayed)
        kwargs = {k: v for k, v in self.kwargs.items() if k != "weight_decay"}
        optimizer = self.cls(decay.param_groups(exempt), **kwargs)
        decay.bind(optimizer)
        return optimizer, decay


def _betas(key: str, value: Any) -> tuple[float, float]:
    if not isinstance(value, list | tuple) or len(value) != 2:
        raise ConfigError(key, "must be two numbers in [0, 1)", value)
    for beta in value:
        try:
            finite_number(key, beta, minimum=0, below=1)
        except ConfigError:
            raise ConfigError(key, "must be two numbers in [0, 1)", value) from None
    return float(value[0]), float(value[1])


# The keys the study reads, with the ranges torch itself would accept (or should).
_CHECKS: dict[str, Callable[[str, Any], Any]] = {
    "lr": lambda key, v: finite_number(key, v, minimum=0, strict=True),
    "weight_decay": lambda key, v: finite_number(key, v, minimum=0),
    "momentum": lambda key, v: finite_number(key, v, minimum=0, below=1),
    "eps": lambda key, v: finite_number(key, v, minimum=0, strict=True),
    "betas": _betas,
}


def parse_optimizer(cfg: DictConfig, group: str = "optimizer") -> OptimizerSpec:
    """``cfg.optimizer`` → spec; raises ConfigError keyed ``<group>.<key>``."""
    cls, kwargs = instantiable(group, cfg, torch.optim.Optimizer, "torch.optim.Optimizer class",
                               reserved=("decay_mode", "no_decay"))
    decay_mode = kwargs.pop("decay_mode", "native")
    if decay_mode not in MODES:
        raise ConfigError(f"{group}.decay_mode", f"must be one of {', '.join(MODES)}",
                          decay_mode)
    no_decay = kwargs.pop("no_decay", None)
    if no_decay is not None and (not isinstance(no_decay, list)
                                 or not all(isinstance(p, str) for p in no_decay)):
        raise ConfigError(f"{group}.no_decay", "must be a list of parameter-name patterns "
                          "or null", no_decay)
    if "lr" not in kwargs:
        raise ConfigError(f"{group}.lr", "must be set", show_value=False)
    for key, check in _CHECKS.items():
        if key in kwargs:
            kwargs[key] = check(f"{group}.{key}", kwargs[key])
    return OptimizerSpec(cls, kwargs, decay_mode,
                         None if no_decay is None else tuple(no_decay))

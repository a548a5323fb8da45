"""The two arms of a pair: what each one's optimizer and schedule are.

The decay arm runs ``optimizer`` and ``scheduler`` as configured. The baseline arm runs them
with the ``arms.baseline`` node merged over them — by default ``optimizer.weight_decay: 0`` (and
``optimizer.lr: ${optimizer.lr}``, so the lr can be set for the baseline alone) — so a pair
can differ by more than λ::

    arms.baseline.optimizer.lr=0.2
    +arms.baseline.scheduler._target_=torch.optim.lr_scheduler.ExponentialLR
    +arms.baseline.scheduler.gamma=1.004

A node under ``arms.baseline`` whose ``_target_`` names another class replaces the decay arm's
group instead of merging into it (its keys would not fit the other class).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, OmegaConf

from wdexp.config import ConfigError, flatten
from wdexp.optimizers import OptimizerSpec, parse_optimizer
from wdexp.schedules import SchedulerSpec, parse_scheduler

BASELINE, DECAY = "baseline", "decay"
GROUPS = ("optimizer", "scheduler")


@dataclass(frozen=True)
class ArmSpec:
    name: str
    optimizer: OptimizerSpec
    scheduler: SchedulerSpec
    config: dict[str, Any]  # {"optimizer": {...}, "scheduler": {...}} as this arm runs them


def _plain(node: Any) -> dict[str, Any] | None:
    if node is None:
        return None
    if not isinstance(node, DictConfig):
        raise ConfigError("arms.baseline", "must map optimizer and scheduler to config nodes",
                          node)
    return OmegaConf.to_container(node, resolve=True)  # type: ignore[return-value]


def _merged(decay: dict[str, Any] | None, override: dict[str, Any] | None,
            ) -> dict[str, Any] | None:
    if override is None:
        return decay
    target = override.get("_target_")
    if decay is None or (target is not None and target != decay.get("_target_")):
        return override
    return OmegaConf.to_container(OmegaConf.merge(decay, override))  # type: ignore[return-value]


def _baseline_node(cfg: DictConfig) -> dict[str, dict[str, Any] | None]:
    arms = cfg.get("arms")
    if arms is None:
        return {}
    unknown = [key for key in arms if key != BASELINE]
    if unknown:
        raise ConfigError(f"arms.{unknown[0]}", "is not an arm: only arms.baseline can be set",
                          show_value=False)
    baseline = arms.get(BASELINE) or {}
    for key in baseline:
        if key not in GROUPS:
            raise ConfigError(f"arms.baseline.{key}", "is not a group an arm can change "
                              "(optimizer, scheduler)", show_value=False)
    return {group: _plain(baseline.get(group)) for group in GROUPS}


def parse_arms(cfg: DictConfig) -> list[ArmSpec]:
    """Both arms' specs, baseline first; raises ConfigError keyed ``optimizer.<key>``,
    ``scheduler.<key>`` or ``arms.baseline.<group>.<key>``."""
    decay = {group: _plain(cfg.get(group)) for group in GROUPS}
    decay_arm = ArmSpec(DECAY, parse_optimizer(cfg.optimizer),
                        parse_scheduler(cfg.get("scheduler")), decay)
    override = _baseline_node(cfg)
    baseline = {group: _merged(decay[group], override.get(group)) for group in GROUPS}
    nodes = {group: None if node is None else OmegaConf.create(node)
             for group, node in baseline.items()}
    baseline_arm = ArmSpec(
        BASELINE,
        parse_optimizer(nodes["optimizer"], "arms.baseline.optimizer"),  # type: ignore[arg-type]
        parse_scheduler(nodes["scheduler"], "arms.baseline.scheduler"),  # type: ignore[arg-type]
        baseline)
    return [baseline_arm, decay_arm]


def differences(cfg: DictConfig) -> dict[str, Any]:
    """What ``arms.baseline`` changes beyond the default (weight decay 0, the same lr), flat:
    ``{"optimizer.lr": 0.2, "scheduler._target_": "...ExponentialLR", ...}``."""
    override = {group: node for group, node in _baseline_node(cfg).items() if node}
    flat = flatten(override)  # type: ignore[arg-type]
    lr = OmegaConf.select(cfg, "optimizer.lr")
    defaults = {"optimizer.weight_decay": ("0", "0.0"), "optimizer.lr": (str(lr),)}
    return {key: value for key, value in flat.items() if value not in defaults.get(key, ())}

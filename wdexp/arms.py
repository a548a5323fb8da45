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

from wdexp.config import flatten
from wdexp.optimizers import OptimizerSpec, parse_optimizer
from wdexp.schedules import SchedulerSpec, parse_scheduler
from wdexp.vocabulary import ARM_GROUPS, BASELINE, DECAY, LR, WEIGHT_DECAY, ConfigError


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
        if key not in ARM_GROUPS:
            raise ConfigError(f"arms.baseline.{key}", "is not a group an arm can change "
                              "(optimizer, scheduler)", show_value=False)
    return {group: _plain(baseline.get(group)) for group in ARM_GROUPS}


def parse_arms(cfg: DictConfig) -> tuple[list[ArmSpec], dict[str, Any]]:
    """Both arms' specs, baseline first, and what ``arms.baseline`` changes beyond the default
    (weight decay 0, the same lr), flat: ``{"optimizer.lr": 0.2, "scheduler._target_":
    "...ExponentialLR", ...}``. Raises ConfigError keyed ``optimizer.<key>``,
    ``scheduler.<key>`` or ``arms.baseline.<group>.<key>``."""
    decay = {group: _plain(cfg.get(group)) for group in ARM_GROUPS}
    decay_arm = ArmSpec(DECAY, parse_optimizer(cfg.optimizer),
                        parse_scheduler(cfg.get("scheduler")), decay)
    override = _baseline_node(cfg)
    baseline = {group: _merged(decay[group], override.get(group)) for group in ARM_GROUPS}
    nodes = {group: None if node is None else OmegaConf.create(node)
             for group, node in baseline.items()}
    baseline_arm = ArmSpec(
        BASELINE,
        parse_optimizer(nodes["optimizer"], "arms.baseline.optimizer"),  # type: ignore[arg-type]
        parse_scheduler(nodes["scheduler"], "arms.baseline.scheduler"),  # type: ignore[arg-type]
        baseline)
    return [baseline_arm, decay_arm], _differences(override, OmegaConf.select(cfg, LR))


def _differences(override: dict[str, dict[str, Any] | None], lr: Any) -> dict[str, Any]:
    flat = flatten({group: node for group, node in override.items() if node})
    defaults = {WEIGHT_DECAY: ("0", "0.0"), LR: (str(lr),)}
    return {key: value for key, value in flat.items() if value not in defaults.get(key, ())}

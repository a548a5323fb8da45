"""Which jobs train together, which of their arms are one member, and what the stack refuses."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from wdexp import engine
from wdexp.models.contract import MiniBatched
from wdexp.models.supervised import Supervised
from wdexp.study import Arm, Study
from wdexp.vocabulary import ARM_GROUPS, LR, SEED, WEIGHT_DECAY, ConfigError

STACKABLE = (torch.optim.SGD, torch.optim.Adam, torch.optim.AdamW)
INSTEAD = "use hydra/launcher=joblib (or the default launcher) for it"
# Config keys whose values may differ between the jobs of one stack: each member has its own
# seed, batch order and λ; each lr is a lane of its own (one torch optimizer per lr).
STACKED_KEYS = (SEED, WEIGHT_DECAY, LR, "data.batch_seed")


@dataclass(frozen=True)
class Job:
    """One job as the stack receives it: its built study and torch's random state at the
    point its separate run would start training."""

    study: Study
    random_state: engine.RandomState


def vectorized(study: Study) -> bool:
    """Whether the study's model is a network on a data set (trained with ``torch.func.vmap``)
    rather than a model with its own loss (each member called on its own rows)."""
    return isinstance(study.arms[0].model, Supervised)


def check(study: Study) -> None:
    """Raise ConfigError naming the key if the stack cannot train ``study``."""
    model = study.arms[0].model
    target = study.config["model"].get("_target_")
    own_loss = isinstance(model, nn.Module) and not isinstance(model, MiniBatched)
    if not (isinstance(model, Supervised) or own_loss):
        raise ConfigError("model._target_", "must be a network on a data set or a full-batch "
                          f"model with its own loss for hydra/launcher=stacked; {INSTEAD}",
                          target)
    for arm in reversed(study.arms):  # the decay arm's config first: the baseline's comes from it
        prefix = "optimizer" if arm is study.arms[-1] else "arms.baseline.optimizer"
        spec = arm.spec.optimizer
        if spec.cls not in STACKABLE:
            raise ConfigError(f"{prefix}._target_", "must be torch.optim.SGD, Adam or AdamW for "
                              f"hydra/launcher=stacked; {INSTEAD}",
                              f"{spec.cls.__module__}.{spec.cls.__qualname__}")
        if spec.kwargs.get("maximize"):
            raise ConfigError(f"{prefix}.maximize", f"is not stacked; {INSTEAD}", True)


def _key(node: Any) -> str:
    return json.dumps(node, sort_keys=True, default=str)


def _without(config: dict[str, Any], dotted: Sequence[str]) -> dict[str, Any]:
    """``config`` without the dotted keys (``data.batch_seed``)."""
    out = dict(config)
    for key in dotted:
        head, _, rest = key.partition(".")
        if head in out and rest and isinstance(out[head], dict):
            out[head] = _without(out[head], [rest])
        elif not rest:
            out.pop(head, None)
    return out


def group_key(study: Study) -> str:
    """Jobs with one group key stack together: their configs differ at most in the
    :data:`STACKED_KEYS` and in what the baseline arm changes."""
    return _key(_without(study.config, [*STACKED_KEYS, "arms"]))


def member_key(study: Study, arm: Arm) -> str:
    """Arms with one member key are one computation: the job's config outside the arms' groups,
    and the arm's own optimizer and scheduler."""
    return _key({**_without(study.config, ["arms", *ARM_GROUPS]), "arm": arm.spec.config})


def lane_key(arm: Arm) -> str:
    """Arms with one lane key differ at most in λ: one optimizer can update them all."""
    return _key(_without(arm.spec.config, [WEIGHT_DECAY]))


def chunks(jobs: Sequence[Job], max_members: int) -> list[list[Job]]:
    """``jobs`` (of one group) in order, split so that no chunk has more than ``max_members``
    distinct members (a job whose arms alone exceed it is a chunk of its own)."""
    out: list[list[Job]] = []
    keys: set[str] = set()
    for job in jobs:
        new = {member_key(job.study, arm) for arm in job.study.arms}
        if out and len(keys | new) <= max_members:
            out[-1].append(job)
            keys |= new
        else:
            out.append([job])
            keys = set(new)
    return out

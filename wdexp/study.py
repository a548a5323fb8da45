"""What one job trains: the two arms of a paired comparison, built from the config.

Both arms start from the same weights — the model is built once, under the job's seed, and
copied — and use the same optimizer; only the baseline's weight decay is forced to 0.
"""

from __future__ import annotations

import copy
import random
from dataclasses import dataclass, field

import numpy as np
import torch
from omegaconf import DictConfig

from wdexp.config import ConfigError, JobSpec, instantiable, parse_job
from wdexp.decay import WeightDecay
from wdexp.optimizers import OptimizerSpec, parse_optimizer

BASELINE, DECAY = "baseline", "decay"


@dataclass
class Arm:
    name: str
    weight_decay: float
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    decay: WeightDecay
    solution: torch.Tensor | None = None  # where this arm's training should converge, if known
    diverged_at: int | None = field(default=None)


@dataclass
class Study:
    job: JobSpec
    optimizer: OptimizerSpec
    arms: list[Arm]
    labels: dict[str, str]  # group choices, e.g. {"model": "quadratic", "optimizer": "sgd_wd"}

    def artifacts(self) -> dict[str, str]:
        """Files the model asks to keep with the pair run (e.g. its data), name → text."""
        model = self.arms[0].model
        return model.artifacts() if hasattr(model, "artifacts") else {}

    @property
    def name(self) -> str:
        """E.g. ``sgd_wd lr=0.01 wd=0.01 seed=0``; non-default model and decay mode show too."""
        optimizer = self.labels["optimizer"]
        if self.optimizer.decay_mode != "native":
            optimizer += f"/{self.optimizer.decay_mode}"
        model = "" if self.labels["model"] == "quadratic" else f"{self.labels['model']} "
        return (f"{model}{optimizer} lr={self.optimizer.lr:g} "
                f"wd={self.optimizer.weight_decay:g} seed={self.job.seed}")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def resolve_device(name: str) -> torch.device:
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError("device", "must be a torch device string such as cpu or cuda",
                          name) from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device", "names CUDA but torch.cuda.is_available() is False", name)
    return device


def build_model(cfg: DictConfig, device: torch.device) -> torch.nn.Module:
    cls, kwargs = instantiable("model", cfg, torch.nn.Module, "torch.nn.Module")
    try:
        model = cls(**kwargs)
    except ConfigError as error:
        raise error.within("model") from None
    return model.to(device)


def build(cfg: DictConfig, labels: dict[str, str] | None = None) -> Study:
    """Check the whole config and build both arms; nothing is tracked yet."""
    job = parse_job(cfg)
    optimizer = parse_optimizer(cfg.optimizer)
    device = resolve_device(job.device)
    seed_everything(job.seed)
    model = build_model(cfg.model, device)
    labels = {"model": type(model).__name__.lower(),
              "optimizer": optimizer.cls.__name__.lower(), **(labels or {})}
    arms = []
    for name, spec in ((BASELINE, optimizer.with_weight_decay(0.0)), (DECAY, optimizer)):
        arm_model = copy.deepcopy(model)
        solution = (arm_model.solution(spec.weight_decay) if hasattr(arm_model, "solution")
                    else None)
        arms.append(Arm(name, spec.weight_decay, arm_model, *spec.build(arm_model), solution))
    return Study(job, optimizer, arms, labels)

"""What one job trains: the two arms of a paired comparison, built from the config.

Both arms start from the same weights — the model is built once, under the job's seed, and
copied — and use the same optimizer; only the baseline's weight decay is forced to 0.
"""

from __future__ import annotations

import copy
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np
import torch
from omegaconf import DictConfig

from wdexp.config import ConfigError, JobSpec, instantiable, parse_job
from wdexp.decay import WeightDecay
from wdexp.models.contract import Artifacts, ClosedForm, KnownSolution, MiniBatched, Model
from wdexp.optimizers import OptimizerSpec, parse_optimizer

BASELINE, DECAY = "baseline", "decay"
FIGURE_POINTS = 2001


@dataclass
class Arm:
    name: str
    weight_decay: float
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    decay: WeightDecay
    solution: torch.Tensor | None = None  # where this arm's training should converge, if known
    diverged_at: int | None = field(default=None)


@dataclass(frozen=True)
class FigureSpec:
    """What the pair figures need beyond the logged metrics: the study's own knowledge.

    ``predicted[arm]`` holds the closed-form ``loss`` and weights at the steps listed under
    ``"step"`` (models and optimizers with one); ``surface`` maps grids of (w_1, w_2) to the
    unregularised loss (two-weight models).
    """

    title: str
    weight_decay: Mapping[str, float]
    predicted: Mapping[str, Mapping[str, list[float]]] | None = None
    surface: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None


@dataclass
class Study:
    job: JobSpec
    optimizer: OptimizerSpec
    arms: list[Arm]
    labels: dict[str, str]  # group choices, e.g. {"model": "quadratic", "optimizer": "sgd_wd"}

    def artifacts(self) -> dict[str, str]:
        """Files the model asks to keep with the pair run (e.g. its data), name → text."""
        model = self.arms[0].model
        return model.artifacts() if isinstance(model, Artifacts) else {}

    @property
    def name(self) -> str:
        """E.g. ``sgd_wd lr=0.01 wd=0.01 seed=0``; non-default model and decay mode show too."""
        optimizer = self.labels["optimizer"]
        if self.optimizer.decay_mode != "native":
            optimizer += f"/{self.optimizer.decay_mode}"
        model = "" if self.labels["model"] == "quadratic" else f"{self.labels['model']} "
        return (f"{model}{optimizer} lr={self.optimizer.lr:g} "
                f"wd={self.optimizer.weight_decay:g} seed={self.job.seed}")

    def figure_spec(self) -> FigureSpec:
        """What the pair figures need from the study; call it before training, while the arms
        still hold the shared init the closed form starts from."""
        weight_decay = {arm.name: arm.weight_decay for arm in self.arms}
        model = self.arms[0].model
        if not isinstance(model, ClosedForm):
            return FigureSpec(self.name, weight_decay)
        form = model.closed_form()
        init = np.concatenate([p.detach().double().cpu().numpy().ravel()
                               for p in model.parameters()])
        predicted = None
        if self._is_gradient_descent():
            # A figure shows a few thousand points at most, however long the run.
            steps = np.unique(np.linspace(0, self.job.epochs, FIGURE_POINTS).round()).astype(int)
            predicted = {arm.name: form.gradient_descent(init, self.optimizer.lr,
                                                         arm.weight_decay, steps)
                         for arm in self.arms}
        return FigureSpec(self.name, weight_decay, predicted, form if init.size == 2 else None)

    def _is_gradient_descent(self) -> bool:
        """Plain full-batch SGD with every weight decayed: the case the closed form describes
        (for SGD every decay mode is the same update)."""
        kwargs = self.optimizer.kwargs
        return (self.optimizer.cls is torch.optim.SGD and not kwargs.get("momentum")
                and not kwargs.get("maximize") and not isinstance(self.arms[0].model, MiniBatched)
                and all(len(arm.decay.decayed) == len(list(arm.model.parameters()))
                        for arm in self.arms))


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
    if not isinstance(model, Model):
        raise ConfigError("model._target_", "must be a torch.nn.Module with loss() and "
                          "metrics(loss) (see wdexp.models.contract.Model)", cfg.get("_target_"))
    return model.to(device)


def build(cfg: DictConfig, labels: dict[str, str] | None = None,
          checked: Callable[[JobSpec], object] | None = None) -> Study:
    """Check the whole config and build both arms; nothing is tracked yet.

    ``checked`` is called once every value has passed its checks, before the first torch
    optimizer is built — which imports torch's compiler stack, seconds of work the caller can
    overlap with its own (the store's opening).
    """
    job = parse_job(cfg)
    optimizer = parse_optimizer(cfg.optimizer)
    device = resolve_device(job.device)
    seed_everything(job.seed)
    model = build_model(cfg.model, device)
    if checked is not None:
        checked(job)
    labels = {"model": type(model).__name__.lower(),
              "optimizer": optimizer.cls.__name__.lower(), **(labels or {})}
    arms = []
    for name, spec in ((BASELINE, optimizer.with_weight_decay(0.0)), (DECAY, optimizer)):
        arm_model = copy.deepcopy(model)
        solution = (arm_model.solution(spec.weight_decay)
                    if isinstance(arm_model, KnownSolution) else None)
        arms.append(Arm(name, spec.weight_decay, arm_model, *spec.build(arm_model), solution))
    return Study(job, optimizer, arms, labels)

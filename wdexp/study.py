"""What one job trains: the two arms of a paired comparison, built from the config.

Both arms start from the same weights — the model is built once, under the job's seed, and
copied — and see the same data in the same order; their optimizers and schedules are the
configured ones, the baseline's with ``arms.baseline`` merged over them (by default weight
decay 0; see :mod:`wdexp.arms`).
"""

from __future__ import annotations

import copy
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig

from wdexp import data as data_group
from wdexp.arms import ArmSpec, parse_arms
from wdexp.config import JobSpec, config_hash, flatten, instantiable, loggable, parse_job
from wdexp.decay import WeightDecay
from wdexp.geometry import Geometry, adam_family, predicted_angular_update, timescale
from wdexp.models.contract import (
    Artifacts,
    ClosedForm,
    Identified,
    KnownSolution,
    MiniBatched,
    Model,
)
from wdexp.models.supervised import supervised
from wdexp.optimizers import OptimizerSpec
from wdexp.vocabulary import FIGURE_POINTS, ConfigError

__all__ = ["Arm", "FigureSpec", "Study", "build"]


@dataclass
class Arm:
    name: str
    weight_decay: float
    model: Model
    optimizer: torch.optim.Optimizer
    decay: WeightDecay
    spec: ArmSpec
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None  # steps per optimizer step
    solution: torch.Tensor | None = None  # where this arm's training should converge, if known
    geometry: Geometry | None = None  # per-layer step geometry, for models with weight rows
    equilibrium_angle: float | None = None  # the angular update theory predicts at equilibrium
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
    equilibrium: Mapping[str, float | None] | None = None  # predicted angular update per arm


@dataclass
class Study:
    """Everything downstream needs of one job's config, read once: its checked settings, both
    arms, and the config as it may be recorded (credentials redacted), flat and hashed."""

    job: JobSpec
    optimizer: OptimizerSpec  # the decay arm's, as configured
    arms: list[Arm]
    labels: dict[str, str]  # group choices, e.g. {"model": "quadratic", "optimizer": "sgd_wd"}
    config: dict[str, Any]  # the resolved config as plain data, credentials redacted
    config_params: dict[str, str]  # the same, flat: MLflow params
    config_hash: str  # what the pair computes (resume finds finished pairs by it)
    baseline_changes: dict[str, str] = field(default_factory=dict)  # from arms.baseline

    def artifacts(self) -> dict[str, str]:
        """Files the model asks to keep with the pair run (e.g. its data), name → text."""
        model = self.arms[0].model
        return model.artifacts() if isinstance(model, Artifacts) else {}

    def params(self) -> dict[str, str]:
        """Params beyond the config: what identifies the model's data, and the decay arm's
        timescale ``tau_iter`` = 1/(ηλ) in optimizer steps and ``tau_epoch`` in epochs."""
        model = self.arms[0].model
        params = model.params() if isinstance(model, Identified) else {}
        tau = timescale(self.optimizer)
        if tau is not None:
            params.update({"tau_iter": f"{tau:.6g}",
                           "tau_epoch": f"{tau / steps_per_epoch(model):.6g}"})
        return params

    @property
    def name(self) -> str:
        """E.g. ``sgd_wd lr=0.01 wd=0.01 seed=0``; a non-default model, its data, decay mode,
        schedule and what the baseline changes beyond λ show too (``mlp digits adamw cosine
        lr=0.001 wd=0.01 seed=0``)."""
        optimizer = self.labels["optimizer"]
        if self.optimizer.decay_mode != "native":
            optimizer += f"/{self.optimizer.decay_mode}"
        parts = [] if self.labels["model"] == "quadratic" else [self.labels["model"]]
        if self.labels.get("data"):
            parts.append(self.labels["data"])
        parts.append(optimizer)
        if self.labels.get("scheduler", "constant") != "constant":
            parts.append(self.labels["scheduler"])
        parts += [f"lr={self.optimizer.lr:g}", f"wd={self.optimizer.weight_decay:g}",
                  f"seed={self.job.seed}"]
        if self.baseline_changes:
            parts += ["| baseline", *(_shown(key, value)
                                      for key, value in self.baseline_changes.items())]
        return " ".join(parts)

    def figure_spec(self) -> FigureSpec:
        """What the pair figures need from the study; call it before training, while the arms
        still hold the shared init the closed form starts from."""
        weight_decay = {arm.name: arm.weight_decay for arm in self.arms}
        model = self.arms[0].model
        if not isinstance(model, ClosedForm):
            equilibrium = {arm.name: arm.equilibrium_angle for arm in self.arms
                           if arm.geometry is not None}
            return FigureSpec(self.name, weight_decay, equilibrium=equilibrium or None)
        form = model.closed_form()
        init = np.concatenate([p.detach().double().cpu().numpy().ravel()
                               for p in model.parameters()])
        predicted = None
        if all(_is_gradient_descent(arm) for arm in self.arms):
            # A figure shows a few thousand points at most, however long the run.
            steps = np.unique(np.linspace(0, self.job.epochs, FIGURE_POINTS).round()).astype(int)
            predicted = {arm.name: form.gradient_descent(init, arm.spec.optimizer.lr,
                                                         arm.weight_decay, steps)
                         for arm in self.arms}
        return FigureSpec(self.name, weight_decay, predicted, form if init.size == 2 else None)


def _shown(key: str, value: str) -> str:
    """``scheduler._target_: torch…ExponentialLR`` → ``ExponentialLR``; ``optimizer.lr: 0.2`` →
    ``lr=0.2``."""
    if key.endswith("._target_"):
        return value.rsplit(".", 1)[-1]
    return f"{key.rsplit('.', 1)[-1]}={value}"


def _is_gradient_descent(arm: Arm) -> bool:
    """Plain full-batch SGD at a constant lr with every weight decayed by λθ per unit lr: the
    case the closed form describes (for SGD, native, coupled, decoupled and penalty decay are
    the same update; independent decay is not scaled by the lr)."""
    spec = arm.spec.optimizer
    return (spec.cls is torch.optim.SGD and not spec.kwargs.get("momentum")
            and not spec.kwargs.get("maximize") and arm.scheduler is None
            and spec.decay_mode != "independent" and not isinstance(arm.model, MiniBatched)
            and len(arm.decay.decayed) == len(list(arm.model.parameters())))


def steps_per_epoch(model: Model) -> int:
    """Optimizer steps per epoch: one per mini-batch, or one full-batch step."""
    return model.steps_per_epoch if isinstance(model, MiniBatched) else 1


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


def build_model(cfg: DictConfig, device: torch.device) -> Model:
    """The model group's module, on ``device``: a :class:`~wdexp.models.contract.Model` as it
    is, any other ``nn.Module`` wrapped with the data group's tensors and loss."""
    cls, kwargs = instantiable("model", cfg.model, torch.nn.Module, "torch.nn.Module class")
    try:
        module = cls(**kwargs)
    except ConfigError as error:
        raise error.within("model") from None
    chosen = cfg.get("data")
    if isinstance(module, Model):
        if chosen is not None:
            raise ConfigError("data", f"is chosen, but model._target_ ({cfg.model._target_}) "
                              "brings its own data and loss (it defines loss() and metrics()); "
                              "drop the data choice", show_value=False)
        return module.to(device)
    if chosen is None:
        raise ConfigError("data", f"must be chosen for model._target_={cfg.model._target_}, a "
                          "plain nn.Module (e.g. data=digits or data=mnist1d)", show_value=False)
    data, task = data_group.load(chosen)
    return supervised(module, data, task).to(device)


def warm_up() -> None:
    """Build and drop one torch optimizer: a process's first imports torch's compiler stack
    (``torch._dynamo``, about a second), which a sweep's launching process that trains the jobs
    itself does while it waits for its sweep run (:mod:`wdexp.sweep_runs`). No random draw."""
    torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.0)


def build(cfg: DictConfig, labels: dict[str, str] | None = None,
          checked: Callable[[JobSpec], object] | None = None) -> Study:
    """Check the whole config and build both arms; nothing is tracked yet.

    ``checked`` is called once every value has passed its checks, before the first torch
    optimizer is built — which imports torch's compiler stack, seconds of work the caller can
    overlap with its own (the store's opening).
    """
    job = parse_job(cfg)
    specs, changes = parse_arms(cfg)
    device = resolve_device(job.device)
    seed_everything(job.seed)
    model = build_model(cfg, device)
    if checked is not None:
        checked(job)
    net = getattr(model, "net", model)
    decay_spec = specs[-1]
    labels = {"model": type(net).__name__.lower(),
              "optimizer": decay_spec.optimizer.cls.__name__.lower(), **(labels or {})}
    per_epoch = steps_per_epoch(model)
    total_steps = job.epochs * per_epoch
    arms = []
    for spec in specs:
        arm_model = copy.deepcopy(model)
        weight_decay = spec.optimizer.weight_decay
        solution = (arm_model.solution(weight_decay)
                    if isinstance(arm_model, KnownSolution) else None)
        optimizer, decay = spec.optimizer.build(arm_model)
        scheduler = spec.scheduler.build(optimizer, total_steps)
        decayed = {id(p) for p in decay.decayed}
        layers = [(name, p) for name, p in arm_model.named_parameters()
                  if id(p) in decayed and p.ndim >= 2]
        geometry = (Geometry(layers, adam_family(spec.optimizer), total_steps, per_epoch,
                             job.geometry_steps)
                    if layers and job.geometry_steps != 0 else None)
        arms.append(Arm(spec.name, weight_decay, arm_model, optimizer, decay, spec, scheduler,
                        solution, geometry, predicted_angular_update(spec.optimizer)))
    config = loggable(cfg)
    return Study(job, decay_spec.optimizer, arms, labels, config, flatten(config),
                 config_hash(config), changes)

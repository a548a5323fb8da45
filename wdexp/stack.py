"""Train many jobs' arms as one stacked model, in lockstep, in this process
(``hydra/launcher=stacked``, :mod:`wdexp.stacked_launch`).

**Members.** Each distinct arm of the jobs is one *member*: arms whose resolved configs are
identical — the model, data, seed and epochs, and the arm's own optimizer and scheduler — are
the same computation, trained once. A λ x seed sweep's baselines are one member per seed, shared
by every pair of that seed; a baseline that depends on λ is a member of its own.

**Lanes.** Members whose optimizer and scheduler differ only in λ form a *lane*: each parameter
is one tensor with the members along its first dimension (ordered by λ), and one torch
optimizer, with weight decay 0, updates them all. Each member's λ is applied around that step
on its own rows, as its separate run applies it (inside torch's step for ``native`` decay, by
:mod:`wdexp.decay` otherwise): one operation per distinct λ, on the rows that share it.

**Exactness.** A member's loss, metrics and gradient are computed on its own rows with the
operations of its separate run (the model is called with its parameters swapped for the rows,
``torch.func.functional_call``), its random numbers come from its own copy of torch's generator,
and SGD, Adam and AdamW update each element from that element alone: every member's every
record is bit-identical to its separate run's (tests/test_stack.py). A member that diverges
stops being recorded; the others are untouched by it.

What it trains so far: full-batch models that bring their own loss (the quadratic, the ridge, a
model of your own with ``loss()``), SGD (momentum, nesterov), Adam and AdamW, every decay mode
and scheduler. Anything else is a one-line error (:func:`check`) before any run.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call

from wdexp import engine
from wdexp.decay import penalty_of, size_of
from wdexp.models.contract import MiniBatched
from wdexp.study import Arm, Study
from wdexp.tracking.records import Step
from wdexp.vocabulary import ARM_GROUPS, SEED, ConfigError

STACKABLE = (torch.optim.SGD, torch.optim.Adam, torch.optim.AdamW)
INSTEAD = "use hydra/launcher=joblib (or the default launcher) for it"


@dataclass(frozen=True)
class Job:
    """One job as the stack receives it: its built study and torch's random state at the
    point its separate run would start training."""

    study: Study
    random_state: engine.RandomState


def check(study: Study) -> None:
    """Raise ConfigError naming the key if the stack cannot train ``study`` exactly as its
    separate run would."""
    model = study.arms[0].model
    if not isinstance(model, nn.Module) or isinstance(model, MiniBatched):
        raise ConfigError("model._target_", "must be a full-batch model with its own loss "
                          f"(quadratic, ridge, …) for hydra/launcher=stacked so far; {INSTEAD}",
                          study.config["model"].get("_target_"))
    for arm in reversed(study.arms):  # the decay arm's config first: the baseline's comes from it
        prefix = "optimizer" if arm is study.arms[-1] else "arms.baseline.optimizer"
        spec = arm.spec.optimizer
        if spec.cls not in STACKABLE:
            raise ConfigError(f"{prefix}._target_", "must be torch.optim.SGD, Adam or AdamW for "
                              f"hydra/launcher=stacked; {INSTEAD}",
                              f"{spec.cls.__module__}.{spec.cls.__qualname__}")
        if spec.kwargs.get("maximize"):
            raise ConfigError(f"{prefix}.maximize", f"is not stacked; {INSTEAD}", True)
        if arm.geometry is not None:
            raise ConfigError("geometry.steps_per_epoch", "must be 0 for hydra/launcher="
                              f"stacked (it does not measure step geometry yet), or {INSTEAD}",
                              study.job.geometry_steps)


def _key(node: Any) -> str:
    return json.dumps(node, sort_keys=True, default=str)


def _without(config: dict[str, Any], *keys: str) -> dict[str, Any]:
    return {k: v for k, v in config.items() if k not in keys}


def group_key(study: Study) -> str:
    """Jobs with one group key stack together: their configs differ at most in the seed, λ
    and what the baseline arm changes."""
    optimizer = _without(study.config.get("optimizer") or {}, "weight_decay")
    return _key({**_without(study.config, SEED, "arms", "optimizer"), "optimizer": optimizer})


def member_key(study: Study, arm: Arm) -> str:
    """Arms with one member key are one computation: the job's config outside the arms' groups,
    and the arm's own optimizer and scheduler."""
    return _key({**_without(study.config, "arms", *ARM_GROUPS), "arm": arm.spec.config})


def _lane_key(arm: Arm) -> str:
    config = dict(arm.spec.config)
    config["optimizer"] = _without(config["optimizer"] or {}, "weight_decay")
    return _key(config)


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


class _Call(nn.Module):
    """Calls a function of the model with the model's parameters swapped for the given
    tensors (:func:`torch.func.functional_call` swaps a module's own parameters only)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, fn: Callable[[Any], Any]) -> Any:
        return fn(self.model)


@dataclass
class Member:
    """One distinct arm: trained once, recorded for every pair that has it."""

    index: int
    arm: Arm  # its arm in the first job that has it: the init, the spec, the solution
    start: engine.RandomState
    lane: Lane | None = None
    row: int = 0
    diverged_at: int | None = None

    @property
    def name(self) -> str:
        return f"m{self.index}"

    @property
    def weight_decay(self) -> float:
        return self.arm.weight_decay


class Lane:
    """Members whose arms differ only in λ: their parameters stacked, one optimizer."""

    def __init__(self, members: list[Member], total_steps: int) -> None:
        self.members = sorted(members, key=lambda member: member.weight_decay)
        for row, member in enumerate(self.members):
            member.lane, member.row = self, row
        first = self.members[0].arm
        self.calls = [_Call(member.arm.model) for member in self.members]
        self.names = [name for name, _ in first.model.named_parameters()]
        own = [dict(member.arm.model.named_parameters()) for member in self.members]
        self.params = {name: torch.stack([params[name].detach() for params in own])
                       .requires_grad_(own[0][name].requires_grad) for name in self.names}
        decayed_ids = {id(p) for p in first.decay.decayed}
        first_params = dict(first.model.named_parameters())
        self.decayed = [name for name in self.names if id(first_params[name]) in decayed_ids]
        self.mode = first.decay.mode
        spec = first.spec.optimizer
        if self.mode == "native":
            decoupled = spec.cls is torch.optim.AdamW or spec.kwargs.get("decoupled_weight_decay")
            self.mode = "decoupled" if decoupled else "coupled"
        exempt = [self.params[name] for name in self.names if name not in self.decayed
                  and self.params[name].requires_grad]
        groups = [{"params": [self.params[name] for name in self.decayed], "weight_decay": 0.0}]
        if exempt:
            groups.append({"params": exempt, "weight_decay": 0.0})
        kwargs = {k: v for k, v in spec.kwargs.items() if k != "weight_decay"}
        self.optimizer = spec.cls(groups, **kwargs)
        self.initial_lr = self.optimizer.param_groups[0]["lr"]
        self.scheduler = first.spec.scheduler.build(self.optimizer, total_steps)
        self.slices: list[tuple[float, int, int]] = []  # (λ, first row, end row), λ != 0
        for row, member in enumerate(self.members):
            if not member.weight_decay:
                continue
            if self.slices and self.slices[-1][0] == member.weight_decay:
                self.slices[-1] = (member.weight_decay, self.slices[-1][1], row + 1)
            else:
                self.slices.append((member.weight_decay, row, row + 1))

    @property
    def lr(self) -> float:
        return self.optimizer.param_groups[0]["lr"]

    @torch.no_grad()
    def step(self) -> None:
        """Each member's decay on its rows, as its separate run applies it, then the update."""
        lr = self.lr
        for weight_decay, start, end in self.slices:
            for name in self.decayed:
                param = self.params[name]
                if self.mode == "coupled" and param.grad is not None:
                    param.grad[start:end].add_(param[start:end], alpha=weight_decay)
                elif self.mode in ("decoupled", "independent"):
                    rate = lr if self.mode == "decoupled" else lr / self.initial_lr
                    param[start:end].mul_(1 - rate * weight_decay)
        self.optimizer.step()
        if self.scheduler is not None:
            self.scheduler.step()


@dataclass
class _Pair:
    members: dict[str, Member]  # arm name → member, in the study's arm order
    done: bool = field(default=False)


class Stack:
    """The members and lanes of one chunk of jobs (:func:`chunks`), ready to train."""

    def __init__(self, jobs: Sequence[Job]) -> None:
        for job in jobs:
            check(job.study)
        self.epochs = jobs[0].study.job.epochs
        by_key: dict[str, Member] = {}
        self.pairs = []
        for job in jobs:
            pair = {}
            for arm in job.study.arms:
                key = member_key(job.study, arm)
                if key not in by_key:
                    by_key[key] = Member(len(by_key), arm, job.random_state)
                pair[arm.name] = by_key[key]
            self.pairs.append(_Pair(pair))
        self.members = list(by_key.values())
        lanes: dict[str, list[Member]] = {}
        for member in self.members:
            lanes.setdefault(_lane_key(member.arm), []).append(member)
        self.lanes = [Lane(members, self.epochs) for members in lanes.values()]

    def shared(self, job: int) -> dict[str, str]:
        """For each arm of job ``job``, the member it is, as ``m<index>`` (``m0 of 3 jobs``
        where other jobs share it)."""
        counts: dict[int, int] = {}
        for pair in self.pairs:
            for index in {member.index for member in pair.members.values()}:
                counts[index] = counts.get(index, 0) + 1
        return {arm: member.name + (f" of {counts[member.index]} jobs"
                                    if counts[member.index] > 1 else "")
                for arm, member in self.pairs[job].members.items()}

    def train(self) -> Iterator[list[Step | None]]:
        """Each epoch, every job's :class:`Step` as :func:`wdexp.engine.train` would yield it
        for that job alone; None for a job whose arms have all diverged."""
        device = engine.model_device(self.members[0].arm.model)
        streams = engine.RandomStreams({m.name: m.start for m in self.members}, device)
        for epoch in range(self.epochs + 1):
            records: dict[str, dict[str, float]] = {}
            diverged: set[str] = set()
            for lane in self.lanes:
                self._record(lane, epoch, streams, records, diverged)
                if epoch < self.epochs:
                    lane.step()
                lane.optimizer.zero_grad()
            yield [self._step(pair, epoch, records, diverged) for pair in self.pairs]
            if all(pair.done for pair in self.pairs):
                return

    def _record(self, lane: Lane, epoch: int, streams: engine.RandomStreams,
                records: dict[str, dict[str, float]], diverged: set[str]) -> None:
        rows = {name: param.unbind(0) for name, param in lane.params.items()}
        objectives, recorded = [], []
        for member, call in zip(lane.members, lane.calls, strict=True):
            if member.diverged_at is not None:
                continue
            tensors = {name: rows[name][member.row] for name in lane.names}
            with streams.of(member.name):
                loss, values = functional_call(
                    call, {f"model.{name}": t for name, t in tensors.items()},
                    (_loss_and_metrics,))
            if not math.isfinite(values["loss"] if "loss" in values else loss.detach().item()):
                member.diverged_at = epoch
                diverged.add(member.name)
                continue
            if member.arm.solution is not None:
                values["distance_to_solution"] = engine.distance(list(tensors.values()),
                                                                 member.arm.solution)
            penalty = penalty_of(lane.mode, member.weight_decay,
                                 [tensors[name] for name in lane.decayed])
            objectives.append(loss if penalty is None else loss + penalty)
            recorded.append((member, tensors, values))
        if objectives:
            torch.autograd.backward(objectives)
        for member, tensors, values in recorded:
            params = [lane.params[name] for name in lane.names]
            grads = [None if p.grad is None else p.grad[member.row] for p in params]
            penalised = [lane.mode == "penalty" and name in lane.decayed for name in lane.names]
            grads = engine.loss_gradients(list(tensors.values()), grads, penalised,
                                          member.weight_decay)
            decay = size_of(member.weight_decay, [tensors[name] for name in lane.decayed])
            values["lr"] = lane.lr
            values.update((k, v) for k, v in engine.gradient_metrics(grads, decay).items()
                          if math.isfinite(v))
            records[member.name] = values

    @staticmethod
    def _step(pair: _Pair, epoch: int, records: dict[str, dict[str, float]],
              diverged: set[str]) -> Step | None:
        if pair.done:
            return None
        step = Step(epoch, {arm: records[m.name] for arm, m in pair.members.items()
                            if m.name in records},
                    tuple(arm for arm, m in pair.members.items() if m.name in diverged))
        pair.done = all(m.diverged_at is not None for m in pair.members.values())
        return step


def _loss_and_metrics(model: Any) -> tuple[Tensor, dict[str, float]]:
    loss = model.loss()
    return loss, dict(model.metrics(loss))

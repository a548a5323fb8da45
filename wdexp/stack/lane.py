"""A lane: members whose arms differ only in λ, their parameters stacked, one optimizer."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import Tensor

from wdexp import engine
from wdexp.geometry import Geometry
from wdexp.models.supervised import Supervised
from wdexp.study import Arm


@dataclass
class Member:
    """One distinct arm: trained once, recorded for every pair that has it."""

    index: int
    arm: Arm  # its arm in the first job that has it: the init, the spec, the solution
    start: engine.RandomState
    row: int = 0
    diverged_at: int | None = None

    @property
    def name(self) -> str:
        return f"m{self.index}"

    @property
    def weight_decay(self) -> float:
        return self.arm.weight_decay


def _module(arm: Arm) -> torch.nn.Module:
    model = arm.model
    return model.net if isinstance(model, Supervised) else model  # type: ignore[return-value]


class Lane:
    """Each parameter (and buffer) is one tensor with the members along dimension 0, ordered
    by λ; one torch optimizer, with weight decay 0, updates them, and each member's λ is
    applied on its rows around that step, as its separate run applies it: inside torch's step
    for ``native`` decay (coupled for SGD and Adam, decoupled for AdamW), by
    :mod:`wdexp.decay` otherwise — one operation per distinct λ, on the rows sharing it."""

    def __init__(self, members: list[Member], total_steps: int) -> None:
        self.members = sorted(members, key=lambda member: member.weight_decay)
        for row, member in enumerate(self.members):
            member.row = row
        first = self.members[0].arm
        self.module = _module(first)
        own = [dict(_module(m.arm).named_parameters()) for m in self.members]
        self.names = list(own[0])
        self.params = {name: torch.stack([params[name].detach() for params in own])
                       .requires_grad_(own[0][name].requires_grad) for name in self.names}
        buffers = [dict(_module(m.arm).named_buffers()) for m in self.members]
        self.buffers = {name: torch.stack([b[name] for b in buffers]) for name in buffers[0]}
        decayed = {id(p) for p in first.decay.decayed}
        self.decayed = [name for name in self.names if id(own[0][name]) in decayed]
        self.mode = first.decay.mode
        spec = first.spec.optimizer
        if self.mode == "native":
            decoupled = spec.cls is torch.optim.AdamW or spec.kwargs.get("decoupled_weight_decay")
            self.mode = "decoupled" if decoupled else "coupled"
        exempt = [self.params[name] for name in self.names
                  if name not in self.decayed and self.params[name].requires_grad]
        groups = [{"params": [self.params[name] for name in self.decayed], "weight_decay": 0.0}]
        if exempt:
            groups.append({"params": exempt, "weight_decay": 0.0})
        kwargs = {k: v for k, v in spec.kwargs.items() if k != "weight_decay"}
        self.optimizer = spec.cls(groups, **kwargs)
        self.initial_lr = self.optimizer.param_groups[0]["lr"]
        self.scheduler = first.spec.scheduler.build(self.optimizer, total_steps)
        # Each row's λ (float64: a float32 λ would round it before the cast to the model's dtype)
        self.decays = torch.tensor([m.weight_decay for m in self.members], dtype=torch.float64)
        self.slices: list[tuple[float, int, int]] = []  # (λ, first row, end row), λ != 0
        for row, member in enumerate(self.members):
            if self.slices and self.slices[-1][0] == member.weight_decay:
                self.slices[-1] = (member.weight_decay, self.slices[-1][1], row + 1)
            elif member.weight_decay:
                self.slices.append((member.weight_decay, row, row + 1))
        # Every member's step geometry at once, each on its own rows (the lane's members share
        # the model and optimizer, so they measure the same steps).
        geometry = first.geometry
        self.geometry: Geometry | None = None if geometry is None else geometry.over(
            [(name, self.params[name]) for name, _ in geometry.layers], stacked=True)

    @property
    def lr(self) -> float:
        return self.optimizer.param_groups[0]["lr"]

    def rows(self, member: Member, tensors: Mapping[str, Tensor]) -> list[Tensor]:
        return [tensors[name][member.row] for name in self.names]

    @torch.no_grad()
    def loss_grads(self) -> dict[str, Tensor]:
        """Each parameter's gradient of the loss alone, stacked: in penalty mode the
        gradient holds λθ too, taken out here row by row as the engine does for one arm."""
        grads = {name: torch.zeros_like(p) if p.grad is None else p.grad
                 for name, p in self.params.items()}
        if self.mode != "penalty":
            return grads
        for name in self.decayed:
            param, grad = self.params[name], grads[name].clone()
            for weight_decay, start, end in self.slices:
                grad[start:end] = grads[name][start:end] - weight_decay * param[start:end]
            grads[name] = grad
        return grads

    @torch.no_grad()
    def step(self, loss_grads: Mapping[str, Tensor]) -> None:
        """One update of every member, in the order of the engine's step for one arm:
        geometry before, decay, torch's step, geometry after, the schedule."""
        lr = self.lr
        geometry = self.geometry if self.geometry is not None and self.geometry.measures() \
            else None
        if geometry is not None:
            geometry.before({id(weight): loss_grads[name] for name, weight in geometry.layers},
                            lr)
        for weight_decay, start, end in self.slices:
            for name in self.decayed:
                param = self.params[name]
                if self.mode == "coupled" and param.grad is not None:
                    param.grad[start:end].add_(param[start:end], alpha=weight_decay)
                elif self.mode in ("decoupled", "independent"):
                    rate = lr if self.mode == "decoupled" else lr / self.initial_lr
                    param[start:end].mul_(1 - rate * weight_decay)
        self.optimizer.step()
        if geometry is not None:
            geometry.after()
        if self.geometry is not None:
            self.geometry.advance()
        if self.scheduler is not None:
            self.scheduler.step()

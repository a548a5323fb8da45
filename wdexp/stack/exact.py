"""Records of a lane of full-batch models with their own loss (the quadratic, the ridge, a
model of your own): each member's loss and metrics from one call of its own model with its
parameters swapped for its rows (``torch.func.functional_call``), under its own copy of torch's
random state — the operations of its separate run, so every value is bit-identical to it."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call

from wdexp import engine
from wdexp.decay import penalty_of, size_of
from wdexp.stack.lane import Lane


class _Call(nn.Module):
    """Calls a function of the model with its parameters swapped for the given tensors
    (:func:`torch.func.functional_call` swaps a module's own parameters only)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, fn: Callable[[Any], Any]) -> Any:
        return fn(self.model)


def _loss_and_metrics(model: Any) -> tuple[Tensor, dict[str, float]]:
    loss = model.loss()
    return loss, dict(model.metrics(loss))


def record(lane: Lane, epoch: int, streams: engine.RandomStreams,
           ) -> tuple[dict[str, dict[str, float]], set[str]]:
    """Each live member's record of this epoch (its gradient left in the lane's parameters),
    and the members that diverged at it."""
    rows = {name: param.unbind(0) for name, param in lane.params.items()}
    records, diverged = {}, set()
    objectives, recorded = [], []
    for member in lane.members:
        if member.diverged_at is not None:
            continue
        tensors = {name: rows[name][member.row] for name in lane.names}
        with streams.of(member.name):
            loss, values = functional_call(
                _Call(member.arm.model), {f"model.{name}": t for name, t in tensors.items()},
                (_loss_and_metrics,))
        if not math.isfinite(values["loss"] if "loss" in values else loss.detach().item()):
            member.diverged_at = epoch
            diverged.add(member.name)
            continue
        if member.arm.solution is not None:
            values["distance_to_solution"] = engine.distance(list(tensors.values()),
                                                             member.arm.solution)
        decayed = [tensors[name] for name in lane.decayed]
        penalty = penalty_of(lane.mode, member.weight_decay, decayed)
        objectives.append(loss if penalty is None else loss + penalty)
        recorded.append((member, decayed, values))
    if objectives:
        torch.autograd.backward(objectives)
    grads = lane.loss_grads()
    for member, decayed, values in recorded:
        values["lr"] = lane.lr
        measured = engine.gradient_metrics(lane.rows(member, grads),
                                           size_of(member.weight_decay, decayed))
        values.update((k, v) for k, v in measured.items() if math.isfinite(v))
        records[member.name] = values
    return records, diverged

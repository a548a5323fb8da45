"""Records of a lane of networks on a data set: every member's forward and backward in one
batched computation (``torch.func.vmap`` over ``functional_call``), each on its own
mini-batches, BatchNorm's running statistics stacked as the parameters are.

A batched matrix product rounds in another order than one member's own, so a member agrees with
its separate run to rounding, which training then carries on: bounded in tests/test_stack.py
(float64: relative 1e-10 over tens of steps; float32: the final test metrics).

A net with dropout draws what each member's separate run draws: both arms of a separate run, and
every member of one seed here, start from one copy of torch's random state and draw the same
masks, so each seed's members run batched under their own copy (``randomness="same"``: one mask
for the group, drawn as one unbatched call draws it), advanced by the training passes in the
engine's order; the test metrics, in eval mode, draw nothing."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor, nn
from torch.func import functional_call, vmap

from wdexp import engine
from wdexp.models.supervised import MiniBatchSupervised, Supervised
from wdexp.stack.lane import Lane, Member


def _flat(stacked: Tensor) -> Tensor:
    """(members, ...) → (members, n): each member's values in a row."""
    return stacked.reshape(len(stacked), -1)


def _model(lane: Lane) -> Supervised:
    model = lane.members[0].arm.model
    assert isinstance(model, Supervised)
    return model


@dataclass(frozen=True)
class Masks:
    """Where a lane's dropout draws: for each group of its members with one random start, the
    group's stream in ``streams`` (its first member's) and its rows."""

    streams: engine.RandomStreams
    groups: list[tuple[str, Tensor]]
    order: Tensor  # the groups' outputs, concatenated, back in the lane's row order


def _same_start(a: engine.RandomState, b: engine.RandomState) -> bool:
    return all((x is None and y is None) or (x is not None and y is not None and torch.equal(x, y))
               for x, y in zip(a, b, strict=True))


def masks(lane: Lane, streams: engine.RandomStreams) -> Masks | None:
    """The lane's draws, None where its net has no active dropout (one batched call for all)."""
    if not any(isinstance(module, nn.modules.dropout._DropoutNd) and module.p > 0
               for module in lane.module.modules()):
        return None
    groups: list[tuple[Member, list[int]]] = []
    for member in lane.members:
        rows = next((rows for first, rows in groups if _same_start(first.start, member.start)),
                    None)
        if rows is None:
            groups.append((member, [member.row]))
        else:
            rows.append(member.row)
    device = next(iter(lane.params.values())).device
    indices = [(first.name, torch.tensor(rows, device=device)) for first, rows in groups]
    return Masks(streams, indices, torch.argsort(torch.cat([rows for _, rows in indices])))


def _forward(lane: Lane, params: dict[str, Tensor], buffers: dict[str, Tensor], x: Tensor,
             batched: bool, randomness: Literal["error", "same"] = "error") -> Tensor:
    def forward(params: dict[str, Tensor], buffers: dict[str, Tensor], inputs: Tensor) -> Tensor:
        return functional_call(lane.module, (params, buffers), (inputs,))

    # "error" where nothing should draw: a random op the dropout check missed fails loudly
    return vmap(forward, in_dims=(0, 0, 0 if batched else None),
                randomness=randomness)(params, buffers, x)


def _outputs(lane: Lane, x: Tensor, batched: bool, masks: Masks | None = None) -> Tensor:
    """Every member's net on ``x`` (one input for all, or one per member); with ``masks``,
    each group under its own stream."""
    if masks is None:
        return _forward(lane, lane.params, lane.buffers, x, batched)
    parts = []
    for stream, rows in masks.groups:
        params = {name: p[rows] for name, p in lane.params.items()}
        buffers = {name: b[rows] for name, b in lane.buffers.items()}
        with masks.streams.of(stream):
            parts.append(_forward(lane, params, buffers, x[rows] if batched else x, batched,
                                  randomness="same"))
        with torch.no_grad():  # BatchNorm updated the gathered copies of its statistics
            for name, buffer in buffers.items():
                lane.buffers[name][rows] = buffer
    return torch.cat(parts)[masks.order]


def _losses(lane: Lane, outputs: Tensor, targets: Tensor, batched: bool) -> Tensor:
    return vmap(_model(lane).objective, in_dims=(0, 0 if batched else None))(outputs, targets)


def _penalties(lane: Lane) -> Tensor | None:
    if lane.mode != "penalty" or not lane.decayed:
        return None
    decays = lane.decays.to(lane.params[lane.decayed[0]].dtype)
    squares = sum(_flat(lane.params[name].pow(2)).sum(dim=1) for name in lane.decayed)
    return decays / 2 * squares


def _orders(lane: Lane, epoch: int) -> Tensor:
    """(members, samples): each member's order of epoch ``epoch``'s training set, on the
    lane's device. Drawn once per batch seed (a seed's members share it) and copied to the
    device in one piece: drawn per member and cut per batch, a lane of 1024 members made
    41 000 host-to-device copies an epoch."""
    drawn: dict[int, Tensor] = {}
    rows = []
    for member in lane.members:
        model = member.arm.model
        assert isinstance(model, MiniBatchSupervised)
        seed = model.task.batch_seed
        if seed not in drawn:
            drawn[seed] = model.batch_order(epoch)
        rows.append(drawn[seed])
    return torch.stack(rows).to(_model(lane).data.x_train.device)


def _pass(lane: Lane, epoch: int, update: bool, masks: Masks | None,
          ) -> tuple[Tensor, dict[str, Tensor]]:
    """One pass over each member's mini-batches of ``epoch`` (or the full batch): the mean
    loss per member and the mean loss gradients, stacked; with ``update``, a step after each."""
    model = _model(lane)
    data = model.data
    if isinstance(model, MiniBatchSupervised):
        assert model.task.batch_size is not None
        orders, size = _orders(lane, epoch), model.task.batch_size
        batches = [orders[:, start:start + size] for start in range(0, orders.shape[1], size)]
    else:
        batches = [None]
    total, sums = None, {}
    for index in batches:
        lane.optimizer.zero_grad()
        x, y = (data.x_train, data.y_train) if index is None else (data.x_train[index],
                                                                    data.y_train[index])
        batched = index is not None
        losses = _losses(lane, _outputs(lane, x, batched, masks), y, batched)
        penalties = _penalties(lane)
        (losses if penalties is None else losses + penalties).sum().backward()
        grads = lane.loss_grads()
        total = losses.detach() if total is None else total + losses.detach()
        sums = ({name: g.clone() for name, g in grads.items()} if not sums else
                {name: sums[name] + grads[name] for name in sums})
        if update:
            lane.step(grads)
    assert total is not None
    return total / len(batches), {name: s / len(batches) for name, s in sums.items()}


@torch.no_grad()
def _test_metrics(lane: Lane, losses: Tensor) -> tuple[list[str], Tensor]:
    """What :meth:`Supervised.metrics` logs, for every member: names and an (n, members)
    tensor."""
    model = _model(lane)
    data = model.data
    lane.module.eval()
    try:
        outputs = _outputs(lane, data.x_test, batched=False)
    finally:
        lane.module.train()
    values = [losses.detach(), _losses(lane, outputs, data.y_test, batched=False)]
    names = ["loss", "test_loss"]
    if model.task.classes is not None:
        values.append((outputs.argmax(dim=2) == data.y_test).to(losses.dtype).mean(dim=1))
        names.append("test_accuracy")
    norms = torch.stack([torch.linalg.vector_norm(_flat(lane.params[name]), dim=1)
                         for name in lane.names]).to(losses.dtype)
    stacked = torch.cat([torch.stack([v.to(losses.dtype) for v in values]),
                         torch.linalg.vector_norm(norms, dim=0).unsqueeze(0), norms])
    return [*names, "weight_norm", *(f"norm.{name}" for name in lane.names)], stacked


def _gradient_columns(lane: Lane, grads: dict[str, Tensor]) -> Tensor:
    """(2, members): each member's ``grad_norm`` and ‖λθ‖ over its decayed parameters."""
    def norms(tensors: dict[str, Tensor], names: list[str]) -> Tensor:
        if not names:
            return torch.zeros(len(lane.members))
        return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(
            _flat(tensors[name].detach()), dim=1) for name in names]), dim=0)

    grad_norm = norms(grads, lane.names)
    size = lane.decays.to(grad_norm) * norms(lane.params, lane.decayed).to(grad_norm)
    return torch.stack([grad_norm, size])


def record(lane: Lane, epoch: int, update_first: bool, masks: Masks | None,
           ) -> tuple[dict[str, dict[str, float]], set[str]]:
    """Each live member's record of this epoch and the members that diverged at it. A
    mini-batch lane trains epoch ``epoch - 1`` here (``update_first``), as the engine does;
    a full-batch lane's step follows the record (:meth:`Lane.step`). Dropout draws where
    ``masks`` says (:func:`masks`), as the engine's arms draw from their streams."""
    minibatched = isinstance(_model(lane), MiniBatchSupervised)
    if minibatched and not update_first:
        saved = {name: b.clone() for name, b in lane.buffers.items()}
        losses, grads = _pass(lane, 0, update=False, masks=masks)  # what epoch 0's batches see
        with torch.no_grad():
            for name, buffer in saved.items():
                lane.buffers[name].copy_(buffer)
    else:
        losses, grads = _pass(lane, max(epoch - 1, 0) if minibatched else epoch,
                              update=minibatched, masks=masks)
    names, values = _test_metrics(lane, losses)
    gradient = _gradient_columns(lane, grads)
    table = torch.cat([values, gradient]).T.tolist()
    records, diverged = {}, set()
    for member, row in zip(lane.members, table, strict=True):
        if member.diverged_at is not None:
            continue
        if not math.isfinite(row[0]):
            member.diverged_at = epoch
            diverged.add(member.name)
            continue
        *metrics, grad_norm, size = row
        record_: dict[str, Any] = dict(zip(names, metrics, strict=True))
        record_["lr"] = lane.lr
        ratio = size / grad_norm if grad_norm else (0.0 if not size else math.inf)
        record_.update((k, v) for k, v in (("grad_norm", grad_norm), ("decay_grad_ratio", ratio))
                       if math.isfinite(v))
        records[member.name] = record_
    return records, diverged

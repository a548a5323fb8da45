"""Train the arms of a study in lockstep, as the seed notebook did.

Full batch, each epoch, for each arm still running: compute the loss and its gradient, record
the loss, weights and gradient (the state *before* this epoch's update), then take one
``step`` with that gradient. Step ``t`` of the record is the state after ``t`` updates: step 0
is the init, step ``epochs`` the final weights, ``epochs + 1`` records in all.

Mini-batch models (``batches(epoch)``) take one step per mini-batch, and the record of step
``t >= 1`` is the epoch that led there: ``loss`` is the mean of its mini-batch losses as they
were computed for the updates (train mode), everything else (test metrics in eval mode, norms)
describes the weights after it. Step 0 records a pass over epoch 0's batches that updates
nothing (BatchNorm's running statistics are put back after it).

Both arms draw the same random numbers (dropout masks) for their losses: each has its own copy
of torch's generator state, started from one.

Besides what the model reports, every record has ``lr`` (the decayed group's current learning
rate), ``grad_norm`` — of the unpenalised loss; for mini-batches, of the mean gradient over the
epoch's steps — and ``decay_grad_ratio`` = ‖λθ‖ / ``grad_norm``, how strongly decay pulls
against the loss; models with a closed-form solution add ``distance_to_solution`` = ‖θ - θ*_λ‖.
A scheduler steps after every optimizer step. Networks add each decayed layer's step
geometry (``angular_update/<layer>``, ``effective_lr/<layer>``, …; see :mod:`wdexp.geometry`),
the means over the steps that led to the record.

Divergence is a result, decided on the loss alone: an arm whose loss stops being finite is
recorded as diverged at that step and stops; the other arms go on. A model's other metrics are
recorded as they come, NaN included (the arm goes on); a non-finite value wdexp derives itself
(a ratio over a zero gradient) is left out of the record.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager

import torch
from torch import Tensor

from wdexp.models.contract import MiniBatched, Model
from wdexp.study import Arm
from wdexp.tracking.records import Step


def _loss_gradients(arm: Arm) -> list[Tensor]:
    """Each parameter's gradient of the loss alone: in penalty mode ``p.grad`` holds λθ too."""
    decay = arm.decay
    penalised = {id(p) for p in decay.decayed} if decay.mode == "penalty" else set()
    grads = []
    for p in arm.model.parameters():
        grad = torch.zeros_like(p) if p.grad is None else p.grad
        grads.append(grad - decay.weight_decay * p.detach() if id(p) in penalised else grad)
    return grads


def gradient_metrics(grads: Sequence[Tensor], decay_size: Tensor) -> dict[str, float]:
    """``grad_norm`` and ``decay_grad_ratio`` = ‖λθ‖ / ``grad_norm`` (``decay_size`` is ‖λθ‖)."""
    if not grads:
        return {}
    grad_norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g)
                                                      for g in grads]))
    values = torch.stack([grad_norm, decay_size.to(grad_norm)]).tolist()
    ratio = values[1] / values[0] if values[0] else (0.0 if not values[1] else math.inf)
    return {"grad_norm": values[0], "decay_grad_ratio": ratio}


def distance(params: Sequence[Tensor], solution: Tensor) -> float:
    """‖θ - θ*‖ over every parameter, flattened in order."""
    with torch.no_grad():
        theta = torch.cat([p.detach().reshape(-1) for p in params])
        return torch.linalg.vector_norm(theta - solution).item()


def _backward(arm: Arm, loss: Tensor) -> None:
    penalty = arm.decay.penalty()
    (loss if penalty is None else loss + penalty).backward()


def _step(arm: Arm, grads: list[Tensor]) -> None:
    geometry = arm.geometry if arm.geometry is not None and arm.geometry.measures() else None
    if geometry is not None:
        by_param = {id(p): g for p, g in zip(arm.model.parameters(), grads, strict=True)}
        geometry.before(by_param, arm.optimizer.param_groups[0]["lr"])
    arm.decay.before_step()
    arm.optimizer.step()
    if geometry is not None:
        geometry.after()
    if arm.geometry is not None:
        arm.geometry.advance()
    if arm.scheduler is not None:
        arm.scheduler.step()


RandomState = tuple[Tensor, Tensor | None]  # torch's CPU generator state, the CUDA device's


def random_state(device: torch.device) -> RandomState:
    """torch's random state now: the CPU's, and ``device``'s where it is a CUDA device."""
    return (torch.get_rng_state(),
            torch.cuda.get_rng_state(device) if device.type == "cuda" else None)


def model_device(model: Model) -> torch.device:
    first = next(iter(model.parameters()), None)
    return torch.device("cpu") if first is None else first.device


class RandomStreams:
    """One copy of torch's random state per stream (an arm; a stacked member), each from its
    own start: stochastic layers draw in each stream what they would draw alone, and both arms
    of a pair, started from one state, draw the same numbers."""

    def __init__(self, starts: Mapping[str, RandomState], device: torch.device) -> None:
        self.device = device
        self.states = dict(starts)

    @contextmanager
    def of(self, stream: str) -> Iterator[None]:
        cpu, cuda = self.states[stream]
        torch.set_rng_state(cpu)
        if cuda is not None:
            torch.cuda.set_rng_state(cuda, self.device)
        yield
        self.states[stream] = random_state(self.device)


def shared_streams(arms: Sequence[Arm]) -> RandomStreams:
    """A stream per arm, each from torch's random state now."""
    device = model_device(arms[0].model)
    return RandomStreams(dict.fromkeys((arm.name for arm in arms), random_state(device)), device)


def _epoch(arm: Arm, epoch: int, update: bool) -> tuple[Tensor, list[Tensor]]:
    """One pass over epoch ``epoch``'s mini-batches: the mean loss and mean loss gradient,
    accumulated on the device (no host sync); with ``update``, a step after each batch."""
    model = arm.model
    assert isinstance(model, MiniBatched)
    total: Tensor | None = None
    sums: list[Tensor] = []
    count = 0
    for loss in model.batches(epoch):
        arm.optimizer.zero_grad()
        _backward(arm, loss)
        grads = _loss_gradients(arm)
        if sums:
            torch._foreach_add_(sums, grads)
            total = total + loss.detach()
        else:
            sums, total = [g.clone() for g in grads], loss.detach().clone()
        count += 1
        if update:
            _step(arm, grads)
    if total is None:
        raise RuntimeError(f"{type(model).__name__}.batches({epoch}) yielded no batch")
    return total / count, torch._foreach_div(sums, count) if sums else []


@torch.no_grad()
def _restore(buffers: list[Tensor], saved: list[Tensor]) -> None:
    for buffer, value in zip(buffers, saved, strict=True):
        buffer.copy_(value)


def _minibatch_record(arm: Arm, epoch: int, generators: RandomStreams,
                      ) -> tuple[Tensor, list[Tensor]]:
    model = arm.model
    assert isinstance(model, MiniBatched)
    with generators.of(arm.name):
        if epoch > 0:
            return _epoch(arm, epoch - 1, update=True)
        buffers = list(model.buffers())
        saved = [b.clone() for b in buffers]
        try:
            return _epoch(arm, 0, update=False)
        finally:
            _restore(buffers, saved)


def train(arms: Sequence[Arm], epochs: int) -> Iterator[Step]:
    generators = shared_streams(arms)
    for epoch in range(epochs + 1):
        metrics: dict[str, dict[str, float]] = {}
        diverged = []
        for arm in arms:
            if arm.diverged_at is not None:
                continue
            minibatched = isinstance(arm.model, MiniBatched)
            if minibatched:
                loss, grads = _minibatch_record(arm, epoch, generators)
            else:
                with generators.of(arm.name):
                    loss = arm.model.loss()
            values = arm.model.metrics(loss)
            if not math.isfinite(values["loss"] if "loss" in values else loss.detach().item()):
                arm.diverged_at = epoch
                diverged.append(arm.name)
                continue
            if arm.solution is not None:
                values["distance_to_solution"] = distance(list(arm.model.parameters()),
                                                          arm.solution)
            if not minibatched:
                _backward(arm, loss)
                grads = _loss_gradients(arm)
            values["lr"] = arm.optimizer.param_groups[0]["lr"]
            measured = {**gradient_metrics(grads, arm.decay.size()), **(
                {} if arm.geometry is None else
                arm.geometry.flush(arm.equilibrium_angle, last=epoch == epochs))}
            values.update((k, v) for k, v in measured.items() if math.isfinite(v))
            metrics[arm.name] = values
            if epoch < epochs and not minibatched:
                _step(arm, grads)
            arm.optimizer.zero_grad()
        yield Step(epoch, metrics, tuple(diverged))
        if all(arm.diverged_at is not None for arm in arms):
            return

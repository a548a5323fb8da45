"""Train the arms of a study in lockstep, as the seed notebook did.

Each epoch, for each arm still running: compute the loss and its gradient, record the loss,
weights and gradient (the state *before* this epoch's update), then update: one full-batch
``step`` with that gradient, or — for a model with ``batches(epoch)`` — one step per mini-batch.
Step ``t`` of the record is therefore the state after ``t`` updates: step 0 is the init, step
``epochs`` the final weights, ``epochs + 1`` records in all.

Besides what the model reports, every record has ``grad_norm`` (of the unpenalised loss) and
``decay_grad_ratio`` = ‖λθ‖ / ‖∇L‖, how strongly decay pulls against the loss; models with a
closed-form solution add ``distance_to_solution`` = ‖θ - θ*_λ‖.

Divergence is a result: an arm whose loss or weights stop being finite is recorded as diverged
at that step and stops; the other arms go on. Other non-finite values (a ratio over a zero
gradient) are left out of the record.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import torch

from wdexp.models.contract import MiniBatched
from wdexp.study import Arm
from wdexp.tracking.records import Step


def _gradient_metrics(arm: Arm) -> dict[str, float]:
    decay = arm.decay
    penalised = {id(p) for p in decay.decayed} if decay.mode == "penalty" else set()
    grads = []
    for p in arm.model.parameters():
        if p.grad is None:
            continue
        # In penalty mode the gradient holds λθ too; report the loss's own gradient.
        grads.append(p.grad - decay.weight_decay * p.detach() if id(p) in penalised else p.grad)
    grad_norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g)
                                                      for g in grads])) if grads else None
    if grad_norm is None:
        return {}
    pull = decay.size()
    values = torch.stack([grad_norm, pull.to(grad_norm)]).tolist()
    ratio = values[1] / values[0] if values[0] else (0.0 if not values[1] else math.inf)
    return {"grad_norm": values[0], "decay_grad_ratio": ratio}


def _distance(arm: Arm) -> float:
    with torch.no_grad():
        theta = torch.cat([p.detach().reshape(-1) for p in arm.model.parameters()])
        return torch.linalg.vector_norm(theta - arm.solution).item()


def _update(arm: Arm, epoch: int) -> None:
    if not isinstance(arm.model, MiniBatched):  # full batch: the recorded gradient is the step's
        arm.decay.before_step()
        arm.optimizer.step()
        return
    for loss in arm.model.batches(epoch):
        arm.optimizer.zero_grad()
        penalty = arm.decay.penalty()
        (loss if penalty is None else loss + penalty).backward()
        arm.decay.before_step()
        arm.optimizer.step()


def train(arms: Sequence[Arm], epochs: int) -> Iterator[Step]:
    for epoch in range(epochs + 1):
        metrics: dict[str, dict[str, float]] = {}
        diverged = []
        for arm in arms:
            if arm.diverged_at is not None:
                continue
            loss = arm.model.loss()
            values = arm.model.metrics(loss)
            if not all(math.isfinite(v) for v in values.values()):
                arm.diverged_at = epoch
                diverged.append(arm.name)
                continue
            if arm.solution is not None:
                values["distance_to_solution"] = _distance(arm)
            penalty = arm.decay.penalty()
            (loss if penalty is None else loss + penalty).backward()
            values.update((k, v) for k, v in _gradient_metrics(arm).items() if math.isfinite(v))
            metrics[arm.name] = values
            if epoch < epochs:
                _update(arm, epoch)
            arm.optimizer.zero_grad()
        yield Step(epoch, metrics, tuple(diverged))
        if all(arm.diverged_at is not None for arm in arms):
            return

"""Train the arms of a study in lockstep, as the seed notebook did.

Each epoch, for each arm still running: compute the loss, record it with the weights (the state
*before* this epoch's update), then ``backward``, ``step``, ``zero_grad``. Step ``t`` of the
record is therefore the state after ``t`` updates: step 0 is the init, step ``epochs`` the
final weights, ``epochs + 1`` records in all.

Divergence is a result: an arm whose metrics stop being finite is recorded as diverged at that
step and stops; the other arms go on.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from wdexp.study import Arm


@dataclass(frozen=True)
class Step:
    """One epoch's records: ``metrics[arm_name]`` for every arm still finite at this step."""

    epoch: int
    metrics: dict[str, dict[str, float]]
    diverged: tuple[str, ...] = ()  # arms that diverged at this step (no metrics for them)


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
            metrics[arm.name] = values
            if epoch < epochs:
                loss.backward()
                arm.optimizer.step()
                arm.optimizer.zero_grad()
        yield Step(epoch, metrics, tuple(diverged))
        if all(arm.diverged_at is not None for arm in arms):
            return

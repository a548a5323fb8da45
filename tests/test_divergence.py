"""Divergence is decided on the loss alone: a NaN in another metric is recorded and the arm goes
on; a loss that stops being finite stops its arm at that step while the other arm goes on."""

from __future__ import annotations

import math

from tests.conftest import compose_config
from wdexp import engine, study
from wdexp.vocabulary import BASELINE, DECAY


def _with_odd_metric(pair: study.Study) -> None:
    for arm in pair.arms:
        original = arm.model.metrics
        arm.model.metrics = lambda loss, original=original: {**original(loss), "odd": math.nan}


def test_a_nan_in_another_metric_is_recorded_and_the_arm_goes_on():
    epochs = 6
    plain = list(engine.train(study.build(compose_config(f"epochs={epochs}")).arms, epochs))
    pair = study.build(compose_config(f"epochs={epochs}"))
    _with_odd_metric(pair)
    odd = list(engine.train(pair.arms, epochs))
    assert len(odd) == epochs + 1
    assert all(not step.diverged for step in odd)
    for clean, step in zip(plain, odd, strict=True):
        for arm in (BASELINE, DECAY):
            assert math.isnan(step.metrics[arm]["odd"])
            # the same training as without the odd metric, bit for bit
            assert {k: v for k, v in step.metrics[arm].items() if k != "odd"} == \
                clean.metrics[arm]
    assert all(arm.diverged_at is None for arm in pair.arms)


def test_a_loss_that_stops_being_finite_stops_only_its_arm():
    # lr 1.5 on the bowl's steep axis (curvature 2): |1 - 2 * 1.5| = 2 per step, it overflows.
    epochs = 200
    pair = study.build(compose_config(f"epochs={epochs}", "optimizer.lr=1.5",
                                      "optimizer.weight_decay=0",
                                      "arms.baseline.optimizer.lr=0.01"))
    steps = list(engine.train(pair.arms, epochs))
    (where,) = [step.epoch for step in steps if step.diverged]
    assert steps[where].diverged == (DECAY,)
    assert DECAY not in steps[where].metrics and BASELINE in steps[where].metrics
    assert all(math.isfinite(s.metrics[DECAY]["loss"]) for s in steps[:where])
    assert all(DECAY not in s.metrics for s in steps[where:])
    assert len(steps) == epochs + 1 and all(BASELINE in s.metrics for s in steps)

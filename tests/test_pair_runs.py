"""Pair runs in the training process: many open at once in one process, each with its own
run ids, batches and end status; and the objective a job hands its sweeper."""

from __future__ import annotations

import math

import pytest

from tests.conftest import StoreReader
from wdexp.pair_runs import Outcome, PairRun
from wdexp.tracking.records import RunSpec, Step
from wdexp.vocabulary import (
    BASELINE,
    DECAY,
    FAILURE_TAG,
    TrackingSpec,
    objective,
    objective_column,
)

EXPERIMENT = "weight-decay"


def _open(spec: TrackingSpec, name: str) -> PairRun:
    arms = {arm: RunSpec(f"{arm} of {name}", {"arm": arm}) for arm in (BASELINE, DECAY)}
    return PairRun(spec, RunSpec(name, {"pair": name}), arms, files={})


def _step(epoch: int, offset: float) -> Step:
    return Step(epoch, {BASELINE: {"loss": offset + epoch}, DECAY: {"loss": offset - epoch}})


def test_two_pairs_open_at_once_keep_their_own_runs_batches_and_status(store_uri):
    spec = TrackingSpec(store_uri, EXPERIMENT)
    first, second = _open(spec, "first"), _open(spec, "second")
    assert first.pair_id != second.pair_id
    assert not set(first.arm_ids.values()) & set(second.arm_ids.values())
    for epoch in range(600):  # interleaved, past one batch (SEND_STEPS) of each
        first.log_step(_step(epoch, 1000.0))
        second.log_step(_step(epoch, 5000.0))
    second.end(RuntimeError("the second pair's model broke"))
    outcome = first.finish()

    assert (first.status, second.status) == ("FINISHED", "FAILED")
    reader = StoreReader(store_uri, EXPERIMENT)
    runs = {run.info.run_name: run for run in reader.runs()}
    assert runs["first"].info.status == "FINISHED"
    assert runs["second"].info.status == "FAILED"
    assert runs["second"].data.tags[FAILURE_TAG] == "the second pair's model broke"
    assert FAILURE_TAG not in runs["first"].data.tags
    for pair, offset in ((first, 1000.0), (second, 5000.0)):
        for arm, sign in ((BASELINE, 1), (DECAY, -1)):
            history = reader.history(pair.arm_ids[arm], "loss")
            assert history == [(e, offset + sign * e) for e in range(600)], (pair.name, arm)
            assert reader.client.get_run(pair.arm_ids[arm]).info.status == pair.status
    # Only the finished pair carries its summary, and its outcome is the decay arm's last loss.
    assert runs["first"].data.metrics[f"{DECAY}.final_loss"] == 1000.0 - 599
    assert f"{DECAY}.final_loss" not in runs["second"].data.metrics
    assert outcome == Outcome(first.pair_id, "loss", 1000.0 - 599)


def test_job_returns_the_objective_the_store_holds(run_job, read_store):
    pair_id = run_job("epochs=12", "optimizer.weight_decay=0.2")
    (pair,) = read_store().runs("pair")
    stored = Outcome.stored(pair_id, pair.data.metrics)
    assert stored.objective == "loss"  # the quadratic has no test data
    assert stored.value == pair.data.metrics[f"{DECAY}.final_loss"]


def test_a_diverged_decay_arm_has_no_objective():
    metrics = {f"{DECAY}.final_loss": 3.0, f"{DECAY}.diverged": 1.0}
    assert math.isnan(Outcome.stored("r", metrics).value)
    assert Outcome.stored("r", {**metrics, f"{DECAY}.diverged": 0.0}).value == 3.0


@pytest.mark.parametrize(("names", "expected"), [
    ({"loss", "weight_norm", "test_loss", "test_accuracy"}, "test_loss"),
    ({"loss", "weight_norm"}, "loss"),
    (set(), "loss"),
])
def test_objective_is_the_held_out_loss_where_there_is_one(names, expected):
    assert objective(names) == expected
    columns = [f"{arm}.final_{name}" for arm in (BASELINE, DECAY) for name in names]
    assert objective_column(columns) == f"{DECAY}.final_{expected}"
    # The baseline's test loss alone does not make it the objective.
    assert objective_column([f"{BASELINE}.final_test_loss"]) == f"{DECAY}.final_loss"

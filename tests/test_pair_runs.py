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


def test_a_retried_job_replaces_its_earlier_attempt_and_readers_see_it_once(store_uri,
                                                                           tmp_path):
    """A launcher that retries a dead job (Ray's task retries, a requeued Slurm task) runs its
    pair again under the same sweep run: the earlier attempt is tagged as replaced and every
    table reads the job once, the retry's numbers."""
    from wdexp.analysis import arm_table, config_values, pair_table
    from wdexp.tracking import client, store
    from wdexp.vocabulary import JOB, RUN_KIND_TAG, SUPERSEDED_TAG, tag

    spec = TrackingSpec(store_uri, EXPERIMENT)
    sweep_id = client.get().open_sweep(spec, RunSpec("sweep", {}, {RUN_KIND_TAG: "sweep"}),
                                       str(tmp_path / "multirun"))

    def attempt(job: int, name: str) -> PairRun:
        arms = {arm: RunSpec(f"{arm} of {name}", {"arm": arm}, {RUN_KIND_TAG: "arm"})
                for arm in (BASELINE, DECAY)}
        pair = RunSpec(name, {"pair": name}, {RUN_KIND_TAG: "pair", tag(JOB): str(job)})
        return PairRun(spec, pair, arms, files={}, parent_id=sweep_id)

    first, other = attempt(0, "job 0, first attempt"), attempt(1, "job 1")
    first.log_step(_step(0, 7.0))
    first.end(RuntimeError("its worker was killed"))
    retry = attempt(0, "job 0, retried")
    for pair, offset in ((other, 3.0), (retry, 5.0)):
        pair.log_step(_step(0, offset))
        pair.finish()

    reader = StoreReader(store_uri, EXPERIMENT)
    runs = {run.info.run_name: run for run in reader.runs("pair")}
    assert runs["job 0, first attempt"].data.tags[SUPERSEDED_TAG] == retry.pair_id
    assert runs["job 0, first attempt"].info.status == "FAILED"  # kept, as it ended
    assert SUPERSEDED_TAG not in runs["job 0, retried"].data.tags
    assert SUPERSEDED_TAG not in runs["job 1"].data.tags
    with store.reading(spec) as results:
        table = pair_table(results, sweep_id, ["pair"])
        arms = arm_table(results, sweep_id)
        values = config_values(results, sweep_id)
    assert sorted(table["pair"]) == ["job 0, retried", "job 1"]
    assert sorted(table[f"{DECAY}.final_loss"]) == [3.0, 5.0]
    assert sorted(arms["pair_id"].unique()) == sorted([retry.pair_id, other.pair_id])
    assert values["pair"] == {"job 0, retried", "job 1"}


@pytest.mark.parametrize("where", ["history", "queue"])
def test_a_stop_signal_inside_a_step_leaves_each_trained_step_written_once(store_uri, where,
                                                                          monkeypatch):
    """SIGINT delivered while a step is being recorded (``history``) or while a batch leaves
    the buffer for the pipe (``queue``): the step the end line names is the last one written,
    and every step before it is written exactly once."""
    import os
    import signal

    from wdexp.pair_runs import History
    from wdexp.signals import reset, signals_as_exceptions
    from wdexp.tracking.client import TrackingClient

    def interrupting(original):
        def call(*args, **kwargs):
            os.kill(os.getpid(), signal.SIGINT)  # Python runs the handler at the next bytecode
            return original(*args, **kwargs)
        return call

    spec = TrackingSpec(store_uri, EXPERIMENT)
    pair = _open(spec, "interrupted")
    target = {"history": (History, "add"), "queue": (TrackingClient, "queue_steps")}[where]
    with signals_as_exceptions(), pytest.raises(KeyboardInterrupt) as stopped:
        for epoch in range(1000):
            if epoch == 700:  # past one full batch, so both a sent and a buffered part exist
                monkeypatch.setattr(*target, interrupting(getattr(*target)))
            pair.log_step(_step(epoch, 0.0))
            if where == "queue" and epoch >= 700:
                pair.send()
    reset()
    pair.end(stopped.value)

    assert pair.status == "KILLED" and pair.last_step is not None
    reader = StoreReader(store_uri, EXPERIMENT)
    for arm in (BASELINE, DECAY):
        steps = [step for step, _ in reader.history(pair.arm_ids[arm], "loss")]
        assert steps == list(range(pair.last_step + 1)), arm

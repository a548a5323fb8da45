"""How jobs end: signals, exceptions and divergence leave every run with an honest status."""

from __future__ import annotations

import signal
import time

import pytest
import torch

from tests.conftest import StoreReader, popen
from wdexp.config import ROOT
from wdexp.models import Quadratic


def _wait_for_metrics(reader_uri: str, proc, deadline_s: float = 90) -> StoreReader:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stdout.read()
        reader = StoreReader(reader_uri)
        arms = reader.runs("arm")
        if len(arms) == 2 and all(reader.history(a.info.run_id, "loss") for a in arms):
            return reader
        time.sleep(0.5)
    raise AssertionError("the job logged no metrics in time")


@pytest.mark.parametrize(("signum", "exit_code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signal_ends_every_run_killed_with_metrics_flushed(tmp_path, store_uri, signum,
                                                           exit_code):
    proc = popen(f"tracking.uri={store_uri}", "epochs=100000000", tmp_path=tmp_path)
    try:
        _wait_for_metrics(store_uri, proc)
        proc.send_signal(signum)
        sent = time.monotonic()
        output, _ = proc.communicate(timeout=10)
        assert time.monotonic() - sent < 10
    finally:
        proc.kill()
    assert proc.returncode == exit_code, output
    assert "Traceback" not in output
    reader = StoreReader(store_uri)
    runs = reader.runs()
    assert len(runs) == 3
    assert {run.info.status for run in runs} == {"KILLED"}
    for arm in reader.runs("arm"):
        steps = [step for step, _ in reader.history(arm.info.run_id, "w_2")]
        assert steps == list(range(len(steps)))  # nothing lost, nothing sent twice


def test_killed_training_process_leaves_no_run_running(tmp_path, store_uri):
    # SIGKILL cannot be caught: the tracking process sees its pipe close and ends the runs.
    proc = popen(f"tracking.uri={store_uri}", "epochs=100000000", tmp_path=tmp_path)
    try:
        _wait_for_metrics(store_uri, proc)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        deadline = time.monotonic() + 30
        while {run.info.status for run in StoreReader(store_uri).runs()} != {"KILLED"}:
            assert time.monotonic() < deadline, "runs were left RUNNING"
            time.sleep(0.5)
    finally:
        proc.kill()
    for arm in StoreReader(store_uri).runs("arm"):
        steps = [step for step, _ in StoreReader(store_uri).history(arm.info.run_id, "loss")]
        assert steps == list(range(len(steps)))


class FailingQuadratic(Quadratic):
    """A user model that breaks mid-run, plugged in through model._target_."""

    def __init__(self, fail_at: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.calls, self.fail_at = 0, fail_at

    def loss(self):
        if self.calls == self.fail_at:
            raise RuntimeError("disk on fire")
        self.calls += 1
        return super().loss()


class SlowQuadratic(Quadratic):
    """A model whose every step takes a while, like a real network's epoch."""

    def loss(self):
        time.sleep(0.1)
        return super().loss()


def test_metrics_reach_the_store_while_a_slow_run_is_still_running(tmp_path, store_uri):
    # 8 values a step never fill a batch here: only the 5 s flush can make them visible.
    proc = popen(f"tracking.uri={store_uri}", "epochs=80",
                 f"model._target_={__name__}.SlowQuadratic", tmp_path=tmp_path,
                 env={"PYTHONPATH": str(ROOT)})
    try:
        reader = _wait_for_metrics(store_uri, proc, deadline_s=60)
        assert {run.info.status for run in reader.runs()} == {"RUNNING"}
        output, _ = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 0, output


def test_exception_during_training_marks_runs_failed(run_job, read_store):
    with pytest.raises(RuntimeError, match="disk on fire"):
        run_job("epochs=10", f"model._target_={__name__}.FailingQuadratic", "+model.fail_at=4")
    reader = read_store()
    runs = reader.runs()
    assert len(runs) == 3
    assert {run.info.status for run in runs} == {"FAILED"}
    for arm in reader.runs("arm"):  # the steps trained before the failure were kept
        assert [s for s, _ in reader.history(arm.info.run_id, "loss")] == [0, 1, 2, 3]


def _first_nonfinite_step(init: float, lr: float, coefficient: float, weight_decay: float,
                          epochs: int) -> int | None:
    """Plain torch.optim on one float32 weight: the first step whose loss is not finite."""
    w = torch.tensor([init], requires_grad=True)
    optimizer = torch.optim.SGD([w], lr=lr, weight_decay=weight_decay)
    for step in range(epochs + 1):
        loss = coefficient * w**2
        if not torch.isfinite(loss).all() or not torch.isfinite(w).all():
            return step
        loss.sum().backward()
        optimizer.step()
        optimizer.zero_grad()
    return None


def test_diverging_arm_stops_and_is_tagged_while_the_other_finishes(run_job, read_store):
    # |1 - lr (2c + λ)| = |1 - 0.5 * 6| = 2 > 1 for the decay arm; the baseline's factor is 0.
    epochs = 200
    pair_id = run_job("model.coefficients=[1.0]", "model.init=[0.75]", "optimizer.lr=0.5",
                      "optimizer.weight_decay=4.0", f"epochs={epochs}")
    expected = _first_nonfinite_step(0.75, 0.5, 1.0, 4.0, epochs)
    assert expected is not None and 0 < expected < epochs
    reader = read_store()
    pair = reader.client.get_run(pair_id)
    assert pair.info.status == "FINISHED"
    arms = reader.arms(pair_id)
    decay, baseline = arms["decay"], arms["baseline"]
    assert decay.info.status == baseline.info.status == "FINISHED"
    assert decay.data.tags["wdexp.diverged"] == "true"
    assert decay.data.tags["wdexp.diverged_at"] == str(expected)
    assert baseline.data.tags["wdexp.diverged"] == "false"
    for key in ("loss", "w_1", "weight_norm"):
        history = reader.history(decay.info.run_id, key)
        assert [step for step, _ in history] == list(range(expected))
        assert all(abs(value) < float("inf") for _, value in history)
    assert len(reader.history(baseline.info.run_id, "loss")) == epochs + 1
    assert "decay.final_loss" in pair.data.metrics  # the last finite value

"""How jobs end: exceptions and divergence leave every run with an honest status (signals and
killed processes: tests/system/test_faults.py; metrics while a job runs:
tests/system/test_lifecycle.py)."""

from __future__ import annotations

import pytest
import torch

from wdexp.models import Quadratic


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

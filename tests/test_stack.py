"""The stacked engine against each job's separate run, in memory: every record of every arm
bit-identical (wdexp/stack.py), shared baselines, lanes, divergence, chunks and refusals."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

from tests.conftest import compose_config
from wdexp import engine, stack, study
from wdexp.tracking.records import Step
from wdexp.vocabulary import BASELINE, DECAY, ConfigError


def _job(*overrides: str) -> stack.Job:
    built = study.build(compose_config(*overrides))
    return stack.Job(built, engine.random_state(torch.device("cpu")))


def _records(steps: list[Step]) -> list[tuple]:
    """Steps as comparable values: every float by its repr (exact, NaN equal to NaN)."""
    return [(s.epoch, {arm: {k: repr(v) for k, v in values.items()}
                       for arm, values in s.metrics.items()}, s.diverged) for s in steps]


def _alone(*overrides: str) -> list[Step]:
    built = study.build(compose_config(*overrides))
    return list(engine.train(built.arms, built.job.epochs))


def _separate(*overrides: str) -> list[tuple]:
    return _records(_alone(*overrides))


def _stacked_steps(jobs: list[tuple[str, ...]]) -> tuple[list[list[Step]], stack.Stack]:
    """Each job's steps as the stack yields them, and the stack."""
    trained = stack.Stack([_job(*overrides) for overrides in jobs])
    per_job: list[list[Step]] = [[] for _ in jobs]
    for steps in trained.train():
        for kept, step in zip(per_job, steps, strict=True):
            if step is not None:
                kept.append(step)
    return per_job, trained


def _stacked(jobs: list[tuple[str, ...]]) -> tuple[list[list[tuple]], stack.Stack]:
    per_job, trained = _stacked_steps(jobs)
    return [_records(steps) for steps in per_job], trained


def _grid(common: tuple[str, ...], decays: tuple[str, ...], seeds: tuple[int, ...],
          ) -> list[tuple[str, ...]]:
    return [(*common, f"optimizer.weight_decay={wd}", f"seed={seed}")
            for seed, wd in itertools.product(seeds, decays)]


def _assert_identical(jobs: list[tuple[str, ...]]) -> stack.Stack:
    stacked, trained = _stacked(jobs)
    for overrides, records in zip(jobs, stacked, strict=True):
        assert records == _separate(*overrides), overrides
    return trained


def test_a_decay_and_seed_grid_is_bit_identical_to_separate_runs_with_one_baseline_per_seed():
    # λ = 2000 diverges (|1 - η(2c + λ)| = 19 for lr 0.01): the others must not notice.
    jobs = _grid(("epochs=30",), ("0", "0.01", "0.3", "2000"), (0, 1, 2))
    stacked, trained = _stacked(jobs)
    for overrides, records in zip(jobs, stacked, strict=True):
        assert records == _separate(*overrides), overrides
    # One baseline per seed (the λ = 0 decay arm is the same computation), one member per
    # other (λ, seed): 3 + 3 x 3, all in one lane.
    assert len(trained.members) == 12 and len(trained.lanes) == 1
    assert {trained.shared(i)[BASELINE] for i in range(4)} == {"m0 of 4 jobs"}
    diverged = [records for overrides, records in zip(jobs, stacked, strict=True)
                if "optimizer.weight_decay=2000" in overrides]
    for records in diverged:  # the decay arm stops where it diverged; its baseline goes on
        [at] = [epoch for epoch, _, arms in records if arms == (DECAY,)]
        assert 0 < at < 30 and len(records) == 31
        assert all(set(metrics) == {BASELINE} for epoch, metrics, _ in records if epoch >= at)


@pytest.mark.parametrize("common", [
    ("optimizer=sgd_momentum", "optimizer.nesterov=true"),
    ("optimizer=adam", "optimizer.lr=0.05"),
    ("optimizer=adamw", "optimizer.lr=0.05", "scheduler=cosine"),
    ("optimizer=sgd", "optimizer.decay_mode=decoupled", "scheduler=step",
     "scheduler.step_size=7"),
    ("optimizer=adam", "optimizer.decay_mode=independent", "scheduler=warmup_cosine",
     "scheduler.warmup_steps=5"),
    ("optimizer=adam", "optimizer.decay_mode=penalty"),
    ("optimizer=sgd_momentum", "optimizer.decay_mode=coupled", "model=ridge", "model.bias=true"),
    ("model=ridge", "model.dtype=float64", "model.n_features=20", "optimizer.momentum=0.5"),
    ("model.dtype=float64", "optimizer.decay_mode=penalty", "model.coefficients=[0.5,2,3]"),
], ids=["nesterov", "adam", "adamw-cosine", "decoupled-step", "independent-warmup",
        "adam-penalty", "ridge-bias", "ridge-float64", "quadratic-float64-penalty"])
def test_every_optimizer_decay_mode_and_schedule_is_bit_identical_to_separate_runs(common):
    _assert_identical(_grid(("epochs=25", *common), ("0.2", "1.5"), (0, 3)))


def test_learning_rates_stack_as_lanes_with_one_baseline_per_seed_and_lr():
    jobs = [(f"optimizer.lr={lr}", *job) for lr in ("0.01", "0.05")
            for job in _grid(("epochs=15", "optimizer=sgd_momentum"), ("0.01", "0.3"), (0, 1))]
    trained = _assert_identical(jobs)
    # per lr: 2 seeds x (1 baseline + 2 decay arms); one torch optimizer per lr
    assert len(trained.members) == 12 and len(trained.lanes) == 2
    assert sorted(lane.lr for lane in trained.lanes) == [0.01, 0.05]


def test_a_baseline_that_differs_beyond_decay_trains_in_a_lane_of_its_own():
    jobs = _grid(("epochs=30", "arms.baseline.optimizer.lr=0.02"), ("0.01", "0.1"), (0, 1))
    trained = _assert_identical(jobs)
    assert len(trained.lanes) == 2 and len(trained.members) == 6


def test_jobs_group_by_everything_but_seed_and_decay_and_chunk_by_members():
    base = ("epochs=5",)
    keys = {stack.group_key(_job(*base, f"seed={s}", f"optimizer.weight_decay={wd}").study)
            for s, wd in itertools.product((0, 1), (0.1, 0.2))}
    assert len(keys) == 1
    assert stack.group_key(_job(*base, "optimizer.lr=0.02").study) in keys  # a lane of its own
    assert stack.group_key(_job("epochs=6").study) not in keys
    assert stack.group_key(_job(*base, "optimizer.momentum=0.5").study) not in keys
    jobs = [_job(*overrides) for overrides in _grid(base, ("0.1", "0.2", "0.3"), (0, 1))]
    chunked = stack.chunks(jobs, 4)  # seed 0: 1 baseline + 3 decay arms; seed 1 the same
    assert [len(chunk) for chunk in chunked] == [3, 3]
    assert [len(chunk) for chunk in stack.chunks(jobs, 1)] == [1] * 6  # a job's own 2 arms


OWN = Path(__file__).resolve().parent / "own_model"


@pytest.mark.parametrize(("overrides", "key"), [
    (("optimizer._target_=torch.optim.RMSprop",), "optimizer._target_"),
    (("+optimizer.maximize=true",), "optimizer.maximize"),
    (("+arms.baseline.optimizer._target_=torch.optim.Adagrad",),
     "arms.baseline.optimizer._target_"),
])
def test_what_the_stack_cannot_train_exactly_is_refused_naming_the_key(overrides, key,
                                                                     monkeypatch):
    monkeypatch.syspath_prepend(str(OWN))
    with pytest.raises(ConfigError) as refused:
        stack.check(_job("epochs=2", *overrides).study)
    assert refused.value.key == key
    assert "hydra/launcher=joblib" in str(refused.value)


# --- networks: batched over members, equal to separate runs to rounding ---------------------

def _relative_gaps(jobs: list[tuple[str, ...]]) -> dict[str, float]:
    """For each metric (a layer's geometry by its kind: ``angular_update``), the largest
    relative difference, over every job, arm and step, between the stacked records and the
    separate run's."""
    per_job, _ = _stacked_steps(jobs)
    gaps: dict[str, float] = {}
    for overrides, steps in zip(jobs, per_job, strict=True):
        alone = _alone(*overrides)
        assert [s.epoch for s in steps] == [s.epoch for s in alone]
        for mine, theirs in zip(steps, alone, strict=True):
            assert mine.metrics.keys() == theirs.metrics.keys() and mine.diverged == theirs.diverged
            for arm, values in theirs.metrics.items():
                assert mine.metrics[arm].keys() == values.keys(), arm
                for key, b in values.items():
                    kind = key.split("/")[0]
                    # A scale-invariant row's cos(grad, weight) is rounding noise around 0.
                    floor = 1e-6 if kind == "cos_grad_weight" else 1e-300
                    gap = abs(mine.metrics[arm][key] - b) / max(abs(b), floor)
                    gaps[kind] = max(gaps.get(kind, 0.0), gap)
    return gaps


def _assert_float64_rounding(gaps: dict[str, float]) -> None:
    """Every metric within 1e-10; a row's angle per step (and the equilibrium ratio of those
    angles) within 1e-8: it is arccos of a cosine within ~1e-7 of 1, which turns the cosine's
    1e-16 into ~1e-16/θ² relative (measured: 1.2e-9 at θ = 4e-4)."""
    angles = {"angular_update", "equilibrium_ratio"}
    assert {k: v for k, v in gaps.items() if k not in angles and v >= 1e-10} == {}
    assert {k: v for k, v in gaps.items() if k in angles and v >= 1e-8} == {}


NET_KEYS = ("loss", "test_loss", "weight_norm", "grad_norm", "decay_grad_ratio", "lr")


# The fast tier keeps the BatchNorm mini-batch case: stacked buffers, batch orders, AdamW.
@pytest.mark.parametrize("common", [
    pytest.param(("model=mlp", "model.dtype=float64", "data.batch_size=null",
                  "optimizer=sgd_momentum"), marks=pytest.mark.slow),
    ("model=bn_mlp", "model.dtype=float64", "optimizer=adamw", "optimizer.lr=0.01",
     "data.fraction=0.2"),
    pytest.param(("model=mlp", "model.dtype=float64", "optimizer=adam",
                  "optimizer.decay_mode=penalty", "data.fraction=0.2", "scheduler=cosine"),
                 marks=pytest.mark.slow),
    # 80 samples, batch 100: one mini-batch per epoch, still stepped as a mini-batch (500 made,
    # 400 for training: MNIST-1D's 5000 take seconds to make in each separate run)
    pytest.param(("model=cnn", "model.dtype=float64", "+data.num_samples=500",
                  "data.fraction=0.2", "optimizer=sgd_momentum"), marks=pytest.mark.slow),
], ids=["mlp-full-batch-momentum", "bn_mlp-minibatch-adamw", "mlp-minibatch-adam-penalty",
        "cnn-minibatch"])
def test_a_network_grid_agrees_with_separate_runs_to_float64_rounding(common):
    jobs = _grid(("epochs=4", *common), ("0.01", "0.3"), (0, 1))
    gaps = _relative_gaps(jobs)
    assert {*NET_KEYS, "test_accuracy", "angular_update", "cos_grad_weight"} <= gaps.keys()
    _assert_float64_rounding(gaps)


@pytest.mark.slow
def test_float32_networks_end_within_rounding_of_separate_runs():
    jobs = _grid(("epochs=3", "model=mlp", "optimizer=adamw", "optimizer.lr=0.01",
                  "data.fraction=0.3"), ("0.1",), (0, 1))
    gaps = _relative_gaps(jobs)
    assert max(gaps[key] for key in ("loss", "test_loss", "weight_norm")) < 1e-4


class DropoutNet(nn.Module):
    """A user's net with dropout (tests/own_model's TinyNet's arguments), in float64, and
    BatchNorm, whose running statistics a seed's members update together. No bias before it:
    its gradient would be rounding alone, which Adam scales up to whole steps."""

    def __init__(self, in_features: int, out_features: int, width: int = 32,
                 dropout: float = 0.0) -> None:
        super().__init__()
        self.hidden = nn.Linear(in_features, width, bias=False, dtype=torch.float64)
        self.norm = nn.BatchNorm1d(width, dtype=torch.float64)
        self.drop = nn.Dropout(dropout)
        self.out = nn.Linear(width, out_features, dtype=torch.float64)

    def forward(self, x: Tensor) -> Tensor:
        return self.out(self.drop(torch.tanh(self.norm(self.hidden(x)))))


# Each seed's members draw the masks of its separate runs (other masks move the loss by far more
# than rounding): mini-batches (135 samples: a short last batch), the step-0 record pass
# included, and the full batch.
@pytest.mark.parametrize("batch_size", ["32", pytest.param("null", marks=pytest.mark.slow)],
                         ids=["mini-batch", "full-batch"])
def test_a_network_with_dropout_draws_each_seeds_masks_as_its_separate_runs(batch_size):
    common = ("epochs=3", "model=tiny_net", f"hydra.searchpath=[file://{OWN}/conf]",
              f"model._target_={__name__}.DropoutNet", "model.dropout=0.5",
              "data.fraction=0.1", f"data.batch_size={batch_size}", "optimizer=adamw")
    # two lrs, two lanes: each seed's masks drawn in both, as both lrs' separate runs draw them
    jobs = [(*job, f"optimizer.lr={lr}") for lr in ("0.01", "0.003")
            for job in _grid(common, ("0.01", "0.3"), (0, 1))]
    gaps = _relative_gaps(jobs)
    assert {*NET_KEYS, "test_accuracy"} <= gaps.keys()
    _assert_float64_rounding(gaps)

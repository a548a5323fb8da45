"""Both arms against the closed form of SGD on a separable quadratic."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from tests.conftest import Trained

EPOCHS = 25


def random_case(case: int) -> tuple[list[float], list[float], float, float]:
    rng = np.random.default_rng(case)
    n = int(rng.integers(1, 6))
    coefficients = rng.uniform(0.01, 2.0, n).round(4).tolist()
    init = rng.uniform(-1, 1, n).round(4).tolist()
    lr = round(float(rng.uniform(0.001, 0.2)), 4)
    weight_decay = round(float(rng.uniform(0.0, 0.5)), 4)
    return coefficients, init, lr, weight_decay


def overrides(case: int) -> tuple[str, ...]:
    coefficients, init, lr, weight_decay = random_case(case)
    return ("model.dtype=float64", f"model.coefficients={coefficients}", f"model.init={init}",
            f"optimizer.lr={lr}", f"optimizer.weight_decay={weight_decay}", f"epochs={EPOCHS}")


def assert_closed_form(case: int, history: Callable[[str, str], list[tuple[int, float]]]) -> None:
    """``history(arm, key)`` → [(step, value)] of each arm against w_t = w_0 (1 - lr (2c + λ))^t."""
    coefficients, init, lr, weight_decay = random_case(case)
    n = len(coefficients)
    c, w0, t = np.array(coefficients), np.array(init), np.arange(EPOCHS + 1)[:, None]
    for arm, lam in (("baseline", 0.0), ("decay", weight_decay)):
        expected = w0 * (1 - lr * (2 * c + lam)) ** t  # w_t = w_0 (1 - lr (2c + λ))^t
        for i in range(n):
            steps, values = zip(*history(arm, f"w_{i + 1}"), strict=True)
            assert list(steps) == list(range(EPOCHS + 1))
            np.testing.assert_allclose(values, expected[:, i], rtol=1e-12, atol=1e-15)
        loss = [v for _, v in history(arm, "loss")]
        np.testing.assert_allclose(loss, (c * expected**2).sum(axis=1), rtol=1e-12, atol=1e-15)
        norm = [v for _, v in history(arm, "weight_norm")]
        np.testing.assert_allclose(norm, np.linalg.norm(expected, axis=1), rtol=1e-12)


@pytest.mark.parametrize("case", range(3))
def test_both_arms_follow_the_geometric_closed_form(case):
    """The numbers as the engine hands them to the store, trained in this process."""
    assert_closed_form(case, Trained(*overrides(case)).history)


def test_both_arms_read_back_from_the_store_follow_the_closed_form(run_job, read_store):
    """The same check end to end: a job into a real store, read back with MLflow's client."""
    pair_id = run_job(*overrides(0))
    reader = read_store()
    runs = {arm: run.info.run_id for arm, run in reader.arms(pair_id).items()}
    assert set(runs) == {"baseline", "decay"}
    assert_closed_form(0, lambda arm, key: reader.history(runs[arm], key))

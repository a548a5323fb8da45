"""Both arms against the closed form of SGD on a separable quadratic."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.mark.parametrize("case", range(3))
def test_both_arms_follow_the_geometric_closed_form(run_job, read_store, case):
    rng = np.random.default_rng(case)
    n = int(rng.integers(1, 6))
    coefficients = rng.uniform(0.01, 2.0, n).round(4).tolist()
    init = rng.uniform(-1, 1, n).round(4).tolist()
    lr = round(float(rng.uniform(0.001, 0.2)), 4)
    weight_decay = round(float(rng.uniform(0.0, 0.5)), 4)
    epochs = 25
    pair_id = run_job(
        "model.dtype=float64", f"model.coefficients={coefficients}", f"model.init={init}",
        f"optimizer.lr={lr}", f"optimizer.weight_decay={weight_decay}", f"epochs={epochs}")
    reader = read_store()
    arms = reader.arms(pair_id)
    c, w0, t = np.array(coefficients), np.array(init), np.arange(epochs + 1)[:, None]
    for arm, lam in (("baseline", 0.0), ("decay", weight_decay)):
        expected = w0 * (1 - lr * (2 * c + lam)) ** t  # w_t = w_0 (1 - lr (2c + λ))^t
        run_id = arms[arm].info.run_id
        for i in range(n):
            steps, values = zip(*reader.history(run_id, f"w_{i + 1}"), strict=True)
            assert list(steps) == list(range(epochs + 1))
            np.testing.assert_allclose(values, expected[:, i], rtol=1e-12, atol=1e-15)
        loss = [v for _, v in reader.history(run_id, "loss")]
        np.testing.assert_allclose(loss, (c * expected**2).sum(axis=1), rtol=1e-12, atol=1e-15)
        norm = [v for _, v in reader.history(run_id, "weight_norm")]
        np.testing.assert_allclose(norm, np.linalg.norm(expected, axis=1), rtol=1e-12)

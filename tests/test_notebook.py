"""The seed notebook, reproduced bit for bit by the default job."""

from __future__ import annotations

import random

import pytest
import torch

from tests.conftest import StoreReader, cli

LR, WEIGHT_DECAY, EPOCHS = 0.01, 0.01, 30


def notebook(init: tuple[float, float], weight_decay: float) -> list[tuple[float, float, float]]:
    """The seed notebook's loop, written out independently of wdexp: (loss, w_1, w_2) per epoch,
    recorded before each update, plus the state after the last update."""
    w_1 = torch.tensor([init[0]], requires_grad=True)
    w_2 = torch.tensor([init[1]], requires_grad=True)
    op = torch.optim.SGD([w_1, w_2], lr=LR, weight_decay=weight_decay)
    rows = []
    for _ in range(EPOCHS):
        loss = (1 / 20) * w_1**2 + w_2**2
        rows.append((loss.item(), w_1.item(), w_2.item()))
        loss.backward()
        op.step()
        op.zero_grad()
    loss = (1 / 20) * w_1**2 + w_2**2
    rows.append((loss.item(), w_1.item(), w_2.item()))
    return rows


def logged(reader: StoreReader, run_id: str) -> list[tuple[float, float, float]]:
    columns = [reader.history(run_id, key) for key in ("loss", "w_1", "w_2")]
    assert all([step for step, _ in column] == list(range(EPOCHS + 1)) for column in columns)
    return [tuple(value for _, value in row) for row in zip(*columns, strict=True)]


def test_default_cli_job_equals_the_notebook_in_float32(tmp_path, store_uri):
    result = cli(f"tracking.uri={store_uri}", tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    random.seed(0)  # the job's default seed; the notebook drew its init the same way
    init = (random.random(), random.random())
    reader = StoreReader(store_uri)
    (pair,) = reader.runs("pair")
    arms = reader.arms(pair.info.run_id)
    assert logged(reader, arms["baseline"].info.run_id) == notebook(init, 0.0)
    assert logged(reader, arms["decay"].info.run_id) == notebook(init, WEIGHT_DECAY)


@pytest.mark.parametrize("init", [(0.4, 0.2), (0.9, -0.7)])
def test_explicit_init_equals_the_notebook(run_job, read_store, init):
    pair_id = run_job(f"model.init=[{init[0]},{init[1]}]")
    reader = read_store()
    arms = reader.arms(pair_id)
    # torch.tensor([0.4]) rounds to float32 exactly as the notebook's tensor did.
    assert logged(reader, arms["baseline"].info.run_id) == notebook(init, 0.0)
    assert logged(reader, arms["decay"].info.run_id) == notebook(init, WEIGHT_DECAY)

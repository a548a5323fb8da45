"""The README's "Your own model": a model module and a config folder outside wdexp, found by
PYTHONPATH and hydra.searchpath alone, trained as torch.optim trains it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import torch

from tests.conftest import PYTHON, StoreReader, child_env

OWN = Path(__file__).resolve().parent / "own_model"


def test_a_model_from_outside_the_package_trains_exactly_as_torch_optim_does(tmp_path,
                                                                             store_uri):
    result = subprocess.run(
        [PYTHON, "-m", "wdexp.train", "model=logistic", f"hydra.searchpath=[file://{OWN}/conf]",
         "optimizer.lr=0.5", "optimizer.weight_decay=0.1", "epochs=20", "seed=3",
         f"tracking.uri={store_uri}", f"hydra.run.dir={tmp_path}/run"],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
        env=child_env({"PYTHONPATH": str(OWN)}))
    assert result.returncode == 0, result.stderr
    reader = StoreReader(store_uri)
    (pair,) = reader.runs("pair")
    assert pair.info.run_name.startswith("logistic sgd_wd lr=0.5 wd=0.1 seed=3")
    arms = reader.arms(pair.info.run_id)

    sys.path.insert(0, str(OWN))
    try:
        from my_models import Logistic
    finally:
        sys.path.remove(str(OWN))
    for arm, weight_decay in (("baseline", 0.0), ("decay", 0.1)):
        model = Logistic(init_seed=3)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.5, weight_decay=weight_decay)
        expected: dict[str, list[float]] = {}
        for _ in range(20):  # the state before each update, as wdexp records it, then the last
            loss = model.loss()
            for key, value in model.metrics(loss).items():
                expected.setdefault(key, []).append(value)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
        for key, value in model.metrics(model.loss()).items():
            expected[key].append(value)
        for key, values in expected.items():
            logged = [value for _, value in reader.history(arms[arm].info.run_id, key)]
            assert logged == values, (arm, key)

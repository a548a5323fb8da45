"""The README's "Your own model": a model module and a config folder outside wdexp, found by
PYTHONPATH and hydra.searchpath alone, trained as torch.optim trains it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.conftest import PYTHON, StoreReader, Trained, child_env

OWN = Path(__file__).resolve().parent / "own_model"


def _logistic_by_torch_optim(weight_decay: float) -> dict[str, list[float]]:
    """my_models.Logistic trained by torch.optim.SGD: its metrics before each update, as wdexp
    records them, then the last."""
    sys.path.insert(0, str(OWN))
    try:
        from my_models import Logistic
    finally:
        sys.path.remove(str(OWN))
    model = Logistic(init_seed=3)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5, weight_decay=weight_decay)
    expected: dict[str, list[float]] = {}
    for _ in range(20):
        loss = model.loss()
        for key, value in model.metrics(loss).items():
            expected.setdefault(key, []).append(value)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    for key, value in model.metrics(model.loss()).items():
        expected[key].append(value)
    return expected


LOGISTIC = ("model=logistic", f"hydra.searchpath=[file://{OWN}/conf]", "optimizer.lr=0.5",
            "optimizer.weight_decay=0.1", "epochs=20", "seed=3")


def test_a_model_from_outside_the_package_trains_exactly_as_torch_optim_does_in_this_process(
        monkeypatch):
    """The config folder found through hydra.searchpath, the module through sys.path; the
    numbers as the engine hands them to the store (the job end to end: the next test)."""
    monkeypatch.syspath_prepend(str(OWN))
    trained = Trained(*LOGISTIC)
    for arm, weight_decay in (("baseline", 0.0), ("decay", 0.1)):
        for key, values in _logistic_by_torch_optim(weight_decay).items():
            assert trained.values(arm, key) == values, (arm, key)


@pytest.mark.slow
def test_a_model_from_outside_the_package_trains_exactly_as_torch_optim_does(tmp_path,
                                                                             store_uri):
    result = subprocess.run(
        [PYTHON, "-m", "wdexp.train", *LOGISTIC,
         f"tracking.uri={store_uri}", f"hydra.run.dir={tmp_path}/run"],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
        env=child_env({"PYTHONPATH": str(OWN)}))
    assert result.returncode == 0, result.stderr
    reader = StoreReader(store_uri)
    (pair,) = reader.runs("pair")
    assert pair.info.run_name.startswith("logistic sgd_wd lr=0.5 wd=0.1 seed=3")
    arms = reader.arms(pair.info.run_id)
    for arm, weight_decay in (("baseline", 0.0), ("decay", 0.1)):
        for key, values in _logistic_by_torch_optim(weight_decay).items():
            logged = [value for _, value in reader.history(arms[arm].info.run_id, key)]
            assert logged == values, (arm, key)


def _own(tmp_path: Path, store_uri: str, *overrides: str) -> StoreReader:
    """The job through wdexp.run in this process (the command line's own case: the test
    above): the module found on sys.path, the config folder through ``searchpath``."""
    import wdexp

    sys.path.insert(0, str(OWN))
    try:
        wdexp.run("model=tiny_net", *overrides, f"tracking.uri={store_uri}",
                  f"hydra.run.dir={tmp_path}/run", searchpath=[str(OWN / "conf")])
    finally:
        sys.path.remove(str(OWN))
    return StoreReader(store_uri)


@pytest.mark.slow
def test_a_plain_nn_module_from_outside_the_package_trains_as_a_torch_loop(tmp_path, store_uri):
    """Config alone: the net's class, the digits data, cross-entropy, mini-batches of 32."""
    epochs, lr, weight_decay, seed = 3, 0.1, 0.05, 2
    reader = _own(tmp_path, store_uri, f"optimizer.lr={lr}",
                  f"optimizer.weight_decay={weight_decay}", f"epochs={epochs}", f"seed={seed}")
    (pair,) = reader.runs("pair")
    assert pair.info.run_name.startswith("tiny_net digits sgd_wd lr=0.1 wd=0.05 seed=2")
    assert len(pair.data.params["data.sha256"]) == 64
    arms = reader.arms(pair.info.run_id)

    from wdexp.data import digits
    from wdexp.study import seed_everything

    sys.path.insert(0, str(OWN))
    try:
        from my_models import TinyNet
    finally:
        sys.path.remove(str(OWN))
    data = digits()
    x, y = data.x_train.float(), data.y_train
    x_test, y_test = data.x_test.float(), data.y_test
    for arm, decay in (("baseline", 0.0), ("decay", weight_decay)):
        seed_everything(seed)
        net = TinyNet(64, 10)
        weights = [p for p in net.parameters() if p.ndim > 1]  # biases: not decayed by default
        biases = [p for p in net.parameters() if p.ndim <= 1]
        optimizer = torch.optim.SGD([{"params": weights, "weight_decay": decay},
                                     {"params": biases, "weight_decay": 0.0}], lr=lr)
        test_loss, train_loss = [], []
        for epoch in range(epochs):
            generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
            order = torch.randperm(len(y), generator=generator)
            total = None
            for start in range(0, len(y), 32):
                index = order[start:start + 32]
                optimizer.zero_grad()
                loss = torch.nn.functional.cross_entropy(net(x[index]), y[index])
                loss.backward()
                optimizer.step()
                total = loss.detach() if total is None else total + loss.detach()
            train_loss.append((total / len(range(0, len(y), 32))).item())
            with torch.no_grad():
                test_loss.append(torch.nn.functional.cross_entropy(net(x_test), y_test).item())
        run_id = arms[arm].info.run_id
        # Steps 1..epochs: the epoch's mean mini-batch loss, then the test loss after it.
        assert [v for _, v in reader.history(run_id, "loss")][1:] == train_loss
        assert [v for _, v in reader.history(run_id, "test_loss")][1:] == test_loss
        norm = torch.linalg.vector_norm(net.hidden.weight.detach()).item()
        assert reader.history(run_id, "norm.hidden.weight")[-1][1] == norm


@pytest.mark.slow
@pytest.mark.parametrize("batch_size", ["32", "null"], ids=["mini-batch", "full-batch"])
def test_both_arms_of_a_net_with_dropout_draw_the_same_masks(tmp_path, store_uri, batch_size):
    reader = _own(tmp_path, store_uri, "model.dropout=0.5", "optimizer.weight_decay=0",
                  "epochs=2", f"data.batch_size={batch_size}")
    (pair,) = reader.runs("pair")
    arms = reader.arms(pair.info.run_id)
    histories = [reader.history(arms[arm].info.run_id, "loss") for arm in ("baseline", "decay")]
    assert histories[0] == histories[1]
    assert len({v for _, v in histories[0]}) == 3  # dropout changed the losses between epochs


@pytest.mark.slow
def test_data_of_your_own_from_a_loader_returning_datasets(tmp_path, store_uri):
    reader = _own(tmp_path, store_uri, "data=blobs", "optimizer.lr=0.5", "epochs=5")
    (pair,) = reader.runs("pair")
    assert pair.info.run_name.startswith("tiny_net blobs sgd_wd")
    sys.path.insert(0, str(OWN))
    try:
        from my_models import blobs
    finally:
        sys.path.remove(str(OWN))
    train, test = blobs()
    from wdexp.data import Data

    data = Data(*train.tensors, *test.tensors)
    assert pair.data.params["data.sha256"] == data.sha256()
    assert pair.data.params["data.n_train"] == "400"
    decay = reader.arms(pair.info.run_id)["decay"]
    assert reader.history(decay.info.run_id, "test_accuracy")[-1][1] >= 0.95

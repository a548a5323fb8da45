"""The data group: MNIST-1D generated offline as its package publishes it, digits unchanged."""

from __future__ import annotations

import math
import random
import socket

import numpy as np
import pytest
import torch

from tests.conftest import compose_config
from wdexp import data, study


def test_mnist1d_is_the_packages_published_dataset_made_offline(monkeypatch, tmp_path):
    def no_network(*args, **kwargs):
        raise AssertionError("mnist1d must not touch the network")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))  # nothing kept yet: generated here
    data._mnist1d.cache_clear()  # generate it here, not in an earlier test
    random.seed(7)
    np.random.seed(7)
    before = (random.random(), np.random.random_sample())
    random.seed(7)
    np.random.seed(7)
    made = data.mnist1d()
    # The generator seeds Python's and NumPy's global RNGs; the job's draws are untouched.
    assert (random.random(), np.random.random_sample()) == before

    from mnist1d.data import get_dataset_args, make_dataset

    reference = make_dataset(get_dataset_args())
    assert made.x_train.shape == (4000, 40) and made.x_test.shape == (1000, 40)
    for mine, theirs in ((made.x_train, "x"), (made.y_train, "y"), (made.x_test, "x_test"),
                         (made.y_test, "y_test")):
        np.testing.assert_array_equal(mine.numpy(), reference[theirs])
    assert set(made.y_train.tolist()) == set(range(10))
    assert made.identity["generator.num_samples"] == "5000"
    assert made.identity["generator.seed"] == "42"
    assert "generator.url" not in made.identity
    assert len(list((tmp_path / "wdexp").glob("mnist1d-*.npz"))) == 1  # kept for the next


def _tensors(made: data.Data) -> tuple[torch.Tensor, ...]:
    return made.x_train, made.y_train, made.x_test, made.y_test


def _without_generator(monkeypatch):
    def generated(args):
        raise AssertionError("generated, not read from the cache")

    monkeypatch.setattr(data, "_generate", generated)


def test_mnist1d_is_generated_once_per_machine_and_read_back_bit_for_bit(monkeypatch, tmp_path):
    """The next process reads the kept set: the same tensors, dtypes and hash, no generation;
    a kept file cut short or not an .npz is generated again and replaced; a cache folder that
    cannot be written costs the generation, never the job."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    data._mnist1d.cache_clear()
    made = data.mnist1d(num_samples=600)
    (kept,) = (tmp_path / "wdexp").glob("mnist1d-*.npz")
    assert not [p for p in kept.parent.iterdir() if p.name.startswith(".")]  # no temp file left

    data._mnist1d.cache_clear()  # as a new process would
    with monkeypatch.context() as m:
        _without_generator(m)
        read = data.mnist1d(num_samples=600)
    for mine, theirs in zip(_tensors(made), _tensors(read), strict=True):
        assert mine.dtype == theirs.dtype and torch.equal(mine, theirs)
    assert read.sha256() == made.sha256() and read.identity == made.identity
    # Other arguments are another set: generated, kept beside it.
    data._mnist1d.cache_clear()
    other = data.mnist1d(num_samples=700)
    assert other.x_train.shape[0] != made.x_train.shape[0]
    assert len(list(kept.parent.glob("mnist1d-*.npz"))) == 2

    for damage in (kept.read_bytes()[:1000], b"not an npz"):
        kept.write_bytes(damage)
        data._mnist1d.cache_clear()
        again = data.mnist1d(num_samples=600)
        assert again.sha256() == made.sha256()
        data._mnist1d.cache_clear()
        with monkeypatch.context() as m:  # replaced by a whole file
            _without_generator(m)
            assert data.mnist1d(num_samples=600).sha256() == made.sha256()

    blocked = tmp_path / "a file"
    blocked.write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocked))  # its wdexp folder cannot be made
    data._mnist1d.cache_clear()
    assert data.mnist1d(num_samples=600).sha256() == made.sha256()
    data._mnist1d.cache_clear()


def test_mnist1d_generator_arguments_are_overrides_and_change_the_hash():
    base, loaded_task = data.load(compose_config("model=cnn").data)
    assert loaded_task == data.Task("cross_entropy", 100, 0, 10)
    smaller, _ = data.load(compose_config("model=cnn", "+data.num_samples=1000").data)
    assert len(smaller.y_train) == 800
    assert base.identity["sha256"] != smaller.identity["sha256"]
    assert smaller.identity["generator.num_samples"] == "1000"


@pytest.mark.slow
def test_a_network_on_mnist1d_logs_the_datas_identity_as_params(run_job, read_store):
    pair_id = run_job("model=cnn", "epochs=1", "data.batch_size=500")
    pair = read_store().client.get_run(pair_id)
    params = pair.data.params
    assert params["data._target_"] == "wdexp.data.mnist1d"
    assert params["data.generator.final_seq_length"] == "40"
    assert params["data.n_train"] == "4000" and params["data.n_test"] == "1000"
    assert params["data.sha256"] == data.mnist1d().sha256()
    assert pair.data.tags["wdexp.data"] == "mnist1d"


def test_the_paper_cnn_and_mlp_have_the_papers_shapes():
    pair = study.build(compose_config("model=cnn"))
    assert sum(p.numel() for p in pair.arms[0].model.parameters()) == 5210
    mlp = study.build(compose_config("model=mnist1d_mlp"))
    assert sum(p.numel() for p in mlp.arms[0].model.parameters()) == 15210


@pytest.mark.parametrize("loss", ["cross_entropy", "mse"])
def test_full_batch_network_takes_one_step_per_epoch(loss):
    pair = study.build(compose_config("model=bn_mlp", "data.batch_size=null", f"data.loss={loss}",
                                      "epochs=3"))
    from wdexp import engine
    from wdexp.models.contract import MiniBatched

    assert not isinstance(pair.arms[0].model, MiniBatched)
    steps = list(engine.train(pair.arms, 3))
    losses = [s.metrics["decay"]["loss"] for s in steps]
    assert len(set(losses)) == 4 and losses[-1] < losses[0]
    assert all(s.metrics["decay"]["test_accuracy"] <= 1 for s in steps)


def test_batchnorm_running_statistics_are_untouched_by_the_step_0_record():
    pair = study.build(compose_config("model=bn_mlp", "epochs=1"))
    arm = pair.arms[0]
    from wdexp import engine

    before = [b.clone() for b in arm.model.buffers()]
    steps = engine.train(pair.arms, 1)
    next(steps)  # step 0 only
    assert all(torch.equal(a, b) for a, b in zip(before, arm.model.buffers(), strict=True))
    next(steps)  # an epoch of updates moves them
    assert not torch.equal(before[0], next(iter(arm.model.buffers())))


def test_a_fraction_of_the_training_set_and_the_decays_timescale_as_params():
    whole, _ = data.load(compose_config("model=mlp").data)
    half, _ = data.load(compose_config("model=mlp", "data.fraction=0.5").data)
    assert len(half.y_train) == round(len(whole.y_train) / 2)
    assert torch.equal(half.x_train, whole.x_train[:len(half.y_train)])
    assert torch.equal(half.x_test, whole.x_test)  # the test set stays whole
    with pytest.raises(data.ConfigError, match=r"^data.fraction must be a share"):
        data.load(compose_config("model=mlp", "data.fraction=1.5").data)
    pair = study.build(compose_config("model=mlp", "data.fraction=0.5", "optimizer=adamw",
                                      "optimizer.lr=0.002", "optimizer.weight_decay=0.5"))
    steps_per_epoch = math.ceil(len(half.y_train) / 32)
    assert pair.params()["tau_iter"] == "1000"  # 1/(ηλ)
    assert float(pair.params()["tau_epoch"]) == pytest.approx(1000 / steps_per_epoch, rel=1e-5)
    coupled = study.build(compose_config("model=mlp", "optimizer=adam"))
    assert "tau_iter" not in coupled.params()  # decay inside Adam's gradient: no EMA timescale

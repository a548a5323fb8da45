"""Bad input: one line naming the key and value, before anything exists in the store."""

from __future__ import annotations

import socket
import time

import pytest
import torch

from tests.conftest import StoreReader, cli, compose_config
from wdexp import study
from wdexp.config import ConfigError

BAD_INPUTS = [
    ("optimizer.lr=-0.01", "optimizer.lr must be a finite number > 0 (got -0.01)"),
    ("optimizer.lr=0", "optimizer.lr must be a finite number > 0 (got 0)"),
    ("optimizer.lr=nan", "optimizer.lr must be a finite number > 0 (got nan)"),
    ("optimizer.lr=inf", "optimizer.lr must be a finite number > 0 (got inf)"),
    ("optimizer.lr=fast", "optimizer.lr must be a finite number > 0 (got 'fast')"),
    ("optimizer.weight_decay=-0.1", "optimizer.weight_decay must be a finite number >= 0 "
                                    "(got -0.1)"),
    ("optimizer.weight_decay=inf", "optimizer.weight_decay must be a finite number >= 0 "
                                   "(got inf)"),
    ("optimizer.momentum=1", "optimizer.momentum must be a finite number >= 0 and < 1 (got 1)"),
    ("optimizer.momentum=-0.5", "optimizer.momentum must be a finite number >= 0 and < 1 "
                                "(got -0.5)"),
    ("+optimizer.betas=[0.9,0.99]", "optimizer.betas is not an argument of torch.optim.sgd.SGD "
                                    "(got [0.9, 0.99])"),
    ("optimizer._target_=torch.nn.Linear", "optimizer._target_ must name a torch.optim."
                                           "Optimizer class (got 'torch.nn.Linear')"),
    ("epochs=0", "epochs must be a positive integer (got 0)"),
    ("epochs=-3", "epochs must be a positive integer (got -3)"),
    ("epochs=2.5", "epochs must be a positive integer (got 2.5)"),
    ("epochs=true", "epochs must be a positive integer (got True)"),
    ("seed=zero", "seed must be an integer (got 'zero')"),
    ("seed=1180591620717411303424", "seed must be an integer >= -2**63 and < 2**64, the range "
                                    "torch accepts (got 1180591620717411303424)"),
    ("seed=18446744073709551616", "seed must be an integer >= -2**63 and < 2**64, the range "
                                  "torch accepts (got 18446744073709551616)"),
    ("seed=-9223372036854775809", "seed must be an integer >= -2**63 and < 2**64, the range "
                                  "torch accepts (got -9223372036854775809)"),
    ("tracking.orphan_after_s=0", "tracking.orphan_after_s must be a finite number >= 1 (got 0)"),
    (f"tracking.experiment={'x' * 257}", "tracking.experiment must be at most 256 characters, "
                                         "the size of MLflow's experiment name column "
                                         "(got 257 characters)"),
    ("model.coefficients=[]", "model.coefficients must be a non-empty list of finite numbers "
                              "(got [])"),
    ("model.coefficients=[1.0,inf]", "model.coefficients must be a non-empty list of finite "
                                     "numbers (got [1.0, inf])"),
    ("model.init=[0.5]", "model.init must have 2 entries, one per weight (got [0.5])"),
    ("model.init=[0.5,nan]", "model.init must be a non-empty list of finite numbers "
                             "(got [0.5, nan])"),
    ("+model.width=3", "model.width is not an argument of wdexp.models.quadratic.Quadratic "
                      "(got 3)"),
    ("model._target_=torch.optim.SGD", "model._target_ must name a torch.nn.Module class "
                                       "(got 'torch.optim.SGD')"),
    ("model._target_=torch.nn.Identity", "data must be chosen for model._target_=torch.nn."
                                         "Identity, a plain nn.Module (e.g. data=digits or "
                                         "data=mnist1d)"),
    ("data=digits", "data is chosen, but model._target_ (wdexp.models.Quadratic) brings its "
                     "own data and loss (it defines loss() and metrics()); drop the data choice"),
    ("model=mlp data.loss=hinge", "data.loss must be one of cross_entropy, mse (got 'hinge')"),
    ("model=mlp data.batch_size=0", "data.batch_size must be a positive integer (got 0)"),
    ("model=mlp data.classes=5", "data.classes is too small for the data's labels (up to 9) "
                                 "(got 5)"),
    ("model=mlp data.features=63", "data.features does not match the data (64 features) "
                                   "(got 63)"),
    ("model=mlp data._target_=os.getcwd", "data.test_fraction is not an argument of posix."
                                          "getcwd (got 0.25)"),
    ("model=mlp +data.colour=red", "data.colour is not an argument of wdexp.data.digits "
                                   "(got 'red')"),
    ("model=mlp data=mnist1d +data.num_sample=9", "data.num_sample is not an argument of "
                                                  "mnist1d's get_dataset_args() (got 9)"),
    ("model=mlp model.hidden=[0]", "model.hidden must be a positive integer (got 0)"),
    ("model=bn_mlp model.bn_eps=-1", "model.bn_eps must be a finite number >= 0 (got -1)"),
    ("model=cnn model.in_features=2", "model.in_features is too short for three stride-2 "
                                      "convolutions (got 2)"),
    ("scheduler=cosine scheduler.T_max=0", "scheduler.T_max must be a positive integer (got 0)"),
    ("scheduler=exponential scheduler.gamma=-1", "scheduler.gamma must be a finite number >= 0 "
                                                 "(got -1)"),
    ("scheduler._target_=torch.optim.SGD", "scheduler._target_ must name a torch.optim."
                                           "lr_scheduler class or a function returning one "
                                           "(got 'torch.optim.SGD')"),
    ("+scheduler.optimizer=x", "scheduler.optimizer is the arm's optimizer, given by wdexp "
                               "(got 'x')"),
    ("arms.baseline.optimizer.lr=-1", "arms.baseline.optimizer.lr must be a finite number > 0 "
                                      "(got -1)"),
    ("+arms.baseline.model.hidden=3", "arms.baseline.model is not a group an arm can change "
                                      "(optimizer, scheduler)"),
    ("+arms.treated.optimizer.lr=3", "arms.treated is not an arm: only arms.baseline can be "
                                     "set"),
    ("optimizer.decay_mode=sideways", "optimizer.decay_mode must be one of native, coupled, "
                                      "decoupled, independent, penalty (got 'sideways')"),
    ("optimizer.no_decay=bias", "optimizer.no_decay must be a list of parameter-name patterns "
                                "or null (got 'bias')"),
    ("model.dtype=float16", "model.dtype must be one of float32, float64 (got 'float16')"),
    ("device=toaster", "device must be a torch device string such as cpu or cuda "
                       "(got 'toaster')"),
]


@pytest.mark.parametrize(("override", "message"), BAD_INPUTS, ids=[o for o, _ in BAD_INPUTS])
def test_bad_value_is_rejected_with_its_key(override, message):
    with pytest.raises(ConfigError) as caught:
        study.build(compose_config(*override.split()))
    assert str(caught.value) == message


@pytest.mark.parametrize("overrides", [
    ("model=ridge", "model.data_seed=18446744073709551616"),
    ("model=mlp", "data.batch_seed=-9223372036854775809"),
])
def test_model_seeds_are_checked_against_torchs_range(overrides):
    key = overrides[1].split("=")[0]
    with pytest.raises(ConfigError, match=rf"^{key} must be an integer >= -2\*\*63 and < 2\*\*64"):
        study.build(compose_config(*overrides))


@pytest.mark.parametrize("seed", [-2**63, 2**64 - 1])
def test_seeds_at_the_ends_of_torchs_range_run(seed):
    """Every model, the mlp's per-epoch batch order (derived from the seed) included."""
    for model in ("quadratic", "ridge", "mlp"):
        pair = study.build(compose_config(f"model={model}", f"seed={seed}"))
        assert pair.job.seed == seed
        if model == "mlp":
            assert next(iter(pair.arms[0].model.batches(3))).isfinite()


def test_longest_experiment_name_mlflow_stores_is_accepted():
    assert study.build(compose_config(f"tracking.experiment={'x' * 256}")).job.tracking


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_device_without_cuda_is_a_config_error():
    with pytest.raises(ConfigError, match=r"^device names CUDA"):
        study.build(compose_config("device=cuda"))


def test_cli_prints_one_line_and_leaves_no_store(tmp_path, new_store_uri):
    result = cli(f"tracking.uri={new_store_uri}", "optimizer.lr=-0.01", tmp_path=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip() == "wdexp: optimizer.lr must be a finite number > 0 (got -0.01)"
    assert "Traceback" not in result.stdout + result.stderr
    assert not (tmp_path / "mlflow.db").exists()


@pytest.mark.parametrize(("override", "key"), [
    ("seed=1180591620717411303424", "seed"),  # was torch's "Overflow" traceback
    (f"tracking.experiment={'x' * 5000}", "tracking.experiment"),  # was blamed on tracking.uri
], ids=["seed", "experiment"])
def test_cli_rejects_edge_values_in_one_line_before_any_store_exists(tmp_path, new_store_uri,
                                                                     override, key):
    result = cli(f"tracking.uri={new_store_uri}", override, tmp_path=tmp_path)
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"wdexp: {key} must be ")
    assert len(line) < 200
    assert "Traceback" not in result.stdout + result.stderr
    assert not (tmp_path / "mlflow.db").exists()


def test_cli_bad_value_adds_no_run_to_an_existing_store(tmp_path, store_uri, run_job):
    run_job("epochs=2")
    before = {run.info.run_id: run.info.status for run in StoreReader(store_uri).runs()}
    result = cli(f"tracking.uri={store_uri}", "model.init=[1,2,3]", tmp_path=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().startswith("wdexp: model.init must have 2 entries")
    after = {run.info.run_id: run.info.status for run in StoreReader(store_uri).runs()}
    assert after == before


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_unreachable_tracking_server_fails_fast_naming_the_uri(tmp_path):
    uri = f"http://user:hunter2@127.0.0.1:{_closed_port()}"
    started = time.monotonic()
    # connect_wait_s=0: no wait for a server to start (tests/system/test_first_contact.py)
    result = cli(f"tracking.uri={uri}", "tracking.connect_wait_s=0", tmp_path=tmp_path,
                 timeout=60, env={"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "7"})  # a patient user
    elapsed = time.monotonic() - started
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("wdexp: tracking.uri cannot be used")
    assert uri.replace("hunter2", "***") in line
    assert "hunter2" not in result.stdout + result.stderr
    assert elapsed < 30

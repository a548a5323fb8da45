"""The command line as a user meets it: help, overrides, reproducibility across processes."""

from __future__ import annotations

import random
import re
import subprocess
from pathlib import Path

import pytest
import torch

from tests.conftest import PYTHON, StoreReader, child_env, cli, copy_store, popen
from tests.jobs import start
from wdexp.config import ROOT


def test_help_describes_wdexp_groups_and_examples(tmp_path):
    result = cli("--help", tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    text = result.stdout
    assert "wdexp: paired weight-decay experiments" in text
    assert "optimizer: adam, adamw, sgd, sgd_momentum, sgd_wd" in text
    assert "model: bn_mlp, cnn, mlp, mnist1d_mlp, quadratic, ridge" in text
    assert "scheduler: constant, cosine, exponential, step, warmup_cosine" in text
    assert "data: digits, mnist1d" in text
    assert "python -m wdexp.train optimizer.weight_decay=0.1" in text


def _histories(reader: StoreReader) -> dict[tuple[str, str], list[tuple[int, float]]]:
    (pair,) = reader.runs("pair")
    return {(arm, key): reader.history(run.info.run_id, key)
            for arm, run in reader.arms(pair.info.run_id).items()
            for key in ("loss", "w_1", "w_2", "weight_norm")}


@pytest.mark.slow
def test_same_config_and_seed_give_bit_identical_metrics_in_two_processes(tmp_path, run_job,
                                                                         store_uri,
                                                                         template_store):
    """One job here, one in a fresh process started by the console script `wdexp-train`
    (the same program as `python -m wdexp.train`): every logged value must match exactly."""
    run_job("seed=0", "optimizer.weight_decay=0.1", "epochs=40")
    other = copy_store(template_store, tmp_path / "other.db")
    result = subprocess.run([Path(PYTHON).parent / "wdexp-train", f"tracking.uri={other}",
                             "seed=0", "optimizer.weight_decay=0.1", "epochs=40",
                             f"hydra.run.dir={tmp_path}/run"], capture_output=True, text=True,
                            timeout=120, cwd=tmp_path, env=child_env())
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "run" / "train.log").exists()  # the job's name, as under python -m
    here, there = _histories(StoreReader(store_uri)), _histories(StoreReader(other))
    assert here == there
    assert len(here[("decay", "loss")]) == 41
    # The override reached the decay arm only.
    (pair,) = StoreReader(other).runs("pair")
    arms = StoreReader(other).arms(pair.info.run_id)
    assert arms["decay"].data.params["optimizer.weight_decay"] == "0.1"
    assert arms["baseline"].data.params["optimizer.weight_decay"] == "0.0"


def _every_history(uri: str, key: str, value: str) -> dict[tuple[str, str], list]:
    """Every metric of the pair run whose ``key`` param is ``value`` and of both its arm runs,
    keyed by (run, metric), all steps."""
    reader = StoreReader(uri)
    (pair,) = [p for p in reader.runs("pair") if p.data.params[key] == value]
    runs = {"pair": pair, **reader.arms(pair.info.run_id)}
    return {(name, metric): reader.history(run.info.run_id, metric)
            for name, run in runs.items() for metric in run.data.metrics}


@pytest.mark.slow
@pytest.mark.parametrize(("model", "epochs", "other", "keys"), [
    # Ridge starts from zeros on data drawn from model.data_seed: that is its only randomness.
    ("ridge", 20, "model.data_seed", {"loss", "w_1", "w_5", "distance_to_solution"}),
    # The mlp's init and mini-batch order come from seed.
    ("mlp", 2, "seed", {"loss", "test_loss", "test_accuracy", "norm.layers.0.weight"}),
    # MNIST-1D generated in each process (1000 samples, not 5000: seconds each), the CNN's
    # init, a cosine schedule.
    ("cnn", 1, "seed", {"loss", "test_accuracy", "lr", "norm.conv1.weight"}),
], ids=["ridge", "mlp", "cnn"])
def test_ridge_mlp_and_cnn_give_bit_identical_metrics_in_two_processes(tmp_path, template_store,
                                                                    run_job, store_uri,
                                                                    model, epochs, other, keys):
    """The job alone in this process (a long-lived one: other tests ran in it before), and in a
    fresh command-line process in a sweep of two (the first job of a sweep runs beside its sweep
    run; the second, with ``other`` changed, after another job in the same process): the same
    job must match in every bit, the changed one must not."""
    extra = (["scheduler=cosine", "data.batch_size=400", "+data.num_samples=1000"]
             if model == "cnn" else [])
    swept = copy_store(template_store, tmp_path / "swept" / "mlflow.db")
    job = start(f"tracking.uri={swept}", f"model={model}", f"epochs={epochs}", *extra,
                f"{other}=0,1", tmp_path=tmp_path / "swept", multirun=True)
    run_job(f"model={model}", f"epochs={epochs}", *extra)  # while the other process runs
    output, _ = job.finish(timeout=300)
    assert job.returncode == 0, output
    first = _every_history(store_uri, other, "0")
    second, different = (_every_history(swept, other, value) for value in ("0", "1"))

    for arm in ("baseline", "decay"):
        arm_keys = {key for run, key in first if run == arm}
        assert keys | {"weight_norm", "grad_norm", "decay_grad_ratio"} <= arm_keys
        for key in arm_keys:
            # A layer's step geometry describes the steps before a record: none at step 0; its
            # equilibrium ratio is the last step's alone.
            begins = epochs if key.startswith("equilibrium_ratio/") else 1 if "/" in key else 0
            assert [step for step, _ in first[(arm, key)]] == list(range(begins, epochs + 1)), key
    assert {"decay.final_loss", "baseline.final_weight_norm"} <= {k for _, k in first}
    # Every key, every step, compared as floats with ==: nothing may differ in the last bit.
    assert first == second
    assert set(different) == set(first)
    for arm in ("baseline", "decay"):
        assert different[(arm, "loss")] != first[(arm, "loss")]


def test_seed_zero_is_a_real_seed(run_job, read_store):
    pairs = {seed: run_job(f"seed={seed}", "epochs=1") for seed in (0, 1)}
    reader = read_store()
    init = {seed: reader.history(reader.arms(pair)["baseline"].info.run_id, "w_1")[0][1]
            for seed, pair in pairs.items()}
    for seed in (0, 1):
        random.seed(seed)
        assert init[seed] == torch.tensor(random.random()).item()  # float32, as logged
    assert init[0] != init[1]


@pytest.mark.slow
def test_a_terminal_gets_a_progress_bar_and_a_pipe_does_not(tmp_path, store_uri):
    import fcntl
    import os
    import pty
    import struct
    import subprocess
    import termios

    from tests.conftest import PYTHON

    args = [PYTHON, "-m", "wdexp.train", f"hydra.run.dir={tmp_path}/outputs",
            f"tracking.uri={store_uri}", "epochs=2000"]  # long enough for the bar to refresh
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))  # 120 columns
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=follower, cwd=tmp_path)
    os.close(follower)
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 4096)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    assert proc.wait(timeout=120) == 0
    os.close(leader)
    terminal = b"".join(chunks).decode(errors="replace")
    assert "sgd_wd lr=0.01 wd=0.01 seed=0:" in terminal and "/2001" in terminal
    assert "decay loss=" in terminal

    piped = cli(f"tracking.uri={store_uri}", "epochs=20", tmp_path=tmp_path)
    assert piped.returncode == 0
    assert "decay loss=" not in piped.stderr and "epoch/s" not in piped.stderr


@pytest.mark.slow
def test_a_job_logs_its_pair_run_id_when_it_starts_and_finishes(tmp_path, store_uri):
    # One pipe for stdout and stderr keeps the lines in the order they were written.
    job = popen(f"tracking.uri={store_uri}", "epochs=3", tmp_path=tmp_path)
    output, _ = job.communicate(timeout=120)
    assert job.returncode == 0, output
    (pair,) = StoreReader(store_uri).runs("pair")
    lines = output.splitlines()
    started = [(i, m[1]) for i, line in enumerate(lines)
               if (m := re.search(r"\bpair run (\S+) started: \S", line))]
    finished = [(i, m[1]) for i, line in enumerate(lines)
                if (m := re.search(r"\bpair run (\S+) finished: \S", line))]
    assert [run_id for _, run_id in started] == [pair.info.run_id], output
    assert [run_id for _, run_id in finished] == [pair.info.run_id], output
    assert started[0][0] < finished[0][0]


def test_importing_the_entrypoint_starts_no_process(tmp_path):
    # Tests and notebooks import wdexp.train; only running a job starts its tracking process.
    code = ("import wdexp.train, wdexp.tracking.client as c, multiprocessing as mp; "
            "assert c._client is None and not mp.active_children(); print('idle')")
    result = subprocess.run([PYTHON, "-c", code], capture_output=True, text=True, timeout=120,
                            cwd=tmp_path, env=child_env())
    assert result.returncode == 0 and result.stdout.strip() == "idle", result.stderr


def test_wdexp_ui_says_how_it_is_used():
    ui = subprocess.run([Path(PYTHON).parent / "wdexp-ui", "--help"], capture_output=True,
                        text=True, timeout=60, env=child_env())
    assert ui.returncode == 0 and "--port" in ui.stdout and "--store" in ui.stdout


def test_make_help_lists_every_target_with_one_line():
    makefile = (ROOT / "Makefile").read_text()
    targets = {m for m in re.findall(r"^([a-z][a-z-]*):", makefile, re.MULTILINE)}
    result = subprocess.run(["make", "--no-print-directory", "help"], cwd=ROOT,
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    listed = re.findall(r"^  make ([a-z-]+)\b.*: \S", result.stdout, re.MULTILINE)
    assert sorted(listed) == sorted(targets)


def test_a_kernel_gets_the_notebook_bar_only_where_widgets_can_show_it(monkeypatch):
    import importlib.util
    import sys

    from tqdm.notebook import tqdm as notebook_tqdm

    from wdexp import progress

    monkeypatch.setattr(sys.stderr, "isatty", lambda: False)  # a kernel's stream, a pipe
    monkeypatch.delitem(sys.modules, "ipykernel", raising=False)
    assert progress._bar_class() is None  # a pipe
    monkeypatch.setitem(sys.modules, "ipykernel", object())
    found = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name: None if name == "ipywidgets" else found(name))
    assert progress._bar_class() is None  # nbclient, no widgets: quiet
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: object())
    assert progress._bar_class() is notebook_tqdm

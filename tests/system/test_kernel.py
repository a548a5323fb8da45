"""wdexp from a real Jupyter kernel (ipykernel, driven with jupyter_client): the interrupt
button mid-run ends both runs KILLED with every trained step written, raises
KeyboardInterrupt in the cell, and the kernel lives on: the next ``wdexp.run`` works, and the
kernel's own SIGINT handler is back. A ``wdexp.sweep`` interrupted the same way ends its pair and
its sweep run KILLED and starts no later job. A kernel restarted mid-run leaves no run RUNNING."""

from __future__ import annotations

import os
import time

import psutil
import pytest

from tests.conftest import StoreReader, child_env
from tests.jobs import training, wait_for

jupyter_client = pytest.importorskip("jupyter_client", reason="the notebook extra")


def _execute(client, code: str, timeout: float = 180) -> dict:
    """Run a cell; its reply's content, the text it printed under ``"stdout"``."""
    msg_id = client.execute(code)
    printed = []
    deadline = time.monotonic() + timeout
    while True:
        message = client.get_iopub_msg(timeout=max(deadline - time.monotonic(), 1))
        if message["parent_header"].get("msg_id") != msg_id:
            continue
        if message["msg_type"] == "stream":
            printed.append(message["content"]["text"])
        if message["msg_type"] == "status" and message["content"]["execution_state"] == "idle":
            break
    reply = _reply(client, msg_id, timeout=max(deadline - time.monotonic(), 1))
    return {**reply["content"], "stdout": "".join(printed)}


def _reply(client, msg_id: str, timeout: float) -> dict:
    """The shell reply to ``msg_id``; replies to earlier requests (the kernel_info the start
    sent) are passed over."""
    deadline = time.monotonic() + timeout
    while True:
        reply = client.get_shell_msg(timeout=max(deadline - time.monotonic(), 0.1))
        if reply["parent_header"].get("msg_id") == msg_id:
            return reply


@pytest.fixture
def kernel(tmp_path):
    manager, client = jupyter_client.manager.start_new_kernel(
        kernel_name="python3", cwd=str(tmp_path),
        env=child_env({"JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime")}))
    pid = manager.provisioner.pid
    try:
        yield manager, client
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)
        with_children = [p for p in psutil.process_iter() if p.pid == pid]
        assert not [p for p in with_children if p.is_running() and p.status() != "zombie"]


def test_the_interrupt_button_ends_the_runs_killed_and_the_kernel_runs_the_next(kernel,
                                                                                 tmp_path,
                                                                                 store_uri):
    manager, client = kernel
    where = f"'tracking.uri={store_uri}', 'hydra.run.dir={tmp_path}/outputs'"
    before = _execute(client, "import signal, wdexp; handler = signal.getsignal(signal.SIGINT)")
    assert before["status"] == "ok", before
    msg_id = client.execute(f"wdexp.run({where}, 'epochs=100000000')")
    reader = StoreReader
    wait_for(lambda: os.path.exists(store_uri.removeprefix("sqlite:///"))
             and training(reader(store_uri), 1), "the pair training", timeout=120)
    manager.interrupt_kernel()
    reply = _reply(client, msg_id, timeout=60)
    assert reply["content"]["status"] == "error"
    assert reply["content"]["ename"] == "KeyboardInterrupt", reply["content"]

    store = reader(store_uri)
    (pair,) = store.runs("pair")
    wait_for(lambda: reader(store_uri).runs("pair")[0].info.status == "KILLED",
             "the pair run KILLED", timeout=30)
    for arm in store.arms(pair.info.run_id).values():
        assert reader(store_uri).client.get_run(arm.info.run_id).info.status == "KILLED"
        steps = [step for step, _ in store.history(arm.info.run_id, "loss")]
        assert steps == list(range(len(steps))) and steps  # every trained step, in order

    # A sweep interrupted in the same kernel: its running pair and its sweep run end KILLED,
    # no later job starts, and KeyboardInterrupt reaches the cell as well.
    msg_id = client.execute(f"wdexp.sweep('tracking.uri={store_uri}', "
                            f"'hydra.sweep.dir={tmp_path}/sweep', "
                            "'optimizer.weight_decay=0.01,0.1', 'epochs=100000000')")
    wait_for(lambda: len(reader(store_uri).runs("pair")) == 2 and training(reader(store_uri), 2),
             "the sweep's first pair training", timeout=120)
    manager.interrupt_kernel()
    reply = _reply(client, msg_id, timeout=60)
    assert reply["content"]["ename"] == "KeyboardInterrupt", reply["content"]
    wait_for(lambda: {r.info.status for r in reader(store_uri).runs()} == {"KILLED"},
             "every run of the sweep ended", timeout=30)
    assert len(reader(store_uri).runs("pair")) == 2  # the second job never started
    (sweep,) = reader(store_uri).runs("sweep")
    assert sweep.info.status == "KILLED"

    after = _execute(client, f"r = wdexp.run({where}, 'epochs=3'); "
                             "print(r.status, len(r.table()), signal.getsignal(signal.SIGINT) "
                             "is handler)")
    assert after["status"] == "ok", after
    assert after["stdout"].split()[-3:] == ["FINISHED", "4", "True"], after["stdout"]

    # Restarting the kernel mid-run (it is killed): its tracking process ends the runs KILLED.
    client.execute(f"wdexp.run({where}, 'epochs=100000000', 'seed=1')")
    wait_for(lambda: len(reader(store_uri).runs("pair")) == 4 and training(reader(store_uri), 4),
             "the fourth pair training", timeout=120)
    manager.restart_kernel(now=True)
    wait_for(lambda: {r.info.status for r in reader(store_uri).runs()} == {"FINISHED", "KILLED"},
             "no run RUNNING after the restart", timeout=60)

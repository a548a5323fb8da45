"""A job's first contact with a tracking server (wdexp/tracking/first_contact.py), on a real
``mlflow server`` on 127.0.0.1: one not listening yet is waited for, one that is stalled is
waited for within ``tracking.timeout_s``, one that refuses the host name fails at once; each
failure is one line and exit 2, and a stop signal ends the wait at once."""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import time
from contextlib import closing

import pytest

from tests.conftest import StoreReader, free_port
from tests.jobs import start, wait_for
from tests.servers import start_mlflow_server

# One worker runs these one at a time; their bounds are loose enough (start-up under load) to
# run beside the "timing" group's tight ones, on the other worker.
pytestmark = pytest.mark.xdist_group("first_contact")

WAITING = "waiting up to"


def error_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("wdexp: ")]


def test_a_server_that_starts_after_the_job_is_waited_for_and_said_once(tmp_path):
    port = free_port()
    # a server starts in 5-30 s on a busy 2-core machine: the wait outlasts that here
    job = start(f"tracking.uri=http://127.0.0.1:{port}", "epochs=3",
                "tracking.connect_wait_s=120", tmp_path=tmp_path)
    wait_for(lambda: WAITING in job.output, "the job to say it waits", timeout=60, job=job)
    server = start_mlflow_server(tmp_path, port)
    try:
        output, _ = job.finish(timeout=120)
        assert job.returncode == 0, output
        assert output.count(WAITING) == 1 and "(tracking.connect_wait_s)" in output, output
        assert {run.info.status for run in StoreReader(server.url).runs()} == {"FINISHED"}
    finally:
        server.kill()


def test_a_stalled_server_is_waited_for_and_the_job_runs_normally(tmp_path):
    # --allowed-hosts as docs/team.md gives it: the host name and port in tracking.uri
    port = free_port()
    server = start_mlflow_server(tmp_path, port, "--allowed-hosts", f"127.0.0.1:{port}")
    try:
        server.pause()  # it holds the port: connections are taken, nothing answers
        job = start(f"tracking.uri={server.url}", "epochs=3", tmp_path=tmp_path)
        time.sleep(15)
        assert job.poll() is None, job.output
        server.resume()
        output, _ = job.finish(timeout=120)
        assert job.returncode == 0, output
        assert not error_lines(output) and WAITING not in output, output
        assert {run.info.status for run in StoreReader(server.url).runs()} == {"FINISHED"}
    finally:
        server.kill()


def test_nothing_listening_fails_after_the_wait_with_one_line(tmp_path):
    url = f"http://127.0.0.1:{free_port()}"
    job = start(f"tracking.uri={url}", "tracking.connect_wait_s=3", tmp_path=tmp_path)
    output, took = job.finish(timeout=60)
    assert job.returncode == 2, output
    assert error_lines(output) == [
        f"wdexp: tracking.uri cannot be used: nothing listens there yet after waiting 3 s "
        f"(tracking.connect_wait_s) (got '{url}')"], output
    # start-up (up to ~20 s on a loaded 2-core machine) and the 3 s: not MLflow's minutes of
    # retries
    assert took < 40, f"{took:.1f} s"
    assert "Traceback" not in output


def test_a_server_refusing_the_host_name_fails_at_once_saying_why(tmp_path):
    server = start_mlflow_server(tmp_path, free_port(), "--allowed-hosts", "tracking.example")
    try:
        job = start(f"tracking.uri={server.url}", tmp_path=tmp_path)
        output, took = job.finish(timeout=60)
        assert job.returncode == 2, output
        [line] = error_lines(output)
        assert re.search(r"tracking.uri cannot be used: .*403.*Invalid Host header.*"
                         r"--allowed-hosts", line), line
        assert took < 40 and WAITING not in output, f"{took:.1f} s"  # start-up, no retries
        with closing(sqlite3.connect(tmp_path / "server.db")) as db:  # the server's own store
            assert db.execute("select count(*) from runs").fetchone() == (0,)
    finally:
        server.kill()


def test_a_stop_signal_ends_the_wait_for_a_server_at_once(tmp_path):
    job = start(f"tracking.uri=http://127.0.0.1:{free_port()}", tmp_path=tmp_path)
    wait_for(lambda: WAITING in job.output, "the job to say it waits", timeout=60, job=job)
    os.killpg(job.pid, signal.SIGTERM)
    output, took = job.finish(timeout=30)
    assert job.returncode == 143, output
    assert took < 10, f"{took:.1f} s"
    assert "Traceback" not in output

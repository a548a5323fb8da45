"""`make ui`: the MLflow UI for the checkout's default store, on loopback."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.request

from tests.conftest import free_port
from wdexp.config import ROOT


def test_make_ui_serves_the_default_store_on_loopback():
    port = free_port()
    proc = subprocess.Popen(["make", "--no-print-directory", "ui", f"PORT={port}"], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, proc.stdout.read()
            try:
                url = f"http://127.0.0.1:{port}/api/2.0/mlflow/experiments/search?max_results=5"
                with urllib.request.urlopen(url, timeout=2) as response:
                    body = json.load(response)
                break
            except OSError:
                assert time.monotonic() < deadline, "the UI did not answer in time"
                time.sleep(0.5)
        assert "experiments" in body
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)

"""Who owns a RUNNING run: the owner check a later job uses to end runs of jobs that died."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from wdexp.tracking.orphans import STALE_S, _gone, _start_ticks, owner

HOST = socket.gethostname()


def test_this_process_owns_its_runs():
    assert _gone(owner(), None, time.time()) is None


def test_an_exited_process_is_gone_even_as_an_unreaped_zombie():
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    tag = f"{HOST} {child.pid} {_start_ticks(child.pid)}"
    deadline = time.monotonic() + 30
    stat = Path(f"/proc/{child.pid}/stat")
    while stat.read_text().rsplit(")", 1)[1].split()[0] != "Z":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert "is gone" in _gone(tag, None, time.time())  # exited, not yet waited for
    child.wait()
    assert "is gone" in _gone(tag, None, time.time())  # and reaped


def test_a_reused_pid_is_not_the_owner():
    assert "is gone" in _gone(f"{HOST} {os.getpid()} 1", None, time.time())


def test_another_hosts_owner_is_gone_only_once_its_heartbeat_is_stale():
    now = time.time()
    assert _gone("elsewhere 123 456", str(now - 60), now) is None
    assert "no heartbeat from elsewhere" in _gone("elsewhere 123 456", str(now - STALE_S - 1),
                                                  now)
    assert _gone("elsewhere 123 456", None, now) is None  # no heartbeat yet: not ours to judge

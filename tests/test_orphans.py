"""Who owns a RUNNING run: the owner check a later job uses to end runs of jobs that died."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from wdexp.tracking.orphans import _gone, _stale_after, _start_ticks, beat_period, owner
from wdexp.vocabulary import DEFAULT_ORPHAN_AFTER_S

HOST = socket.gethostname()


def test_this_process_owns_its_runs():
    assert _gone(owner(), None, 600, time.time()) is None


def test_an_exited_process_is_gone_even_as_an_unreaped_zombie():
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    tag = f"{HOST} {child.pid} {_start_ticks(child.pid)}"
    deadline = time.monotonic() + 30
    stat = Path(f"/proc/{child.pid}/stat")
    while stat.read_text().rsplit(")", 1)[1].split()[0] != "Z":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert "is gone" in _gone(tag, None, 600, time.time())  # exited, not yet waited for
    child.wait()
    assert "is gone" in _gone(tag, None, 600, time.time())  # and reaped


def test_a_reused_pid_is_not_the_owner():
    assert "is gone" in _gone(f"{HOST} {os.getpid()} 1", None, 600, time.time())


def test_another_hosts_owner_is_gone_only_once_its_heartbeat_is_stale():
    now = time.time()
    assert _gone("elsewhere 123 456", str(now - 60), 600, now) is None
    assert _gone("elsewhere 123 456", str(now - 601), 600, now) == (
        "no heartbeat from elsewhere for 10 min (tracking.orphan_after_s=600)")
    # The staleness is the one its owner promised (tracking.orphan_after_s, a tag on the run).
    assert _gone("elsewhere 123 456", str(now - 7), 6, now) == (
        "no heartbeat from elsewhere for 7 s (tracking.orphan_after_s=6)")
    assert _gone("elsewhere 123 456", str(now - 5), 6, now) is None
    assert _gone("elsewhere 123 456", None, 6, now) is None  # no heartbeat yet: not ours to judge


def test_an_owner_beats_five_times_within_its_staleness_and_old_runs_get_the_default():
    assert beat_period(600) == 30 and beat_period(6) == 1.2
    assert _stale_after("6") == 6
    for missing in (None, "", "soon", "nan", "-1", "0"):  # a run from before the tag, or garbled
        assert _stale_after(missing) == DEFAULT_ORPHAN_AFTER_S

"""A real one-node Ray cluster of a test's own, on loopback (the ``ray_cluster`` fixture in
tests/system/conftest.py), and how to find and stop what it started."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class RayCluster:
    address: str  # host:port of its GCS
    session: int  # the head's pid, which is its session's id: every process it started


# Ray 2.x turns --node-ip-address=127.0.0.1 into the machine's outward address unless its
# single-machine mode is on; the driver must be in that mode too to find the node.
RAY_LOOPBACK = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
                # SIGTERM otherwise drains the node for 30 s before stopping it.
                "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0"}


def session_members(sid: int) -> list[int]:
    """Live processes of a session: what a Ray cluster started with start_new_session left."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            # Fields after the parenthesised command: state, ppid, pgrp, session.
            fields = (entry / "stat").read_text().rpartition(")")[2].split()
        except OSError:  # gone meanwhile
            continue
        if int(fields[3]) == sid and fields[0] != "Z":
            members.append(int(entry.name))
    return members


def stop_session(head: subprocess.Popen[bytes], grace: float = 30) -> list[int]:
    """SIGTERM the process group of ``head`` (a session's leader: a Ray cluster, a host's
    process), SIGKILL what is left after ``grace`` seconds; returns what outlived SIGTERM."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(head.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while session_members(head.pid) and time.monotonic() < deadline:
        head.poll()  # reap the head: a zombie leader would count as alive
        time.sleep(0.2)
    survivors = session_members(head.pid)
    for pid in survivors:  # a process of ours that left the group is still in the session
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    head.wait(timeout=30)
    return survivors


def cluster_processes(cluster: RayCluster, title: str) -> list[int]:
    """The cluster's live processes whose command line starts with ``title`` (a Ray worker
    names itself after what it runs: ``ray::_run_job``)."""
    found = []
    for pid in session_members(cluster.session):
        with contextlib.suppress(OSError):
            if Path(f"/proc/{pid}/cmdline").read_bytes().startswith(title.encode()):
                found.append(pid)
    return found

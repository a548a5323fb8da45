"""Tracking process: runs whose owner is gone, found and ended by a later job.

Every pair and sweep run carries its owner — ``host pid start-ticks`` of the tracking process
that keeps it open — and a heartbeat that process refreshes while the run is open. When both
processes of a job die (SIGKILL, a launcher killing both, a machine lost), or the store was out
of reach while they closed, the run stays RUNNING. The next job into the same experiment ends
such runs KILLED, with the reason as a tag: on this host when the owner's process no longer
exists (a pid alone could have been reused, so its start time must match too); from anywhere
when the heartbeat is older than the staleness its owner promised (``tracking.orphan_after_s``,
written on the run as a tag; the owner beats five times within it).
"""

from __future__ import annotations

import math
import os
import socket
import time

from wdexp.tracking.store import Store, search_all, terminate
from wdexp.vocabulary import (
    DEFAULT_ORPHAN_AFTER_S,
    HEARTBEAT_TAG,
    ORPHAN_AFTER_TAG,
    ORPHANED_TAG,
    OWNER_TAG,
    RUN_KIND_TAG,
)

HEARTBEAT_S = 30.0  # at most: a shorter tracking.orphan_after_s beats more often


def _stat(pid: int) -> tuple[str, str] | None:
    """``(state, start ticks)`` of ``pid`` from /proc, or None where it has no entry."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return fields[0], fields[19]


def _start_ticks(pid: int) -> str:
    """When ``pid`` started (clock ticks since boot), or "" where /proc does not tell."""
    found = _stat(pid)
    return found[1] if found else ""


def owner() -> str:
    """This process, as the owner tag names it."""
    return f"{socket.gethostname()} {os.getpid()} {_start_ticks(os.getpid())}"


def beat_period(orphan_after_s: float) -> float:
    """How often an owner refreshes the heartbeat of runs that go stale after
    ``orphan_after_s``: four beats may be missed (a store busy for a while) before they do."""
    return min(HEARTBEAT_S, orphan_after_s / 5)


def _stale_after(tag: str | None) -> float:
    """The staleness a run's owner promised; for runs from before the tag, the default."""
    try:
        value = float(tag or "nan")
    except ValueError:
        return DEFAULT_ORPHAN_AFTER_S
    return value if math.isfinite(value) and value > 0 else DEFAULT_ORPHAN_AFTER_S


def _gone(owner_tag: str, heartbeat: str | None, stale_after: float, now: float) -> str | None:
    """Why the owner is gone, or None while it may still be alive."""
    host, pid, ticks = ([*owner_tag.split(" "), "", ""])[:3]
    if host == socket.gethostname() and pid.isdigit():
        gone = f"its tracking process (pid {pid}) on {host} is gone"
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            return gone
        except PermissionError:  # someone else's process: alive, as far as we can tell
            pass
        found = _stat(int(pid))
        # A zombie (exited, not yet reaped: PID 1 in a container may never reap it) is gone,
        # and so is another process that got the pid since.
        if found is not None and (found[0] in "ZX" or (ticks and found[1] != ticks)):
            return gone
        return None
    try:
        age = now - float(heartbeat or "nan")
    except ValueError:
        return None
    if age > stale_after:
        late = f"{age / 60:.0f} min" if age >= 120 else f"{age:.0f} s"
        return f"no heartbeat from {host} for {late} (tracking.orphan_after_s={stale_after:g})"
    return None


def reap(store: Store) -> list[str]:
    """End every RUNNING run of the experiment whose owner is gone; one line per run ended."""
    now = time.time()
    running = search_all(store, "attributes.status = 'RUNNING'")
    children: dict[str, list[str]] = {}
    for run in running:
        parent = run.data.tags.get("mlflow.parentRunId")
        if parent is not None:
            children.setdefault(parent, []).append(run.info.run_id)
    lines = []
    for run in running:
        tags = run.data.tags
        if tags.get(RUN_KIND_TAG) not in ("pair", "sweep") or OWNER_TAG not in tags:
            continue
        reason = _gone(tags[OWNER_TAG], tags.get(HEARTBEAT_TAG),
                       _stale_after(tags.get(ORPHAN_AFTER_TAG)), now)
        if reason is None:
            continue
        run_id = run.info.run_id
        # A sweep's pairs have owners of their own: only a pair takes its arms along.
        arms = children.get(run_id, []) if tags[RUN_KIND_TAG] == "pair" else []
        for ended in (run_id, *arms):
            store.client.set_tag(ended, ORPHANED_TAG, reason)
        terminate(store.client, [run_id, *arms], "KILLED")
        lines.append(f"ended orphaned {tags[RUN_KIND_TAG]} run {run_id} "
                     f"({run.info.run_name}) KILLED: {reason}")
    return lines


def beat(store: Store, run_ids: list[str]) -> None:
    stamp = str(int(time.time()))
    for run_id in run_ids:
        store.client.set_tag(run_id, HEARTBEAT_TAG, stamp)

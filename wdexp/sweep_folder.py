"""Launching process and jobs: a sweep's folder belongs to one running sweep, and tells its jobs
which sweep run is theirs.

The launching process claims ``hydra.sweep.dir`` before it creates anything: an exclusive lock
on the file ``.wdexp-sweep`` in it (mode 0600, so no other user can open, let alone lock it),
held until the process ends — a crash releases it with the process. The file then holds the
sweep run's id, which every job reads from its own folder's parent: the launching process hands
the id to its jobs, on whatever host a launcher runs them, wherever Hydra's job folders are
shared. A second sweep into a folder still claimed is a one-line error naming
``hydra.sweep.dir``: Hydra decides each job's folder from that job's own config, which no
callback can move, and refusing before any run exists loses nothing. A sweep into a folder
whose sweep has ended (``resume=true``) claims it anew.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
from pathlib import Path

from wdexp.tracking import client
from wdexp.vocabulary import ConfigError, TrackingSpec

log = logging.getLogger("wdexp")

CLAIM = ".wdexp-sweep"


class SweepFolder:
    """The launching process's claim on its sweep folder, held while this object lives."""

    def __init__(self, sweep_dir: str) -> None:
        folder = Path(sweep_dir)
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / CLAIM
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._fd)
            raise ConfigError("hydra.sweep.dir", "is the folder of another sweep that is still "
                              "running: give this sweep a folder of its own",
                              sweep_dir) from None
        os.ftruncate(self._fd, 0)  # what an ended sweep left names no run of this one

    def hand_over(self, run_id: str) -> None:
        """Tell the jobs their sweep run."""
        os.pwrite(self._fd, run_id.encode(), 0)
        os.fsync(self._fd)

    def release(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self._fd)


def sweep_run(spec: TrackingSpec, sweep_dir: str) -> str | None:
    """The sweep run a job of the sweep writing to ``sweep_dir`` nests its pair under: the one
    that claimed the folder; where a job's host does not share the folder (a remote Ray
    cluster), the running sweep run the store has for it."""
    found = sweep_run_of(sweep_dir) or client.get().find_sweep_run(spec, sweep_dir)
    if found is None:
        log.warning("no sweep run found for %s; the pair run will not be nested", sweep_dir)
    return found


def sweep_run_of(sweep_dir: str) -> str | None:
    """The id of the sweep run that claimed ``sweep_dir``, or None where the folder cannot tell
    (no claim yet, or a job on a host that does not share the folder)."""
    try:
        return (Path(sweep_dir) / CLAIM).read_text().strip() or None
    except OSError:
        return None

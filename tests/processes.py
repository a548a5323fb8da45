"""Finding a job's processes from outside it (tests and the bench): psutil only, cheap to import."""

from __future__ import annotations

from pathlib import Path

import psutil


def tracking_processes(cwd: Path | str) -> list[psutil.Process]:
    """wdexp's tracking processes of the jobs started in ``cwd``: they run detached (no
    descendant of their job), so they are found by command line and working directory."""
    return [process for process in psutil.process_iter(["cmdline", "cwd"])
            if "wdexp.tracking.server" in " ".join(process.info["cmdline"] or ())
            and process.info["cwd"] == str(cwd)]

"""Jobs a test starts and watches while they run: ``python -m wdexp.train`` in its own process
group, its output read as it comes, the store polled only once the job has created it."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from pathlib import Path

from tests.conftest import PYTHON, StoreReader, child_env


class Job:
    """A running ``python -m wdexp.train``, its output collected as it comes."""

    def __init__(self, argv: list[str], tmp_path: Path, env: dict[str, str] | None) -> None:
        self.proc = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp_path,
            start_new_session=True, env=child_env(env))
        self.pid = self.proc.pid
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line)

    @property
    def output(self) -> str:
        return "".join(self.lines)

    @property
    def returncode(self) -> int | None:
        return self.proc.returncode

    def poll(self) -> int | None:
        return self.proc.poll()

    def exit_within(self, timeout: float) -> float:
        """Seconds until the job's process exits (SIGKILL to its group past ``timeout``)."""
        started = time.monotonic()
        try:
            self.proc.wait(timeout=timeout)
        finally:
            if self.proc.poll() is None:
                os.killpg(self.pid, signal.SIGKILL)
                self.proc.wait()
        return time.monotonic() - started

    def finish(self, timeout: float) -> tuple[str, float]:
        """Wait for the exit (SIGKILL to the group past ``timeout``): output, seconds taken."""
        try:
            took = self.exit_within(timeout)
        finally:
            # A detached tracking process still closing runs may hold stderr a while longer.
            self._reader.join(timeout=60)
        return self.output, took


def start(*args: str, tmp_path: Path, env: dict[str, str] | None = None,
          multirun: bool = False) -> Job:
    """``python -m wdexp.train ARGS`` in its own process group, as a shell starts a job."""
    where = (["-m", f"hydra.sweep.dir={tmp_path}/multirun"] if multirun
             else [f"hydra.run.dir={tmp_path}/outputs"])
    return Job([PYTHON, "-m", "wdexp.train", *where, *args], tmp_path, env)


def wait_for(condition, what: str, timeout: float = 90, job: Job | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if job is not None and job.poll() is not None:
            raise AssertionError(f"the job exited while waiting for {what}:\n{job.output}")
        value = condition()
        if value:
            return value
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}")


def training_metrics(uri: str, job: Job, pairs: int = 1) -> StoreReader:
    """Once ``pairs`` pair runs have started and logged: the store is not read before, so this
    test never races the job at creating a new store's schema."""
    wait_for(lambda: job.output.count(" started: ") >= pairs, "the pair runs to start", job=job)

    def ready():
        reader = StoreReader(uri)
        return reader if training(reader, pairs) else None

    return wait_for(ready, "metrics in the store", job=job)


def training(reader: StoreReader, pairs: int) -> bool:
    """Whether ``pairs`` pair runs' arms have each logged a loss."""
    arms = reader.runs("arm")
    return len(arms) >= 2 * pairs and all(reader.history(a.info.run_id, "loss") for a in arms)



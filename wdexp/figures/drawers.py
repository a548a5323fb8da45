"""Many pairs' figures at once (a stacked sweep ends all its pairs together): drawn in worker
processes beside this one, one per spare core, and here, in the order the pairs are closed.

The workers are loky's (``loky.ProcessPoolExecutor``): unlike ``multiprocessing``'s spawn and
forkserver, it never re-imports the ``__main__`` module in a worker, so a worker imports only
matplotlib and pandas (a second, not the training process's torch and Hydra), and a user's
script or notebook is never run again. They ignore SIGINT (the sweep decides what a stop
means), are killed by the executor when the drawing is interrupted, and leave on their own
within a second if this process dies.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future
from concurrent.futures.process import BrokenProcessPool
from types import TracebackType
from typing import Protocol

from wdexp.figures.pair_plots import PairPlot, pair_figures

MAX_WORKERS = 8  # matplotlib and pandas: ~150 MB a worker
PAIRS_PER_WORKER = 4  # below this a worker's start costs more than it draws
ORPHAN_POLL_S = 0.5


class Drawing(Protocol):
    def result(self) -> dict[str, bytes]: ...


class _Here:
    """A pair this process draws itself, when its turn comes."""

    def __init__(self, plot: PairPlot) -> None:
        self.plot = plot

    def result(self) -> dict[str, bytes]:
        return pair_figures(self.plot)


class _There:
    """A pair a worker draws; drawn here after all if the worker died (its pool broken)."""

    def __init__(self, future: Future[dict[str, bytes]], plot: PairPlot) -> None:
        self.future, self.plot = future, plot

    def result(self) -> dict[str, bytes]:
        try:
            return self.future.result()
        except BrokenProcessPool:
            return pair_figures(self.plot)


def _workers(pairs: int) -> int:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(0, min((cores or 1) - 1, MAX_WORKERS, pairs // PAIRS_PER_WORKER))


def _serve(parent: int) -> None:
    """A worker's start: SIGINT is the sweep's to act on, and a worker whose parent is gone
    (killed with SIGKILL, which no executor can see) leaves with it."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    def orphaned() -> None:
        while os.getppid() == parent:
            time.sleep(ORPHAN_POLL_S)
        os._exit(1)

    threading.Thread(target=orphaned, name="wdexp-parent-watch", daemon=True).start()


class Drawers:
    """``with Drawers(n) as drawers: drawings = drawers.submit(plots)``: a drawing per plot,
    its ``result()`` what ``pair_figures(plot)`` returns, for ``n`` pairs."""

    def __init__(self, pairs: int) -> None:
        self.workers = _workers(pairs)
        self._pool = None
        if self.workers:
            from loky import ProcessPoolExecutor

            self._pool = ProcessPoolExecutor(self.workers, initializer=_serve,
                                             initargs=(os.getpid(),))
            # Started now, they import matplotlib while this process still trains.
            for _ in range(self.workers):
                self._pool.submit(_warm)

    def __enter__(self) -> Drawers:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        if self._pool is not None:
            # kill_workers: an interrupted sweep does not wait for figures no one will log
            self._pool.shutdown(wait=True, kill_workers=error is not None)

    def submit(self, plots: Sequence[PairPlot | None]) -> list[Drawing | None]:
        """A drawing per plot (None for None, a pair without figures), each ``workers + 1``-th
        drawn here when its result is asked for."""
        drawings: list[Drawing | None] = []
        turn = 0
        for plot in plots:
            if plot is None:
                drawings.append(None)
                continue
            drawings.append(self._drawing(plot, here=turn % (self.workers + 1) == 0))
            turn += 1
        return drawings

    def _drawing(self, plot: PairPlot, here: bool) -> Drawing:
        if self._pool is not None and not here:
            try:
                return _There(self._pool.submit(pair_figures, plot), plot)
            except BrokenProcessPool:  # a worker died (the OOM killer): this process draws
                pass
        return _Here(plot)


def _warm() -> None:
    """Nothing: a worker imports this module (and matplotlib) to run it."""

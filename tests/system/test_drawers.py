"""A stacked sweep's figure-drawing worker processes (wdexp/figures/drawers.py), real ones: what
they draw is what this process draws, and a worker that dies costs no figure."""

from __future__ import annotations

import time

import psutil

from tests.test_figures import quadratic_plot
from wdexp.figures import Drawers, drawers, pair_figures


def test_drawers_draw_in_a_worker_process_what_this_one_draws(monkeypatch):
    # One worker whatever the machine: every other pair is drawn there, the rest here.
    monkeypatch.setattr(drawers, "_workers", lambda pairs: 1)
    plots = [quadratic_plot(title=f"pair {i}") for i in range(3)]
    with Drawers(len(plots)) as drawn:
        drawings = drawn.submit([plots[0], None, plots[1], plots[2]])
        assert drawings[1] is None  # a pair without figures
        assert [isinstance(d, drawers._There) for d in drawings] == [False, False, True, False]
        for plot, drawing in zip(plots, [drawings[0], *drawings[2:]], strict=True):
            assert drawing is not None
            assert drawing.result() == pair_figures(plot)


def test_pairs_of_a_drawing_worker_that_died_are_drawn_here(monkeypatch):
    monkeypatch.setattr(drawers, "_workers", lambda pairs: 1)
    plots = [quadratic_plot(title=f"pair {i}") for i in range(4)]
    with Drawers(len(plots)) as drawn:
        deadline = time.monotonic() + 60
        while not (workers := [p for p in psutil.Process().children(recursive=True)
                               if "popen_loky_posix" in " ".join(p.cmdline())]):
            assert time.monotonic() < deadline, "no drawing worker started"
            time.sleep(0.05)
        drawings = drawn.submit(plots)  # every other one to the worker, which then dies
        for worker in workers:
            worker.kill()  # the OOM killer's way
        psutil.wait_procs(workers, timeout=10)
        for plot, drawing in zip(plots, drawings, strict=True):
            assert drawing is not None and drawing.result() == pair_figures(plot)
        # the pool is broken now: what comes after is drawn here
        assert all(isinstance(d, drawers._Here) for d in drawn.submit(plots))

"""Figures of one paired run and of a sweep: data in, PNG bytes out (no MLflow, no torch).

Figures use matplotlib's object API on the Agg canvas, never pyplot: nothing lands in pyplot's
global figure registry, so drawing is safe in threads and worker processes, opens no window and
frees each figure with its last reference.
"""

from wdexp.figures.drawers import Drawers, Drawing
from wdexp.figures.pair_plots import PairPlot, pair_figures
from wdexp.figures.sweep_plots import sweep_figures

__all__ = ["Drawers", "Drawing", "PairPlot", "pair_figures", "sweep_figures"]

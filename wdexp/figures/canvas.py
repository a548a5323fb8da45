"""What every figure shares: an Agg figure with fixed margins, PNG bytes, legends, log axes,
value formatting, and the column names and styles the figures agree on."""

from __future__ import annotations

import io
from collections.abc import Iterable, Sequence

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import LogLocator, NullLocator

ARM_STYLES = ("-", "--", "-.", ":")
# Sparse hollow markers keep a prediction visible where it lies on the measured curve.
CLOSED_FORM = {"ls": ":", "lw": 1.2, "marker": "o", "mfc": "none", "ms": 4, "markevery": 0.08}
MISSING = {"facecolor": "lightgrey", "hatch": "//", "edgecolor": "grey"}


def new_figure(width: float = 6.4, top: float = 0.4, right: float = 0.25) -> Figure:
    figure = Figure(figsize=(width, 4.8), dpi=100)
    FigureCanvasAgg(figure)
    # Fixed margins (inches): a layout engine would nearly double the drawing time.
    figure.subplots_adjust(left=0.9 / width, right=1 - right / width, bottom=0.6 / 4.8,
                           top=1 - top / 4.8, wspace=0.25)
    return figure


def png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    # Light compression: zlib's default level costs more than drawing a simple figure.
    figure.savefig(buffer, format="png", pil_kwargs={"compress_level": 1})
    return buffer.getvalue()


def legend(ax: Axes, extra: Sequence[Line2D | Patch] = (), **kwargs: object) -> None:
    # Without handles (every arm diverged at step 0) a legend would only warn.
    if handles := [*ax.get_legend_handles_labels()[0], *extra]:
        ax.legend(handles=handles, fontsize="small", framealpha=0.8, **kwargs)


def decades_spanned(values: Iterable[float]) -> float:
    """How many decades the finite values span; 0 unless all are positive."""
    array = np.asarray(list(values), dtype=float)
    array = array[np.isfinite(array)]
    return float(np.log10(array.max() / array.min())) if len(array) and array.min() > 0 else 0.0


def log_scale(ax: Axes, which: str, decades: float) -> None:
    getattr(ax, f"set_{which}scale")("log")
    axis = getattr(ax, f"{which}axis")
    # Minor ticks cost most of a log axis's drawing time; over few decades, label 1-2-5 instead.
    axis.set_minor_locator(NullLocator())
    if decades < 2.5:
        axis.set_major_locator(LogLocator(subs=(1, 2, 5)))
        axis.set_major_formatter("{x:.3g}")


def fmt(value: object) -> str:
    return f"{value:g}" if isinstance(value, int | float | np.number) else str(value)

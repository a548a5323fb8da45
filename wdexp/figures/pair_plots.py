"""The figures of one pair run: loss, weights and, on the loss surface, the trajectories."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import matplotlib as mpl
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from wdexp.figures.canvas import (
    ARM_STYLES,
    CLOSED_FORM,
    decades_spanned,
    legend,
    log_scale,
    new_figure,
    png,
)
from wdexp.figures.geometry_plots import geometry_figure, has_geometry
from wdexp.vocabulary import DECAY

GRID = 160  # surface samples per axis


@dataclass(frozen=True)
class PairPlot:
    """Everything the figures of one pair run show; see :func:`pair_figures`."""

    title: str
    histories: Mapping[str, pd.DataFrame]  # arm -> metrics by step; a diverged arm is shorter
    weight_decay: Mapping[str, float]  # arm -> effective λ
    predicted: Mapping[str, pd.DataFrame] | None = None  # arm -> closed form, same convention
    surface: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None  # L(W1, W2)
    equilibrium: Mapping[str, float | None] | None = None  # arm -> predicted angular update


def pair_figures(plot: PairPlot) -> dict[str, bytes]:
    """``loss.png``, ``weights.png``, given a surface and ``w_1, w_2`` ``trajectory.png``, and
    for networks that log their layer geometry ``geometry.png``."""
    return {name: png(figure) for name, figure in _pair_artists(plot).items()}


def _pair_artists(plot: PairPlot) -> dict[str, Figure]:
    figures = {"loss.png": _loss_figure(plot), "weights.png": _weights_figure(plot)}
    if has_geometry(plot.histories):
        figures["geometry.png"] = geometry_figure(plot.title, plot.histories,
                                                  plot.equilibrium or {})
    if plot.surface is not None and _paths(plot):
        figures["trajectory.png"] = _trajectory_figure(plot)
    return figures


def _arm_label(plot: PairPlot, arm: str) -> str:
    return arm if arm not in plot.weight_decay else f"{arm} (λ={plot.weight_decay[arm]:g})"


def _diverged(plot: PairPlot, history: pd.DataFrame) -> bool:
    """Arms train in lockstep, so an arm with fewer steps than another stopped by diverging."""
    ends = [h.index.max() for h in plot.histories.values() if len(h)]
    return bool(len(history)) and history.index.max() < max(ends)


def _closed_form(plot: PairPlot, arm: str, column: str) -> pd.Series:
    frame = (plot.predicted or {}).get(arm)
    if frame is None or column not in frame:
        return pd.Series(dtype=float)
    history = plot.histories.get(arm, frame)
    # A diverging arm's closed form grows without bound; past the measured steps it would only
    # squash every other curve against the axis.
    return frame[column][frame.index <= (history.index.max() if len(history) else 0)]


def _loss_figure(plot: PairPlot) -> Figure:
    ax = new_figure().add_subplot()
    for i, (arm, history) in enumerate(plot.histories.items()):
        for series, style, label in (
                (history.get("loss"), {"ls": "-", "lw": 1.8}, _arm_label(plot, arm)),
                (history.get("test_loss"), {"ls": "--", "lw": 1.2}, f"{arm} test loss"),
                (_closed_form(plot, arm, "loss"), CLOSED_FORM, f"{arm} closed form")):
            if series is not None and len(series):
                ax.plot(series.index, series.to_numpy(float), color=f"C{i}", label=label, **style)
        if "loss" in history and _diverged(plot, history):
            ax.plot(history.index[-1], history["loss"].iloc[-1], "x", color="red", ms=10, mew=2,
                    label=f"{arm} diverged")
    if (decades := decades_spanned(y for line in ax.lines for y in line.get_ydata())) > 1:
        log_scale(ax, "y", decades)
    ax.set(title=f"{plot.title}: loss", xlabel="step", ylabel="loss")
    legend(ax)
    return ax.figure


def _weight_columns(histories: Iterable[pd.DataFrame]) -> list[str]:
    columns = list(dict.fromkeys(c for h in histories for c in h.columns))
    if weights := [c for c in columns if c.startswith("w_") and c[2:].isdigit()]:
        return sorted(weights, key=lambda c: int(c[2:]))  # a store may sort w_10 before w_2
    return [c for c in columns if c.startswith("norm.")] or [
        c for c in columns if c == "weight_norm"]


def _weights_figure(plot: PairPlot) -> Figure:
    ax = new_figure().add_subplot()
    columns = _weight_columns(plot.histories.values())
    cmap = mpl.colormaps["tab10" if len(columns) <= 10 else "tab20"]
    # Arms by line style, weights by colour: 2 + n legend entries instead of 2 x n.
    handles: list[Line2D | Patch] = []
    for i, (arm, history) in enumerate(plot.histories.items()):
        style = ARM_STYLES[i % len(ARM_STYLES)]
        for j, column in enumerate(columns):
            if column in history:
                ax.plot(history.index, history[column].to_numpy(float), color=cmap(j), ls=style)
            if len(prediction := _closed_form(plot, arm, column)):
                ax.plot(prediction.index, prediction.to_numpy(float), color=cmap(j), **CLOSED_FORM)
        handles.append(Line2D([], [], color="grey", ls=style, label=_arm_label(plot, arm)))
    if plot.predicted:
        handles.append(Line2D([], [], color="grey", label="closed form",
                              **{**CLOSED_FORM, "markevery": None}))
    handles += [Patch(color=cmap(j), label=c.removeprefix("norm.")) for j, c in enumerate(columns)]
    weights = bool(columns) and columns[0].startswith("w_")
    ax.set(title=f"{plot.title}: {'weights' if weights else 'parameter norms'}", xlabel="step",
           ylabel="weight" if weights else "parameter norm")
    legend(ax, handles, ncols=2 if len(handles) > 8 else 1)
    return ax.figure


def _paths(plot: PairPlot) -> dict[str, np.ndarray]:
    paths = {arm: h[["w_1", "w_2"]].to_numpy(float) for arm, h in plot.histories.items()
             if {"w_1", "w_2"} <= set(h.columns)}
    return {arm: p[np.isfinite(p).all(axis=1)] for arm, p in paths.items() if len(p)}


def _levels(values: np.ndarray) -> np.ndarray | None:
    finite = values[np.isfinite(values)]
    if finite.size == 0 or finite.max() <= finite.min():
        return None
    # Quadratic spacing crowds contours near the minimum, where the paths end.
    return finite.min() + (finite.max() - finite.min()) * np.linspace(0, 1, 15) ** 2


def _trajectory_figure(plot: PairPlot) -> Figure:
    assert plot.surface is not None
    figure = new_figure(right=0.85)
    ax = figure.add_subplot()
    paths = _paths(plot)
    # A diverging path may run off to 1e30: the view covers the paths of the arms that finished,
    # every start and the origin, and lets a diverging path leave it.
    kept = [p[:1] if _diverged(plot, plot.histories[arm]) else p for arm, p in paths.items()]
    points = np.vstack([*kept, np.zeros((1, 2))])
    low, high = points.min(axis=0), points.max(axis=0)
    pad = 0.15 * np.maximum(high - low, max(float((high - low).max()), 1e-3) * 0.3)
    w1, w2 = np.meshgrid(np.linspace(low[0] - pad[0], high[0] + pad[0], GRID),
                         np.linspace(low[1] - pad[1], high[1] + pad[1], GRID))
    loss = np.asarray(plot.surface(w1, w2), dtype=float)
    if (levels := _levels(loss)) is not None:
        filled = ax.contourf(w1, w2, np.ma.masked_invalid(loss), levels=levels, cmap="Greys",
                             alpha=0.6)
        figure.colorbar(filled, ax=ax, label="loss (λ=0)", pad=0.02, format="%.3g")
    arm = DECAY if DECAY in plot.weight_decay else max(plot.weight_decay, default=None,
                                                       key=plot.weight_decay.__getitem__)
    lam = 0.0 if arm is None else plot.weight_decay[arm]
    extra: list[Line2D] = []
    if lam > 0 and (levels := _levels(objective := loss + lam / 2 * (w1**2 + w2**2))) is not None:
        ax.contour(w1, w2, objective, levels=levels, colors="tab:red", linestyles="--",
                   linewidths=0.8)
        extra.append(Line2D([], [], color="tab:red", ls="--", lw=0.8,
                            label=f"loss + λ/2‖w‖², λ={lam:g}"))
        best = np.nanargmin(objective)
        ax.plot(w1.flat[best], w2.flat[best], "*", color="tab:red", ms=14, mec="black",
                label=f"{arm} objective minimiser")
    for i, (name, history) in enumerate(plot.histories.items()):
        if (path := paths.get(name)) is not None:
            ax.plot(path[:, 0], path[:, 1], color=f"C{i}", lw=1.6, label=_arm_label(plot, name))
            ax.plot(*path[0], "o", color=f"C{i}", mec="black", ms=7)
            ax.plot(*path[-1], "s", color=f"C{i}", mec="black", ms=7)
            if _diverged(plot, history):
                ax.plot(*path[-1], "x", color="red", ms=10, mew=2, label=f"{name} diverged")
    extra += [Line2D([], [], ls="none", marker=marker, color="grey", mec="black", label=label)
              for marker, label in (("o", "start"), ("s", "end"))]
    ax.set(xlim=(w1.min(), w1.max()), ylim=(w2.min(), w2.max()), xlabel="w_1", ylabel="w_2",
           title=f"{plot.title}: trajectories")
    legend(ax, extra)
    return figure

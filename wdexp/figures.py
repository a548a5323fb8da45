"""Figures of one paired run and of a sweep: data in, PNG bytes out (no MLflow, no torch).

Figures use matplotlib's object API on the Agg canvas, never pyplot: nothing lands in pyplot's
global figure registry, so drawing is safe in threads and worker processes, opens no window and
frees each figure with its last reference.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

import matplotlib as mpl
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import LogNorm, Normalize
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch, Rectangle
from matplotlib.ticker import LogLocator, NullLocator

BASELINE, DECAY = "baseline", "decay"  # not imported from wdexp.study: that pulls in torch
WEIGHT_DECAY, SEED = "optimizer.weight_decay", "seed"
ARM_STYLES = ("-", "--", "-.", ":")
# Sparse hollow markers keep a prediction visible where it lies on the measured curve.
CLOSED_FORM = {"ls": ":", "lw": 1.2, "marker": "o", "mfc": "none", "ms": 4, "markevery": 0.08}
MISSING = {"facecolor": "lightgrey", "hatch": "//", "edgecolor": "grey"}
GRID = 160  # surface samples per axis


@dataclass(frozen=True)
class PairPlot:
    """Everything the figures of one pair run show; see :func:`pair_figures`."""

    title: str
    histories: Mapping[str, pd.DataFrame]  # arm -> metrics by step; a diverged arm is shorter
    weight_decay: Mapping[str, float]  # arm -> effective λ
    predicted: Mapping[str, pd.DataFrame] | None = None  # arm -> closed form, same convention
    surface: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None  # L(W1, W2)


def pair_figures(plot: PairPlot) -> dict[str, bytes]:
    """``loss.png``, ``weights.png`` and, given a surface and ``w_1, w_2``, ``trajectory.png``."""
    return {name: _png(figure) for name, figure in _pair_artists(plot).items()}


def sweep_figures(table: pd.DataFrame, keys: Sequence[str], outcome: str) -> dict[str, bytes]:
    """``sweep.png`` from a :func:`wdexp.analysis.pair_table`, and ``heatmap.png`` of the decay
    arm's ``outcome`` (e.g. ``final_loss``) when two or more keys other than ``seed`` vary."""
    return {name: _png(figure) for name, figure in _sweep_artists(table, keys, outcome).items()}


def _figure(width: float = 6.4, top: float = 0.4, right: float = 0.25) -> Figure:
    figure = Figure(figsize=(width, 4.8), dpi=100)
    FigureCanvasAgg(figure)
    # Fixed margins (inches): a layout engine would nearly double the drawing time.
    figure.subplots_adjust(left=0.9 / width, right=1 - right / width, bottom=0.6 / 4.8,
                           top=1 - top / 4.8, wspace=0.25)
    return figure


def _png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    # Light compression: zlib's default level costs more than drawing a simple figure.
    figure.savefig(buffer, format="png", pil_kwargs={"compress_level": 1})
    return buffer.getvalue()


def _legend(ax: Axes, extra: Sequence[Line2D | Patch] = (), **kwargs: object) -> None:
    # Without handles (every arm diverged at step 0) a legend would only warn.
    if handles := [*ax.get_legend_handles_labels()[0], *extra]:
        ax.legend(handles=handles, fontsize="small", framealpha=0.8, **kwargs)


def _decades(values: Iterable[float]) -> float:
    """How many decades the finite values span; 0 unless all are positive."""
    array = np.asarray(list(values), dtype=float)
    array = array[np.isfinite(array)]
    return float(np.log10(array.max() / array.min())) if len(array) and array.min() > 0 else 0.0


def _log_scale(ax: Axes, which: str, decades: float) -> None:
    getattr(ax, f"set_{which}scale")("log")
    axis = getattr(ax, f"{which}axis")
    # Minor ticks cost most of a log axis's drawing time; over few decades, label 1-2-5 instead.
    axis.set_minor_locator(NullLocator())
    if decades < 2.5:
        axis.set_major_locator(LogLocator(subs=(1, 2, 5)))
        axis.set_major_formatter("{x:.3g}")


def _fmt(value: object) -> str:
    return f"{value:g}" if isinstance(value, int | float | np.number) else str(value)


# ---- one pair run -------------------------------------------------------------------------

def _pair_artists(plot: PairPlot) -> dict[str, Figure]:
    figures = {"loss.png": _loss_figure(plot), "weights.png": _weights_figure(plot)}
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
    ax = _figure().add_subplot()
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
    if (decades := _decades(y for line in ax.lines for y in line.get_ydata())) > 1:
        _log_scale(ax, "y", decades)
    ax.set(title=f"{plot.title}: loss", xlabel="step", ylabel="loss")
    _legend(ax)
    return ax.figure


def _weight_columns(histories: Iterable[pd.DataFrame]) -> list[str]:
    columns = list(dict.fromkeys(c for h in histories for c in h.columns))
    if weights := [c for c in columns if c.startswith("w_") and c[2:].isdigit()]:
        return sorted(weights, key=lambda c: int(c[2:]))  # a store may sort w_10 before w_2
    return [c for c in columns if c.startswith("norm.")] or [
        c for c in columns if c == "weight_norm"]


def _weights_figure(plot: PairPlot) -> Figure:
    ax = _figure().add_subplot()
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
    _legend(ax, handles, ncols=2 if len(handles) > 8 else 1)
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
    figure = _figure(right=0.85)
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
    _legend(ax, extra)
    return figure


# ---- a sweep ------------------------------------------------------------------------------

def _sweep_artists(table: pd.DataFrame, keys: Sequence[str], outcome: str) -> dict[str, Figure]:
    frame = table.reset_index(drop=True)
    absent = pd.Series([None] * len(frame), dtype=object)
    for key in keys:
        column = frame.get(key, absent)
        numeric = pd.to_numeric(column, errors="coerce")
        # MLflow params are strings; a key is numeric only if every value given converts.
        frame[key] = numeric if numeric.count() == column.count() else column.astype(str)
    for arm in (BASELINE, DECAY):
        flags = frame.get(f"{arm}.diverged", absent).astype("string").str.lower()
        frame[f"{arm}.diverged"] = flags.isin(["true", "1", "1.0"])
    varying = [k for k in keys if k != SEED and frame[k].nunique() > 1]
    seeds = int(frame[SEED].nunique()) if SEED in keys else 1
    figures = {"sweep.png": _sweep_figure(frame, keys, varying, seeds)}
    if len(varying) >= 2:
        figures["heatmap.png"] = _heatmap_figure(frame, varying, outcome, seeds)
    return figures


def _values(frame: pd.DataFrame, arm: str, name: str) -> pd.Series:
    """The arm's ``name`` as floats, NaN where it diverged or was never recorded."""
    column = frame.get(f"{arm}.{name}", pd.Series(np.nan, index=frame.index))
    return pd.to_numeric(column, errors="coerce").astype(float).where(~frame[f"{arm}.diverged"])


def _sweep_figure(frame: pd.DataFrame, keys: Sequence[str], varying: list[str],
                  seeds: int) -> Figure:
    # Weight decay if swept; else a numeric key (it can be an axis), preferably one that varies.
    x = WEIGHT_DECAY if WEIGHT_DECAY in keys else min(
        (k for k in keys if k != SEED), default=None,
        key=lambda k: (not pd.api.types.is_numeric_dtype(frame[k]), k not in varying))
    xs = frame[x] if x is not None else pd.Series("all", index=frame.index)
    numeric = pd.api.types.is_numeric_dtype(xs)
    categories = [] if numeric else sorted(xs.dropna().unique())
    log_x = numeric and bool((xs > 0).any()) and (
        x == WEIGHT_DECAY or ((xs > 0).all() and _decades(xs) > 1))
    groups = [k for k in varying if k != x]
    figure = _figure(12.8, top=0.75)
    for ax, name in zip(figure.subplots(1, 2), ("final_loss", "final_weight_norm"), strict=True):
        data = frame.assign(_x=xs if numeric else xs.map({c: i for i, c in enumerate(categories)}),
                            _v=_values(frame, DECAY, name), _b=_values(frame, BASELINE, name),
                            _d=frame[f"{DECAY}.diverged"])
        parts = data.groupby(groups, dropna=False) if groups else [((), data)]
        for i, (combo, rows) in enumerate(parts):
            color = f"C{i % 10}"
            # λ=0 cannot sit on a log axis; those rows are the baseline line's anyway.
            shown = rows[rows["_x"] > 0] if log_x else rows.dropna(subset="_x")
            stats = shown.groupby("_x").agg(mean=("_v", "mean"), std=("_v", "std"),
                                            diverged=("_d", "any")).reset_index()
            label = ", ".join(f"{k.rsplit('.', 1)[-1]}={_fmt(v)}"
                              for k, v in zip(groups, combo, strict=True)) or "decay"
            ax.errorbar(stats["_x"], stats["mean"], yerr=stats["std"].fillna(0) if seeds > 1
                        else None, color=color, marker="o", ms=4, capsize=3, label=label)
            if stats["diverged"].any():  # at the top edge: a diverged run has no value
                ax.plot(stats["_x"][stats["diverged"]], np.full(stats["diverged"].sum(), 0.97),
                        "x", color="red", ms=9, mew=2, clip_on=False, transform=(
                            ax.get_xaxis_transform()), label=None if i else "diverged")
            if x == WEIGHT_DECAY:
                if np.isfinite(reference := rows["_b"].mean()):
                    ax.axhline(reference, color=color, ls=":", lw=1.2)
            else:
                baseline = rows.dropna(subset="_x").groupby("_x")["_b"].mean()
                ax.plot(baseline.index, baseline.to_numpy(float), color=color, ls=":", lw=1.2)
        if log_x:
            _log_scale(ax, "x", _decades(xs[xs > 0]))
        if not numeric:
            ax.set_xticks(range(len(categories)), [_fmt(c) for c in categories])
        if name == "final_loss" and (decades := _decades([*data["_v"], *data["_b"]])) > 1:
            _log_scale(ax, "y", decades)
        what = f"final {name.removeprefix('final_').replace('_', ' ')}"
        ax.set(xlabel=x or "", ylabel=what, title=f"decay arm: {what}")
        if name == "final_loss":
            _legend(ax, [Line2D([], [], color="grey", ls=":", label="baseline (λ=0)")])
    figure.suptitle(f"decay arm against {x or 'run'}"
                    + (f" (mean ± std over {seeds} seeds)" if seeds > 1 else ""))
    return figure


def _heatmap_figure(frame: pd.DataFrame, varying: list[str], outcome: str, seeds: int) -> Figure:
    rows_key, cols_key, *rest = varying
    panel_key = rest[0] if rest else None
    data = frame.assign(_v=_values(frame, DECAY, outcome), _d=frame[f"{DECAY}.diverged"],
                        _p=frame[panel_key] if panel_key else "")
    rows, cols, panels = (sorted(data[k].dropna().unique()) for k in (rows_key, cols_key, "_p"))
    # Seeds and any fourth varying key are averaged over.
    cells = data.groupby(["_p", rows_key, cols_key]).agg(mean=("_v", "mean"), div=("_d", "sum"))
    cells = cells.reindex(pd.MultiIndex.from_product([panels, rows, cols]))
    finite = cells["mean"][np.isfinite(cells["mean"])]
    norm = (LogNorm if _decades(finite) > 1 else Normalize)(
        *((finite.min(), finite.max()) if len(finite) else (0, 1)))
    cmap = mpl.colormaps["viridis"].with_extremes(bad=MISSING["facecolor"])
    figure = _figure(min(1.8 + 4.6 * len(panels), 30), top=0.75 if panel_key else 0.45,
                     right=0.85)
    axes = list(figure.subplots(1, len(panels), sharey=True, squeeze=False)[0])
    fontsize = 6 if len(rows) * len(cols) > 64 else 8
    for ax, panel in zip(axes, panels, strict=True):
        grid = cells.loc[panel, "mean"].to_numpy(float).reshape(len(rows), len(cols))
        diverged = cells.loc[panel, "div"].fillna(0).to_numpy(int).reshape(grid.shape)
        image = ax.imshow(np.ma.masked_invalid(grid), cmap=cmap, norm=norm, aspect="auto",
                          origin="lower")
        for (r, c), value in np.ndenumerate(grid):
            if np.isfinite(value):
                text = f"{value:.3g}" + (f"\n{diverged[r, c]} div" if diverged[r, c] else "")
                color = "white" if norm(value) < 0.5 else "black"
            else:
                ax.add_patch(Rectangle((c - 0.5, r - 0.5), 1, 1, lw=0, **MISSING))
                text, color = ("div" if diverged[r, c] else "n/a"), "black"
            ax.text(c, r, text, ha="center", va="center", color=color, fontsize=fontsize)
        ax.set_xticks(range(len(cols)), [_fmt(v) for v in cols])
        ax.set_yticks(range(len(rows)), [_fmt(v) for v in rows])
        ax.set(xlabel=cols_key, ylabel=rows_key if ax is axes[0] else "",
               title=f"{panel_key}={_fmt(panel)}" if panel_key else "")
    figure.colorbar(image, ax=axes, label=f"decay {outcome}", pad=0.02)
    note = ([f"{seeds} seeds"] if seeds > 1 else []) + rest[1:]
    figure.suptitle(f"decay arm: {outcome}" + (f" (mean over {', '.join(note)})" if note else ""))
    figure.legend(handles=[Patch(**MISSING, label="diverged / no value")], loc="lower right",
                  fontsize="small")
    return figure

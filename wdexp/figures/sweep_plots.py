"""The figures of a sweep: the decay arm against the swept keys, mean over seeds, as curves
(``sweep.png``, with the paired difference decay - baseline and its 95 % interval when seeds
vary) and, when two or more keys vary, as a heatmap (``heatmap.png``)."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib as mpl
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.colors import LogNorm, Normalize
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch, Rectangle

from wdexp.figures.canvas import (
    MISSING,
    decades_spanned,
    fmt,
    legend,
    log_scale,
    new_figure,
    png,
)
from wdexp.vocabulary import BASELINE, DECAY, HIGHER_IS_BETTER, SEED, WEIGHT_DECAY


def sweep_figures(table: pd.DataFrame, keys: Sequence[str], outcome: str) -> dict[str, bytes]:
    """``sweep.png`` from a :func:`wdexp.analysis.pair_table`, and ``heatmap.png`` of the decay
    arm's ``outcome`` (e.g. ``final_loss``) when two or more keys other than ``seed`` vary."""
    return {name: png(figure) for name, figure in _sweep_artists(table, keys, outcome).items()}


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
    figures = {"sweep.png": _sweep_figure(frame, keys, varying, seeds, outcome)}
    if len(varying) >= 2:
        figures["heatmap.png"] = _heatmap_figure(frame, varying, outcome, seeds)
    return figures


def _values(frame: pd.DataFrame, arm: str, name: str) -> pd.Series:
    """The arm's ``name`` as floats, NaN where it diverged or was never recorded."""
    column = frame.get(f"{arm}.{name}", pd.Series(np.nan, index=frame.index))
    return pd.to_numeric(column, errors="coerce").astype(float).where(~frame[f"{arm}.diverged"])


def _sweep_figure(frame: pd.DataFrame, keys: Sequence[str], varying: list[str],
                  seeds: int, outcome: str) -> Figure:
    # Weight decay if swept; else a numeric key (it can be an axis), preferably one that varies.
    x = WEIGHT_DECAY if WEIGHT_DECAY in keys else min(
        (k for k in keys if k != SEED), default=None,
        key=lambda k: (not pd.api.types.is_numeric_dtype(frame[k]), k not in varying))
    xs = frame[x] if x is not None else pd.Series("all", index=frame.index)
    numeric = pd.api.types.is_numeric_dtype(xs)
    categories = [] if numeric else sorted(xs.dropna().unique())
    log_x = numeric and bool((xs > 0).any()) and (
        x == WEIGHT_DECAY or ((xs > 0).all() and decades_spanned(xs) > 1))
    groups = [k for k in varying if k != x]
    # Over seeds, a third panel: the paired difference decay - baseline with its 95 % interval.
    figure = new_figure(19.2 if seeds > 1 else 12.8, top=0.75)
    axes = figure.subplots(1, 3 if seeds > 1 else 2)
    if seeds > 1:
        _paired_axis(axes[2], frame, xs, numeric, categories, log_x, groups, outcome, x)
    for ax, name in zip(axes[:2], ("final_loss", "final_weight_norm"), strict=True):
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
            label = ", ".join(f"{k.rsplit('.', 1)[-1]}={fmt(v)}"
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
            log_scale(ax, "x", decades_spanned(xs[xs > 0]))
        if not numeric:
            ax.set_xticks(range(len(categories)), [fmt(c) for c in categories])
        if name == "final_loss" and (decades := decades_spanned([*data["_v"], *data["_b"]])) > 1:
            log_scale(ax, "y", decades)
        what = f"final {name.removeprefix('final_').replace('_', ' ')}"
        ax.set(xlabel=x or "", ylabel=what, title=f"decay arm: {what}")
        if name == "final_loss":
            legend(ax, [Line2D([], [], color="grey", ls=":", label="baseline (λ=0)")])
    figure.suptitle(f"decay arm against {x or 'run'}"
                    + (f" (mean ± std over {seeds} seeds)" if seeds > 1 else ""))
    return figure


def _paired_axis(ax: Axes, frame: pd.DataFrame, xs: pd.Series, numeric: bool,
                 categories: list, log_x: bool, groups: list[str], outcome: str,
                 x: str | None) -> None:
    """Decay - baseline of ``outcome`` per setting: mean over seeds and its 95 % t-interval
    (:func:`wdexp.analysis.paired`), a line at 0 (no effect)."""
    from wdexp.analysis import paired

    data = frame.assign(_x=xs if numeric else xs.map({c: i for i, c in enumerate(categories)}),
                        _d=_values(frame, DECAY, outcome) - _values(frame, BASELINE, outcome))
    parts = data.groupby(groups, dropna=False) if groups else [((), data)]
    higher = outcome in HIGHER_IS_BETTER
    for i, (combo, rows) in enumerate(parts):
        shown = rows[rows["_x"] > 0] if log_x else rows.dropna(subset="_x")
        points = [(value, paired(group["_d"], higher)) for value, group in shown.groupby("_x")]
        if not points:
            continue
        where = np.array([p for p, _ in points], dtype=float)
        stats = [s for _, s in points]
        mean = np.array([s["mean"] for s in stats])
        errors = np.nan_to_num(np.array([[s["mean"] - s["ci_low"] for s in stats],
                                         [s["ci_high"] - s["mean"] for s in stats]]))
        label = ", ".join(f"{k.rsplit('.', 1)[-1]}={fmt(v)}"
                          for k, v in zip(groups, combo, strict=True)) or "decay - baseline"
        ax.errorbar(where, mean, yerr=errors, color=f"C{i % 10}", marker="o", ms=4, capsize=3,
                    label=label)
    ax.axhline(0, color="grey", lw=1, ls=":")
    if log_x:
        log_scale(ax, "x", decades_spanned(xs[xs > 0]))
    if not numeric:
        ax.set_xticks(range(len(categories)), [fmt(c) for c in categories])
    what = outcome.removeprefix("final_").replace("_", " ")
    ax.set(xlabel=x or "", ylabel=f"decay - baseline: final {what}",
           title=f"paired difference, 95 % CI ({'higher' if higher else 'lower'} is better)")


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
    norm = (LogNorm if decades_spanned(finite) > 1 else Normalize)(
        *((finite.min(), finite.max()) if len(finite) else (0, 1)))
    cmap = mpl.colormaps["viridis"].with_extremes(bad=MISSING["facecolor"])
    figure = new_figure(min(1.8 + 4.6 * len(panels), 30), top=0.75 if panel_key else 0.45,
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
        ax.set_xticks(range(len(cols)), [fmt(v) for v in cols])
        ax.set_yticks(range(len(rows)), [fmt(v) for v in rows])
        ax.set(xlabel=cols_key, ylabel=rows_key if ax is axes[0] else "",
               title=f"{panel_key}={fmt(panel)}" if panel_key else "")
    figure.colorbar(image, ax=axes, label=f"decay {outcome}", pad=0.02)
    note = ([f"{seeds} seeds"] if seeds > 1 else []) + rest[1:]
    figure.suptitle(f"decay arm: {outcome}" + (f" (mean over {', '.join(note)})" if note else ""))
    figure.legend(handles=[Patch(**MISSING, label="diverged / no value")], loc="lower right",
                  fontsize="small")
    return figure

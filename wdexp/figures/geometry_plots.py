"""``geometry.png`` of a pair of networks: each decayed layer's angular update per step against
the rotational-equilibrium prediction, and the cosine between gradient and weight (0 for a
scale-invariant layer). See :mod:`wdexp.geometry` for the quantities and the theory."""

from __future__ import annotations

from collections.abc import Mapping

import matplotlib as mpl
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from wdexp.figures.canvas import ARM_STYLES, decades_spanned, legend, log_scale, new_figure

ANGLE, COSINE = "angular_update/", "cos_grad_weight/"


def has_geometry(histories: Mapping[str, pd.DataFrame]) -> bool:
    return any(c.startswith(ANGLE) for h in histories.values() for c in h.columns)


def geometry_figure(title: str, histories: Mapping[str, pd.DataFrame],
                    equilibrium: Mapping[str, float | None]) -> Figure:
    layers = list(dict.fromkeys(c.removeprefix(ANGLE) for h in histories.values()
                                for c in h.columns if c.startswith(ANGLE)))
    cmap = mpl.colormaps["tab10" if len(layers) <= 10 else "tab20"]
    figure = new_figure(12.8, top=0.75)
    angle_ax, cosine_ax = figure.subplots(1, 2)
    handles: list[Line2D | Patch] = []
    for i, (arm, history) in enumerate(histories.items()):
        style = ARM_STYLES[i % len(ARM_STYLES)]
        for j, layer in enumerate(layers):
            for ax, prefix in ((angle_ax, ANGLE), (cosine_ax, COSINE)):
                if (column := prefix + layer) in history:
                    series = history[column].dropna()
                    ax.plot(series.index, series.to_numpy(float), color=cmap(j), ls=style)
        handles.append(Line2D([], [], color="grey", ls=style, label=arm))
        if (predicted := equilibrium.get(arm)) is not None:
            angle_ax.axhline(predicted, color="black", ls=":", lw=1.4)
            handles.append(Line2D([], [], color="black", ls=":",
                                  label=f"{arm}: equilibrium {predicted:.3g} rad"))
    handles += [Patch(color=cmap(j), label=layer) for j, layer in enumerate(layers)]
    angles = [y for line in angle_ax.lines for y in line.get_ydata()]
    if (decades := decades_spanned(angles)) > 1:
        log_scale(angle_ax, "y", decades)
    angle_ax.set(title="angular update per step (mean over rows and steps)", xlabel="step",
                 ylabel="radians")
    cosine_ax.axhline(0, color="grey", lw=1)
    cosine_ax.set(title="cos(gradient, weight): 0 if scale-invariant", xlabel="step",
                  ylabel="cosine")
    legend(angle_ax, handles, ncols=2 if len(handles) > 8 else 1)
    figure.suptitle(f"{title}: layer geometry")
    return figure

"""Figures from synthetic but real inputs: histories from SGD's closed form on the notebook's
quadratic, and pair tables shaped as wdexp.analysis.pair_table builds them. No MLflow, no torch."""

from __future__ import annotations

import io
import itertools

import numpy as np
import pandas as pd
import pytest
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.image import imread

from wdexp.figures import PairPlot, drawers, pair_figures, sweep_figures
from wdexp.figures.canvas import png
from wdexp.figures.pair_plots import _pair_artists
from wdexp.figures.sweep_plots import _sweep_artists

COEFFICIENTS, INIT = np.array([1 / 20, 1.0]), np.array([0.8, 0.6])
LR, LAMBDA, EPOCHS = 0.01, 0.01, 30
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# (width, height) in pixels. Pair figures and sweep.png as the README and wdexp/figures promise;
# a heatmap is 1.8 in + 4.6 in per panel wide at 100 dpi (wdexp/figures/sweep_plots.py).
PAIR, SWEEP, SWEEP_SEEDS = (640, 480), (1280, 480), (1920, 480)
HEATMAP_1, HEATMAP_2 = (640, 480), (1100, 480)
PAIR_PNGS = {"loss.png": PAIR, "weights.png": PAIR, "trajectory.png": PAIR}


def quadratic(lam: float, lr: float = LR, epochs: int = EPOCHS, scale: float = 1.0) -> pd.DataFrame:
    """SGD on sum_i c_i w_i^2 with coupled decay: w_i(t) = w_i(0) (1 - lr (2 c_i + λ))^t."""
    t = np.arange(epochs + 1)[:, None]
    w = scale * INIT * (1 - lr * (2 * COEFFICIENTS + lam)) ** t
    frame = pd.DataFrame(w, columns=["w_1", "w_2"], index=pd.Index(t[:, 0], name="step"))
    return frame.assign(loss=(COEFFICIENTS * w**2).sum(axis=1),
                        weight_norm=np.linalg.norm(w, axis=1))


def surface(w1: np.ndarray, w2: np.ndarray) -> np.ndarray:
    return COEFFICIENTS[0] * w1**2 + COEFFICIENTS[1] * w2**2


def quadratic_plot(**overrides: object) -> PairPlot:
    arms = {"baseline": 0.0, "decay": LAMBDA}
    # Measured = the closed form with float32 rounding, as the engine's default dtype gives.
    fields = {"title": "sgd_wd lr=0.01 wd=0.01 seed=0", "weight_decay": arms, "surface": surface,
              "histories": {arm: quadratic(lam).astype(np.float32).astype(float)
                            for arm, lam in arms.items()},
              "predicted": {arm: quadratic(lam)[["loss", "w_1", "w_2"]]
                            for arm, lam in arms.items()}}
    return PairPlot(**{**fields, **overrides})


def pair_row(run: int, diverged: bool = False, **keys: str) -> dict[str, object]:
    """One pair_table row (params come back from MLflow as strings); the seed scales the init."""
    lam, lr = float(keys.get("optimizer.weight_decay", LAMBDA)), float(keys.get("optimizer.lr", LR))
    scale = 1 + 0.05 * int(keys.get("seed", 0))
    final, base = (quadratic(value, lr, scale=scale).iloc[-1] for value in (lam, 0.0))
    return {"run_id": f"r{run}", "run_name": f"run {run}", "status": "FINISHED", **keys,
            "baseline.final_loss": base["loss"], "baseline.final_weight_norm": base["weight_norm"],
            "baseline.diverged": False,
            "decay.final_loss": None if diverged else final["loss"],
            "decay.final_weight_norm": None if diverged else final["weight_norm"],
            "decay.diverged": diverged}


def assert_pngs(figures: dict[str, bytes] | dict[str, Figure],
                sizes: dict[str, tuple[int, int]]) -> None:
    """The figures are exactly the named PNGs, each of exactly its (width, height)."""
    assert set(figures) == set(sizes)
    for name, figure in figures.items():
        data = figure if isinstance(figure, bytes) else png(figure)
        assert data[:8] == PNG_SIGNATURE, name
        # The IHDR chunk comes first: its length, its type, then width and height.
        assert data[12:16] == b"IHDR", name
        header = (int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big"))
        assert header == sizes[name], (name, header)
        height, width = imread(io.BytesIO(data), format="png").shape[:2]
        assert (width, height) == sizes[name], (name, width, height)


def legend_texts(ax: Axes) -> set[str]:
    legend = ax.get_legend()
    return set() if legend is None else {t.get_text() for t in legend.get_texts()}


def test_public_functions_return_pngs():
    assert_pngs(pair_figures(quadratic_plot()), PAIR_PNGS)
    table = pd.DataFrame([pair_row(i, **{"optimizer.weight_decay": wd, "optimizer.lr": lr})
                          for i, (wd, lr) in enumerate(itertools.product(["0", "0.1"],
                                                                         ["0.01", "0.1"]))])
    assert_pngs(sweep_figures(table, ["optimizer.weight_decay", "optimizer.lr"], "final_loss"),
                {"sweep.png": SWEEP, "heatmap.png": HEATMAP_1})


def test_pair_figures_label_axes_arms_and_closed_form():
    plot = quadratic_plot()
    figures = _pair_artists(plot)
    loss = figures["loss.png"].axes[0]
    assert plot.title in loss.get_title()
    assert (loss.get_xlabel(), loss.get_ylabel()) == ("step", "loss")
    assert loss.get_yscale() == "linear"  # 30 slow steps: well under a decade
    assert {"baseline (λ=0)", "decay (λ=0.01)", "decay closed form"} <= legend_texts(loss)
    weights = figures["weights.png"].axes[0]
    assert weights.get_ylabel() == "weight"
    assert {"w_1", "w_2", "closed form", "baseline (λ=0)"} <= legend_texts(weights)
    trajectory = figures["trajectory.png"].axes[0]
    assert (trajectory.get_xlabel(), trajectory.get_ylabel()) == ("w_1", "w_2")
    texts = legend_texts(trajectory)
    assert {"start", "end", "decay objective minimiser"} <= texts
    assert any(text.startswith("loss + λ/2") for text in texts)
    (x0, x1), (y0, y1) = trajectory.get_xlim(), trajectory.get_ylim()
    assert x0 < 0 < INIT[0] < x1 and y0 < 0 < INIT[1] < y1  # origin and both paths in view


def test_geometric_decay_over_decades_gets_a_log_loss_axis():
    plot = PairPlot(title="fast", histories={"baseline": quadratic(0.0, lr=0.2),
                                             "decay": quadratic(0.5, lr=0.2)},
                    weight_decay={"baseline": 0.0, "decay": 0.5})
    figures = _pair_artists(plot)
    assert figures["loss.png"].axes[0].get_yscale() == "log"
    assert set(figures) == {"loss.png", "weights.png"}  # no surface: no trajectory


def test_a_diverged_arm_is_marked_and_its_closed_form_stays_in_range():
    decay = quadratic(250.0)  # |1 - 0.01 (2 c + 250)| > 1: grows every step
    plot = quadratic_plot(histories={"baseline": quadratic(0.0), "decay": decay.iloc[:8]},
                          weight_decay={"baseline": 0.0, "decay": 250.0},
                          predicted={"decay": decay[["loss", "w_1", "w_2"]]})
    figures = _pair_artists(plot)
    loss = figures["loss.png"].axes[0]
    assert "decay diverged" in legend_texts(loss)
    [closed] = [line for line in loss.lines if line.get_label() == "decay closed form"]
    assert max(closed.get_xdata()) == 7
    assert "decay diverged" in legend_texts(figures["trajectory.png"].axes[0])
    assert_pngs(figures, PAIR_PNGS)


def test_mlp_history_plots_layer_norms_and_test_loss():
    steps = np.arange(21)
    history = pd.DataFrame({
        "loss": 2.3 * np.exp(-steps / 5) + 0.05, "test_loss": 2.3 * np.exp(-steps / 6) + 0.1,
        "test_accuracy": 1 - 0.9 * np.exp(-steps / 4), "weight_norm": 10 + steps / 10,
        "norm.layers.0.weight": 8 + steps / 10, "norm.layers.0.bias": 0.5 + steps / 100,
        "norm.layers.1.weight": 3 + steps / 20, "norm.layers.1.bias": 0.2 + steps / 200,
    }, index=steps)
    plot = PairPlot(title="mlp adamw", histories={"baseline": history, "decay": history * 0.9},
                    weight_decay={"baseline": 0.0, "decay": 0.1}, surface=surface)
    figures = _pair_artists(plot)
    assert "decay test loss" in legend_texts(figures["loss.png"].axes[0])
    weights = figures["weights.png"].axes[0]
    assert weights.get_ylabel() == "parameter norm"
    assert {"layers.0.weight", "layers.1.bias"} <= legend_texts(weights)
    assert_pngs(figures, {"loss.png": PAIR, "weights.png": PAIR})  # no w_1, w_2: no trajectory


def test_weight_decay_sweep_marks_the_diverged_point_and_the_baseline():
    table = pd.DataFrame([pair_row(i, diverged=wd == "1.0", **{"optimizer.weight_decay": wd})
                          for i, wd in enumerate(["0", "0.001", "0.01", "0.1", "1.0"])])
    figures = _sweep_artists(table, ["optimizer.weight_decay"], "final_loss")
    loss, norm = figures["sweep.png"].axes
    assert loss.get_xscale() == "log" and loss.get_xlabel() == "optimizer.weight_decay"
    assert {"baseline (λ=0)", "diverged"} <= legend_texts(loss)
    [diverged] = [line for line in loss.lines if line.get_label() == "diverged"]
    assert list(diverged.get_xdata()) == [1.0]
    [measured] = [bars for bars in loss.containers if bars.get_label() == "decay"]
    x, y = (np.asarray(values, float) for values in measured.lines[0].get_data())
    assert list(x[np.isfinite(y)]) == [0.001, 0.01, 0.1]  # λ=0 is the baseline line's
    assert norm.get_ylabel() == "final weight norm"
    assert_pngs(figures, {"sweep.png": SWEEP})  # one varying key: no heatmap


def test_grid_with_seeds_averages_and_marks_diverged_cells():
    def diverges(lam: str, lr: str, seed: str) -> bool:
        return (lam, lr) == ("0.1", "0.1") or (lam, seed) == ("0.01", "2")

    grid = itertools.product(["0.001", "0.01", "0.1"], ["0.01", "0.1"], ["0", "1", "2"])
    keys = ["optimizer.weight_decay", "optimizer.lr", "seed"]
    table = pd.DataFrame([pair_row(i, diverges(*values), **dict(zip(keys, values, strict=True)))
                          for i, values in enumerate(grid)])
    figures = _sweep_artists(table, keys, "final_loss")
    sweep = figures["sweep.png"]
    assert "3 seeds" in sweep.get_suptitle()
    assert {"lr=0.01", "lr=0.1", "diverged"} <= legend_texts(sweep.axes[0])
    heatmap = figures["heatmap.png"].axes[0]
    assert [heatmap.get_ylabel(), heatmap.get_xlabel()] == keys[:2]
    assert [t.get_text() for t in heatmap.get_yticklabels()] == ["0.001", "0.01", "0.1"]
    texts = [text.get_text() for text in heatmap.texts]
    assert "div" in texts  # every seed diverged: no value
    assert any(text.endswith("\n1 div") for text in texts)  # mean of the two that did not
    assert figures["heatmap.png"].axes[-1].get_ylabel() == "decay final_loss"  # the colorbar
    # Over seeds, a third panel: the paired difference with its interval, a line at 0.
    assert sweep.axes[2].get_title().startswith("paired difference, 95 % CI")
    assert [line.get_ydata()[0] for line in sweep.axes[2].lines
            if line.get_linestyle() == ":"] == [0]
    assert_pngs(figures, {"sweep.png": SWEEP_SEEDS, "heatmap.png": HEATMAP_1})


def test_a_third_key_splits_the_heatmap_and_text_keys_do_not_crash():
    keys = ["optimizer", "optimizer.weight_decay", "optimizer.lr"]
    grid = itertools.product(["sgd_wd", "adamw"], ["0.001", "0.1"], ["0.01", "0.1"])
    table = pd.DataFrame([pair_row(i, **dict(zip(keys, values, strict=True)))
                          for i, values in enumerate(grid)])
    table["decay.diverged"] = table["decay.diverged"].astype(object)
    table.loc[0, ["decay.final_loss", "decay.diverged"]] = [np.nan, None]  # a failed arm
    figures = _sweep_artists(table, keys, "final_test_loss")  # not in the table: n/a
    panels = [ax for ax in figures["heatmap.png"].axes if ax.get_title()]
    assert [ax.get_title() for ax in panels] == ["optimizer.lr=0.01", "optimizer.lr=0.1"]
    assert {text.get_text() for text in panels[0].texts} == {"n/a"}
    assert [t.get_text() for t in panels[0].get_yticklabels()] == ["adamw", "sgd_wd"]
    assert figures["sweep.png"].axes[0].get_xlabel() == "optimizer.weight_decay"
    assert_pngs(figures, {"sweep.png": SWEEP, "heatmap.png": HEATMAP_2})  # a panel per lr


@pytest.mark.parametrize("case", ["single row", "all diverged", "text key", "no keys"])
def test_degenerate_tables_still_draw(case):
    keys = ["optimizer.weight_decay"]
    rows = [pair_row(0, **{"optimizer.weight_decay": "0.01"})]
    if case == "all diverged":
        rows = [pair_row(i, diverged=True, **{"optimizer.weight_decay": wd})
                for i, wd in enumerate(["0.1", "1"])]
    elif case == "text key":
        keys = ["optimizer"]
        rows = [pair_row(i, optimizer=name) for i, name in enumerate(["adam", "adamw"])]
    elif case == "no keys":
        keys = []
    figures = _sweep_artists(pd.DataFrame(rows), keys, "final_loss")
    if case == "text key":
        labels = [t.get_text() for t in figures["sweep.png"].axes[0].get_xticklabels()]
        assert labels == ["adam", "adamw"]
    assert_pngs(figures, {"sweep.png": SWEEP})


@pytest.mark.parametrize(("cores", "pairs", "workers"),
                         [(2, 3, 0), (2, 4, 1), (2, 100, 1), (16, 10, 2), (16, 256, 8), (1, 9, 0)])
def test_drawers_use_spare_cores_for_enough_pairs(monkeypatch, cores, pairs, workers):
    monkeypatch.setattr(drawers.os, "sched_getaffinity", lambda pid: set(range(cores)))
    assert drawers._workers(pairs) == workers

"""What a finished job leaves to look at: figures in the run, tables for notebooks, the
closed form the figures draw — read back from a real store."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from matplotlib.image import imread
from scipy import stats

from tests.conftest import StoreReader, sweep_here
from wdexp import analysis
from wdexp.closed_form import QuadraticForm
from wdexp.models import Ridge
from wdexp.report import report

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# (width, height) in pixels: the README's 640 x 480 for a pair's figures; sweep.png has two
# panels side by side (wdexp/figures/sweep_plots.py), three over seeds (the paired difference); a
# heatmap with one panel is as wide as a pair's.
PAIR, SWEEP, SWEEP_SEEDS, HEATMAP = (640, 480), (1280, 480), (1920, 480), (640, 480)


def _figures(reader: StoreReader, run_id: str, tmp_path) -> dict[str, tuple[int, int]]:
    """Each figure of a run: name → (width, height) in pixels, as its PNG header states and as
    it decodes."""
    listed = [f.path for f in reader.client.list_artifacts(run_id, "figures")]
    sizes = {}
    for path in listed:
        local = reader.client.download_artifacts(run_id, path, str(tmp_path))
        with open(local, "rb") as png:
            head = png.read(24)
        assert head[:8] == PNG_SIGNATURE and head[12:16] == b"IHDR", path
        stated = (int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big"))
        height, width = imread(local).shape[:2]
        assert stated == (width, height), (path, stated, width, height)
        sizes[path.removeprefix("figures/")] = (width, height)
    return sizes


def test_pair_run_has_loss_weight_and_trajectory_figures(run_job, read_store, tmp_path):
    pair_id = run_job("epochs=20")
    sizes = _figures(read_store(), pair_id, tmp_path)
    assert sizes == {"loss.png": PAIR, "weights.png": PAIR, "trajectory.png": PAIR}


def test_models_with_more_weights_have_no_trajectory(run_job, read_store, tmp_path):
    pair_id = run_job("model=ridge", "model.n_features=3", "epochs=10")
    sizes = _figures(read_store(), pair_id, tmp_path)
    assert sizes == {"loss.png": PAIR, "weights.png": PAIR}


def test_closed_form_path_is_torch_sgd_on_ridge():
    """The curve the figures draw as theory: torch.optim.SGD with weight decay, float64."""
    model = Ridge(n_samples=40, n_features=3, data_seed=4, bias=True, dtype="float64",
                  init=[0.5, -1.0, 2.0])
    form = model.closed_form()
    init = np.concatenate([p.detach().numpy().ravel() for p in model.parameters()])
    lr, weight_decay, steps = 0.05, 0.3, 60
    predicted = form.gradient_descent(init, lr, weight_decay, np.arange(steps + 1))
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, weight_decay=weight_decay)
    for step in range(steps + 1):
        loss = model.loss()
        weights = torch.cat([model.weight, model.bias]).detach().numpy()
        assert predicted["loss"][step] == pytest.approx(loss.item(), rel=1e-10)
        for i, value in enumerate(weights):
            assert predicted[f"w_{i + 1}"][step] == pytest.approx(value, rel=1e-10, abs=1e-12)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    assert form.minimiser(weight_decay) == pytest.approx(
        model.solution(weight_decay).numpy(), rel=1e-10)


def test_quadratic_form_of_the_bowl_is_its_loss():
    form = QuadraticForm(np.diag([1 / 20, 1.0]), np.zeros(2), 0.0)
    w_1, w_2 = np.meshgrid(np.linspace(-1, 1, 5), np.linspace(-2, 2, 4))
    np.testing.assert_allclose(form(w_1, w_2), w_1**2 / 20 + w_2**2, rtol=1e-15)


@pytest.mark.slow
def test_seed_sweep_has_figures_and_is_reported_over_seeds(tmp_path, store_uri):
    assert sweep_here("optimizer.weight_decay=0,0.5", "optimizer.lr=0.01,0.02", "seed=0,1",
                      "epochs=5", tmp_path=tmp_path, store_uri=store_uri).status == "FINISHED"
    reader = StoreReader(store_uri)
    (sweep,) = reader.runs("sweep")
    sizes = _figures(reader, sweep.info.run_id, tmp_path)
    assert sizes == {"sweep.png": SWEEP_SEEDS, "heatmap.png": HEATMAP}  # lr by λ, over seeds

    store = analysis.open_store(store_uri)
    table = report(store, sweep.info.run_id)  # seed varies: one row per setting
    assert len(table) == 4 and set(table["seeds"]) == {2}
    pairs = reader.runs("pair")
    for _, row in table.iterrows():
        finals = [p.data.metrics["decay.final_loss"] for p in pairs
                  if float(p.data.params["optimizer.weight_decay"]) == row["weight_decay"]
                  and float(p.data.params["optimizer.lr"]) == row["lr"]]
        assert row["decay.final_loss"] == pytest.approx(np.mean(finals), rel=1e-12)
        assert row["decay.final_loss.std"] == pytest.approx(np.std(finals, ddof=1), rel=1e-9)
    assert len(report(store, sweep.info.run_id, seeds="each")) == 8


def test_arm_table_and_histories_read_back_what_was_logged(run_job, read_store, store_uri):
    run_job("epochs=4", "optimizer.weight_decay=0.1")
    store = analysis.open_store(store_uri)
    arms = analysis.arm_table(store)
    assert sorted(arms["arm"]) == ["baseline", "decay"]
    by_arm = arms.set_index("arm")
    assert by_arm.loc["decay", "optimizer.weight_decay"] == 0.1
    assert by_arm.loc["baseline", "optimizer.weight_decay"] == 0.0
    assert by_arm.loc["decay", "seed"] == 0 and not by_arm["diverged"].any()

    curves = analysis.histories(store, arms["run_id"], keys=["loss", "w_1"])
    reader = read_store()
    for run_id in arms["run_id"]:
        for key in ("loss", "w_1"):
            mine = curves[(curves["run_id"] == run_id) & (curves["key"] == key)]
            assert list(zip(mine["step"], mine["value"], strict=True)) == reader.history(
                run_id, key)
        last = curves[(curves["run_id"] == run_id) & (curves["key"] == "loss")].iloc[-1]
        assert by_arm.set_index("run_id").loc[run_id, "loss"] == last["value"]
    # The README's plotting recipe: one column per arm run, one row per step, the logged values.
    pivot = curves[curves.key == "loss"].pivot_table(index="step", columns="run_id",
                                                     values="value")
    assert sorted(pivot.columns) == sorted(arms["run_id"])
    assert list(pivot.index) == list(range(5))
    for run_id in arms["run_id"]:
        assert list(zip(pivot.index, pivot[run_id], strict=True)) == reader.history(run_id, "loss")


@pytest.mark.slow
def test_the_readmes_notebook_recipe_finds_the_latest_sweep_and_labels_curves_by_arm(
        tmp_path, store_uri):
    swept = sweep_here("optimizer.weight_decay=0.1,0.5", "epochs=3", tmp_path=tmp_path,
                       store_uri=store_uri)
    assert swept.status == "FINISHED"
    store = analysis.open_store(store_uri)
    sweep_id, swept_keys = analysis.find_sweep(store)  # the latest sweep
    assert swept_keys == ["optimizer.weight_decay"]
    assert sweep_id == StoreReader(store_uri).runs("sweep")[0].info.run_id
    pairs = analysis.pair_table(store, sweep_id, keys=swept_keys)
    assert sorted(pairs["optimizer.weight_decay"]) == [0.1, 0.5]
    arms = analysis.arm_table(store, sweep=sweep_id)
    curves = analysis.histories(store, arms["run_id"], keys=["loss", "w_1"])
    loss = curves[curves.key == "loss"].merge(arms[["run_id", "run_name"]])
    table = loss.pivot_table(index="step", columns="run_name", values="value")
    # Both baselines are one curve (same init, same seed): one legend entry, their values.
    assert sorted(table.columns) == ["baseline (wd=0)", "decay (wd=0.1)", "decay (wd=0.5)"]
    reader = StoreReader(store_uri)
    for _, arm in arms.iterrows():
        assert list(table[arm["run_name"]]) == [v for _, v in reader.history(arm["run_id"],
                                                                            "loss")]
    with pytest.raises(LookupError):
        analysis.find_sweep(store, "no such sweep")


@pytest.mark.slow
def test_a_seed_sweep_reports_paired_differences_with_scipys_intervals(tmp_path, store_uri):
    seeds = 5
    swept = sweep_here("optimizer.weight_decay=0.3,3.0", f"seed=range({seeds})", "optimizer.lr=0.2",
                       "epochs=4", tmp_path=tmp_path, store_uri=store_uri)
    assert swept.status == "FINISHED"
    reader = StoreReader(store_uri)
    (sweep,) = reader.runs("sweep")
    store = analysis.open_store(store_uri)
    table = report(store, sweep.info.run_id)
    assert len(table) == 2 and set(table["seeds"]) == {seeds}
    summary = analysis.pd.read_csv(reader.client.download_artifacts(
        sweep.info.run_id, "summary.csv", str(tmp_path)))
    assert len(summary) == 2 * seeds
    pairs = reader.runs("pair")
    for _, row in table.iterrows():
        chosen = [p for p in pairs
                  if float(p.data.params["optimizer.weight_decay"]) == row["weight_decay"]]
        for metric in ("final_loss", "final_weight_norm"):
            decay = np.array([p.data.metrics[f"decay.{metric}"] for p in chosen])
            base = np.array([p.data.metrics[f"baseline.{metric}"] for p in chosen])
            interval = stats.ttest_rel(decay, base).confidence_interval(0.95)
            column = f"diff.{metric}"
            assert row[column] == pytest.approx(np.mean(decay - base), rel=1e-12)
            assert row[f"{column}.std"] == pytest.approx(np.std(decay - base, ddof=1), rel=1e-9)
            assert row[f"{column}.ci_low"] == pytest.approx(interval.low, rel=1e-9)
            assert row[f"{column}.ci_high"] == pytest.approx(interval.high, rel=1e-9)
            assert row[f"{column}.n"] == seeds
            assert row[f"{column}.wins"] == int(np.sum(decay < base))
            # summary.csv: each pair's own difference, and its setting's statistics.
            rows = summary[summary["optimizer.weight_decay"] == row["weight_decay"]]
            assert sorted(rows[column]) == pytest.approx(sorted(decay - base), rel=1e-12)
            assert list(rows[f"paired.{metric}.ci_low"]) == pytest.approx([interval.low] * seeds)
    # Decay pulls the weights to 0 faster: every seed's weight norm is lower with it.
    assert set(table["diff.final_weight_norm.wins"]) == {seeds}
    sizes = _figures(reader, sweep.info.run_id, tmp_path)
    assert sizes["sweep.png"] == SWEEP_SEEDS

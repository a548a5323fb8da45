"""`python -m wdexp.report`: the store's pairs as a table or CSV, numbers exactly as stored."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
import pytest
from hydra import compose, initialize_config_dir

from tests.conftest import PYTHON, StoreReader, child_env, sweep_here
from wdexp import analysis
from wdexp.config import ROOT, ConfigError
from wdexp.report import Pairs, best, brief, pairs, pick, quote_sweep

# How a user starts the report: `python -m wdexp.report`, or the console script.
REPORT = ("-m", "wdexp.report")
ENTRY = (str(Path(PYTHON).parent / "wdexp-report"),)
METRICS = [f"{arm}.{name}" for arm in ("baseline", "decay")
           for name in ("final_loss", "final_weight_norm", "diverged")]


def report(*args: str, cwd) -> subprocess.CompletedProcess[str]:
    return reports([*REPORT, *args], cwd=cwd)[0]


def reports(*calls: Sequence[str], cwd) -> list[subprocess.CompletedProcess[str]]:
    """`python ARGS` for each call, one after the other (side by side, they wait on each other
    for the sqlite store)."""
    return [subprocess.run([*(() if args[0] == ENTRY[0] else (PYTHON,)), *args],
                           capture_output=True, text=True, cwd=cwd,
                           env=child_env(), timeout=120) for args in calls]


def rows(stdout: str) -> list[list[str]]:
    return [line.split() for line in stdout.strip().splitlines()]


@pytest.mark.slow
def test_report_csv_equals_the_store_and_filters_by_sweep(tmp_path, store_uri, run_job):
    lone = run_job("epochs=5", "optimizer.weight_decay=0.2")
    swept = sweep_here("optimizer.weight_decay=0,0.05", "epochs=3", tmp_path=tmp_path,
                       store_uri=store_uri)
    assert swept.status == "FINISHED"
    reader = StoreReader(store_uri)
    (sweep,) = reader.runs("sweep")
    # An older sweep run, recorded after the real one: `latest` goes by start time.
    older = reader.client.create_run(reader.experiment.experiment_id, run_name="sweep older",
                                     start_time=sweep.info.start_time - 60_000,
                                     tags={"wdexp.kind": "sweep"})
    reader.client.set_terminated(older.info.run_id)

    name = sweep.info.run_name
    assert name == "sweep wd=0,0.05"
    uri = f"tracking.uri={store_uri}"
    every, quoted = reports(
        [*REPORT, uri, "report.format=csv", f"report.output={tmp_path}/all.csv"],
        [*ENTRY, uri, f"report.sweep={name}"], cwd=tmp_path)  # one level of shell quotes
    assert every.returncode == 0, every.stderr
    table = pd.read_csv(tmp_path / "all.csv")
    by_id = {run.info.run_id: run for run in reader.runs("pair")}
    assert set(table["run_id"]) == set(by_id) and lone in by_id
    for _, row in table.iterrows():
        pair = by_id[row["run_id"]]
        assert row["optimizer"] == "sgd_wd" and row["model"] == "quadratic"
        assert row["weight_decay"] == float(pair.data.params["optimizer.weight_decay"])
        assert row["epochs"] == int(pair.data.params["epochs"])
        for arm in ("baseline", "decay"):
            for metric in ("final_loss", "final_weight_norm"):
                assert row[f"{arm}.{metric}"] == pair.data.metrics[f"{arm}.{metric}"]
            assert row[f"{arm}.diverged"] == bool(pair.data.metrics[f"{arm}.diverged"])

    assert quoted.returncode == 0, quoted.stderr
    assert rows(quoted.stdout) == [
        ["weight_decay", "base.loss", "decay.loss", "base.norm", "decay.norm"],
        *(["0" if wd == 0 else "0.05", f"{b:.4g}", f"{d:.4g}", f"{bn:.4g}", f"{dn:.4g}"]
          for wd, b, d, bn, dn in table[table["epochs"] == 3][
              ["weight_decay", "baseline.final_loss", "decay.final_loss",
               "baseline.final_weight_norm", "decay.final_weight_norm"]].itertuples(False))]
    # The other ways to name it find the same sweep (Hydra's quoting: see the test below).
    store = analysis.open_store(store_uri)
    for ref in (name, "latest", sweep.info.run_id):
        assert analysis.find_sweep(store, ref) == (sweep.info.run_id, ["optimizer.weight_decay"])


@pytest.mark.slow
def test_the_table_fits_100_columns_and_shows_the_keys_that_differ(tmp_path, store_uri,
                                                                   run_job):
    first = run_job("epochs=3", "optimizer.weight_decay=0.1")
    second = run_job("epochs=5", "optimizer.weight_decay=0.2", "optimizer.lr=0.02", "seed=1",
                     "model.coefficients=[0.1,2.0]")
    empty = tmp_path / "cwd"
    empty.mkdir()
    uri = f"tracking.uri={store_uri}"
    default, every, no_sweep, no_column = reports(
        [*REPORT, uri], [*REPORT, uri, "report.columns=all"],
        [*REPORT, uri, "report.sweep=sweep nothing=0,1"],
        [*REPORT, uri, "report.columns=[epochs,nope]"], cwd=empty)

    assert default.returncode == 0, default.stderr
    assert all(len(line) <= 100 for line in default.stdout.splitlines()), default.stdout
    header, *values = rows(default.stdout)  # one block: no column wrapped
    assert header == ["lr", "weight_decay", "seed", "epochs", "coefficients",
                      "base.loss", "decay.loss", "base.norm", "decay.norm"]
    assert [row[:4] for row in values] == [["0.01", "0.1", "0", "3"], ["0.02", "0.2", "1", "5"]]

    assert every.returncode == 0, every.stderr
    header, *values = rows(every.stdout)
    assert header == ["run_id", "status", "model", "optimizer", "decay_mode", "lr",
                      "weight_decay", "seed", "epochs", "coefficients", *METRICS]
    assert [row[0] for row in values] == [first, second]

    assert no_sweep.returncode == 2 and no_sweep.stdout == ""
    assert no_sweep.stderr == ("wdexp: report.sweep names no sweep run in this experiment "
                               "(got 'sweep nothing=0,1')\n")
    assert no_column.returncode == 2 and no_column.stdout == ""
    (line,) = no_column.stderr.splitlines()
    assert line.startswith("wdexp: report.columns must be brief, all or a list of these "
                           "columns: run_id, status, model, ") and line.endswith("(got 'nope')")
    assert "optimizer.momentum" in line and "tracking.uri" not in line
    assert list(empty.iterdir()) == []  # no log file, whatever the outcome

    found = pairs(analysis.open_store(store_uri), extra=["epochs", "optimizer.momentum"])
    picked = pick(found, ["epochs", "optimizer.momentum", "decay.final_loss"])
    assert picked.columns.tolist() == ["epochs", "optimizer.momentum", "decay.final_loss"]
    assert picked["epochs"].tolist() == [3, 5] and picked["optimizer.momentum"].eq(0).all()


def test_the_brief_table_of_seeds_shows_mean_and_std_and_only_flags_that_are_raised():
    settings = pd.DataFrame({
        "weight_decay": [0.0, 0.1], "model": ["quadratic"] * 2, "seeds": [3, 1],
        **{f"{arm}.{name}{std}": [0.123456, 2.0] if not std else [0.0123456, float("nan")]
           for arm in ("baseline", "decay") for name in ("final_loss", "final_weight_norm")
           for std in ("", ".std")},
        "baseline.diverged": [0, 0], "decay.diverged": [0, 0]})
    keys = {"optimizer.weight_decay": "weight_decay", "model": "model"}
    shown = brief(Pairs(settings, keys, []))
    assert shown.columns.tolist() == ["weight_decay", "seeds", "base.loss", "decay.loss",
                                      "base.norm", "decay.norm"]
    assert shown["decay.loss"].tolist() == ["0.1235±0.012", "2"]
    diverged = brief(Pairs(settings.assign(**{"decay.diverged": [0, 1]}), keys, []))
    assert diverged.columns[-2:].tolist() == ["base.diverged", "decay.diverged"]


@pytest.mark.parametrize("name", ["sweep optimizer.weight_decay=0,0.1", "it's", "a\\b", "end\\",
                                  "\\'", "${x}", "a\\${x}", "[1,2]", "00012"])
def test_a_sweep_name_reads_back_unchanged_through_hydra(name):
    (override,) = quote_sweep([f"report.sweep={name}"])
    with initialize_config_dir(version_base="1.3", config_dir=str(ROOT / "conf")):
        assert compose(config_name="report", overrides=[override]).report.sweep == name
    assert quote_sweep(["report.sweep='a,b'", "report.sweep=null", "epochs=3"]) == [
        "report.sweep='a,b'", "report.sweep=null", "epochs=3"]


def test_an_unknown_column_is_a_config_error_naming_the_columns():
    found = Pairs(pd.DataFrame({"run_id": ["x"], "lr": [0.1]}), {"optimizer.lr": "lr"},
                  ["optimizer.lr", "optimizer.momentum"])
    assert pick(found, ["optimizer.lr"]).columns.tolist() == ["optimizer.lr"]
    with pytest.raises(ConfigError, match=r"run_id, lr, optimizer\.momentum") as error:
        pick(found, ["momentum"])
    assert error.value.key == "report.columns"


def test_report_on_a_missing_store_is_a_one_line_error(tmp_path):
    result = report(f"tracking.uri=sqlite:///{tmp_path}/none.db", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip() == f"wdexp: tracking.uri names no existing store (got 'sqlite:///{tmp_path}/none.db')"
    assert not (tmp_path / "none.db").exists()
    assert list(tmp_path.iterdir()) == []


def test_best_picks_the_key_value_with_the_lowest_decay_test_loss_per_setting():
    table = pd.DataFrame({
        "fraction": [0.5, 0.5, 0.5, 1.0, 1.0, 1.0],
        "weight_decay": [0.1, 0.3, 1.0, 0.1, 0.3, 1.0],
        "decay.final_test_loss": [0.9, 0.7, 0.8, 0.5, 0.6, 0.95],
        "decay.final_loss": [0.1] * 6})
    keys = {"data.fraction": "fraction", "optimizer.weight_decay": "weight_decay"}
    picked = best(Pairs(table, keys, []), "weight_decay")
    assert picked.to_dict("list") == {"fraction": [0.5, 1.0], "weight_decay": [0.3, 0.1],
                                      "decay.final_test_loss": [0.7, 0.5]}
    assert best(Pairs(table, keys, []), "optimizer.weight_decay").equals(picked)
    with pytest.raises(ConfigError, match=r"report\.best must name"):
        best(Pairs(table, keys, []), "momentum")


@pytest.mark.slow
def test_a_seed_sweep_of_a_network_is_one_row_per_setting(tmp_path, store_uri):
    """The batch order follows the seed and the data's identity and the decay's timescale are
    derived params: none of them splits a setting or takes a column."""
    swept = sweep_here("model=mlp", "data.batch_size=null", "epochs=1", "seed=0,1",
                       "optimizer.weight_decay=0.1,0.3", tmp_path=tmp_path, store_uri=store_uri)
    assert swept.status == "FINISHED"
    found = pairs(analysis.open_store(store_uri), "latest")
    assert len(found.table) == 2 and set(found.table["seeds"]) == {2}
    shown = brief(found)
    assert not {"batch_seed", "tau_iter", "tau_epoch", "sha256"} & set(shown.columns)
    assert {"weight_decay", "seeds", "d.test_loss (95% CI)", "wins"} <= set(shown.columns)

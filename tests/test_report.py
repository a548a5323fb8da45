"""`python -m wdexp.report`: the store's pairs as a table or CSV, numbers exactly as stored."""

from __future__ import annotations

import subprocess

import pandas as pd

from tests.conftest import PYTHON, StoreReader, multirun


def report(*args: str, cwd) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PYTHON, "-m", "wdexp.report", *args], capture_output=True,
                          text=True, cwd=cwd, timeout=120)


def test_report_csv_equals_the_store_and_filters_by_sweep(tmp_path, store_uri, run_job):
    lone = run_job("epochs=3", "optimizer.weight_decay=0.2")
    swept = multirun("optimizer.weight_decay=0,0.05", "epochs=3", tmp_path=tmp_path,
                     store_uri=store_uri)
    assert swept.returncode == 0, swept.stderr
    reader = StoreReader(store_uri)
    (sweep,) = reader.runs("sweep")

    every = report(f"tracking.uri={store_uri}", "report.format=csv",
                   f"report.output={tmp_path}/all.csv", cwd=tmp_path)
    assert every.returncode == 0, every.stderr
    table = pd.read_csv(tmp_path / "all.csv")
    pairs = {run.info.run_id: run for run in reader.runs("pair")}
    assert set(table["run_id"]) == set(pairs) and lone in pairs
    for _, row in table.iterrows():
        pair = pairs[row["run_id"]]
        assert row["optimizer"] == "sgd_wd" and row["model"] == "quadratic"
        assert row["weight_decay"] == float(pair.data.params["optimizer.weight_decay"])
        for arm in ("baseline", "decay"):
            for name in ("final_loss", "final_weight_norm"):
                assert row[f"{arm}.{name}"] == pair.data.metrics[f"{arm}.{name}"]
            assert row[f"{arm}.diverged"] == bool(pair.data.metrics[f"{arm}.diverged"])

    only = report(f"tracking.uri={store_uri}", f"report.sweep='{sweep.info.run_name}'",
                  cwd=tmp_path)
    assert only.returncode == 0, only.stderr
    lines = only.stdout.strip().splitlines()
    assert len(lines) == 3 and "weight_decay" in lines[0]
    assert lone not in only.stdout


def test_report_on_a_missing_store_is_a_one_line_error(tmp_path):
    result = report(f"tracking.uri=sqlite:///{tmp_path}/none.db", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip() == f"wdexp: tracking.uri names no existing store (got 'sqlite:///{tmp_path}/none.db')"
    assert not (tmp_path / "none.db").exists()

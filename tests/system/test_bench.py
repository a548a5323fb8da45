"""`make bench` in smoke mode, end to end: the runner, both reference scripts and the ingestion
probe run and fill the rows that cover each kind of measure (wall, peak memory of the largest
process and of the tree, ingestion, wall per member and its figure). The other rows' commands
are wdexp sweeps of the same program, and each of them composes (tests/test_bench.py): a full
smoke run costs 4 minutes of CPU, these rows 40 % of it."""

from __future__ import annotations

import math
import re
import subprocess
from pathlib import Path

from tests.conftest import PYTHON

RUN = Path(__file__).resolve().parents[2] / "benchmarks" / "run.py"
ONLY = ("seed run", "members", "ingestion")
ROWS = ("existing store / bare loop", "new store / bare loop", "2 members (seed=range(1))",
        "64 members (seed=range(32))", "256 members (seed=range(128))", "metric ingestion",
        "peak memory (largest process)", "peak memory (process tree")
LEFT_OUT = ("-epoch pair", "epochs multirun / tutorial", "MNIST-1D MLP",
            "PostgreSQL-backed server")


def test_smoke_bench_fills_the_rows_it_is_asked_for(tmp_path: Path) -> None:
    table = tmp_path / "bench.md"
    figure = tmp_path / "members.png"
    only = [arg for name in ONLY for arg in ("--only", name)]
    result = subprocess.run([PYTHON, str(RUN), "--smoke", *only, "--output", str(table),
                             "--members-figure", str(figure)],
                            # Its figures are not asserted (smoke): it may run beside other
                            # tests, and the limit is only a guard against a hang.
                            capture_output=True, text=True, timeout=900, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [line.split("|")[1:-1] for line in result.stdout.splitlines() if line.startswith("|")]
    for name in ROWS:
        [cells] = [row for row in rows if name in row[0]]
        a, b, ratio, target, status = (cell.strip() for cell in cells[1:])
        # (a smoke run's ratio may round to 0.00: its 256 "members" are the 2 of a tiny sweep)
        for cell, least in ((a, 0), (b, 0), (ratio, -1),
                            *(() if target == "figure" else ((target, 0),))):
            number = re.match(r"[≤≥]? ?(\d+(?:\.\d+)?)", cell)
            assert number and math.isfinite(float(number[1])) and float(number[1]) > least, cells
        assert status == "smoke"
    assert not [row for row in rows for name in LEFT_OUT if name in row[0]]
    assert table.read_text().strip() in result.stdout
    assert figure.read_bytes().startswith(b"\x89PNG")

"""`make bench` in smoke mode: the runner, both reference scripts and the ingestion probe run
end to end and fill every row of the table."""

from __future__ import annotations

import math
import re
import subprocess
from pathlib import Path

from tests.conftest import PYTHON

RUN = Path(__file__).resolve().parents[2] / "benchmarks" / "run.py"
ROWS = ("existing store / bare loop", "new store / bare loop", "-epoch pair",
        "epochs multirun / tutorial", "hydra/launcher=stacked / tutorial multirun",
        "MNIST-1D MLP, hydra/launcher=stacked / joblib", "64 members (seed=range(32))",
        "PostgreSQL-backed server / local sqlite", "metric ingestion",
        "peak memory (largest process)", "peak memory (process tree")


def test_smoke_bench_fills_every_row(tmp_path: Path) -> None:
    table = tmp_path / "bench.md"
    figure = tmp_path / "members.png"
    result = subprocess.run([PYTHON, str(RUN), "--smoke", "--output", str(table),
                             "--members-figure", str(figure)],
                            # Its figures are not asserted (smoke): it may run beside other
                            # tests, and the limit is only a guard against a hang.
                            capture_output=True, text=True, timeout=900, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [line.split("|")[1:-1] for line in result.stdout.splitlines() if line.startswith("|")]
    for name in ROWS:
        [cells] = [row for row in rows if name in row[0]]
        a, b, ratio, target, status = (cell.strip() for cell in cells[1:])
        for cell in (a, b, ratio, target):
            number = re.match(r"[≤≥]? ?(\d+(?:\.\d+)?)", cell)
            assert number and math.isfinite(float(number[1])) and float(number[1]) > 0, cells
        assert status == "smoke"
    assert table.read_text().strip() in result.stdout
    assert figure.read_bytes().startswith(b"\x89PNG")

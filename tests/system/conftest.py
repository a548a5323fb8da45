"""System tests: processes killed mid-run, real servers (MLflow, its basic-auth app, PostgreSQL,
Ray), the launchers, the UI in a browser, a job watched while it runs, the benchmark's smoke run.

Each is marked ``system``: ``make test`` runs them, ``make test-fast`` leaves them out. The
helpers and fixtures of tests/conftest.py apply here as everywhere.
"""

from __future__ import annotations

from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(item.path).resolve().parents:
            item.add_marker(pytest.mark.system)

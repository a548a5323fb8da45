"""A team's tracking server: ``mlflow server`` on a real PostgreSQL database, a parallel sweep
(joblib) logging into it over HTTP, everything read back with MLflow's own client.

The database password reaches the server only through its PGPASSWORD variable, as the README's
"Secrets" section advises; the jobs never see it, and it must end up nowhere: no table of the
store, no artifact, no log, no file a job writes.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import psycopg2
import pytest
from psycopg2 import sql

from tests.conftest import StoreReader, free_port, multirun
from tests.postgres import Postgres, running_postgres
from tests.servers import start_mlflow_server

# What the quadratic model logs for each arm at every step 0..epochs.
# One worker runs this module under pytest-xdist: its fixture starts once.
pytestmark = pytest.mark.xdist_group("test_team_server")

ARM_METRICS = {"loss", "weight_norm", "w_1", "w_2", "lr", "grad_norm", "decay_grad_ratio"}


@dataclass(frozen=True)
class TeamServer:
    url: str
    postgres: Postgres
    folder: Path  # the server's log and its artifacts


# Session scope: pytest tears a module-scoped fixture down whenever a worker's next test is
# another module's, and xdist may put one between two of this module's.
@pytest.fixture(scope="session")
def team_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TeamServer]:
    """One PostgreSQL and one server on it for the module (each test has its own experiment):
    together they take longer to start than the small sweep takes to run."""
    folder = tmp_path_factory.mktemp("team-server")
    with running_postgres() as postgres:
        server = start_mlflow_server(folder, free_port(), backend_store_uri=postgres.uri,
                                     env={"PGPASSWORD": postgres.password})
        try:
            yield TeamServer(server.url, postgres, folder)
        finally:
            server.kill()


def _sweep(server: TeamServer, tmp_path: Path, decays: list[str], epochs: int,
           timeout: float) -> tuple[StoreReader, subprocess.CompletedProcess[str]]:
    experiment = tmp_path.name  # one per test on the shared server
    result = multirun("hydra/launcher=joblib", "hydra.launcher.n_jobs=2", f"epochs={epochs}",
                      f"optimizer.weight_decay={','.join(decays)}",
                      f"tracking.experiment={experiment}",
                      tmp_path=tmp_path, store_uri=server.url, timeout=timeout)
    assert result.returncode == 0, result.stdout + result.stderr
    return StoreReader(server.url, experiment), result


def _check_run_tree(reader: StoreReader, decays: list[str], epochs: int) -> None:
    """One sweep run, a FINISHED pair run under it per job, two FINISHED arms under each pair,
    and each arm's every metric at every step 0..epochs exactly once."""
    (sweep,) = reader.runs("sweep")
    pairs = reader.runs("pair")
    assert len(reader.runs()) == 1 + 3 * len(decays)  # nothing else in the experiment
    assert sorted(float(p.data.params["optimizer.weight_decay"]) for p in pairs) == sorted(
        float(d) for d in decays)
    steps = list(range(epochs + 1))
    for pair in pairs:
        assert pair.data.tags["mlflow.parentRunId"] == sweep.info.run_id
        assert pair.info.status == "FINISHED"
        arms = reader.arms(pair.info.run_id)
        assert set(arms) == {"baseline", "decay"}
        for name, arm in arms.items():
            assert arm.info.status == "FINISHED", name
            assert set(arm.data.metrics) >= ARM_METRICS, name
            for key in arm.data.metrics:
                logged = [step for step, _ in reader.history(arm.info.run_id, key)]
                assert logged == steps, f"{name}.{key}: {len(logged)} points"


def _tables_holding(postgres: Postgres, secret: str) -> tuple[list[str], list[str]]:
    """Every table of the store's database, and those with ``secret`` in any row (each row
    compared as its whole text, every column)."""
    with closing(postgres.connect()) as connection, connection.cursor() as cursor:
        cursor.execute("SELECT table_schema, table_name FROM information_schema.tables "
                       "WHERE table_type = 'BASE TABLE' "
                       "AND table_schema NOT IN ('pg_catalog', 'information_schema')")
        tables = sorted(cursor.fetchall())
        holding = []
        for schema, table in tables:
            cursor.execute(sql.SQL("SELECT count(*) FROM {}.{} AS t "
                                   "WHERE strpos(t::text, %s) > 0").format(
                sql.Identifier(schema), sql.Identifier(table)), [secret])
            if cursor.fetchone()[0]:
                holding.append(table)
    return [table for _, table in tables], holding


def _files_holding(folders: list[Path], secret: str) -> tuple[int, list[Path]]:
    files = [path for folder in folders for path in folder.rglob("*") if path.is_file()]
    return len(files), [path for path in files if secret.encode() in _read(path)]


def _read(path: Path) -> bytes:
    # PostgreSQL's data folder is read while the server runs: a file it removes after the
    # listing (its relation cache, pg_internal.init, was one in a full run) holds nothing now.
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return b""


def _check_no_password_stored(server: TeamServer, tmp_path: Path, jobs: int,
                              result: subprocess.CompletedProcess[str]) -> None:
    secret = server.postgres.password
    tables, holding = _tables_holding(server.postgres, secret)
    assert {"experiments", "runs", "params", "tags", "metrics", "latest_metrics"} <= set(tables)
    assert holding == []
    # the sweep folder (each job's .log and Hydra's files), the server's log and artifacts,
    # PostgreSQL's own log
    searched, leaking = _files_holding([tmp_path, server.folder, server.postgres.log.parent],
                                       secret)
    assert any((server.folder / "server-artifacts").rglob("config.yaml"))
    job_logs = sorted(path.parent.name for path in (tmp_path / "multirun").rglob("*.log"))
    assert job_logs == sorted(str(job) for job in range(jobs))
    assert searched and leaking == []
    assert secret not in result.stdout + result.stderr


@pytest.mark.slow  # 4 jobs of 1000 epochs, two at a time: two batches in parallel
def test_a_full_sweep_into_a_postgresql_backed_server_keeps_every_step(tmp_path, team_server):
    # The server's password is really checked: without it PostgreSQL turns a client away.
    postgres = team_server.postgres
    with pytest.raises(psycopg2.OperationalError, match="password"):
        psycopg2.connect(host=postgres.host, port=postgres.port, user=postgres.user,
                         dbname=postgres.dbname, connect_timeout=10).close()

    decays = ["0", "0.01", "0.1", "1"]
    reader, result = _sweep(team_server, tmp_path, decays, epochs=1000, timeout=600)
    _check_run_tree(reader, decays, epochs=1000)
    _check_no_password_stored(team_server, tmp_path, len(decays), result)

"""The team set-up on hosts of our own (tests/system/hosts.py): a tracking host running
PostgreSQL 15 and ``mlflow server`` proxying artifacts (jobs upload through it and never see its
disk), a login host where the user types the command, and two worker hosts. Used by
tests/system/test_hosts.py and by the load row of ``make bench-hosts``."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import PYTHON, StoreReader
from tests.postgres import running_postgres
from tests.system.hosts import Network, network

ROOT = Path(__file__).resolve().parents[2]
TRACKING, LOGIN, WORKERS = "tracking", "login", ("worker-1", "worker-2")


@dataclass(frozen=True)
class Cluster:
    net: Network
    url: str  # the tracking server, as the other hosts reach it
    secret: str  # the database password: in the server's environment only
    disk: Path  # the tracking host's own folder: the server's log and artifacts
    database: str  # the server's database, through its socket: the test's view while jobs run
    leaders: dict[str, int]  # "server", "postgres": the pid each one's processes descend from

    def watch(self, experiment: str, monkeypatch: pytest.MonkeyPatch) -> StoreReader:
        """The store as this test reads it while jobs run (no network: the database's socket)."""
        monkeypatch.setenv("PGPASSWORD", self.secret)  # this process's; children never get it
        return StoreReader(self.database, experiment)

    def dump(self, folder: Path, experiment: str = "weight-decay") -> list[dict]:
        """The store as a user on the login host reads it, artifacts downloaded into folder."""
        done = self.net.run(LOGIN, [PYTHON, "-m", "tests.system.store_dump", self.url,
                                    experiment, str(folder)], cwd=ROOT, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        return json.loads(done.stdout)


@contextlib.contextmanager
def team_cluster(disk: Path) -> Iterator[Cluster]:
    """The hosts, PostgreSQL and the MLflow server on the tracking host, its files in ``disk``
    (hidden from the other hosts); everything stopped and removed at the end."""
    with network(TRACKING, LOGIN, *WORKERS) as net:
        others = (LOGIN, *WORKERS)
        net.hide(disk, *others)
        with running_postgres(on=lambda argv: net.command(TRACKING, argv)) as postgres:
            net.hide(postgres.log.parent, *others)  # its data folder
            address = net[TRACKING].address
            url = f"http://{address}:5000"
            server = net.start(
                TRACKING,
                [PYTHON, "-m", "mlflow", "server", "--host", address, "--port", "5000",
                 "--allowed-hosts", f"{address}:5000", "--backend-store-uri", postgres.uri,
                 "--serve-artifacts", "--artifacts-destination", str(disk / "artifacts"),
                 "--workers", "1"],
                log=disk / "server.log", cwd=disk,
                env={"PGPASSWORD": postgres.password,
                     "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"})
            try:
                net.wait_http(LOGIN, f"{url}/health")
                database = (f"postgresql+psycopg2://{postgres.user}@/{postgres.dbname}"
                            f"?host={postgres.log.parent}&port={postgres.port}")
                yield Cluster(net, url, postgres.password, disk, database,
                              {"server": server.pid, "postgres": postgres.pid})
            finally:
                net.stop(server)  # before its database goes

"""An sqlite file becomes or stays an MLflow store only with consent: a foreign database, a file
that is no database and an older MLflow store are one-line errors naming tracking.uri, the file
unchanged; ``tracking.upgrade_store=true`` upgrades an older store after copying it aside; the
lock that serialises a store's creation is held only while it is new, and its wait is bounded."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import sqlite3
import time
from pathlib import Path

import pytest

from tests.conftest import cli
from wdexp.tracking import consent, store
from wdexp.vocabulary import ConfigError, TrackingSpec


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _dump(db: Path) -> list[str]:
    """Every table's schema and rows as SQL: what a copy made by sqlite's backup must keep."""
    with contextlib.closing(sqlite3.connect(db)) as connection:
        return list(connection.iterdump())


def _revision(db: Path) -> str:
    with contextlib.closing(sqlite3.connect(db)) as connection:
        return connection.execute("SELECT version_num FROM alembic_version").fetchone()[0]


@pytest.fixture(autouse=True)
def _fresh_connections():
    yield
    store.connect.cache_clear()


def test_a_foreign_database_is_refused_in_one_line_and_left_as_it_was(tmp_path):
    db = tmp_path / "other.db"
    with contextlib.closing(sqlite3.connect(db)) as connection:
        connection.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT)")
        connection.execute("INSERT INTO customers (name) VALUES ('Ada'), ('Grace')")
        connection.commit()
    before = _digest(db)
    result = cli(f"tracking.uri=sqlite:///{db}", tmp_path=tmp_path)
    assert result.returncode == 2, result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("wdexp: tracking.uri is an sqlite database but no MLflow store "
                           "(its tables: customers)"), line
    assert _digest(db) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.db", "outputs"]


def test_a_file_that_is_no_database_is_one_line_without_sql(tmp_path):
    text = tmp_path / "notes.db"
    text.write_text("a text file, not a database\n" * 100)
    before = _digest(text)
    with pytest.raises(ConfigError) as raised:
        store.connect(TrackingSpec(f"sqlite:///{text}", "weight-decay"))
    message = str(raised.value)
    assert raised.value.key == "tracking.uri"
    assert "is not an sqlite database" in message
    assert "\n" not in message and "SELECT" not in message.upper()
    assert _digest(text) == before


def test_an_empty_file_becomes_a_new_store(tmp_path):
    db = tmp_path / "empty.db"
    db.touch()
    connected = store.connect(TrackingSpec(f"sqlite:///{db}", "weight-decay"))
    assert connected.experiment_id
    assert _revision(db) == consent.head_revision()


@pytest.fixture
def older_store(tmp_path: Path) -> tuple[Path, str]:
    """An MLflow store one schema revision behind the installed MLflow, as an older MLflow
    would have left it: MLflow's initial tables, migrated up to that revision."""
    import sqlalchemy
    from alembic import command
    from alembic.script import ScriptDirectory
    from mlflow.store.db.utils import _get_alembic_config
    from mlflow.store.tracking.dbmodels.initial_models import Base as InitialBase

    db = tmp_path / "old.db"
    uri = f"sqlite:///{db}"
    config = _get_alembic_config(uri)
    older = ScriptDirectory.from_config(config).get_revision(consent.head_revision()).down_revision
    engine = sqlalchemy.create_engine(uri)
    InitialBase.metadata.create_all(engine)
    command.upgrade(config, older)
    engine.dispose()
    assert _revision(db) == older != consent.head_revision()
    return db, older


def test_an_older_store_is_refused_until_upgrading_is_allowed(older_store):
    db, older = older_store
    before, rows = _digest(db), _dump(db)
    with pytest.raises(ConfigError) as raised:
        store.connect(TrackingSpec(f"sqlite:///{db}", "weight-decay"))
    message = str(raised.value)
    assert raised.value.key == "tracking.uri"
    assert f"older schema ({older}" in message
    assert "one-way" in message and "tracking.upgrade_store=true" in message
    assert f"{db.name}.bak-{older}" in message
    assert _digest(db) == before
    assert not db.with_name(f"{db.name}.bak-{older}").exists()

    connected = store.connect(TrackingSpec(f"sqlite:///{db}", "weight-decay",
                                           upgrade_store=True))
    assert connected.experiment_id
    assert _revision(db) == consent.head_revision()
    backup = db.with_name(f"{db.name}.bak-{older}")
    assert _revision(backup) == older
    assert _dump(backup) == rows


def test_the_creation_lock_is_bounded_and_only_for_a_new_store(tmp_path):
    folder = os.open(tmp_path, os.O_RDONLY)
    try:
        fcntl.flock(folder, fcntl.LOCK_EX)  # as another user holding the folder's lock would
        new = TrackingSpec(f"sqlite:///{tmp_path}/mlflow.db", "weight-decay", timeout_s=1)
        started = time.monotonic()
        with pytest.raises(ConfigError) as raised:
            store.connect(new)
        waited = time.monotonic() - started
        message = str(raised.value)
        assert raised.value.key == "tracking.uri"
        assert f"lock on {tmp_path}" in message and "tracking.timeout_s" in message
        assert 1 <= waited < 30
        assert not (tmp_path / "mlflow.db").exists()
    finally:
        os.close(folder)  # the lock goes with it

    created = store.connect(new)  # nobody holds it now: created
    store.connect.cache_clear()
    folder = os.open(tmp_path, os.O_RDONLY)
    try:
        fcntl.flock(folder, fcntl.LOCK_EX)
        # An existing store takes no lock: the held one stalls nothing.
        assert store.connect(new).experiment_id == created.experiment_id
    finally:
        os.close(folder)

"""Tracking process (and readers): an sqlite file becomes or stays an MLflow store only with
consent.

MLflow's client, given an sqlite file, adds its ~70 tables to whatever database it finds and
migrates an older MLflow store in place, irreversibly. Before wdexp lets MLflow at a file, this
module reads it with the standard library, read-only, and allows three cases:

- no file, an empty one or a database without tables: a **new** store, created by one job at a
  time (a bounded wait for an exclusive lock on its folder, held only while it is created);
- an MLflow store at the installed MLflow's schema revision: used as it is, no lock;
- an MLflow store of an **older** revision: with ``tracking.upgrade_store=true`` it is first
  copied aside (``mlflow.db.bak-<revision>``, sqlite's online backup) and then upgraded with
  MLflow's own ``mlflow db upgrade``; without it, a one-line error says what upgrading means.

Anything else (a database of another application, a store from a newer MLflow, a file that is no
database) is a one-line error naming ``tracking.uri``, and the file is left as it was.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from functools import cache
from pathlib import Path

from wdexp.vocabulary import ConfigError, TrackingSpec, redact

LOCK_POLL_S = 0.1
SHOWN_TABLES = 4  # of a foreign database, in the error


# Each migration file states its revision and the one before it: read as text, not imported
# (alembic imports all ~70 of them, most of a second that MLflow's own schema check pays again).
_REVISION = re.compile(r"^revision\s*=\s*[\"']([0-9a-f]+)[\"']", re.M)
_DOWN_REVISION = re.compile(r"^down_revision\s*=\s*[\"']([0-9a-f]+)[\"']", re.M)


@cache
def _migrations() -> tuple[str, frozenset[str]]:
    """The installed MLflow's head schema revision and every revision it knows."""
    import mlflow.store

    revisions, downs = set(), set()
    for script in (Path(mlflow.store.__file__).parent / "db_migrations" / "versions").glob("*.py"):
        text = script.read_text()
        if found := _REVISION.search(text):
            revisions.add(found[1])
            downs.update(_DOWN_REVISION.findall(text))
    heads = revisions - downs
    if len(heads) != 1:  # a layout these patterns do not read: ask alembic
        from alembic.script import ScriptDirectory

        directory = ScriptDirectory(str(Path(mlflow.store.__file__).parent / "db_migrations"))
        heads = set(directory.get_heads())
        revisions = {revision.revision for revision in directory.walk_revisions()}
    (head,) = heads
    return head, frozenset(revisions)


def head_revision() -> str:
    return _migrations()[0]


def _read(db: Path) -> tuple[list[str], str | None]:
    """The file's tables and its MLflow schema revision (None: no ``alembic_version``), read
    without writing; sqlite3.DatabaseError for a file that is no database."""
    with contextlib.closing(sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True)) as connection:
        tables = sorted(name for (name,) in connection.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table'"))
        revision = None
        if "alembic_version" in tables:
            row = connection.execute("SELECT version_num FROM alembic_version").fetchone()
            revision = row[0] if row else None
    return tables, revision


def is_new(db: Path) -> bool:
    return not db.exists() or db.stat().st_size == 0


def check(db: Path, spec: TrackingSpec, *, create: bool) -> None:
    """Raise a ConfigError unless ``db`` is new (and ``create``) or an MLflow store this MLflow
    can use — after upgrading an older one, where ``tracking.upgrade_store`` allows it."""
    shown = redact(spec.uri)
    if is_new(db):
        return
    try:
        tables, revision = _read(db)
    except sqlite3.DatabaseError as error:
        raise ConfigError("tracking.uri", f"is not an sqlite database ({error})", shown) from None
    if not tables:
        return
    if revision is None:
        listed = ", ".join(tables[:SHOWN_TABLES]) + (", …" if len(tables) > SHOWN_TABLES else "")
        raise ConfigError("tracking.uri", f"is an sqlite database but no MLflow store (its "
                          f"tables: {listed}); wdexp adds MLflow's tables only to a new or empty "
                          "file", shown)
    head, known = _migrations()
    if revision == head:
        return
    if revision not in known:
        raise ConfigError("tracking.uri", f"is an MLflow store of schema {revision}, which the "
                          f"installed MLflow (schema {head}) does not know: it was written by a "
                          "newer MLflow", shown)
    backup = db.with_name(f"{db.name}.bak-{revision}")
    if not spec.upgrade_store:
        raise ConfigError("tracking.uri", f"is an MLflow store of an older schema ({revision}; "
                          f"the installed MLflow writes {head}). Upgrading is one-way: older "
                          "MLflow versions cannot open it afterwards. Set "
                          f"tracking.upgrade_store=true to upgrade it (a copy is kept as "
                          f"{backup.name})", shown)
    if create:
        upgrade(db, backup, spec)


def upgrade(db: Path, backup: Path, spec: TrackingSpec) -> None:
    """Copy ``db`` to ``backup`` (sqlite's online backup: a consistent copy even while others
    read it), then run MLflow's own ``mlflow db upgrade`` on it."""
    with contextlib.closing(sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True)) as source, \
            contextlib.closing(sqlite3.connect(backup)) as target:
        source.backup(target)
    done = subprocess.run([sys.executable, "-m", "mlflow", "db", "upgrade", spec.uri],
                          capture_output=True, text=True, timeout=max(spec.timeout_s, 300))
    if done.returncode != 0:
        lines = (done.stderr or done.stdout).strip().splitlines() or ["no output"]
        raise ConfigError("tracking.uri", f"could not be upgraded ({redact(lines[-1])}); the "
                          f"copy from before is {backup}", redact(spec.uri))


@contextlib.contextmanager
def creating(db: Path, spec: TrackingSpec) -> Iterator[None]:
    """Around a new store's creation (its schema, the experiment): one job at a time, by an
    exclusive lock on its folder. Held only while the file is new, so no one can stall the jobs
    of an existing store; the wait is bounded by ``tracking.timeout_s``."""
    if not is_new(db):
        yield
        return
    folder = os.open(db.parent, os.O_RDONLY)
    try:
        deadline = time.monotonic() + spec.timeout_s
        while True:
            try:
                fcntl.flock(folder, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise ConfigError(
                        "tracking.uri", f"is a new store, and another process has held the lock "
                        f"on {db.parent} that its creation takes for over {spec.timeout_s:g} s "
                        "(tracking.timeout_s)", redact(spec.uri)) from None
                time.sleep(LOCK_POLL_S)
        yield
    finally:
        os.close(folder)

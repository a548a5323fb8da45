"""A real, throwaway PostgreSQL cluster for tests: Debian's server binaries, ``initdb`` in a temp
dir, TCP on 127.0.0.1 only, password (SCRAM) authentication for every connection.

PostgreSQL refuses to run as root, and CI runs the suite as root: there the cluster runs as
``nobody``, in a folder of its own under the system's temp dir (pytest's ``tmp_path`` lies under
a folder only root may enter).
"""

from __future__ import annotations

import os
import pwd
import re
import secrets
import shutil
import signal
import stat
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import child_env, free_port

PREFERRED_VERSION = "15"  # Debian 12's; CI installs postgresql-15
HOST = "127.0.0.1"


@dataclass(frozen=True)
class Postgres:
    """Where a running cluster answers, and the one role a client (MLflow) is given."""

    host: str
    port: int
    user: str
    password: str = field(repr=False)  # not in a failing test's report
    dbname: str
    log: Path  # the server's own log
    pid: int = 0  # the postmaster's: every server process descends from it

    @property
    def uri(self) -> str:
        """The SQLAlchemy URL for MLflow, without the password: that goes in PGPASSWORD.

        The driver is named: a bare postgresql:// means psycopg2 to SQLAlchemy up to 2.0 but
        psycopg (version 3) from 2.1 on, and the test extra installs psycopg2."""
        return f"postgresql+psycopg2://{self.user}@{self.host}:{self.port}/{self.dbname}"

    def connect(self) -> Any:
        """A psycopg2 connection as the client role (the owner of every MLflow table)."""
        import psycopg2

        return psycopg2.connect(host=self.host, port=self.port, user=self.user,
                                password=self.password, dbname=self.dbname, connect_timeout=10)


def find_bindir() -> Path | None:
    """The folder with ``initdb`` and ``postgres``: Debian's version 15 first, then what
    ``pg_config`` names, then any other version under /usr/lib/postgresql, newest first."""

    def version(folder: Path) -> tuple[int, ...]:
        return tuple(int(part) for part in re.findall(r"\d+", folder.parent.name))

    candidates = [Path("/usr/lib/postgresql", PREFERRED_VERSION, "bin")]
    if pg_config := shutil.which("pg_config"):
        try:
            bindir = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True,
                                    timeout=10, check=True).stdout.strip()
            candidates.append(Path(bindir))
        except (OSError, subprocess.SubprocessError):
            pass
    candidates += sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=version, reverse=True)
    # Debian keeps the server binaries off PATH; an initdb on PATH is a link to them or a build.
    if initdb := shutil.which("initdb"):
        candidates.append(Path(initdb).resolve().parent)
    for folder in candidates:
        if all(os.access(folder / name, os.X_OK) for name in ("initdb", "postgres")):
            return folder
    return None


def _server_user() -> pwd.struct_passwd | None:
    """Whom the cluster runs as: nobody when this process is root, else this process's user."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam("nobody")
    except KeyError:
        pytest.skip("running as root and no user 'nobody' to run PostgreSQL as")


def _check_traversable(folder: Path) -> None:
    """``nobody`` must reach the cluster's folder: every folder above it must let others in."""
    for parent in folder.parents:
        if not parent.stat().st_mode & stat.S_IXOTH:
            raise RuntimeError(f"{parent} is closed to other users, so 'nobody' cannot reach "
                               f"the PostgreSQL data in {folder}; set TMPDIR to a folder that "
                               "other users may traverse")


Wrap = Callable[[Sequence[str]], list[str]]
"""How a command runs on another host (tests/system/hosts.py: ``Network.command``)."""


@contextmanager
def running_postgres(dbname: str = "mlflow", user: str = "wdexp",
                     on: Wrap | None = None) -> Iterator[Postgres]:
    """A fresh cluster with database ``dbname`` owned by role ``user`` (random password, not a
    superuser); stopped and deleted on exit. Skips the test where no PostgreSQL is installed.

    ``on`` runs the server on another host (its TCP port on that host's 127.0.0.1); this
    process reaches it through its socket in the cluster's folder."""
    bindir = find_bindir()
    if bindir is None:
        pytest.skip("no PostgreSQL server binaries (initdb, postgres) found: install Debian's "
                    "postgresql-15 (apt-get install postgresql-15)")
    owner = _server_user()
    folder = Path(tempfile.mkdtemp(prefix="wdexp-postgres-"))
    try:
        if owner is not None:
            _check_traversable(folder)
            os.chown(folder, owner.pw_uid, owner.pw_gid)
        with _cluster(bindir, folder, owner, dbname, user, on) as postgres:
            yield postgres
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@contextmanager
def _cluster(bindir: Path, folder: Path, owner: pwd.struct_passwd | None, dbname: str,
             user: str, on: Wrap | None) -> Iterator[Postgres]:
    # As the unprivileged owner, with none of root's groups; the cwd must be one it may enter.
    as_owner: dict[str, Any] = {"cwd": folder, "env": child_env({"LC_ALL": "C"})}
    if owner is not None:
        as_owner.update(user=owner.pw_uid, group=owner.pw_gid, extra_groups=[])
    data = folder / "data"
    admin_password = secrets.token_urlsafe(24)
    pwfile = folder / "admin-password"
    pwfile.write_text(admin_password + "\n")
    pwfile.chmod(0o600)
    if owner is not None:
        os.chown(pwfile, owner.pw_uid, owner.pw_gid)
    # --no-sync and fsync=off: a throwaway cluster, a few seconds to create and start.
    result = subprocess.run(
        [str(bindir / "initdb"), "--pgdata", str(data), "--username", "postgres",
         "--pwfile", str(pwfile), "--auth", "scram-sha-256", "--encoding", "UTF8",
         "--locale", "C", "--no-sync", "--no-instructions"],
        capture_output=True, text=True, timeout=120, **as_owner)
    pwfile.unlink()
    if result.returncode != 0:
        raise RuntimeError(f"initdb failed:\n{result.stdout}{result.stderr}")

    port = free_port()
    settings = {
        "listen_addresses": f"'{HOST}'",
        "port": str(port),
        "unix_socket_directories": f"'{folder}'",  # not /var/run/postgresql, which root owns
        "fsync": "off", "synchronous_commit": "off", "full_page_writes": "off",
        "shared_buffers": "32MB", "max_connections": "50",
    }
    with open(data / "postgresql.conf", "a") as conf:
        conf.writelines(f"{key} = {value}\n" for key, value in settings.items())

    log = folder / "postgres.log"
    command = [str(bindir / "postgres"), "-D", str(data)]
    if on is not None:  # entering another host takes root: the owner is taken on inside it
        if owner is not None:
            command = ["setpriv", f"--reuid={owner.pw_uid}", f"--regid={owner.pw_gid}",
                       "--clear-groups", *command]
        command = on(command)
        as_owner = {key: value for key, value in as_owner.items()
                    if key not in ("user", "group", "extra_groups")}
    with open(log, "wb") as output:  # the owner writes it through this descriptor, not a path
        server = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT,
                                  start_new_session=True, **as_owner)
    try:
        admin = _wait_until_ready(server, folder, port, admin_password, log)
        password = secrets.token_urlsafe(24)
        _create_role_and_database(admin, user, password, dbname)
        yield Postgres(HOST, port, user, password, dbname, log, server.pid)
    finally:
        _stop(server)


def _wait_until_ready(server: subprocess.Popen[bytes], folder: Path, port: int,
                      admin_password: str, log: Path) -> Any:
    """The admin's connection, through the server's socket in ``folder`` (a path on the disk:
    it reaches a server on another host's network too)."""
    import psycopg2

    deadline = time.monotonic() + 60
    while True:
        try:
            return psycopg2.connect(host=str(folder), port=port, user="postgres",
                                    password=admin_password, dbname="postgres",
                                    connect_timeout=2)
        except psycopg2.OperationalError:
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"PostgreSQL did not start:\n{log.read_text()}") from None
            time.sleep(0.1)


def _create_role_and_database(admin: Any, user: str, password: str, dbname: str) -> None:
    from psycopg2 import sql
    from psycopg2.extensions import encrypt_password

    admin.autocommit = True  # CREATE DATABASE runs outside a transaction
    try:
        # The SCRAM verifier is computed here, so the password itself never reaches the server
        # (nor its log, nor a statement in its catalogs): what the store holds is the client's.
        verifier = encrypt_password(password, user, admin, "scram-sha-256")
        with admin.cursor() as cursor:
            cursor.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD %s").format(
                sql.Identifier(user)), [verifier])
            cursor.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(
                sql.Identifier(dbname), sql.Identifier(user)))
    finally:
        admin.close()


def _stop(server: subprocess.Popen[bytes]) -> None:
    """Fast shutdown (SIGINT: clients cut off, no waiting for them), then immediate (SIGQUIT)."""
    for sig in (signal.SIGINT, signal.SIGQUIT):
        if server.poll() is not None:
            return
        server.send_signal(sig)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            continue
    if server.poll() is None:  # its backends notice their postmaster's death and exit
        server.kill()
        server.wait()

"""Credentials end to end: never in MLflow, the console or log files.

Real multiruns against a real ``mlflow server``, and a real job against one that checks
passwords (MLflow's basic-auth app) with credentials from the environment. The logging filter
and the warning, in this process, are in tests/test_secrets.py.
"""

from __future__ import annotations

import os
import subprocess
import time
import urllib.error
import urllib.request
from base64 import b64encode
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.conftest import PYTHON, StoreReader, cli, free_port, multirun

# One worker runs this module under pytest-xdist: its fixture starts once.
pytestmark = pytest.mark.xdist_group("test_secrets")

SECRET = "s3cret"
WARNING = "tracking.uri holds a password"


# --- end to end: multiruns against a real tracking server ---------------------------------------

def _get(url: str, auth: tuple[str, str] | None = None) -> int:
    request = urllib.request.Request(url)
    if auth is not None:
        token = b64encode(":".join(auth).encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


@contextmanager
def _mlflow_server(folder: Path, *options: str, env: dict[str, str] | None = None,
                   ) -> Iterator[str]:
    """A real `mlflow server` on 127.0.0.1, its stores in ``folder``; yields its URL once it
    answers /health. (As conftest's mlflow_server, which is one per test.)"""
    port = free_port()
    log = open(folder / "server.log", "w")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [PYTHON, "-m", "mlflow", "server", *options, "--host", "127.0.0.1", "--port", str(port),
         "--backend-store-uri", f"sqlite:///{folder}/server.db",
         "--artifacts-destination", str(folder / "server-artifacts"), "--workers", "1"],
        stdout=log, stderr=subprocess.STDOUT, cwd=folder,
        # MLflow's background job runner off, as in tests/servers.py: its pool of workers
        # would compete with the tests for two cores.
        env={**(os.environ if env is None else env),
             "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"})
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if _get(f"{url}/health") == 200:
                    break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError((folder / "server.log").read_text())
            time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


# Session scope: pytest tears a module-scoped fixture down whenever a worker's next test is
# another module's, and xdist may put one between two of this module's.
@pytest.fixture(scope="session")
def shared_server(tmp_path_factory) -> Iterator[str]:
    """One plain server for both launchers' tests (it ignores the URI's userinfo): starting one
    takes longer than a multirun here."""
    with _mlflow_server(tmp_path_factory.mktemp("server")) as url:
        # The app behind /health loads on the first API call: here, not in the first test.
        assert _get(f"{url}/api/2.0/mlflow/experiments/search?max_results=1") == 200
        yield url

def _stored_leaks(reader: StoreReader, download_to: Path, secret: str) -> list[str]:
    """Where ``secret`` shows in the store: any run's name, param, tag or artifact file."""
    leaks = []
    for run in reader.runs():
        name = run.info.run_name
        fields = {"run name": name,
                  **{f"param {k}": f"{k}={v}" for k, v in run.data.params.items()},
                  **{f"tag {k}": f"{k}={v}" for k, v in run.data.tags.items()}}
        leaks += [f"{name}: {field}" for field, text in fields.items() if secret in text]
        folder = download_to / run.info.run_id
        folder.mkdir(parents=True)
        reader.client.download_artifacts(run.info.run_id, "", str(folder))
        leaks += [f"{name}: artifact {path.relative_to(folder)}" for path in folder.rglob("*")
                  if path.is_file() and secret.encode() in path.read_bytes()]
    return leaks


@pytest.mark.parametrize("launcher", [
    [],
    ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"],
], ids=["basic", "joblib"])
def test_multirun_keeps_the_password_out_of_mlflow_the_console_and_log_files(
        tmp_path, shared_server, launcher):
    secret_uri = shared_server.replace("http://", f"http://user:{SECRET}@")
    experiment = tmp_path.name  # one per test on the shared server
    result = multirun("epochs=5", "optimizer.weight_decay=0,0.1", *launcher,
                      f"tracking.experiment={experiment}",
                      tmp_path=tmp_path, store_uri=secret_uri, timeout=180)
    assert result.returncode == 0, result.stdout + result.stderr

    # MLflow: the whole run tree, nothing of the password anywhere
    reader = StoreReader(shared_server, experiment)
    kinds = sorted(run.data.tags["wdexp.kind"] for run in reader.runs())
    assert kinds == ["arm"] * 4 + ["pair"] * 2 + ["sweep"]
    assert _stored_leaks(reader, tmp_path / "artifacts", SECRET) == []
    for run in reader.runs("pair") + reader.runs("arm"):  # the escaped override, redacted
        assert r"tracking.uri=http\://user\:***@127.0.0.1\:" in run.data.tags["wdexp.overrides"]
    for pair in reader.runs("pair"):
        config = (tmp_path / "artifacts" / pair.info.run_id / "config.yaml").read_text()
        assert f"uri: {secret_uri.replace(SECRET, '***')}" in config

    # the console: each job's overrides, as the launcher logs them, redacted; one warning
    output = result.stdout + result.stderr
    assert SECRET not in output
    launched = [line for line in result.stdout.splitlines() if " : tracking.uri=" in line]
    assert len(launched) == 2 and all(r"user\:***@" in line for line in launched)
    warnings = [line for line in result.stdout.splitlines() if WARNING in line]
    # once per process: the launching process, and each joblib worker that ran a job
    assert 1 <= len(warnings) <= (1 if not launcher else 3), warnings
    assert "MLFLOW_TRACKING_PASSWORD" in warnings[0]

    # log files: every job's, none with the password
    sweep_dir = tmp_path / "multirun"
    logs = sorted(sweep_dir.rglob("*.log"))
    assert [log.parent.name for log in logs] == ["0", "1"]
    assert all("pair run" in log.read_text() for log in logs)
    assert [log for log in logs if SECRET in log.read_text()] == []

    # the limitation the warning states: Hydra's own files keep the command line
    hydra_files = [sweep_dir / "multirun.yaml", *sweep_dir.glob("*/.hydra/overrides.yaml")]
    assert len(hydra_files) == 3
    assert all(SECRET in path.read_text() for path in hydra_files)


# --- credentials from the environment, against a server that checks them ------------------------

ADMIN = "admin"
ADMIN_PASSWORD = "wdexp-Adm1n-pw!"  # MLflow wants 12 characters at least


@pytest.fixture
def auth_server(tmp_path):
    """A real `mlflow server --app-name basic-auth` on 127.0.0.1, its user and tracking stores in
    tmp_path; yields its URL once it refuses an anonymous request and serves the admin."""
    config = tmp_path / "basic_auth.ini"
    config.write_text(
        "[mlflow]\n"
        "default_permission = READ\n"
        f"database_uri = sqlite:///{tmp_path}/auth.db\n"
        f"admin_username = {ADMIN}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
        # Each password check is a PBKDF2 hash, seconds on a loaded machine: check once.
        "auth_cache_ttl_seconds = 600\n")
    env = {**os.environ, "MLFLOW_AUTH_CONFIG_PATH": str(config),
           "MLFLOW_AUTH_ADMIN_PASSWORD": ADMIN_PASSWORD,
           "MLFLOW_FLASK_SERVER_SECRET_KEY": "wdexp-tests"}  # CSRF protection requires one
    for key in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        env.pop(key, None)
    with _mlflow_server(tmp_path, "--app-name", "basic-auth", env=env) as url:
        search = f"{url}/api/2.0/mlflow/experiments/search?max_results=1"
        assert _get(search) == 401  # it does check
        assert _get(search, (ADMIN, ADMIN_PASSWORD)) == 200
        yield url


@pytest.mark.slow  # a server of its own, with password hashing: about 50 s here
def test_credentials_from_mlflow_environment_variables_reach_the_server_and_nothing_else(
        tmp_path, auth_server, monkeypatch):
    credentials_env = {"MLFLOW_TRACKING_USERNAME": ADMIN,
                       "MLFLOW_TRACKING_PASSWORD": ADMIN_PASSWORD}
    result = cli("epochs=5", f"tracking.uri={auth_server}", tmp_path=tmp_path, timeout=180,
                 env=credentials_env)
    assert result.returncode == 0, result.stdout + result.stderr
    output = result.stdout + result.stderr
    assert ADMIN_PASSWORD not in output
    assert WARNING not in output  # nothing to warn about: the URI carries no password

    for key, value in credentials_env.items():  # this process reads the store as the admin
        monkeypatch.setenv(key, value)
    reader = StoreReader(auth_server)
    (pair,) = reader.runs("pair")
    arms = reader.arms(pair.info.run_id)
    assert set(arms) == {"baseline", "decay"}
    assert [s for s, _ in reader.history(arms["decay"].info.run_id, "loss")] == list(range(6))
    assert pair.data.params["tracking.uri"] == auth_server
    assert _stored_leaks(reader, tmp_path / "artifacts", ADMIN_PASSWORD) == []
    assert (tmp_path / "artifacts" / pair.info.run_id / "config.yaml").is_file()
    # and Hydra's own files hold no password either, unlike with one in the URI
    hydra_files = [path for path in (tmp_path / "outputs").rglob("*") if path.is_file()]
    assert any(path.name == "overrides.yaml" for path in hydra_files)
    assert [path for path in hydra_files if ADMIN_PASSWORD in path.read_text()] == []

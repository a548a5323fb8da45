"""The test session is sealed off from the user's machine: no MLFLOW_*, HYDRA_*, RAY_* or
matplotlib setting reaches a test or a process it starts, and HOME is a private temp dir."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.conftest import PYTHON, child_env
from wdexp.config import ROOT

# Spelled out here, not imported from conftest: the test must not share the code it checks.
PREFIXES = ("MLFLOW_", "HYDRA_", "RAY_", "MPL")
XDG = ("XDG_CACHE_HOME", "XDG_CONFIG_HOME", "XDG_DATA_HOME", "XDG_STATE_HOME")


def _assert_sealed(environment: dict[str, str], home: Path) -> None:
    leaked = sorted(name for name in environment if name.startswith(PREFIXES))
    assert leaked == [], leaked
    assert environment["HOME"] == str(home)
    for name in XDG:
        assert Path(environment[name]).parent == home, (name, environment[name])


def test_the_session_and_its_subprocesses_see_no_user_setting_and_a_private_home(
        isolated_home: Path) -> None:
    assert isolated_home.name.startswith("wdexp-tests-home-")
    assert Path.home() == isolated_home
    _assert_sealed(dict(os.environ), isolated_home)

    # A child started as the helpers start one, with the environment read back from inside it.
    shown = subprocess.run(
        [PYTHON, "-c", "import json, os; print(json.dumps(dict(os.environ)))"],
        capture_output=True, text=True, timeout=60, env=child_env(), check=True)
    _assert_sealed(json.loads(shown.stdout), isolated_home)


def test_torch_runs_one_thread_here_and_in_the_processes_tests_start() -> None:
    """Two workers and their subprocesses share the cores: a thread each (tests/conftest.py)."""
    import torch

    assert torch.get_num_threads() == 1
    shown = subprocess.run([PYTHON, "-c", "import torch; print(torch.get_num_threads())"],
                           capture_output=True, text=True, timeout=60, env=child_env(),
                           check=True)
    assert shown.stdout.strip() == "1"


def test_settings_exported_before_the_session_do_not_reach_it(tmp_path: Path) -> None:
    """A nested pytest session started the way a user with stray settings starts one."""
    user_home = tmp_path / "user-home"
    (user_home / ".ray").mkdir(parents=True)
    (user_home / ".ray" / "auth_token").write_text("bogus")
    strays = {
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/bogus/mlflow.db",
        "MLFLOW_EXPERIMENT_NAME": "bogus",
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
        "HYDRA_FULL_ERROR": "1",
        "RAY_ADDRESS": "127.0.0.1:1",
        "MPLBACKEND": "bogus",
        "HOME": str(user_home),
        "XDG_CONFIG_HOME": str(user_home / ".config"),
    }
    pythonpath = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    nested = subprocess.run(
        [PYTHON, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--basetemp={tmp_path}/nested",
         "tests/test_hermetic.py::"
         "test_the_session_and_its_subprocesses_see_no_user_setting_and_a_private_home"],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
        env=child_env({**strays, "PYTHONPATH": pythonpath}))
    assert nested.returncode == 0, nested.stdout + nested.stderr
    assert "1 passed" in nested.stdout, nested.stdout


@pytest.mark.xdist_group("grouping-check")
def test_xdist_groups_hold_under_loadgroup(request: pytest.FixtureRequest) -> None:
    """The deadline tests share a group so that they never run beside each other, and a
    module's servers start once per group: under `make test` (--dist loadgroup) the group must
    reach the scheduler, which reads it from the test's id (pytest 9.2 drops it silently)."""
    if not getattr(request.config.option, "loadgroup", False):
        pytest.skip("not run by pytest-xdist with --dist loadgroup")
    assert request.node.nodeid.endswith("@grouping-check"), request.node.nodeid

"""The layer picture: every import in wdexp runs down (or across), never back up, and the
tracking process loads the store side and the vocabulary, not torch or Hydra."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import PYTHON, child_env

PACKAGE = Path(__file__).resolve().parent.parent / "wdexp"

# Lowest first. A module may import its own layer and the ones before it, nothing after.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("base", ("wdexp.vocabulary", "wdexp.signals", "wdexp.credentials")),
    ("store side", ("wdexp.tracking",)),
    ("config edge", ("wdexp.config",)),
    ("science", ("wdexp.closed_form", "wdexp.decay", "wdexp.models", "wdexp.data",
                 "wdexp.optimizers", "wdexp.schedules", "wdexp.geometry", "wdexp.arms",
                 "wdexp.study", "wdexp.engine", "wdexp.stack")),
    ("results", ("wdexp.analysis", "wdexp.figures", "wdexp.results")),
    ("application", ("wdexp.pair_runs", "wdexp.progress", "wdexp.lifecycle", "wdexp.search",
                     "wdexp.sweep_folder", "wdexp.launch", "wdexp.stacked_launch",
                     "wdexp.lost_jobs", "wdexp.sweep_runs", "wdexp.api", "wdexp.train",
                     "wdexp.report", "wdexp.ui", "wdexp.cli")),
]


def layer_of(module: str) -> int:
    for index, (_, prefixes) in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return index
    raise AssertionError(f"{module} is in no layer: add it to LAYERS")


def modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        if name != "wdexp":
            found[name] = path
    return found


def wdexp_imports(path: Path) -> set[str]:
    """Every wdexp module ``path`` imports, at the top or inside a function."""
    imported = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            imported.add(node.module)
            # `from wdexp import engine` imports the module wdexp.engine
            imported.update(f"{node.module}.{alias.name}" for alias in node.names)
    known = modules()
    return {name for name in imported if name in known}


def test_every_module_has_a_layer():
    for name in modules():
        layer_of(name)


@pytest.mark.parametrize("module", sorted(modules()))
def test_imports_never_run_back_up(module):
    own = layer_of(module)
    upward = sorted(name for name in wdexp_imports(modules()[module]) if layer_of(name) > own)
    assert not upward, (f"{module} ({LAYERS[own][0]}) imports from layers above it: "
                        + ", ".join(f"{n} ({LAYERS[layer_of(n)][0]})" for n in upward))


def test_the_checker_sees_an_upward_import(tmp_path):
    # The check above must be able to fail: a store-side module reaching for the study is caught.
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from wdexp.study import build\n")
    assert "wdexp.study" in wdexp_imports(bad)
    assert layer_of("wdexp.study") > layer_of("wdexp.tracking.server")


def test_vocabulary_imports_only_the_standard_library():
    tree = ast.parse((PACKAGE / "vocabulary.py").read_text())
    roots = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
             for alias in node.names}
    roots |= {node.module.split(".")[0] for node in ast.walk(tree)
              if isinstance(node, ast.ImportFrom) and node.module}
    assert roots <= set(sys.stdlib_module_names) | {"__future__"}, roots


def test_tracking_process_loads_no_torch_hydra_or_application_module():
    # What `python -m wdexp.tracking.server` imports before it serves its first request.
    probe = ("import json, sys, wdexp.tracking.server; "
             "print(json.dumps(sorted(sys.modules)))")
    out = subprocess.run([PYTHON, "-c", probe], capture_output=True, text=True, check=True,
                         env=child_env())
    loaded = set(json.loads(out.stdout))
    assert "mlflow" in loaded  # it is the store side
    for heavy in ("torch", "hydra", "omegaconf", "matplotlib", "optuna"):
        assert heavy not in loaded, heavy
    ours = {name for name in loaded if name.startswith("wdexp.")}
    assert all(layer_of(name) <= layer_of("wdexp.tracking") for name in ours), sorted(ours)


def test_the_launcher_plugins_import_quietly_without_the_launchers_extra():
    """Hydra imports every module under hydra_plugins at each start and warns about any that
    fails: without hydra-joblib-launcher and hydra-submitit-launcher, wdexp's launcher modules
    import and define no launcher of theirs (the stacked launcher needs neither)."""
    code = """
import sys, warnings
for name in ("hydra_plugins.hydra_joblib_launcher", "hydra_plugins.hydra_submitit_launcher"):
    sys.modules[name] = None  # as if not installed: importing it raises ImportError
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    from hydra.core.plugins import Plugins
    from hydra.plugins.launcher import Launcher
    names = {cls.__module__ for cls in Plugins.instance().discover(Launcher)}
from hydra_plugins.wdexp_launchers import joblib_launcher, submitit_launcher
assert not hasattr(joblib_launcher, "JoblibLauncher")
assert not hasattr(submitit_launcher, "LocalLauncher")
assert not [w for w in caught if "wdexp_launchers" in str(w.message)], caught
print(sorted(n for n in names if "wdexp" in n))
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "['hydra_plugins.wdexp_launchers.stacked_launcher']", (
        done.stdout)
    assert "wdexp_launchers" not in done.stderr, done.stderr

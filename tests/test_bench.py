"""Every command `make bench` runs, at its full and its smoke size, composes: wdexp's with the real
conf/ as the docs' commands are checked (tests/test_docs.py), the tutorial's with its own conf/.
A renamed key, group or option breaks this test instead of the next bench run. The runner itself
runs end to end in tests/system/test_bench.py, on the rows that cover each kind of measure."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest
from hydra import compose, initialize_config_dir
from hydra._internal.utils import get_args_parser

from tests.test_docs import compose_command, jobs
from wdexp.config import ROOT

BENCHMARKS = ROOT / "benchmarks"


def _load(name: str, file: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / file)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


RUNNER = _load("bench_runner", "run.py")


def _argv(command: object) -> list[str]:
    """The command's arguments (after the interpreter) as the runner fills them in."""
    return command.filled("/tmp/bench-run", "http://127.0.0.1:5000")[1:]  # type: ignore[attr-defined]


COMMANDS = list(dict.fromkeys(command for smoke in (False, True) for case in RUNNER.cases(smoke)
                              for command in (case.a, case.b) if command is not None))


def _compose_tutorial(argv: list[str]) -> int:
    args = get_args_parser().parse_args(argv)
    runs = jobs(args.overrides) if args.multirun else [args.overrides]
    conf = BENCHMARKS / "tutorial" / "conf"
    with initialize_config_dir(version_base="1.3", config_dir=str(conf)):
        for overrides in runs:
            compose(config_name="config", overrides=overrides, return_hydra_config=True)
    return len(runs)


@pytest.mark.parametrize("command", COMMANDS, ids=[c.label()[:90] for c in COMMANDS])
def test_every_bench_command_composes(command: object) -> None:
    argv = _argv(command)
    if argv[:2] == ["-m", "wdexp.train"]:
        assert compose_command("wdexp.train", argv[2:])
    elif Path(argv[0]) == BENCHMARKS / "tutorial" / "train.py":
        assert _compose_tutorial(argv[1:]) >= 1
    elif Path(argv[0]) == BENCHMARKS / "notebook.py":
        assert int(argv[1]) > 0  # its only argument: the epochs
    else:  # the ingestion probe: its arguments are its own, run by the system test
        assert Path(argv[0]) == BENCHMARKS / "ingestion_probe.py", argv


def test_the_bench_has_commands_of_every_program() -> None:
    programs = {" ".join(argv[:2]) if argv[0] == "-m" else Path(argv[0]).name
                for argv in map(_argv, COMMANDS)}
    assert programs == {"-m wdexp.train", "train.py", "notebook.py", "ingestion_probe.py"}


def test_the_gpu_script_counts_a_pair_and_a_seed_grid_as_their_members() -> None:
    """benchmarks/gpu_stack.py's rows (run on the CPU, one epoch): a job is 2 members, a seed's
    7 λ are 8 (one shared baseline), and the pair alone is timed on the same device."""
    gpu = _load("gpu_stack", "gpu_stack.py")
    rows = gpu.members("cpu", [2, 8], epochs=1)
    assert [(row["what"], row["members"], row.get("jobs")) for row in rows] == [
        ("one pair alone (engine.train)", 2, None), ("stacked", 2, 1), ("stacked", 8, 7)]
    assert all(row["train_s"] > 0 and row.get("peak_MiB") is None for row in rows)

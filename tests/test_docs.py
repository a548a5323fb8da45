"""Every command line of README.md and docs/*.md composes with the real conf/, as its program
would compose it: a renamed key, group or option breaks this test instead of a reader's first
try. Nothing is trained and no store is opened.

A command is any ``python -m wdexp.train|report|ui …``, ``wdexp-train|report|ui …`` or
``make run [ARGS="…"]`` in a shell code block or in inline code; each is one test case, its id
the page and line. Its arguments are read as Hydra reads them (Hydra's own argument parser and
override grammar); a multirun is composed as many times as it takes to compose every option of
every swept config group, the experiment's own ``hydra.sweeper.params`` included. Hydra
composes each distinct shape of config once (see ``_compose``), which keeps the file fast.
``python -m wdexp.ui`` takes flags, which its own argparse parser must accept.
"""

from __future__ import annotations

import argparse
import copy
import functools
import re
import shlex
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra._internal.utils import get_args_parser
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import IntervalSweep, Override, OverrideType
from hydra.errors import ConfigCompositionException, MissingConfigException, OverrideParseException
from omegaconf import DictConfig, OmegaConf

from wdexp.config import ROOT

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
CONFIG_NAMES = {"wdexp.train": "config", "wdexp.report": "report"}  # as their @hydra.main say
SCRIPTS = {"wdexp-train": "wdexp.train", "wdexp-report": "wdexp.report", "wdexp-ui": "wdexp.ui"}
SHELL_BLOCKS = {"", "bash", "sh", "shell", "console"}  # fenced blocks whose lines are commands
SEPARATORS = {"&&", "||", ";", "|"}
ENV_ASSIGNMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*=.*")
FENCE = re.compile(r"^\s*(```|~~~)\s*([\w-]*)")
INLINE_CODE = re.compile(r"`([^`]+)`")
# A reader's own folder in the docs, and what stands in for it here: the copy the tests run.
HOME = "/home/reader"
USER_FOLDERS = {f"{HOME}/wd": str(ROOT / "tests" / "own_model")}
VARIABLES = {"HOME": HOME}
PLAIN_VALUE = "placeholder"  # any other $VARIABLE: a value a reader would type
ELLIPSES = {"…", "..."}  # a lone one stands for "more arguments" in prose
_ABSENT = object()


@dataclass(frozen=True)
class Command:
    """One command line of the docs: where it is, which program, its arguments."""

    page: str
    line: int
    program: str  # wdexp.train | wdexp.report | wdexp.ui
    argv: tuple[str, ...]
    text: str

    @property
    def id(self) -> str:
        return f"{self.page}:{self.line}"


# --- finding the commands ------------------------------------------------------------------------


def _snippets(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, text) of each shell line in a fenced block — continuation lines joined —
    and of each inline code span outside the blocks."""
    fence: str | None = None
    shell = False
    pending: tuple[int, str] | None = None
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        opening = FENCE.match(line)
        if fence is None:
            if opening:
                fence, shell = opening[1], opening[2].lower() in SHELL_BLOCKS
                continue
            for code in INLINE_CODE.findall(line):
                yield number, code
            continue
        if line.strip().startswith(fence):
            fence = None
            continue
        if not shell:
            continue
        text = line.strip().removeprefix("$ ")
        start, joined = pending if pending else (number, "")
        joined = f"{joined} {text.removesuffix(chr(92)).strip()}".strip()
        if text.endswith("\\"):
            pending = (start, joined)
        else:
            pending = None
            yield start, joined


def _expand(token: str) -> str:
    token = HOME + token[1:] if token == "~" or token.startswith("~/") else token
    token = token.replace("=~/", f"={HOME}/")
    token = re.sub(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?",
                   lambda m: VARIABLES.get(m[1], PLAIN_VALUE), token)
    for folder, stand_in in USER_FOLDERS.items():
        token = token.replace(folder, stand_in)
    return token


def _program(tokens: Sequence[str]) -> tuple[str, list[str]] | None:
    """The wdexp program a shell command runs and its arguments, or None for anything else."""
    while tokens and ENV_ASSIGNMENT.fullmatch(tokens[0]):  # VAR=value before the command
        tokens = tokens[1:]
    if not tokens:
        return None
    first, rest = tokens[0], list(tokens[1:])
    if first in SCRIPTS:
        return SCRIPTS[first], rest
    if Path(first).name.startswith("python") and rest[:1] == ["-m"] and len(rest) > 1:
        module = rest[1]
        if module in CONFIG_NAMES or module == "wdexp.ui":
            return module, rest[2:]
        return None
    if first == "make" and rest[:1] == ["run"]:
        # make run ARGS="…" is python -m wdexp.train $(ARGS); its other variables set up .venv
        variables = dict(arg.split("=", 1) for arg in rest[1:] if "=" in arg)
        return "wdexp.train", shlex.split(variables.get("ARGS", ""))
    return None


def commands_in(path: Path) -> list[Command]:
    found = []
    page = path.relative_to(ROOT).as_posix() if path.is_relative_to(ROOT) else path.name
    for line, text in _snippets(path):
        if not re.search(r"wdexp[.-](train|report|ui)|\bmake run\b", text):
            continue
        try:
            tokens = shlex.split(text, comments=True)
        except ValueError:  # prose in inline code, such as an unbalanced quote
            continue
        segment: list[str] = []
        for token in [*tokens, ";"]:
            if token not in SEPARATORS:
                segment.append(token)
                continue
            if (program := _program(segment)) is not None:
                name, argv = program
                argv = [_expand(a) for a in argv if a not in ELLIPSES]
                found.append(Command(page, line, name, tuple(argv), text))
            segment = []
    return found


def all_commands() -> list[Command]:
    return [command for path in PAGES for command in commands_in(path)]


# --- composing them ------------------------------------------------------------------------------


@functools.cache
def _composed(config_name: str, overrides: tuple[str, ...]) -> DictConfig:
    # One composition takes Hydra a few tenths of a second, and the pages repeat commands (the
    # README's are also in docs/): each distinct one is composed once per session.
    with initialize_config_dir(version_base="1.3", config_dir=str(ROOT / "conf")):
        return compose(config_name=config_name, overrides=list(overrides),
                       return_hydra_config=True)


def _is_plain(override: Override, groups: Collection[str]) -> bool:
    """``key=value`` for a key the composed config has: it changes a value, not which keys
    exist. Groups, ``+``/``~``, packages, sweeps and the search path shape the config."""
    key = override.key_or_group
    return (override.type == OverrideType.CHANGE and override.package is None
            and not override.is_sweep_override() and key not in groups
            and key != "hydra.searchpath" and "/" not in key)


def _compose(config_name: str, overrides: Sequence[str]) -> DictConfig:
    """One job's config. Hydra composes the overrides that shape it — each distinct shape once —
    and the plain ``key=value`` overrides of keys that shape has are then set on a copy, as
    Hydra's own override would set them, at a small part of a composition's cost. Where a
    plain key is not there, Hydra composes the whole command line, and fails as it fails."""
    parsed = OverridesParser.create().parse_overrides(list(overrides))
    groups = set(_composed(config_name, ()).hydra.runtime.choices)
    plain = [o for o in parsed if _is_plain(o, groups)]
    shape = _composed(config_name, tuple(o.input_line for o in parsed if o not in plain))
    if not plain:
        return shape
    if any(o.key_or_group in shape.hydra.runtime.choices
           or OmegaConf.select(shape, o.key_or_group, default=_ABSENT) is _ABSENT
           for o in plain):
        return _composed(config_name, tuple(overrides))
    cfg = copy.deepcopy(shape)
    for override in plain:
        OmegaConf.update(cfg, override.key_or_group, override.value(), merge=False)
    return cfg


def _values(override: Override) -> list[str]:
    """The override as the jobs of a sweep see it: one override per value."""
    key = override.get_key_element()
    if not override.is_sweep_override():
        return [override.input_line]
    sweep = override.value()
    if isinstance(sweep, IntervalSweep):  # a search space: both ends are values a trial takes
        return [f"{key}={sweep.start}", f"{key}={sweep.end}"]
    return [f"{key}={value}" for value in override.sweep_string_iterator()]


def jobs(overrides: Sequence[str], sweeper_params: Mapping[str, str] | None = None,
         groups: Collection[str] = ()) -> list[list[str]]:
    """Jobs of a multirun that between them compose every option of every swept config group:
    the sweeper's params, then the command line's, a key given twice taking the later value (as
    Hydra's basic sweeper merges them). Job i takes each group's option i (modulo its count).

    Any other swept key takes its first value: every value has passed Hydra's parser already,
    and a value that is no group's option cannot change which keys exist; so a multirun costs
    as many compositions as its longest list of options, not the product of its lists.
    """
    lines = [f"{key}={value}" for key, value in (sweeper_params or {}).items()] + list(overrides)
    by_key: dict[str, Override] = {}
    for override in OverridesParser.create().parse_overrides(lines):
        by_key[override.get_key_element()] = override
    values = [_values(o) if o.key_or_group in groups else _values(o)[:1]
              for o in by_key.values()]
    count = max((len(v) for v in values), default=1)
    return [[v[i % len(v)] for v in values] for i in range(count)]


def compose_command(program: str, argv: Sequence[str]) -> list[DictConfig]:
    """The configs ``program argv`` composes (for a multirun, jobs covering every option of
    its swept groups); raises what Hydra raises for a key, group or option that does not exist,
    SystemExit for an unknown flag."""
    if program == "wdexp.ui":
        return [OmegaConf.create(vars(ui_arguments(argv)))]
    args = get_args_parser().parse_args(list(argv))
    overrides = list(args.overrides)
    if program == "wdexp.report":
        from wdexp.report import quote_sweep  # what wdexp.report does to its argv first

        overrides = quote_sweep(overrides)
    if args.config_dir:  # --config-dir adds a folder to the search path, as hydra.searchpath
        folder = _expand(args.config_dir)
        overrides.append(f"hydra.searchpath=[file://{Path(folder).resolve()}]")
    config_name = args.config_name or CONFIG_NAMES[program]
    if not args.multirun:
        return [_compose(config_name, overrides)]
    # The first job says what the sweeper sweeps beyond the command line (an experiment's
    # hydra.sweeper.params) and which keys are config groups; then the jobs that cover them.
    first = _compose(config_name, jobs(overrides)[0])
    params = first.hydra.sweeper.get("params")  # the basic sweeper's default: None
    params = {} if params is None else OmegaConf.to_container(params)
    covering = jobs(overrides, {str(k): str(v) for k, v in params.items()},
                    groups=set(first.hydra.runtime.choices))
    return [first, *(_compose(config_name, job) for job in covering)]


class _Parsed(Exception):  # not an error: how the parser hands back its result
    def __init__(self, namespace: argparse.Namespace) -> None:
        self.namespace = namespace


def ui_arguments(argv: Sequence[str]) -> argparse.Namespace:
    """``python -m wdexp.ui argv`` parsed by the module's own parser; it stops right there,
    before it looks at a store or starts a server."""
    from wdexp import ui

    original = argparse.ArgumentParser.parse_args

    def parse_and_stop(self, args=None, namespace=None):  # type: ignore[no-untyped-def]
        raise _Parsed(original(self, args, namespace))

    argparse.ArgumentParser.parse_args = parse_and_stop  # type: ignore[method-assign]
    try:
        ui.main(list(argv))
    except _Parsed as parsed:
        return parsed.namespace
    finally:
        argparse.ArgumentParser.parse_args = original  # type: ignore[method-assign]
    raise AssertionError("wdexp.ui.main went past its argument parser")


# --- the tests -----------------------------------------------------------------------------------

COMMANDS = all_commands()


@pytest.mark.parametrize("command", COMMANDS, ids=[c.id for c in COMMANDS])
def test_command_composes(command: Command) -> None:
    try:
        configs = compose_command(command.program, command.argv)
    except (Exception, SystemExit) as error:
        pytest.fail(f"{command.id}: `{command.text}` does not compose: "
                    f"{type(error).__name__}: {error}")
    assert configs


def test_the_docs_have_commands_to_check() -> None:
    """The collector cannot silently find nothing: every page set and program is covered."""
    assert len(COMMANDS) >= 40
    assert {c.program for c in COMMANDS} == {"wdexp.train", "wdexp.report", "wdexp.ui"}
    pages = {c.page for c in COMMANDS}
    assert "README.md" in pages
    assert {"docs/configuration.md", "docs/sweeps.md", "docs/results.md",
            "docs/own-model.md"} <= pages
    assert any(c.argv[:1] == ("-m",) for c in COMMANDS)  # multiruns
    assert any(a.startswith("hydra/launcher=") for c in COMMANDS for a in c.argv)
    assert any(a.startswith("+experiment=") for c in COMMANDS for a in c.argv)


def test_plain_values_come_out_as_hydra_composes_them() -> None:
    """The shortcut for plain ``key=value`` overrides gives the config Hydra gives."""
    argv = ["optimizer=adamw", "optimizer.weight_decay=0.1", "model.init=[0.4,0.2]",
            "tracking.uri=http://tracking-host:5000", "seed=3", "arms.baseline.optimizer.lr=0.2"]

    def job_config(cfg: DictConfig) -> dict:
        return {k: v for k, v in OmegaConf.to_container(cfg).items() if k != "hydra"}

    assert job_config(_compose("config", argv)) == job_config(_composed("config", tuple(argv)))


def test_a_multirun_composes_every_option_of_a_swept_group() -> None:
    configs = compose_command(
        "wdexp.train", ["-m", "optimizer=sgd,adamw", "optimizer.weight_decay=0,0.1",
                        "seed=range(3)"])
    assert {c.optimizer._target_ for c in configs} == {"torch.optim.SGD", "torch.optim.AdamW"}
    assert {c.optimizer.weight_decay for c in configs} == {0}  # a plain value: its first


def test_an_experiments_sweep_params_are_composed_too() -> None:
    _, *jobs = compose_command("wdexp.train", ["-m", "+experiment=lr_wd_grid"])
    assert {c.optimizer._target_ for c in jobs} == {"torch.optim.Adam", "torch.optim.AdamW"}
    # the command line's list replaces the experiment's, as in Hydra
    _, *jobs = compose_command(
        "wdexp.train", ["-m", "+experiment=decay_sweep", "optimizer.weight_decay=1,0"])
    assert {c.optimizer.weight_decay for c in jobs} == {1}


COMPOSITION_ERRORS = (ConfigCompositionException, MissingConfigException, OverrideParseException)


@pytest.mark.parametrize("argv", [
    ["optimizer.weight_decayy=0.1"],  # a renamed key
    ["optimizer=sgd_wdd"],  # a renamed option
    ["+experiment=no_such_experiment"],
    ["-m", "hydra/launcher=jobllib", "seed=0,1"],  # a hydra group's option
    ["-m", "optimizer=sgd,adamww"],  # any option of a swept group
    ["-m", "+experiment=lr_wd_grid", "optimizer.nope=0,1"],
    ["-m", "seed=range(5"],  # not Hydra's grammar
    ["optimizer.weight_decay=0,0.1"],  # a sweep without -m
])
def test_a_wrong_override_does_not_compose(argv: list[str]) -> None:
    with pytest.raises(COMPOSITION_ERRORS):
        compose_command("wdexp.train", argv)


def test_a_renamed_key_in_a_doc_command_fails() -> None:
    """What this file is for: one of the docs' own commands, its key renamed, fails."""
    command = next(c for c in COMMANDS if "optimizer.weight_decay=0.1" in c.argv)
    renamed = [a.replace("optimizer.weight_decay", "optimizer.decay") for a in command.argv]
    with pytest.raises(ConfigCompositionException, match=r"optimizer\.decay"):
        compose_command(command.program, renamed)


def test_the_report_has_its_own_config() -> None:
    (cfg,) = compose_command("wdexp.report", ["report.sweep=sweep wd=0,0.001,0.01,0.1"])
    assert cfg.report.sweep == "sweep wd=0,0.001,0.01,0.1"
    with pytest.raises(Exception, match="optimizer"):
        compose_command("wdexp.report", ["optimizer.weight_decay=0.1"])


def test_ui_flags_are_checked_by_its_parser() -> None:
    (cfg,) = compose_command("wdexp.ui", ["--port", "5001", "--experiment", "other"])
    assert (cfg.port, cfg.experiment) == (5001, "other")
    with pytest.raises(SystemExit):
        compose_command("wdexp.ui", ["--prot", "5001"])


def test_the_collector_reads_shell_the_way_a_reader_types_it(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text("\n".join([
        "Run `python -m wdexp.train seed=1` or `make run ARGS=\"epochs=5\"`.",
        "```bash",
        "$ PYTHONPATH=~/wd python -m wdexp.train hydra.searchpath=[file://$HOME/wd/conf] \\",
        "    model=tiny_net   # a comment",
        "make ui && wdexp-report report.sweep=latest …",
        "```",
        "```python",
        "# python -m wdexp.train inside Python code is not a command",
        "```",
    ]))
    found = [(c.line, c.program, c.argv) for c in commands_in(page)]
    own = ROOT / "tests" / "own_model" / "conf"
    assert found == [
        (1, "wdexp.train", ("seed=1",)),
        (1, "wdexp.train", ("epochs=5",)),
        (3, "wdexp.train", (f"hydra.searchpath=[file://{own}]", "model=tiny_net")),
        (5, "wdexp.report", ("report.sweep=latest",)),
    ]

"""``python -m wdexp.report``: one row per paired run, read from the MLflow store alone.

Takes the same ``tracking.uri=`` / ``tracking.experiment=`` overrides as ``wdexp.train``::

    python -m wdexp.report                                  # every pair, in 100 columns
    python -m wdexp.report report.sweep=latest              # the most recently started sweep
    python -m wdexp.report "report.sweep=sweep optimizer.weight_decay=0,0.1"  # by name or run id
    python -m wdexp.report report.columns=all               # every column, full names
    python -m wdexp.report "report.columns=[epochs,weight_decay,decay.final_loss]"
    python -m wdexp.report report.format=csv report.output=pairs.csv
    python -m wdexp.report report.sweep=latest report.best=weight_decay  # best λ per setting

The table (``report.columns=brief``) shows the config keys, group choices (``model``,
``optimizer``) included, whose value differs between the listed pairs — not ``tracking.*``,
``paths.*``, ``resume``, nor a group's ``_target_`` where its choice differs — each under its
last dotted component (``weight_decay``, ``epochs``; the full key where two would clash), then
each arm's final values to 4 significant digits, wider tables wrapped at 100 columns:

    base.loss, decay.loss              final train loss (models without test metrics)
    base.test_loss, decay.test_loss    final test loss (models with test metrics: networks)
    base.test_acc, decay.test_acc      final test accuracy (networks)
    base.norm, decay.norm              final weight norm
    base.diverged, decay.diverged      only when some pair diverged
    status                             only when some pair is not FINISHED

``report.columns=all`` (and CSV, at full precision) has every column under its full name: run
id, status, model, optimizer, decay mode, lr, weight decay, seed, the differing keys and
``baseline.final_loss``, ``decay.final_weight_norm``, … A list picks columns: any of ``all``'s,
or any config key the pairs recorded (``optimizer.momentum``).

Nothing is written but the table, to standard output or ``report.output``: no log file, log
messages on standard error.

A sweep that varies ``seed`` is reported one row per setting, with ``seeds`` (how many) and the
mean and standard deviation over its seeds: ``mean±std`` in the brief table, ``<column>.std``
columns otherwise (``report.seeds=each`` for one row per pair). Because both arms of a pair
share their init and batches, the per-seed difference decay - baseline is the statistic: the
brief table adds ``d.<metric> (95% CI)`` (its mean over seeds and the Student t interval) and
``wins`` (seeds where the decay arm was better, of those where neither diverged); the other
tables have ``diff.<metric>`` with ``.std``, ``.ci_low``, ``.ci_high``, ``.n`` and ``.wins`` for
every final metric (:func:`wdexp.analysis.paired`).
"""

from __future__ import annotations

import re
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import hydra
import pandas as pd
from omegaconf import DictConfig, ListConfig

from wdexp.analysis import config_values, over_seeds, pair_table
from wdexp.analysis import find_sweep as analysis_find_sweep
from wdexp.config import ROOT, parse_tracking
from wdexp.lifecycle import job, run_main
from wdexp.tracking.store import Store, connect
from wdexp.vocabulary import (
    ARMS,
    BASELINE,
    DECAY,
    LR,
    SEED,
    WEIGHT_DECAY,
    ConfigError,
    objective_column,
)

# Config keys in every `all` table, under these names.
COLUMNS = {"model": "model", "optimizer": "optimizer", "optimizer.decay_mode": "decay_mode",
           LR: "lr", WEIGHT_DECAY: "weight_decay", SEED: "seed"}
# Where a run's results went, not what it computed: never a column of their own.
NOT_SETTINGS = ("tracking.", "paths.", "resume")
# Params derived from the settings (the data's identity, the decay's timescale): not settings.
DERIVED = ("tau_iter", "tau_epoch", "data.sha256", "data.n_train", "data.n_test", "data.source",
           "data.generator.")
# Keys that follow another by default: shown only where they were set apart from it.
FOLLOWS = {"data.batch_seed": SEED}
FORMATS = ("table", "csv")
SEEDS = ("aggregate", "each")
WIDTH = 100
# The brief table's names: arm prefixes and metric suffixes.
ARM_NAMES = {BASELINE: "base", DECAY: "decay"}
METRIC_NAMES = {"final_loss": "loss", "final_test_loss": "test_loss",
                "final_test_accuracy": "test_acc", "final_weight_norm": "norm"}
BASELINE_NODE = f"arms.{BASELINE}."
SWEEP_OVERRIDE = re.compile(r"(\+{0,2}report\.sweep=)(.*)", re.DOTALL)


@dataclass
class Pairs:
    table: pd.DataFrame  # every column: config keys under their column names, metrics full
    keys: dict[str, str]  # each config key in the table → its column name
    recorded: list[str]  # every config key the listed pairs recorded


def find_sweep(store: Store, ref: str) -> tuple[str, list[str]]:
    try:
        return analysis_find_sweep(store, ref)
    except LookupError:
        raise ConfigError("report.sweep", "names no sweep run in this experiment", ref) from None


def names(keys: Sequence[str]) -> dict[str, str]:
    """Each key's column: its COLUMNS name or last dotted component, the full key on a clash."""
    short = {key: COLUMNS.get(key, key.rsplit(".", 1)[-1]) for key in keys}
    counts = Counter(short.values())
    return {key: name if counts[name] == 1 else key for key, name in short.items()}


def pairs(store: Store, sweep: str | None = None, seeds: str = "aggregate",
          extra: Sequence[str] = ()) -> Pairs:
    """The pairs (of one sweep) with COLUMNS, the swept keys, every config key that differs
    between them and those of ``extra`` that they recorded."""
    sweep_id, swept = find_sweep(store, sweep) if sweep else (None, [])
    recorded = {key: values for key, values in config_values(store, sweep_id).items()
                if not key.startswith(NOT_SETTINGS)}
    differing = {key for key, values in recorded.items()
                 if len(values) > 1 and not key.startswith(DERIVED)}
    keys = list(dict.fromkeys([
        *COLUMNS, *swept, *sorted(key for key in differing
                                  if not _redundant(key, differing, recorded)),
        *(key for key in extra if key in recorded)]))
    table = pair_table(store, sweep_id, keys=keys).drop(columns=["run_name"])
    if SEED in swept and seeds == "aggregate":
        # Within one sweep only the swept keys differ, so equal keys but the seed = one setting.
        table = over_seeds(table.drop(columns=["run_id", "status"]), swept)
    columns = {key: name for key, name in names(keys).items() if key in table.columns}
    return Pairs(table.rename(columns=columns), columns, sorted(recorded))


def _redundant(key: str, differing: set[str], recorded: dict[str, set[str]]) -> bool:
    # A group's class path differs with its choice (model=mlp): the choice's column says it.
    group, _, leaf = key.partition(".")
    if leaf == "_target_" and group in differing:
        return True
    # The baseline's lr follows the decay arm's (${optimizer.lr}) unless set apart; the batch
    # order follows the seed.
    followed = FOLLOWS.get(key, key.removeprefix(BASELINE_NODE))
    return followed != key and recorded.get(followed) == recorded[key]


def report(store: Store, sweep: str | None = None, seeds: str = "aggregate") -> pd.DataFrame:
    """Every column of the pairs (of one sweep), as ``report.columns=all`` shows them."""
    return pairs(store, sweep, seeds).table


def pick(found: Pairs, wanted: Sequence[str]) -> pd.DataFrame:
    """The columns named in ``wanted``: column names, or config keys by their full name."""
    column = {**{name: name for name in found.table.columns}, **found.keys}
    unknown = [name for name in wanted if name not in column]
    if unknown:
        available = [*found.table.columns, *(k for k in found.recorded if k not in column)]
        raise ConfigError("report.columns", "must be brief, all or a list of these columns: "
                          + ", ".join(available), unknown[0] if len(unknown) == 1 else unknown)
    return found.table[[column[name] for name in wanted]].set_axis(list(wanted), axis=1)


def brief(found: Pairs) -> pd.DataFrame:
    """The 100-column table: differing keys, then each arm's final values as text; over seeds,
    the paired difference decay - baseline of the first metric with its 95 % interval, and in
    how many seeds the decay arm won."""
    table = found.table
    shown = {name: table[name] for name in found.keys.values() if table[name].nunique() > 1}
    if "status" in table and table["status"].ne("FINISHED").any():
        shown["status"] = table["status"]
    if "seeds" in table:
        shown["seeds"] = table["seeds"]
    # Test metrics replace the train loss, which stays for pairs of models without them.
    test = table.get("decay.final_test_loss")
    train_only = test is None or (table["decay.final_loss"].notna() & test.isna()).any()
    metrics = [*(["final_loss"] if train_only else []),
               *([] if test is None else ["final_test_loss", "final_test_accuracy"]),
               "final_weight_norm"]
    for metric in metrics:
        for arm in ARMS:
            column = f"{arm}.{metric}"
            shown[f"{ARM_NAMES[arm]}.{METRIC_NAMES[metric]}"] = [
                _value(mean, std) for mean, std in
                zip(table[column], table.get(f"{column}.std", [None] * len(table)), strict=True)]
    outcome = f"diff.{metrics[0]}"  # over seeds: the paired difference of the first metric
    if outcome in table:
        short = METRIC_NAMES[metrics[0]]
        shown[f"d.{short} (95% CI)"] = [
            _interval(*row) for row in zip(table[outcome], table[f"{outcome}.ci_low"],
                                           table[f"{outcome}.ci_high"], strict=True)]
        shown["wins"] = [f"{w}/{n}" for w, n in zip(table[f"{outcome}.wins"],
                                                    table[f"{outcome}.n"], strict=True)]
    flags = [f"{arm}.diverged" for arm in ARMS]
    if any(pd.to_numeric(table[flag], errors="coerce").gt(0).any() for flag in flags):
        shown.update({f"{ARM_NAMES[arm]}.diverged": table[f"{arm}.diverged"] for arm in ARMS})
    return pd.DataFrame(shown, index=table.index)


def _value(mean: float, std: float | None) -> str:
    if pd.isna(mean):
        return "NaN"
    return f"{mean:.4g}" if std is None or pd.isna(std) else f"{mean:.4g}±{std:.2g}"


def best(found: Pairs, key: str) -> pd.DataFrame:
    """For each setting of the other keys that differ, the value of ``key`` (a column name or
    config key) whose decay arm reached the lowest final test loss (final loss for models
    without one), with that outcome — e.g. the best weight decay per data fraction."""
    column = {**{name: name for name in found.table.columns}, **found.keys}.get(key)
    if column is None:
        raise ConfigError("report.best", "must name a config key or column of these pairs", key)
    table = found.table
    outcome = objective_column([c for c in table.columns if table[c].notna().any()])
    others = [name for name in found.keys.values()
              if name != column and name in table and table[name].nunique() > 1]
    values = pd.to_numeric(table[outcome], errors="coerce")
    ranked = table.assign(_v=values).dropna(subset="_v")
    picked = (ranked.loc[ranked.groupby(others, dropna=False)["_v"].idxmin()] if others
              else ranked.loc[[ranked["_v"].idxmin()]] if len(ranked) else ranked)
    shown = [*others, column, outcome, *(["seeds"] if "seeds" in table else [])]
    return picked[shown].sort_values(others or [column]).reset_index(drop=True)


def _interval(mean: float, low: float, high: float) -> str:
    if pd.isna(mean):
        return "NaN"
    return f"{mean:+.2g}" if pd.isna(low) else f"{mean:+.2g} [{low:+.2g}, {high:+.2g}]"


def render(table: pd.DataFrame, fmt: str, width: int | None = None) -> str:
    if fmt == "csv":
        return table.to_csv(index=False)
    if table.empty:
        return "no paired runs\n"
    return table.to_string(index=False, float_format=lambda v: f"{v:.6g}",
                           line_width=width) + "\n"


def _columns(value: object) -> str | list[str]:
    if isinstance(value, str):
        return value if value in ("brief", "all") else [value]
    if isinstance(value, ListConfig | list) and all(isinstance(v, str) for v in value):
        return list(value)
    raise ConfigError("report.columns", "must be brief, all or a list of column names", value)


# An absolute path: called from an import (cli(), not run as __main__) Hydra would look for a
# relative "../conf" as a Python package.
@hydra.main(version_base="1.3", config_path=str(ROOT / "conf"), config_name="report")
def main(cfg: DictConfig) -> None:
    with job(multirun=False):
        fmt = cfg.report.format
        if fmt not in FORMATS:
            raise ConfigError("report.format", f"must be one of {', '.join(FORMATS)}", fmt)
        if cfg.report.seeds not in SEEDS:
            raise ConfigError("report.seeds", f"must be one of {', '.join(SEEDS)}",
                              cfg.report.seeds)
        columns = _columns(cfg.report.columns)
        store = connect(parse_tracking(cfg), create=False)
        sweep = None if cfg.report.sweep is None else str(cfg.report.sweep)
        found = pairs(store, sweep, cfg.report.seeds,
                      extra=columns if isinstance(columns, list) else ())
        if cfg.report.get("best") is not None:
            text = render(best(found, str(cfg.report.best)), fmt, WIDTH)
        elif isinstance(columns, list):
            text = render(pick(found, columns), fmt, WIDTH)
        elif columns == "brief" and fmt == "table":
            text = render(brief(found), fmt, WIDTH)
        else:  # all, and CSV unless a list picks its columns
            text = render(found.table, fmt)
        if cfg.report.output:
            Path(cfg.report.output).write_text(text)
        else:
            sys.stdout.write(text)


def hydra_quoted(value: str) -> str:
    """``value`` as a single-quoted string of Hydra's override grammar, read back unchanged."""
    # OmegaConf reads ${ as an interpolation: \${ is a literal one, and backslashes before it
    # pair up.
    value = re.sub(r"(\\*)\$\{", lambda m: m[1] * 2 + "\\${", value)
    # Hydra keeps a quoted string's backslashes as they are, except a run before a quote or at
    # the end, which pair up (an odd one escapes the quote).
    value = re.sub(r"(\\*)('|\Z)", lambda m: m[1] * 2 + ("\\'" if m[2] else ""), value)
    return f"'{value}'"


def quote_sweep(argv: Sequence[str]) -> list[str]:
    """``report.sweep=VALUE`` with VALUE quoted for Hydra, which would read the commas and ``=``
    of a sweep's name as a list or a second override: one level of shell quotes is enough.
    ``null``, an empty value and a value already in quotes pass as they are."""
    def quote(arg: str) -> str:
        match = SWEEP_OVERRIDE.fullmatch(arg)
        if match is None:
            return arg
        prefix, value = match.groups()
        quoted = len(value) > 1 and value[0] in "'\"" and value[-1] == value[0]
        if quoted or value in ("", "null"):
            return arg
        return prefix + hydra_quoted(value)

    return [quote(arg) for arg in argv]


def cli() -> None:
    """The ``wdexp-report`` console entry: ``python -m wdexp.report``."""
    sys.argv[1:] = quote_sweep(sys.argv[1:])
    run_main(main)


if __name__ == "__main__":
    cli()

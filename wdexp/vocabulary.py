"""The words every layer of wdexp shares: config keys and groups, arm names, the tags and metric
names of the store's runs, the objective rule, the tracking settings and the two errors a job
reports as one line.

Only the standard library here. Both processes import this module (the tracking process never
imports torch or Hydra), as do Hydra's logging set-up and the readers of a store, so a name
spelt here is spelt once.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

# --- the config ---------------------------------------------------------------------------------

GROUPS = ("model", "data", "optimizer", "scheduler")  # config groups; each pair run tags its choice
ARM_GROUPS = ("optimizer", "scheduler")  # the groups arms.baseline can change
WEIGHT_DECAY = "optimizer.weight_decay"
LR = "optimizer.lr"
SEED = "seed"
SHORT_KEYS = {WEIGHT_DECAY: "wd", LR: "lr"}  # as run names show them

# --- the arms of a pair ------------------------------------------------------------------------

BASELINE, DECAY = "baseline", "decay"
ARMS = (BASELINE, DECAY)  # in the order they are built, trained and shown

# --- what a run carries ------------------------------------------------------------------------

# Tags on every run wdexp creates; the analysis and the report read the same names.
TAG_PREFIX = "wdexp."


def tag(key: str) -> str:
    """The tag holding a pair's value of ``key`` where it is no param: a group's choice
    (``wdexp.optimizer`` = ``sgd_wd``), its job number (``wdexp.job``)."""
    return TAG_PREFIX + key


RUN_KIND_TAG = "wdexp.kind"  # sweep | pair | arm
ARM_TAG = "wdexp.arm"  # baseline | decay
CONFIG_HASH_TAG = "wdexp.config_hash"  # what a pair computes: resume finds finished ones by it
OVERRIDES_TAG = "wdexp.overrides"  # the job's command-line overrides, redacted
JOB = "job"  # a pair's job number within its multirun (Hydra's hydra.job.num), tag(JOB)
SWEEP_DIR_TAG = "wdexp.sweep_dir"  # for people: the multirun's output folder
SWEEP_KEY_TAG = "wdexp.sweep_key"  # for lookups: a digest of that folder, safe in a filter
DIVERGED_TAG, DIVERGED_AT_TAG = "wdexp.diverged", "wdexp.diverged_at"
# Who keeps a run open: "host pid start-ticks" of the tracking process and the last time it
# said so. A later job ends a RUNNING run whose owner is gone (see wdexp.tracking.orphans).
OWNER_TAG, HEARTBEAT_TAG = "wdexp.owner", "wdexp.heartbeat"
ORPHAN_AFTER_TAG = "wdexp.orphan_after_s"  # the staleness its owner promised to beat within
ORPHANED_TAG = "wdexp.orphaned"  # why a later job ended this run
FAILURE_TAG = "wdexp.failure"  # the one-line reason a run ended FAILED or KILLED
# On a job's earlier attempt (a launcher's retry, a requeued task): the pair that replaced it.
# Readers (wdexp.analysis) leave such pairs out: each job is seen once.
SUPERSEDED_TAG = "wdexp.superseded_by"
# hydra/launcher=stacked: the member an arm run is in its stack, "m3" or "m0 of 5 jobs" for a
# baseline that several pairs share (its history logged under each of them).
STACK_MEMBER_TAG = "wdexp.stack_member"

# MLflow's "Source" of a run: the command that made it, ``wdexp.train <overrides>``. Type JOB,
# because MLflow's UI shows a JOB source whole but a LOCAL one only after its last "/", which
# would cut an override holding a path (tracking.uri=sqlite:////…, hydra/launcher=joblib).
SOURCE_NAME_TAG, SOURCE_TYPE_TAG = "mlflow.source.name", "mlflow.source.type"
ENTRYPOINT = "wdexp.train"

# An arm's final values of these, where its model reports them, summarise a pair: the pair run
# carries ``<arm>.final_<name>``.
SUMMARY_METRICS = ("loss", "weight_norm", "test_loss", "test_accuracy")
PAIR_METRICS = tuple(f"final_{name}" for name in SUMMARY_METRICS)
HIGHER_IS_BETTER = ("final_test_accuracy",)  # the decay arm "wins" a seed when it is higher

FIGURE_POINTS = 2001  # per arm and figure, however long the run: every step of 2000 epochs

# What a pair scores, for a sweep's figures, the report's best and a search: the decay arm's
# first of these that its model reports (held-out loss where there is test data).
OBJECTIVE_METRICS = ("test_loss", "loss")


def objective(metrics: Collection[str]) -> str:
    """The objective's metric name among an arm's ``metrics`` (``test_loss`` or ``loss``)."""
    return next((name for name in OBJECTIVE_METRICS if name in metrics), OBJECTIVE_METRICS[-1])


def objective_column(columns: Collection[str]) -> str:
    """The objective as a pair-table column: ``decay.final_test_loss`` where ``columns`` has it,
    else ``decay.final_loss``."""
    prefix = f"{DECAY}.final_"
    return prefix + objective({c.removeprefix(prefix) for c in columns if c.startswith(prefix)})


def override_key(override: str) -> str:
    """The config key of a Hydra override: ``+optimizer.nesterov=true`` → ``optimizer.nesterov``."""
    return override.split("=", 1)[0].lstrip("+~")


def short_key(key: str) -> str:
    """A config key as run names show it: ``optimizer.weight_decay`` → ``wd``, else its last
    part (``model.coefficients`` → ``coefficients``)."""
    return SHORT_KEYS.get(key, key.rsplit(".", 1)[-1])


def source_tags(*arguments: str) -> dict[str, str]:
    return {SOURCE_NAME_TAG: " ".join((ENTRYPOINT, *arguments)), SOURCE_TYPE_TAG: "JOB"}


# --- where results go --------------------------------------------------------------------------

DEFAULT_TIMEOUT_S = 60.0  # a store that answers nothing this long fails the job
DEFAULT_CONNECT_WAIT_S = 30.0  # a tracking server not listening yet is waited for this long
DEFAULT_ORPHAN_AFTER_S = 600.0  # a run whose owner sent no heartbeat this long is ended


@dataclass(frozen=True)
class TrackingSpec:
    """The ``tracking`` group, checked (:func:`wdexp.config.parse_tracking`)."""

    uri: str
    experiment: str
    artifact_location: str | None = None
    timeout_s: float = DEFAULT_TIMEOUT_S
    upgrade_store: bool = False  # an older MLflow store may be upgraded (a copy kept aside)
    connect_wait_s: float = DEFAULT_CONNECT_WAIT_S
    orphan_after_s: float = DEFAULT_ORPHAN_AFTER_S


# --- what a user is told -----------------------------------------------------------------------


class ConfigError(ValueError):
    """A config value wdexp cannot run with; ``str()`` is the one line shown to the user."""

    def __init__(self, key: str, requirement: str, value: Any = None, *, show_value: bool = True):
        self.key, self.requirement = key, requirement
        self.value, self.show_value = value, show_value
        got = f" (got {value!r})" if show_value else ""
        super().__init__(f"{key} {requirement}{got}")

    def within(self, prefix: str) -> ConfigError:
        """The same error with its key qualified by the group it came from."""
        return ConfigError(f"{prefix}.{self.key}", self.requirement, self.value,
                           show_value=self.show_value)


class JobFailed(RuntimeError):
    """A failure whose message is the whole story (a store that refused a write, a tracking
    process that died): reported as one line, without a traceback."""


# Hydra escapes ":" (and "\", "=", ",", "(", ")", …) with a backslash in the overrides it hands
# each job, so `http://u:p@h` reaches its logs and tags as `http\://u\:p@h`.
_COLON = r"\\*:"
_CREDENTIALS = re.compile(
    rf"(?P<keep>[A-Za-z][A-Za-z0-9+.-]*{_COLON}//"  # scheme://, escaped or not
    rf"[^/?#@\s:]*{_COLON})"  # the user (possibly empty) and its colon
    # The password runs to the authority's last "@": an unencoded "@" in a password is not
    # valid in a URI, yet HTTP clients take the last one as the end of the userinfo.
    r"[^/?#\s]+@"
)
MASK = "***"


def redact(text: str) -> str:
    """``text`` with the password of every URI in it replaced by ``***`` (see
    :mod:`wdexp.credentials` for where passwords are kept out)."""
    return _CREDENTIALS.sub(rf"\g<keep>{MASK}@", text)


def has_password(text: str) -> bool:
    return _CREDENTIALS.search(text) is not None

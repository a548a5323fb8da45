"""What a job records, as plain data both processes share: run specs, steps and the tag names
the store's runs carry. No torch, no MLflow: it pickles and imports in milliseconds."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field

# Tags on every run wdexp creates; the analysis and the report read the same names.
RUN_KIND_TAG = "wdexp.kind"  # sweep | pair | arm
ARM_TAG = "wdexp.arm"  # baseline | decay
CONFIG_HASH_TAG = "wdexp.config_hash"  # what a pair computes: resume finds finished ones by it
OVERRIDES_TAG = "wdexp.overrides"  # the job's command-line overrides, redacted
SWEEP_DIR_TAG = "wdexp.sweep_dir"  # for people: the multirun's output folder
SWEEP_KEY_TAG = "wdexp.sweep_key"  # for lookups: a digest of that folder, safe in a filter
DIVERGED_TAG, DIVERGED_AT_TAG = "wdexp.diverged", "wdexp.diverged_at"
# Who keeps a run open: "host pid start-ticks" of the tracking process and the last time it
# said so. A later job ends a RUNNING run whose owner is gone (see wdexp.tracking.orphans).
OWNER_TAG, HEARTBEAT_TAG = "wdexp.owner", "wdexp.heartbeat"
ORPHANED_TAG = "wdexp.orphaned"  # why a later job ended this run
FAILURE_TAG = "wdexp.failure"  # the one-line reason a run ended FAILED or KILLED

# MLflow's "Source" of a run: the command that made it, ``wdexp.train <overrides>``. Type JOB,
# because MLflow's UI shows a JOB source whole but a LOCAL one only after its last "/", which
# would cut an override holding a path (tracking.uri=sqlite:////…, hydra/launcher=joblib).
SOURCE_NAME_TAG, SOURCE_TYPE_TAG = "mlflow.source.name", "mlflow.source.type"
ENTRYPOINT = "wdexp.train"

# An arm's final values of these, where its model reports them, summarise a pair.
SUMMARY_METRICS = ("loss", "weight_norm", "test_loss", "test_accuracy")


def sweep_key(sweep_dir: str) -> str:
    """A multirun's identity in a search filter: its folder may hold any character."""
    return hashlib.sha256(sweep_dir.encode()).hexdigest()[:32]


def override_key(override: str) -> str:
    """The config key of a Hydra override: ``+optimizer.nesterov=true`` → ``optimizer.nesterov``."""
    return override.split("=", 1)[0].lstrip("+~")


def short_key(key: str) -> str:
    """A config key as run names show it: ``optimizer.weight_decay`` → ``wd``, else its last
    part (``model.coefficients`` → ``coefficients``)."""
    return {"optimizer.weight_decay": "wd", "optimizer.lr": "lr"}.get(key, key.rsplit(".", 1)[-1])


def source_tags(*arguments: str) -> dict[str, str]:
    return {SOURCE_NAME_TAG: " ".join((ENTRYPOINT, *arguments)), SOURCE_TYPE_TAG: "JOB"}


@dataclass(frozen=True)
class RunSpec:
    """What a run is created with: its name, params and tags."""

    name: str
    params: Mapping[str, str]
    tags: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Step:
    """One epoch's records: ``metrics[arm_name]`` for every arm still finite at this step."""

    epoch: int
    metrics: dict[str, dict[str, float]]
    diverged: tuple[str, ...] = ()  # arms that diverged at this step (no metrics for them)

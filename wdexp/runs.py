"""What the training process tells the tracking process: plain data, no torch, no MLflow.

A job's records cross a process boundary (see :mod:`wdexp.tracker`), so everything here pickles
and imports in milliseconds on either side.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

RUN_KIND_TAG, ARM_TAG, SWEEP_DIR_TAG = "wdexp.kind", "wdexp.arm", "wdexp.sweep_dir"
CONFIG_HASH_TAG = "wdexp.config_hash"
# An arm's final values of these, where its model reports them, summarise a pair.
SUMMARY_METRICS = ("loss", "weight_norm", "test_loss", "test_accuracy")


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

"""What a job records, as plain data both processes share: run specs and steps (the names they
use are :mod:`wdexp.vocabulary`'s). No torch, no MLflow: it pickles and imports in
milliseconds."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field


def sweep_key(sweep_dir: str) -> str:
    """A multirun's identity in a search filter: its folder may hold any character."""
    return hashlib.sha256(sweep_dir.encode()).hexdigest()[:32]


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

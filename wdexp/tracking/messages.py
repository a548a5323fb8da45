"""The requests the training process makes of the tracking process, and what comes back.

Each request is a dataclass; :class:`~wdexp.tracking.server.Service` handles each type by name
in one ``match``, and :class:`~wdexp.tracking.client.TrackingClient` builds them in typed
methods — so a renamed or misspelt request fails in ruff or at import, not in the other process.
Requests that return something are *calls* (the client waits for their :class:`Reply`); the
others (metric batches) are fire-and-forget, acknowledged by :class:`Progress`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from wdexp.tracking.records import RunSpec, Step
from wdexp.vocabulary import TrackingSpec


@dataclass(frozen=True)
class OpenStore:
    """Start opening the store (fire-and-forget): it is ready by the time :class:`Connect`
    asks, and any error waits for that call."""

    spec: TrackingSpec


@dataclass(frozen=True)
class Connect:
    """Reach the store and its experiment (created if missing); replies :class:`Connected`."""

    spec: TrackingSpec


@dataclass(frozen=True)
class FindFinishedPair:
    spec: TrackingSpec
    config_hash: str


@dataclass(frozen=True)
class FindSweepRun:
    spec: TrackingSpec
    sweep_dir: str


@dataclass(frozen=True)
class OpenPair:
    """Create a pair run and its arm runs; replies ``(pair_id, {arm: run_id})``."""

    spec: TrackingSpec
    pair: RunSpec
    arms: dict[str, RunSpec]
    files: dict[str, str]
    parent_id: str | None


@dataclass(frozen=True)
class LogSteps:
    pair_id: str
    steps: list[Step]
    timestamps: list[int]  # ms since the epoch at which training produced each step


@dataclass(frozen=True)
class Summarize:
    pair_id: str


@dataclass(frozen=True)
class ClosePair:
    """Write what is buffered for the pair, then end its runs with ``status``.

    Self-contained (store, ids), so a tracking process that never saw the pair — one started
    after the first died — can still end its runs.
    """

    spec: TrackingSpec
    pair_id: str
    arm_ids: list[str]
    status: str
    files: dict[str, bytes] = field(default_factory=dict)
    failure: str | None = None  # why it ends FAILED or KILLED, kept as a tag


@dataclass(frozen=True)
class OpenSweep:
    spec: TrackingSpec
    sweep: RunSpec
    sweep_dir: str


@dataclass(frozen=True)
class DeleteSweep:
    spec: TrackingSpec
    run_id: str


@dataclass(frozen=True)
class Annotate:
    """Params, metrics and files added to an open run (a search's results on its sweep run)."""

    spec: TrackingSpec
    run_id: str
    params: dict[str, str]
    metrics: dict[str, float]
    files: dict[str, str | bytes]


@dataclass(frozen=True)
class CloseSweep:
    spec: TrackingSpec
    run_id: str
    status: str
    files: dict[str, str | bytes]
    metrics: dict[str, float]


Request = (OpenStore | Connect | FindFinishedPair | FindSweepRun | OpenPair | LogSteps | Summarize
           | ClosePair | OpenSweep | DeleteSweep | Annotate | CloseSweep)


@dataclass(frozen=True)
class Envelope:
    seq: int
    request: Request
    wants_reply: bool


# --- from the tracking process --------------------------------------------------------------

@dataclass(frozen=True)
class Connected:
    experiment_id: str
    reaped: list[str]  # one line per orphaned run this connection ended
    ingestion: str | None = None  # how metrics are written, the first time this store is used


@dataclass(frozen=True)
class Failure:
    """An error to raise in the training process: a ConfigError (``key`` set) or a store
    failure, each with its one-line message; ``detail`` is the traceback, for unexpected ones."""

    message: str
    key: str | None = None
    requirement: str = ""
    value: Any = None
    show_value: bool = True
    detail: str = ""


@dataclass(frozen=True)
class Reply:
    seq: int
    value: Any = None
    failure: Failure | None = None


@dataclass(frozen=True)
class Progress:
    """Every request up to ``done`` is handled (``done`` unchanged: a long write goes on)."""

    done: int


@dataclass(frozen=True)
class Broken:
    """A fire-and-forget request or a background write failed: the job must stop."""

    failure: Failure

"""Train many jobs' arms as one stacked model, in lockstep, in this process
(``hydra/launcher=stacked``, :mod:`wdexp.stacked_launch`).

**Members.** Each distinct arm of the jobs is one *member*: arms whose resolved configs are
identical — the model, data, seed and epochs, and the arm's own optimizer and scheduler — are
the same computation, trained once. A λ x seed sweep's baselines are one member per seed, shared
by every pair of that seed; a baseline that depends on λ is a member of its own.

**Lanes** (:mod:`wdexp.stack.lane`): members whose optimizer and scheduler differ only in λ,
their parameters stacked, one torch optimizer for all, each member's λ applied on its rows. A
sweep over lr has a lane per lr (one torch optimizer takes one lr per tensor), all stepped in
lockstep.

**Records.** A model with its own loss (the quadratic, the ridge, yours) is called once per
member on its own rows (:mod:`wdexp.stack.exact`): every record bit-identical to the separate
run. A network on a data set runs batched over its members (:mod:`wdexp.stack.vectorized`):
equal to the separate run to rounding. A member that diverges stops being recorded; the others
are untouched by it (each member's update reads its own rows alone).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from wdexp import engine
from wdexp.models.contract import MiniBatched
from wdexp.stack import exact, vectorized
from wdexp.stack.lane import Lane, Member
from wdexp.stack.plan import Job, check, chunks, group_key, lane_key, member_key
from wdexp.stack.plan import vectorized as is_vectorized
from wdexp.study import steps_per_epoch
from wdexp.tracking.records import Step

__all__ = ["Job", "Stack", "check", "chunks", "group_key", "member_key"]


@dataclass
class _Pair:
    members: dict[str, Member]  # arm name → member, in the study's arm order
    done: bool = field(default=False)


class Stack:
    """The members and lanes of one chunk of jobs (:func:`chunks`), ready to train."""

    def __init__(self, jobs: Sequence[Job]) -> None:
        for job in jobs:
            check(job.study)
        first = jobs[0].study
        self.epochs = first.job.epochs
        self.vectorized = is_vectorized(first)
        by_key: dict[str, Member] = {}
        self.pairs = []
        for job in jobs:
            pair = {}
            for arm in job.study.arms:
                key = member_key(job.study, arm)
                if key not in by_key:
                    by_key[key] = Member(len(by_key), arm, job.random_state)
                pair[arm.name] = by_key[key]
            self.pairs.append(_Pair(pair))
        self.members = list(by_key.values())
        lanes: dict[str, list[Member]] = {}
        for member in self.members:
            lanes.setdefault(lane_key(member.arm), []).append(member)
        total = self.epochs * steps_per_epoch(first.arms[0].model)
        self.lanes = [Lane(members, total) for members in lanes.values()]
        # Mini-batch lanes step inside their records (one step per batch, however many).
        self.minibatched = isinstance(first.arms[0].model, MiniBatched)

    def shared(self, job: int) -> dict[str, str]:
        """For each arm of job ``job``, the member it is, as ``m<index>`` (``m0 of 3 jobs``
        where other jobs share it)."""
        counts: dict[int, int] = {}
        for pair in self.pairs:
            for index in {member.index for member in pair.members.values()}:
                counts[index] = counts.get(index, 0) + 1
        return {arm: member.name + (f" of {counts[member.index]} jobs"
                                    if counts[member.index] > 1 else "")
                for arm, member in self.pairs[job].members.items()}

    def train(self) -> Iterator[list[Step | None]]:
        """Each epoch, every job's :class:`Step` as :func:`wdexp.engine.train` would yield it
        for that job alone; None for a job whose arms have all diverged."""
        device = engine.model_device(self.members[0].arm.model)
        streams = engine.RandomStreams({m.name: m.start for m in self.members}, device)
        # Where each lane's dropout draws: its members' groups are fixed, found once.
        masks = [vectorized.masks(lane, streams) if self.vectorized else None
                 for lane in self.lanes]
        for epoch in range(self.epochs + 1):
            records: dict[str, dict[str, float]] = {}
            diverged: set[str] = set()
            for lane, lane_masks in zip(self.lanes, masks, strict=True):
                if self.vectorized:
                    found, gone = vectorized.record(lane, epoch, epoch > 0, lane_masks)
                else:
                    found, gone = exact.record(lane, epoch, streams)
                if lane.geometry is not None:
                    tables = lane.geometry.flush_members(
                        [m.arm.equilibrium_angle for m in lane.members], last=epoch == self.epochs)
                    for member, measured in zip(lane.members, tables, strict=True):
                        if member.name in found:
                            found[member.name].update(
                                (k, v) for k, v in measured.items() if math.isfinite(v))
                records.update(found)
                diverged |= gone
                if epoch < self.epochs and not self.minibatched:
                    lane.step(lane.loss_grads())
                lane.optimizer.zero_grad()
            yield [self._step(pair, epoch, records, diverged) for pair in self.pairs]
            if all(pair.done for pair in self.pairs):
                return

    @staticmethod
    def _step(pair: _Pair, epoch: int, records: dict[str, dict[str, float]],
              diverged: set[str]) -> Step | None:
        if pair.done:
            return None
        step = Step(epoch, {arm: records[m.name] for arm, m in pair.members.items()
                            if m.name in records},
                    tuple(arm for arm, m in pair.members.items() if m.name in diverged))
        pair.done = all(m.diverged_at is not None for m in pair.members.values())
        return step

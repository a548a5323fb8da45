"""What wdexp asks of a model, as typing Protocols: the part every model has, and each optional
capability the study, engine and optimizers look for (``isinstance`` against these, never
``hasattr``). A model is any ``torch.nn.Module`` that has the :class:`Model` methods; its
constructor takes the keys of its config group and raises :class:`~wdexp.config.ConfigError`
naming a bad one.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from torch import Tensor

if TYPE_CHECKING:
    from wdexp.closed_form import QuadraticForm


@runtime_checkable
class Model(Protocol):
    """Required. The engine calls ``loss()`` once per epoch for the record (and, full batch,
    for the update), then ``metrics(loss)``."""

    def loss(self) -> Tensor:
        """The training objective at the current parameters, a 0-d tensor."""
        ...

    def metrics(self, loss: Tensor) -> Mapping[str, float]:
        """The floats to log for this state: ``loss`` and whatever else describes it."""
        ...


@runtime_checkable
class MiniBatched(Protocol):
    """An epoch is one optimizer step per mini-batch loss, in this order (the same for both
    arms); without it, an epoch is one full-batch step on ``loss()``."""

    def batches(self, epoch: int) -> Iterable[Tensor]: ...


@runtime_checkable
class KnownSolution(Protocol):
    """The weights full-batch gradient descent with this coupled decay converges to; each step
    then logs ``distance_to_solution``."""

    def solution(self, weight_decay: float) -> Tensor: ...


@runtime_checkable
class ClosedForm(Protocol):
    """The loss as a quadratic form, so the figures draw the path theory predicts."""

    def closed_form(self) -> QuadraticForm: ...


@runtime_checkable
class Artifacts(Protocol):
    """Files (name → text) to log with the pair run, e.g. the data."""

    def artifacts(self) -> dict[str, str]: ...


@runtime_checkable
class DefaultNoDecay(Protocol):
    """Parameter-name patterns exempt from decay unless ``optimizer.no_decay`` says otherwise."""

    def default_no_decay(self) -> Sequence[str]: ...

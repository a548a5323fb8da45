"""What wdexp asks of a model, as typing Protocols: the part every model has, and each optional
capability the study, engine and optimizers look for (``isinstance`` against these, never
``hasattr``).

A model is either

- a ``torch.nn.Module`` with the :class:`Model` methods, which owns its data and loss (the
  quadratic, the ridge), or
- any other ``torch.nn.Module`` — a net mapping a batch of inputs to outputs — which the study
  wraps with the ``data`` group's tensors and loss (:mod:`wdexp.models.supervised`).

Its constructor takes the keys of its config group and may raise
:class:`~wdexp.config.ConfigError` naming a bad one.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from torch import Tensor
from torch.nn import Parameter

if TYPE_CHECKING:
    from wdexp.closed_form import QuadraticForm


@runtime_checkable
class Model(Protocol):
    """Required. Full batch, the engine calls ``loss()`` once per epoch, for the record and the
    update; then ``metrics(loss)``. A :class:`MiniBatched` model's record is the mean of the
    epoch's mini-batch losses instead, passed to ``metrics``."""

    def parameters(self) -> Iterator[Parameter]: ...

    def named_parameters(self) -> Iterator[tuple[str, Parameter]]: ...

    def loss(self) -> Tensor:
        """The training objective at the current parameters, a 0-d tensor."""
        ...

    def metrics(self, loss: Tensor) -> Mapping[str, float]:
        """The floats to log for this state: ``loss`` and whatever else describes it."""
        ...


@runtime_checkable
class MiniBatched(Protocol):
    """An epoch is one optimizer step per mini-batch loss, in this order (the same for both
    arms), ``steps_per_epoch`` of them; without it, an epoch is one full-batch step on
    ``loss()``."""

    @property
    def steps_per_epoch(self) -> int: ...

    def batches(self, epoch: int) -> Iterable[Tensor]: ...

    def buffers(self) -> Iterator[Tensor]:
        """State that is not trained (BatchNorm's running statistics): put back after the
        step-0 record's pass, which must change nothing."""
        ...


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
class Identified(Protocol):
    """Params (name → text) that identify what the model trains on, e.g. a data set's hash."""

    def params(self) -> dict[str, str]: ...


@runtime_checkable
class DefaultNoDecay(Protocol):
    """Parameter-name patterns exempt from decay unless ``optimizer.no_decay`` says otherwise."""

    def default_no_decay(self) -> Sequence[str]: ...

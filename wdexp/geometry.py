r"""The geometry of weight decay on a network's layers, measured at every optimizer step.

For each decayed weight of two or more dimensions (a ``Linear`` matrix, a ``Conv`` filter
bank) a *row* is one output unit's incoming weights :math:`w_r` (flattened) — the unit a
following normalisation makes scale-invariant. Each step, before and after the update, with
:math:`g_r` the row's gradient of the loss alone (no decay term) and :math:`\eta` the current
lr, the arm accumulates on the device (no host sync until the epoch's record):

``angular_update/<layer>``
    :math:`\angle(w_r, w_r')`, the angle (radians) a row turns in one step;
``effective_lr/<layer>``
    :math:`\eta/\lVert w_r\rVert^2` for SGD-family optimizers, :math:`\eta/\lVert w_r\rVert`
    for Adam-family ones (whose update has a fixed size, so only one norm divides it): the lr a
    scale-invariant row effectively sees;
``grad_to_weight/<layer>``
    :math:`\lVert g_r\rVert/\lVert w_r\rVert`;
``cos_grad_weight/<layer>``
    :math:`\cos(g_r, w_r)`, 0 for a scale-invariant row (its gradient is orthogonal to it) — a
    check that the layer really is.

Each is the mean over the layer's rows and the epoch's measured steps: ``geometry.
steps_per_epoch`` of them (default 8), spread evenly over the epoch — measuring every step of
a small net is costly — or every step (``null``).

**Rotational equilibrium** (van Laarhoven, 2017; Wan et al., 2020; Kosson et al., 2023): for a
scale-invariant row whose gradient noise dominates, decay and gradient balance once the norm
settles (on a timescale of about :math:`1/(\eta\lambda)` steps), and the expected angular update
per step is then

.. math:: \sqrt{2\eta\lambda/(1+\alpha)}\ \text{(SGD, momentum } \alpha\text{)}, \qquad
          \sqrt{2\eta\lambda(1-\beta_1)/(1+\beta_1)}\ \text{(AdamW)}.

It assumes the noise-dominated regime — the gradient's direction random from step to step —
not a run whose training loss goes to 0 (then the gradient vanishes, the norm shrinks to the
decay alone and the angle falls below the prediction). On the last step the engine adds
``equilibrium_ratio/<layer>`` = the measured angular update, mean over the last 10 % of the run's
steps, / the prediction.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence

import torch
from torch import Tensor

from wdexp.optimizers import OptimizerSpec

KEYS = ("angular_update", "effective_lr", "grad_to_weight", "cos_grad_weight")
TAIL = 0.1  # the share of the run's last steps the equilibrium ratio averages


def adam_family(spec: OptimizerSpec) -> bool:
    """Optimizers whose update is normalised per coordinate (Adam, AdamW, NAdam, RAdam, …)."""
    return "adam" in spec.cls.__name__.lower()


def predicted_angular_update(spec: OptimizerSpec) -> float | None:
    """The equilibrium angle per step for this optimizer and decay, or None where the theory
    gives none (no decay; decay coupled into Adam's gradient)."""
    shrink = _shrink(spec)
    if shrink is None:
        return None
    if adam_family(spec):
        beta1 = spec.kwargs.get("betas", (0.9, 0.999))[0]
        return math.sqrt(2 * shrink * (1 - beta1) / (1 + beta1))
    momentum = spec.kwargs.get("momentum", 0.0)
    return math.sqrt(2 * shrink / (1 + momentum))


def _shrink(spec: OptimizerSpec) -> float | None:
    """The share of a weight decay removes per step at the initial lr: λ for independent decay,
    η·λ for the others; None without decay or for decay coupled into Adam's gradient (rescaled
    per coordinate, it is no uniform shrink)."""
    if not spec.weight_decay:
        return None
    if adam_family(spec) and not (spec.decay_mode in ("decoupled", "independent") or (
            spec.decay_mode == "native" and spec.cls is torch.optim.AdamW)):
        return None
    if spec.decay_mode == "independent":
        return spec.weight_decay
    return spec.lr * spec.weight_decay


def timescale(spec: OptimizerSpec) -> float | None:
    """The decay's timescale τ in optimizer steps: the weights are an exponential moving
    average over about 1/(ηλ) steps (1/λ for independent decay; Wang & Aitchison, 2024, for
    AdamW). None without decay, or for decay coupled into Adam's gradient."""
    shrink = _shrink(spec)
    return None if shrink is None else 1 / shrink


class Geometry:
    """One arm's per-layer step geometry, accumulated on the device over an epoch."""

    def __init__(self, layers: Sequence[tuple[str, torch.nn.Parameter]], adam: bool,
                 total_steps: int, steps_per_epoch: int = 1, samples: int | None = None,
                 ) -> None:
        self.layers = list(layers)
        self.power = 1 if adam else 2
        self.tail_from = math.floor(total_steps * (1 - TAIL))
        self.per_epoch = max(steps_per_epoch, 1)
        # Which steps of each epoch are measured: ``samples`` of them, evenly spread.
        self.chosen = (None if samples is None or samples >= self.per_epoch else
                       {round((j + 0.5) * self.per_epoch / samples - 0.5)
                        for j in range(samples)})
        self.lead = 0  # leading dimensions before a weight's rows: 1 for stacked members
        self.step = 0
        self._sums: list[Tensor] | None = None  # per layer: the four KEYS, summed over steps
        self._count = 0
        self._tail: list[Tensor] | None = None  # per layer: angular updates in the tail
        self._tail_count = 0
        # The measured step in flight: each layer's rows and row norms before it, and its
        # (effective lr, grad/weight, cosine) means.
        self._before: list[tuple[Tensor, Tensor]] = []
        self._pending: list[Tensor] = []

    def over(self, layers: Sequence[tuple[str, Tensor]], stacked: bool = False) -> Geometry:
        """A fresh geometry with these settings over other tensors of the same layers; with
        ``stacked``, tensors that hold many members' weights along dimension 0
        (:mod:`wdexp.stack`), each member measured on its own rows (:meth:`flush_members`)."""
        twin = copy.copy(self)
        twin.layers = list(layers)
        twin.lead = int(stacked)
        return twin

    def _rows(self, tensor: Tensor) -> Tensor:
        """(*lead, rows, n): each output unit's incoming weights in a row."""
        return tensor.detach().flatten(start_dim=self.lead + 1)

    def measures(self) -> bool:
        """Whether the coming optimizer step is one to measure."""
        return self.chosen is None or self.step % self.per_epoch in self.chosen

    def advance(self) -> None:
        """After every optimizer step, measured or not."""
        self.step += 1

    def before(self, grads: dict[int, Tensor], lr: float) -> None:
        """Just before an optimizer step: the weights and loss gradients it starts from."""
        self._before = []
        stats = []
        for _, weight in self.layers:
            rows = self._rows(weight).clone()
            grad = self._rows(grads[id(weight)])
            norm = torch.linalg.vector_norm(rows, dim=-1)
            grad_norm = torch.linalg.vector_norm(grad, dim=-1)
            stats.append(torch.stack([
                (lr / norm.pow(self.power)).mean(dim=-1),
                (grad_norm / norm).mean(dim=-1),
                ((grad * rows).sum(dim=-1) / (grad_norm * norm)).mean(dim=-1)]))
            self._before.append((rows, norm))
        self._pending = stats

    def after(self) -> None:
        """Just after it: each row's angle from where it started."""
        values = []
        for (_, weight), (rows, norm), stats in zip(self.layers, self._before, self._pending,
                                                    strict=True):
            after = self._rows(weight)
            cosine = (rows * after).sum(dim=-1) / (norm * torch.linalg.vector_norm(after, dim=-1))
            angle = torch.arccos(cosine.clamp(-1.0, 1.0)).mean(dim=-1)
            values.append(torch.cat([angle.unsqueeze(0), stats]))
        if self._sums is None:
            self._sums = values
        else:
            torch._foreach_add_(self._sums, values)
        self._count += 1
        if self.step >= self.tail_from:
            angles = [v[0] for v in values]
            if self._tail is None:
                self._tail = [a.clone() for a in angles]
            else:
                torch._foreach_add_(self._tail, angles)
            self._tail_count += 1
        self._before = []

    def flush(self, predicted: float | None, last: bool) -> dict[str, float]:
        """The epoch's means per layer (one host transfer), and on the ``last`` record the
        equilibrium ratio against ``predicted``; then start the next epoch."""
        return self.flush_members([predicted], last)[0]

    def flush_members(self, predicted: Sequence[float | None], last: bool,
                      ) -> list[dict[str, float]]:
        """:meth:`flush` for each member of a stacked geometry, ``predicted`` its angle."""
        if self._sums is None:
            return [{} for _ in predicted]
        means = torch.stack(self._sums) / self._count  # (layers, KEYS, *members)
        # (members, layers, KEYS): a single arm is a stack of one
        rows = (means.movedim(-1, 0) if self.lead else means.unsqueeze(0)).tolist()
        ratios: list[list[float] | None] = [None] * len(predicted)
        if last and self._tail is not None:
            tail = torch.stack(self._tail).reshape(len(self.layers), -1) / self._tail_count
            ratios = [(tail[:, member] / angle).tolist() if angle else None
                      for member, angle in enumerate(predicted)]
        self._sums, self._count = None, 0
        tables = []
        for layers, member_ratios in zip(rows, ratios, strict=True):
            metrics = {}
            for (name, _), row in zip(self.layers, layers, strict=True):
                metrics.update({f"{key}/{name}": value for key, value in zip(KEYS, row,
                                                                             strict=True)})
            for (name, _), ratio in zip(self.layers, member_ratios or (), strict=False):
                metrics[f"equilibrium_ratio/{name}"] = ratio
            tables.append(metrics)
        return tables

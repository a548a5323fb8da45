r"""How an arm applies weight decay :math:`\lambda`: ``optimizer.decay_mode``.

With learning rate :math:`\eta`, loss :math:`L` and the optimizer's update
:math:`\theta \leftarrow \theta - \eta\, u(g)` of a gradient :math:`g` (for SGD :math:`u(g) = g`;
for Adam a normalised moment estimate):

``native``
    :math:`\lambda` goes to the ``torch.optim`` class unchanged, which decides: SGD and Adam add
    :math:`\lambda\theta` to the gradient (coupled), AdamW shrinks the weights (decoupled).
``coupled``
    :math:`g \leftarrow \nabla L(\theta) + \lambda\theta`, then the optimizer's update on
    :math:`g` — "L2 regularization" in Loshchilov & Hutter (2019).
``decoupled``
    :math:`\theta \leftarrow \theta - \eta_t\lambda\theta`, then the optimizer's update on the
    raw gradient :math:`\nabla L` taken before the shrink — PyTorch's AdamW convention, with
    :math:`\eta_t` the *current* learning rate (read from the parameter group at each step, so
    a schedule scales the decay as it scales the update).
``independent``
    :math:`\theta \leftarrow \theta - s_t\lambda\theta`, then the update on :math:`\nabla L`
    — the paper's decoupled rule (Loshchilov & Hutter, 2019, Algorithm 2), where the schedule
    multiplier :math:`s_t = \eta_t / \eta_0` scales the decay but the learning rate does not:
    :math:`\lambda` here is per step, and :math:`\lambda_{independent} = \eta_0\lambda_{decoupled}`
    gives the same run. Under a schedule, changing :math:`\eta_0` leaves the decay alone.
``penalty``
    :math:`\tfrac{\lambda}{2}\lVert\theta\rVert^2` is added to the loss that is differentiated;
    the optimizer runs with weight decay 0. The logged ``loss`` stays the unpenalised :math:`L`.

For plain SGD all of coupled, decoupled and penalty give :math:`\theta - \eta(\nabla L + \lambda
\theta)`; for adaptive optimizers they differ, and only decoupled equals AdamW.

``optimizer.no_decay`` lists parameter-name patterns (``fnmatch``) left out of decay in every
mode, through torch parameter groups.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

MODES = ("native", "coupled", "decoupled", "independent", "penalty")


def split_parameters(model: nn.Module, no_decay: Sequence[str],
                     ) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """(decayed, exempt) trainable parameters; exempt ones match a ``no_decay`` pattern."""
    decayed, exempt = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        is_exempt = any(fnmatch.fnmatchcase(name, pattern) for pattern in no_decay)
        (exempt if is_exempt else decayed).append(param)
    return decayed, exempt


@dataclass
class WeightDecay:
    """Applies one arm's decay around its optimizer's step, in the chosen mode."""

    mode: str
    weight_decay: float
    decayed: list[nn.Parameter]
    group: dict = field(default_factory=dict)  # the decayed parameter group, once bound
    initial_lr: float = 1.0  # η_0, for independent decay's schedule multiplier

    def bind(self, optimizer: torch.optim.Optimizer) -> None:
        """Read the learning rate from ``optimizer``'s decayed group (its first) from now on."""
        self.group = optimizer.param_groups[0]
        self.initial_lr = self.group.get("initial_lr", self.group["lr"])

    @property
    def optimizer_weight_decay(self) -> float:
        """What the torch optimizer itself is given for the decayed group."""
        return self.weight_decay if self.mode == "native" else 0.0

    def penalty(self) -> Tensor | None:
        return penalty_of(self.mode, self.weight_decay, self.decayed)

    @torch.no_grad()
    def before_step(self) -> None:
        if not self.weight_decay:
            return
        if self.mode == "coupled":
            for p in self.decayed:
                if p.grad is not None:
                    p.grad.add_(p, alpha=self.weight_decay)
        elif self.mode in ("decoupled", "independent"):
            # As torch's AdamW: one Python float factor from the group's current lr.
            lr = self.group["lr"]
            rate = lr if self.mode == "decoupled" else lr / self.initial_lr
            for p in self.decayed:
                p.mul_(1 - rate * self.weight_decay)

    def param_groups(self, exempt: Iterable[nn.Parameter]) -> list[dict]:
        groups = [{"params": self.decayed, "weight_decay": self.optimizer_weight_decay}]
        exempt = list(exempt)
        if exempt:
            groups.append({"params": exempt, "weight_decay": 0.0})
        return groups

    def size(self) -> Tensor:
        return size_of(self.weight_decay, self.decayed)


# The penalty and the decay's size as functions of the decayed tensors, so that a stacked
# member (wdexp.stack), whose tensors are rows of a stacked parameter, computes them exactly so.
def penalty_of(mode: str, weight_decay: float, decayed: Sequence[Tensor]) -> Tensor | None:
    r""":math:`\tfrac{\lambda}{2}\lVert\theta\rVert^2` in penalty mode, else None."""
    if mode != "penalty" or not weight_decay or not decayed:
        return None
    return weight_decay / 2 * sum(p.pow(2).sum() for p in decayed)


def size_of(weight_decay: float, decayed: Sequence[Tensor]) -> Tensor:
    r""":math:`\lVert\lambda\theta\rVert` over the decayed parameters."""
    if not decayed:
        return torch.zeros(())
    norms = torch.stack([torch.linalg.vector_norm(p.detach()) for p in decayed])
    return weight_decay * torch.linalg.vector_norm(norms)

"""The seed notebook's model: a separable quadratic bowl."""

from __future__ import annotations

import random

import numpy as np
import torch
from torch import Tensor, nn

from wdexp.closed_form import QuadraticForm
from wdexp.config import finite_list
from wdexp.models.weights import parse_dtype, weight_metrics


class Quadratic(nn.Module):
    r"""The separable quadratic bowl :math:`L(w) = \sum_i c_i w_i^2`.

    Its gradient is :math:`2 c_i w_i`, so SGD with learning rate :math:`\eta` and (coupled)
    weight decay :math:`\lambda` contracts each weight geometrically:

    .. math:: w_{i,t} = w_{i,0} \, (1 - \eta (2 c_i + \lambda))^t

    and diverges once :math:`|1 - \eta (2 c_i + \lambda)| > 1`. Its minimiser is 0 with or
    without decay, so the distance to it is ``weight_norm``, not logged twice.

    Args:
        coefficients: ``c_1..c_n`` (n >= 1).
        init: the initial weights; ``None`` draws each from ``random.random()`` in order, as the
            seed notebook did, so a seeded Python RNG fixes them.
        dtype: ``float32`` (the notebook's) or ``float64``.
    """

    def __init__(self, coefficients: list[float], init: list[float] | None = None,
                 dtype: str = "float32") -> None:
        super().__init__()
        coefficients = finite_list("coefficients", coefficients)
        if init is None:
            init = [random.random() for _ in coefficients]
        else:
            init = finite_list("init", init, length=len(coefficients))
        torch_dtype = parse_dtype(dtype)
        self.register_buffer("coefficients", torch.tensor(coefficients, dtype=torch_dtype))
        self.weight = nn.Parameter(torch.tensor(init, dtype=torch_dtype))

    def loss(self) -> Tensor:
        # c * w**2 (not w * w * c) keeps the autograd graph, and so every rounding, identical
        # to the notebook's `(1/20)*w_1**2 + w_2**2`.
        return (self.coefficients * self.weight**2).sum()

    def metrics(self, loss: Tensor) -> dict[str, float]:
        return weight_metrics(loss, self.weight)

    def closed_form(self) -> QuadraticForm:
        coefficients = self.coefficients.double().cpu().numpy()
        return QuadraticForm(np.diag(coefficients), np.zeros(len(coefficients)), 0.0)

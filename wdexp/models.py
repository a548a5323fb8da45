"""Models a weight-decay study trains: each owns its parameters, its loss and what it reports.

A model is an ``nn.Module`` with two methods the engine calls:

- ``loss()`` — the training objective at the current parameters (a 0-d tensor);
- ``metrics(loss)`` — the floats to log for that state: ``loss`` plus whatever describes it.

Constructors take the config group's keys as keyword arguments and raise
:class:`~wdexp.config.ConfigError` naming the offending key.
"""

from __future__ import annotations

import random

import torch
from torch import Tensor, nn

from wdexp.config import ConfigError, finite_list

DTYPES = {"float32": torch.float32, "float64": torch.float64}


def parse_dtype(value: object) -> torch.dtype:
    if value not in DTYPES:
        raise ConfigError("dtype", f"must be one of {', '.join(DTYPES)}", value)
    return DTYPES[value]  # type: ignore[index]


class Quadratic(nn.Module):
    r"""The separable quadratic bowl :math:`L(w) = \sum_i c_i w_i^2`.

    Its gradient is :math:`2 c_i w_i`, so SGD with learning rate :math:`\eta` and (coupled)
    weight decay :math:`\lambda` contracts each weight geometrically:

    .. math:: w_{i,t} = w_{i,0} \, (1 - \eta (2 c_i + \lambda))^t

    and diverges once :math:`|1 - \eta (2 c_i + \lambda)| > 1`.

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
        with torch.no_grad():
            weight = self.weight.detach()
            values = torch.cat([loss.detach().reshape(1), weight,
                                torch.linalg.vector_norm(weight).reshape(1)]).tolist()
        names = ["loss", *(f"w_{i + 1}" for i in range(weight.numel())), "weight_norm"]
        return dict(zip(names, values, strict=True))

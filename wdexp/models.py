"""Models a weight-decay study trains: each owns its parameters, its loss and what it reports.

A model is an ``nn.Module`` with two methods the engine calls:

- ``loss()`` — the training objective at the current parameters (a 0-d tensor);
- ``metrics(loss)`` — the floats to log for that state: ``loss`` plus whatever describes it.

and, optionally: ``solution(weight_decay)`` — the weights full-batch gradient descent with that
(coupled) decay converges to, when a closed form exists; the engine then logs the distance to it
as ``distance_to_solution``; ``closed_form()`` — the loss as a
:class:`~wdexp.closed_form.QuadraticForm`, so figures can draw what theory predicts; and
``artifacts()`` — files (name → text) to log with the pair run.

Constructors take the config group's keys as keyword arguments and raise
:class:`~wdexp.config.ConfigError` naming the offending key.
"""

from __future__ import annotations

import random

import numpy as np
import torch
from torch import Tensor, nn

from wdexp.closed_form import QuadraticForm
from wdexp.config import ConfigError, finite_list, finite_number, positive_int, torch_seed

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


MAX_LOGGED_WEIGHTS = 16  # more weights than this: only their norm is logged


def weight_metrics(loss: Tensor, weight: Tensor) -> dict[str, float]:
    """``loss``, each weight as ``w_1..w_n`` (up to 16 of them) and their L2 norm, in one host
    transfer."""
    with torch.no_grad():
        weight = weight.detach().reshape(-1)
        each = weight if weight.numel() <= MAX_LOGGED_WEIGHTS else weight[:0]
        values = torch.cat([loss.detach().reshape(1), each,
                            torch.linalg.vector_norm(weight).reshape(1)]).tolist()
    names = ["loss", *(f"w_{i + 1}" for i in range(each.numel())), "weight_norm"]
    return dict(zip(names, values, strict=True))


class Ridge(nn.Module):
    r"""Linear regression on synthetic data, :math:`L(w) = \tfrac{1}{n}\lVert Xw - y\rVert^2`.

    ``X`` is standard normal, shape ``(n_samples, n_features)``, ``y = X w_true + noise·ε`` with
    ``w_true`` standard normal, all drawn from ``data_seed`` (independent of the job's ``seed``,
    so arms and seeds share one data set). With coupled weight decay :math:`\lambda`, full-batch
    gradient descent converges to the ridge solution

    .. math:: w^*_\lambda = (X^\top X / n + \tfrac{\lambda}{2} I)^{-1} X^\top y / n

    (the stationary point of :math:`L + \tfrac{\lambda}{2}\lVert w\rVert^2`). With ``bias``
    a constant column is appended to ``X`` (decayed with the rest: the closed form assumes every
    coefficient is). The data is logged as ``data/train.csv`` so anyone can recompute the solution.
    """

    def __init__(self, n_samples: int = 200, n_features: int = 5, noise: float = 0.1,
                 data_seed: int = 0, bias: bool = False, init: list[float] | None = None,
                 dtype: str = "float32") -> None:
        super().__init__()
        n_samples, n_features = positive_int("n_samples", n_samples), positive_int(
            "n_features", n_features)
        data_seed = torch_seed("data_seed", data_seed)
        noise = finite_number("noise", noise, minimum=0)
        torch_dtype = parse_dtype(dtype)
        generator = torch.Generator().manual_seed(data_seed)
        x = torch.randn(n_samples, n_features, generator=generator, dtype=torch.float64)
        w_true = torch.randn(n_features, generator=generator, dtype=torch.float64)
        y = x @ w_true + noise * torch.randn(n_samples, generator=generator, dtype=torch.float64)
        self.n_features = n_features
        self.register_buffer("x", x.to(torch_dtype))
        self.register_buffer("y", y.to(torch_dtype))
        self.weight = nn.Parameter(_initial(init, n_features, torch_dtype))
        self.bias = nn.Parameter(torch.zeros(1, dtype=torch_dtype)) if bias else None

    def _design(self) -> Tensor:
        if self.bias is None:
            return self.x
        return torch.cat([self.x, torch.ones_like(self.x[:, :1])], dim=1)

    def _coefficients(self) -> Tensor:
        return self.weight if self.bias is None else torch.cat([self.weight, self.bias])

    def loss(self) -> Tensor:
        return ((self._design() @ self._coefficients() - self.y) ** 2).mean()

    def metrics(self, loss: Tensor) -> dict[str, float]:
        return weight_metrics(loss, self._coefficients())

    def solution(self, weight_decay: float) -> Tensor:
        x, y = self._design().double(), self.y.double()
        n, p = x.shape
        eye = torch.eye(p, dtype=x.dtype, device=x.device)
        w = torch.linalg.solve(x.T @ x / n + weight_decay / 2 * eye,
                               x.T @ y / n)
        return w.to(self.weight.dtype)

    def closed_form(self) -> QuadraticForm:
        x, y = self._design().double().cpu().numpy(), self.y.double().cpu().numpy()
        n = len(y)
        return QuadraticForm(x.T @ x / n, x.T @ y / n, float(y @ y / n))

    def artifacts(self) -> dict[str, str]:
        header = ",".join([*(f"x_{i + 1}" for i in range(self.n_features)), "y"])
        rows = torch.cat([self.x, self.y[:, None]], dim=1).double().tolist()
        lines = [header, *(",".join(repr(v) for v in row) for row in rows)]
        return {"data/train.csv": "\n".join(lines) + "\n"}


def _initial(init: list[float] | None, n: int, dtype: torch.dtype) -> Tensor:
    if init is None:
        return torch.zeros(n, dtype=dtype)
    return torch.tensor(finite_list("init", init, length=n), dtype=dtype)

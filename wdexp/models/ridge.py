"""Linear regression on synthetic data, with the ridge solution in closed form."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from wdexp.closed_form import QuadraticForm
from wdexp.config import finite_number, positive_int, torch_seed
from wdexp.models.weights import initial, parse_dtype, weight_metrics


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
        self.weight = nn.Parameter(initial(init, n_features, torch_dtype))
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

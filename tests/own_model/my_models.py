"""A user's own model, outside the wdexp package: what the README's "Your own model" shows."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class Logistic(nn.Module):
    """Full-batch logistic regression on fixed synthetic data, weights drawn from ``init_seed``."""

    def __init__(self, n_samples: int = 200, n_features: int = 5, init_seed: int = 0) -> None:
        super().__init__()
        data = torch.Generator().manual_seed(1234)
        self.register_buffer("x", torch.randn(n_samples, n_features, generator=data))
        truth = torch.randn(n_features, generator=data)
        self.register_buffer("y", (self.x @ truth > 0).float())
        init = torch.Generator().manual_seed(init_seed)
        self.w = nn.Parameter(torch.randn(n_features, generator=init))

    def loss(self) -> Tensor:
        return nn.functional.binary_cross_entropy_with_logits(self.x @ self.w, self.y)

    def metrics(self, loss: Tensor) -> dict[str, float]:
        accuracy = ((self.x @ self.w > 0).float() == self.y).float().mean()
        return {"loss": loss.item(), "accuracy": accuracy.item(),
                "weight_norm": self.w.detach().norm().item()}


class TinyNet(nn.Module):
    """A plain network, nothing wdexp-specific: wdexp supplies the data and the loss."""

    def __init__(self, in_features: int, out_features: int, width: int = 32,
                 dropout: float = 0.0) -> None:
        super().__init__()
        self.hidden = nn.Linear(in_features, width)
        self.drop = nn.Dropout(dropout)
        self.out = nn.Linear(width, out_features)

    def forward(self, x: Tensor) -> Tensor:
        return self.out(self.drop(torch.tanh(self.hidden(x))))


def blobs(n_train: int = 400, n_test: int = 200, seed: int = 0):
    """Data of your own: two Gaussian blobs in 2-D, as (train, test) torch Datasets."""
    from torch.utils.data import TensorDataset

    generator = torch.Generator().manual_seed(seed)
    n = n_train + n_test
    y = torch.randint(0, 2, (n,), generator=generator)
    x = torch.randn(n, 2, generator=generator) + 3.0 * y[:, None] - 1.5
    return TensorDataset(x[:n_train], y[:n_train]), TensorDataset(x[n_train:], y[n_train:])

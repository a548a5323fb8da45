"""A ReLU multilayer perceptron: a plain ``nn.Module``, trained on the ``data`` group."""

from __future__ import annotations

import itertools

from torch import Tensor, nn
from torch.nn import functional

from wdexp.config import positive_int
from wdexp.models.weights import parse_dtype


class MLP(nn.Module):
    """``in_features → hidden… → out_features`` with ReLU between layers.

    With ``residual``, a hidden layer whose input and output widths agree adds its input
    (``h + relu(layer(h))``): ``hidden=[100, 100]`` with ``residual=true`` on MNIST-1D is that
    paper's reference MLP.
    """

    def __init__(self, in_features: int, out_features: int, hidden: list[int] | None = None,
                 residual: bool = False, dtype: str = "float32") -> None:
        super().__init__()
        hidden = [64] if hidden is None else list(hidden)
        widths = [positive_int("in_features", in_features),
                  *(positive_int("hidden", width) for width in hidden),
                  positive_int("out_features", out_features)]
        torch_dtype = parse_dtype(dtype)
        self.residual = bool(residual)
        self.layers = nn.ModuleList(nn.Linear(a, b, dtype=torch_dtype)
                                    for a, b in itertools.pairwise(widths))

    def forward(self, x: Tensor) -> Tensor:
        x = x.flatten(1)
        for layer in self.layers[:-1]:
            h = functional.relu(layer(x))
            x = x + h if self.residual and h.shape == x.shape else h
        return self.layers[-1](x)

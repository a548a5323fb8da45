"""An MLP whose every weight is scale-invariant: the setting of the normalised-network theory
of weight decay (van Laarhoven, 2017; Li & Arora, 2019; Kosson et al., 2023)."""

from __future__ import annotations

import itertools

from torch import Tensor, nn

from wdexp.config import finite_number, positive_int
from wdexp.models.weights import parse_dtype


class BNMLP(nn.Module):
    r"""``in_features → hidden… → out_features``, every layer a bias-free ``Linear`` followed by
    ``BatchNorm1d(affine=False)`` — the output layer too — with ReLU between layers.

    In train mode the output is then unchanged when any layer's weight is scaled by
    :math:`c > 0`, so the loss is scale-invariant in every trained weight: its gradient is
    orthogonal to the weight and shrinks as :math:`1/c`. Only ``bn_eps`` (added to the batch
    variance) breaks the invariance; make it tiny, in float64, for the exact equivalences.
    """

    def __init__(self, in_features: int, out_features: int, hidden: list[int] | None = None,
                 bn_eps: float = 1e-5, dtype: str = "float32") -> None:
        super().__init__()
        hidden = [64] if hidden is None else list(hidden)
        widths = [positive_int("in_features", in_features),
                  *(positive_int("hidden", width) for width in hidden),
                  positive_int("out_features", out_features)]
        eps = finite_number("bn_eps", bn_eps, minimum=0)
        torch_dtype = parse_dtype(dtype)
        self.layers = nn.ModuleList(nn.Linear(a, b, bias=False, dtype=torch_dtype)
                                    for a, b in itertools.pairwise(widths))
        self.norms = nn.ModuleList(nn.BatchNorm1d(b, eps=eps, affine=False, dtype=torch_dtype)
                                   for b in widths[1:])

    def forward(self, x: Tensor) -> Tensor:
        x = x.flatten(1)
        last = len(self.layers) - 1
        for i, (layer, norm) in enumerate(zip(self.layers, self.norms, strict=True)):
            x = norm(layer(x))
            if i < last:
                x = x.relu()
        return x

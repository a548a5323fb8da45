"""What the weight-vector models (quadratic, ridge) share: dtypes, inits, logged weights."""

from __future__ import annotations

import torch
from torch import Tensor

from wdexp.config import finite_list
from wdexp.vocabulary import ConfigError

DTYPES = {"float32": torch.float32, "float64": torch.float64}


def parse_dtype(value: object) -> torch.dtype:
    if value not in DTYPES:
        raise ConfigError("dtype", f"must be one of {', '.join(DTYPES)}", value)
    return DTYPES[value]  # type: ignore[index]


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


def initial(init: list[float] | None, n: int, dtype: torch.dtype) -> Tensor:
    if init is None:
        return torch.zeros(n, dtype=dtype)
    return torch.tensor(finite_list("init", init, length=n), dtype=dtype)

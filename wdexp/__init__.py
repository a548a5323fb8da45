"""wdexp: paired weight-decay experiments, configured with Hydra and tracked in MLflow.

From Python and Jupyter: ``wdexp.run(...)`` and ``wdexp.sweep(...)`` (:mod:`wdexp.api`),
imported on first use so that ``import wdexp`` stays light."""

from __future__ import annotations

from typing import Any

__all__ = ["WdexpError", "run", "sweep"]


def __getattr__(name: str) -> Any:
    if name in ("run", "sweep", "WdexpError"):
        from wdexp import api

        return getattr(api, name)
    raise AttributeError(f"module 'wdexp' has no attribute {name!r}")

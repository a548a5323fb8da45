"""Console scripts (``[project.scripts]`` in pyproject.toml): ``wdexp-train``, ``wdexp-report``
and ``wdexp-ui`` run ``python -m wdexp.train`` / ``wdexp.report`` / ``wdexp.ui``.

Each runs its module as ``__main__``, as ``python -m`` does: Hydra finds ``conf/`` beside the
module's file only then, and ``wdexp.train`` starts its tracking process before torch loads.
"""

from __future__ import annotations

import runpy


def _as_main(module: str) -> None:
    runpy.run_module(module, run_name="__main__", alter_sys=True)


def train() -> None:
    _as_main("wdexp.train")


def report() -> None:
    _as_main("wdexp.report")


def ui() -> None:
    _as_main("wdexp.ui")

"""A progress bar per job where someone watches: epochs done and each arm's current loss.

On a terminal, tqdm's text bar on standard error; in a Jupyter kernel whose front end shows
widgets (ipywidgets installed), tqdm's notebook bar. Nothing elsewhere: under CI, launchers,
pipes and a notebook executed headless (nbclient, without widgets) a job prints nothing but
its log lines.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from wdexp.tracking.records import Step

T = TypeVar("T")


def _bar_class() -> Any:
    """tqdm's bar for where this process shows its output, or None for no bar."""
    if sys.stderr.isatty():
        from tqdm import tqdm

        return tqdm
    if "ipykernel" in sys.modules and importlib.util.find_spec("ipywidgets") is not None:
        from tqdm.notebook import tqdm as notebook_tqdm

        return notebook_tqdm
    return None


def losses(step: Step) -> dict[str, str]:
    """A pair's bar shows each arm's current loss."""
    return {f"{arm} loss": f"{values['loss']:.4g}" for arm, values in step.metrics.items()
            if "loss" in values}


def progress(steps: Iterator[T], epochs: int, name: str,
             shown: Callable[[T], dict[str, str]] = losses) -> Iterator[T]:  # type: ignore[assignment]
    """``steps`` unchanged, drawn as a bar of ``epochs + 1`` steps where someone watches,
    with ``shown(step)`` beside it."""
    bar_class = _bar_class()
    if bar_class is None:
        yield from steps
        return
    with bar_class(total=epochs + 1, desc=name, unit="epoch", leave=False,
                   dynamic_ncols=True) as bar:
        for step in steps:
            bar.set_postfix(shown(step), refresh=False)
            bar.update(1)
            yield step

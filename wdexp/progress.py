"""A progress bar per job on a terminal: epochs done and each arm's current loss.

Only when standard error is a terminal: under CI, launchers and pipes a job prints nothing but
its log lines.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator

from wdexp.tracking.records import Step


def progress(steps: Iterator[Step], epochs: int, name: str) -> Iterator[Step]:
    """``steps`` unchanged, drawn as a bar of ``epochs + 1`` steps when on a terminal."""
    if not sys.stderr.isatty():
        yield from steps
        return
    from tqdm import tqdm

    with tqdm(total=epochs + 1, desc=name, unit="epoch", leave=False, dynamic_ncols=True) as bar:
        for step in steps:
            bar.set_postfix({f"{arm} loss": f"{values['loss']:.4g}"
                             for arm, values in step.metrics.items()}, refresh=False)
            bar.update(1)
            yield step

"""What ``wdexp.run`` and ``wdexp.sweep`` return (:mod:`wdexp.api`): a pair or a sweep as the
store holds it, read back with :mod:`wdexp.analysis` after the jobs — never kept from memory —
with the figures the runs stored, shown inline by Jupyter."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from wdexp.vocabulary import ARMS, DECAY, TrackingSpec

if TYPE_CHECKING:  # pandas loads with the readers (preload), not with every job's callbacks
    import pandas as pd

__all__ = ["PairResult", "StoredFigure", "SweepResult", "preload", "read_pair", "read_sweep"]


def _load_readers() -> None:
    import wdexp.analysis
    import wdexp.tracking.store  # noqa: F401


def preload(first: Callable[[], object] | None = None) -> None:
    """Import what reading the store takes (MLflow, pandas: seconds) on a thread, while the
    jobs run, so that reading their results afterwards does not wait for it; ``first``, what
    the jobs need sooner, is done on that thread before."""

    def load() -> None:
        if first is not None:
            first()
        _load_readers()

    threading.Thread(target=load, name="wdexp-readers", daemon=True).start()


@dataclass(frozen=True)
class StoredFigure:
    """A figure as the store keeps it (PNG); shown inline by Jupyter."""

    name: str
    png: bytes = field(repr=False)

    def _repr_png_(self) -> bytes:
        return self.png

    def to_matplotlib(self) -> Any:
        """The image on a matplotlib ``Figure`` (no axes), e.g. to save or compose."""
        import io

        import matplotlib.image
        from matplotlib.figure import Figure

        image = matplotlib.image.imread(io.BytesIO(self.png), format="png")
        height, width = image.shape[:2]
        figure = Figure(figsize=(width / 100, height / 100), dpi=100)
        axes = figure.add_axes((0, 0, 1, 1))
        axes.imshow(image)
        axes.set_axis_off()
        return figure


@dataclass(frozen=True)
class PairResult:
    """One paired comparison as the store holds it."""

    run_id: str
    name: str
    status: str
    metrics: dict[str, float]  # the pair run's: decay.final_loss, baseline.final_weight_norm, …
    history: pd.DataFrame = field(repr=False)  # index step, columns (arm, metric)
    figures: dict[str, StoredFigure] = field(repr=False)

    def table(self, *metrics: str) -> pd.DataFrame:
        """Both arms side by side per step, as the seed notebook printed them (by default
        ``loss`` and every weight the model logs)."""
        names = metrics or tuple(m for m in self.history[DECAY].columns
                                 if m == "loss" or m.startswith("w_"))
        return self.history.loc[:, [(arm, m) for arm in ARMS for m in names]]


@dataclass(frozen=True)
class SweepResult:
    """A multirun as the store holds it: its sweep run and one row per pair."""

    run_id: str
    status: str
    keys: list[str]  # the swept config keys
    table: pd.DataFrame = field(repr=False)  # wdexp.analysis.pair_table
    statistics: pd.DataFrame | None = field(repr=False)  # over seeds, where the seed varies
    figures: dict[str, StoredFigure] = field(repr=False)


def _figures(store: Any, run_id: str) -> dict[str, StoredFigure]:
    import tempfile

    found = {}
    with tempfile.TemporaryDirectory() as scratch:
        for item in store.client.list_artifacts(run_id, "figures"):
            if item.path.endswith(".png"):
                path = store.client.download_artifacts(run_id, item.path, scratch)
                name = Path(item.path).stem
                found[name] = StoredFigure(name, Path(path).read_bytes())
    return found


def read_pair(spec: TrackingSpec, pair_id: str) -> PairResult:
    from wdexp import analysis
    from wdexp.tracking import store

    with store.reading(spec) as results:
        pair = results.client.get_run(pair_id)
        return PairResult(pair_id, pair.info.run_name, pair.info.status,
                          dict(pair.data.metrics), analysis.pair_history(results, pair_id),
                          _figures(results, pair_id))


def read_sweep(spec: TrackingSpec, sweep_id: str) -> SweepResult:
    from wdexp import analysis
    from wdexp.tracking import store
    from wdexp.vocabulary import SEED

    with store.reading(spec) as results:
        run_id, keys = analysis.find_sweep(results, sweep_id)
        table = analysis.pair_table(results, run_id, keys)
        statistics = analysis.over_seeds(table, keys) if SEED in keys else None
        status = results.client.get_run(run_id).info.status
        return SweepResult(run_id, status, keys, table, statistics, _figures(results, run_id))

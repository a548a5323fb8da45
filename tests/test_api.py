"""wdexp from Python (``wdexp.run``, ``wdexp.sweep``), called in this test process as a script
or a notebook would: the seed notebook's table bit for bit, read back from the store; the
command line's one-line errors as exceptions, nothing created; every launcher's sweep; and the
process left as it was (logging, signal handlers, working directory, environment, grad mode,
Hydra)."""

from __future__ import annotations

import logging
import os
import random
import signal

import pytest
import torch

import wdexp
from tests.conftest import StoreReader
from tests.test_notebook import WEIGHT_DECAY, notebook


def _process_state() -> tuple:
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig

    loggers = {name: (lg.level, tuple(lg.handlers), lg.propagate, lg.disabled)
               for name, lg in [(None, logging.root), *logging.root.manager.loggerDict.items()]
               if isinstance(lg, logging.Logger)}
    return (loggers, signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM),
            os.getcwd(), dict(os.environ), GlobalHydra.instance().is_initialized(),
            HydraConfig.initialized(), torch.is_grad_enabled())


def test_run_reproduces_the_seed_notebook_and_leaves_the_process_as_it_was(tmp_path,
                                                                            store_uri):
    import wdexp.api  # its imports (and the loggers they make) before the state is taken

    # From a cell under no_grad too: the pair trains, and the cell's grad mode is its own again.
    with torch.no_grad():
        before = _process_state()
        result = wdexp.run(f"tracking.uri={store_uri}", f"hydra.run.dir={tmp_path}/run")
        after = _process_state()
    assert after[1:] == before[1:]
    assert {n: s for n, s in after[0].items() if n in before[0]} == before[0]
    # What the call's imports registered stays: a plugin registers its configs only once.
    from hydra.core.config_store import ConfigStore

    assert "ray.yaml" in ConfigStore.instance().list("hydra/launcher")

    random.seed(0)  # the default seed, drawn as the notebook drew its init
    init = (random.random(), random.random())
    table = result.table()
    for arm, weight_decay in (("baseline", 0.0), ("decay", WEIGHT_DECAY)):
        rows = list(table[arm][["loss", "w_1", "w_2"]].itertuples(index=False, name=None))
        assert rows == notebook(init, weight_decay)  # float32, bit for bit
    (pair,) = StoreReader(store_uri).runs("pair")
    assert (result.run_id, result.status) == (pair.info.run_id, "FINISHED")
    assert result.metrics == pair.data.metrics
    assert {"loss", "weights", "trajectory"} <= set(result.figures)
    assert result.figures["loss"]._repr_png_().startswith(b"\x89PNG")
    assert not (tmp_path / "outputs").exists()  # the working directory was not written to


@pytest.mark.parametrize(("override", "line"), [
    ("optimizer.weight_decay=-1", "wdexp: optimizer.weight_decay must be a finite number >= 0 "
                                  "(got -1)"),
    ("optimizer.weight_decy=0.1", "Could not override 'optimizer.weight_decy'. To append to "
                                  "your config use +optimizer.weight_decy=0.1 Key "
                                  "'weight_decy' is not in struct"),
])
def test_bad_input_raises_the_command_lines_line_and_creates_nothing(tmp_path, store_uri,
                                                                      override, line):
    with pytest.raises(wdexp.WdexpError) as raised:
        wdexp.run(f"tracking.uri={store_uri}", f"hydra.run.dir={tmp_path}/run", override)
    assert str(raised.value) == line
    assert StoreReader(store_uri).runs() == []


@pytest.mark.slow
def test_a_seed_sweep_on_joblib_returns_its_pairs_statistics_and_figures(tmp_path, store_uri):
    result = wdexp.sweep(f"tracking.uri={store_uri}", "optimizer.weight_decay=0.01,0.1",
                         "seed=0,1", "epochs=5", "hydra.launcher.n_jobs=2",
                         f"hydra.sweep.dir={tmp_path}/sweep", launcher="joblib")
    (sweep,) = StoreReader(store_uri).runs("sweep")
    assert (result.run_id, result.status) == (sweep.info.run_id, "FINISHED")
    assert result.keys == ["optimizer.weight_decay", "seed"]
    assert sorted(zip(result.table["optimizer.weight_decay"], result.table["seed"],
                      strict=True)) == [(0.01, 0), (0.01, 1), (0.1, 0), (0.1, 1)]
    assert set(result.table["status"]) == {"FINISHED"}
    assert result.statistics is not None and list(result.statistics["seeds"]) == [2, 2]
    assert result.figures and all(f._repr_png_().startswith(b"\x89PNG")
                                  for f in result.figures.values())


def test_a_sweep_with_a_failed_job_returns_and_its_sweep_run_is_ended(tmp_path, store_uri):
    result = wdexp.sweep(f"tracking.uri={store_uri}", "optimizer.weight_decay=0.01,-1",
                         "epochs=3", f"hydra.sweep.dir={tmp_path}/sweep")
    (sweep,) = StoreReader(store_uri).runs("sweep")
    assert (result.run_id, result.status, sweep.info.status) == (sweep.info.run_id, "FAILED",
                                                                 "FAILED")
    assert list(result.table["status"]) == ["FINISHED"]  # the bad value made no pair


def test_a_sweep_into_a_store_it_cannot_use_raises_its_line_before_any_job(tmp_path):
    with pytest.raises(wdexp.WdexpError) as raised:
        wdexp.sweep(f"tracking.uri=sqlite:///{tmp_path}", "optimizer.weight_decay=0,0.1",
                    f"hydra.sweep.dir={tmp_path}/sweep")
    assert str(raised.value) == ("wdexp: tracking.uri names a folder, not an sqlite file (got "
                                 f"'sqlite:///{tmp_path}')")
    assert not list((tmp_path / "sweep").glob("*/"))  # no job folder: no job ran


@pytest.mark.parametrize("where", ["searchpath", "config_dir"])
def test_a_model_of_ones_own_from_its_config_folder(tmp_path, store_uri, monkeypatch, where):
    """"Your own model" from Python: the folder through ``searchpath`` (as hydra.searchpath)
    or ``config_dir`` (as --config-dir), the module through sys.path; trained as torch.optim
    trains it."""
    from tests.test_own_model import OWN, _logistic_by_torch_optim

    monkeypatch.syspath_prepend(str(OWN))
    folder = {"searchpath": {"searchpath": [OWN / "conf"]}, "config_dir": {
        "config_dir": OWN / "conf"}}[where]
    result = wdexp.run(f"tracking.uri={store_uri}", f"hydra.run.dir={tmp_path}/run",
                       "model=logistic", "optimizer.lr=0.5", "optimizer.weight_decay=0.1",
                       "epochs=20", "seed=3", **folder)
    expected = _logistic_by_torch_optim(0.1)["loss"]
    assert list(result.history["decay"]["loss"]) == expected
    figure = result.figures["loss"].to_matplotlib()
    assert figure.get_axes() and figure.get_size_inches()[0] > 1  # the stored image, drawn


@pytest.mark.parametrize("folder", ["/tmp/it's a \"sweep\"", "/tmp/x\\'y", "/tmp/end\\",
                                    "/tmp/a\\b", "/tmp/a b,c=[d]"])
def test_a_sweep_folder_is_handed_to_hydra_as_one_value_whatever_its_characters(folder):
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from wdexp.api import _quoted

    override = OverridesParser.create().parse_override(f"hydra.sweep.dir={_quoted(folder)}")
    assert override.value() == folder

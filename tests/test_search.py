"""hydra/sweeper=optuna through the real entrypoint into a real store, read back with MLflow."""

from __future__ import annotations

from pathlib import Path

import mlflow
import pandas as pd
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from tests.conftest import StoreReader, copy_store, multirun, sweep_here
from wdexp import search
from wdexp.config import ROOT, ConfigError

SEARCH = ("hydra/sweeper=optuna", "epochs=80")


def _search(tmp_path: Path, store_uri: str, *args: str) -> tuple[StoreReader, str, pd.DataFrame]:
    # In this process, through wdexp.sweep: the command line's search, without its start-up.
    sweep_id = sweep_here(*SEARCH, *args, tmp_path=tmp_path, store_uri=store_uri).run_id
    reader = StoreReader(store_uri)
    assert [sweep.info.run_id for sweep in reader.runs("sweep")] == [sweep_id]
    path = mlflow.artifacts.download_artifacts(run_id=sweep_id, artifact_path="trials.csv",
                                               tracking_uri=store_uri,
                                               dst_path=str(tmp_path / "got"))
    return reader, sweep_id, pd.read_csv(path)


@pytest.mark.slow
def test_a_search_tells_optuna_what_each_pair_run_did(tmp_path: Path, store_uri: str) -> None:
    """Over lr in [0.01, 2] the quadratic's decay arm diverges from lr ≈ 1 on: those trials
    are PRUNED, the others carry their pair run's final loss, and the best is the lowest."""
    reader, sweep_id, trials = _search(tmp_path, store_uri, "optimizer.lr=interval(0.01, 2)",
                                       "hydra.sweeper.n_trials=6")
    pairs = {run.info.run_id: run for run in reader.runs("pair")}
    assert len(trials) == 6 and set(trials["user_attrs_pair_run_id"]) == set(pairs)
    assert all(run.data.tags["mlflow.parentRunId"] == sweep_id for run in pairs.values())
    assert set(trials["state"]) == {"COMPLETE", "PRUNED"}
    for trial in trials.to_dict("records"):
        pair = pairs[trial["user_attrs_pair_run_id"]]
        assert float(pair.data.params["optimizer.lr"]) == trial["params_optimizer.lr"]
        diverged = pair.data.metrics["decay.diverged"] == 1
        assert (trial["state"] == "PRUNED") == diverged
        if diverged:
            assert pd.isna(trial["value"])
        else:
            assert trial["value"] == pair.data.metrics["decay.final_loss"]
    complete = trials[trials["state"] == "COMPLETE"]
    best = complete.loc[complete["value"].idxmin()]
    sweep = reader.client.get_run(sweep_id)
    assert sweep.info.status == "FINISHED"
    assert sweep.data.metrics["best_value"] == best["value"]
    assert sweep.data.params["best.optimizer.lr"] == str(best["params_optimizer.lr"])
    assert sweep.data.params["best.pair_run_id"] == best["user_attrs_pair_run_id"]
    assert sweep.data.metrics["trials_pruned"] == (trials["state"] == "PRUNED").sum()
    figures = {a.path for a in reader.client.list_artifacts(sweep_id, "figures")}
    assert "figures/optimization_history.png" in figures
    png = mlflow.artifacts.download_artifacts(
        run_id=sweep_id, artifact_path="figures/optimization_history.png",
        tracking_uri=store_uri, dst_path=str(tmp_path / "png"))
    assert Path(png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_a_failed_trial_is_failed_and_the_search_goes_on(tmp_path: Path,
                                                          store_uri: str) -> None:
    reader, _, trials = _search(tmp_path, store_uri, "optimizer.weight_decay=choice(0.01,-1)",
                                "hydra.sweeper.n_trials=4", "epochs=5")
    assert len(trials) == 4
    failed = trials[trials["state"] == "FAIL"]
    assert len(failed) and (failed["params_optimizer.weight_decay"] == -1).all()
    assert failed["user_attrs_why"].str.contains("optimizer.weight_decay").all()
    assert (trials[trials["state"] == "COMPLETE"]["params_optimizer.weight_decay"] == 0.01).all()
    assert len(reader.runs("pair")) == (trials["state"] == "COMPLETE").sum()


@pytest.mark.slow
def test_a_search_is_reproducible_from_its_seed(tmp_path: Path, template_store: Path) -> None:
    found = []
    for name in ("first", "again"):
        folder = tmp_path / name
        uri = copy_store(template_store, folder / "mlflow.db")
        _, _, trials = _search(folder, uri, "seed=3", "epochs=20",
                               "optimizer.weight_decay=tag(log, interval(1e-4, 1))",
                               "hydra.sweeper.n_trials=3")
        found.append(list(trials["params_optimizer.weight_decay"]))
    assert found[0] == found[1]


def test_the_sampler_is_seeded_from_seed() -> None:
    assert _sweeper_config("seed=7").sampler.seed == 7


@pytest.mark.parametrize(("args", "line"), [
    (("optimizer.weight_decay=tag(log, interval(0, 1))",),
     "optimizer.weight_decay is log-scaled: its interval must be above 0"),
    (("optimizer.weight_decay=interval(0.1, 0.01)",),
     "optimizer.weight_decay needs interval(low, high) with low < high"),
    (("optimizer.weight_decay=interval(0, 1)", "hydra.sweeper.n_trials=0"),
     "hydra.sweeper.n_trials must be a whole number ≥ 1 (got 0)"),
    (("optimizer.weight_decay=interval(0, 1)", "hydra.sweeper.direction=up"),
     "hydra.sweeper.direction must be minimize or maximize"),
    (("optimizer.weight_decay=interval(0, 1)", "+hydra.sweeper.n_trails=3"),
     "hydra.sweeper.n_trails is not a setting of the optuna sweeper"),
    (("seed=range(0)",), "seed is an empty range"),
    (("epochs=3",), "hydra.sweeper.params names nothing to search"),
])
def test_a_bad_search_names_its_key(args: tuple[str, ...], line: str) -> None:
    sweeper = _sweeper_config(*(a for a in args if a.startswith(("hydra.", "+hydra."))))
    with pytest.raises(ConfigError) as error:
        search.parse(sweeper, [a for a in args if not a.startswith(("hydra.", "+hydra."))])
    assert str(error.value).startswith(line)


def _sweeper_config(*overrides: str) -> DictConfig:
    with initialize_config_dir(version_base="1.3", config_dir=str(ROOT / "conf")):
        cfg = compose(config_name="config", overrides=["hydra/sweeper=optuna", *overrides],
                      return_hydra_config=True)
    return cfg.hydra.sweeper


def test_a_bad_search_stops_before_any_run(tmp_path: Path, new_store_uri: str) -> None:
    done = multirun("hydra/sweeper=optuna", "optimizer.weight_decay=tag(log, interval(0, 1))",
                    tmp_path=tmp_path, store_uri=new_store_uri)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines() == [
        "wdexp: optimizer.weight_decay is log-scaled: its interval must be above 0 "
        "(got 'optimizer.weight_decay=tag(log, interval(0, 1))')"], done.stderr
    assert not Path(new_store_uri.removeprefix("sqlite:///")).exists()


@pytest.mark.slow
def test_trials_in_parallel_with_another_objective(tmp_path: Path, store_uri: str) -> None:
    """n_jobs=2 hands the joblib launcher two trials at a time; objective and direction pick
    what Optuna is told (here: maximise the decay arm's final weight norm)."""
    reader, sweep_id, trials = _search(
        tmp_path, store_uri, "optimizer.weight_decay=interval(0, 0.1)", "epochs=20",
        "hydra/launcher=joblib", "hydra.sweeper.n_jobs=2", "hydra.sweeper.n_trials=2",
        "hydra.sweeper.objective=decay.final_weight_norm", "hydra.sweeper.direction=maximize")
    pairs = {run.info.run_id: run for run in reader.runs("pair")}
    assert list(trials["state"]) == ["COMPLETE", "COMPLETE"]
    for trial in trials.to_dict("records"):
        assert trial["value"] == pairs[trial["user_attrs_pair_run_id"]].data.metrics[
            "decay.final_weight_norm"]
    sweep = reader.client.get_run(sweep_id)
    assert sweep.data.metrics["best_value"] == trials["value"].max()
    assert sweep.data.params["search.objective"] == "decay.final_weight_norm"


@pytest.mark.slow
def test_max_failure_rate_stops_a_failing_search(tmp_path: Path, store_uri: str) -> None:
    _, _, trials = _search(tmp_path, store_uri, "optimizer.weight_decay=choice(-1)",
                           "hydra.sweeper.n_trials=3", "hydra.sweeper.max_failure_rate=0")
    assert list(trials["state"]) == ["FAIL"]  # the first batch failed: no second one

"""Artifact problems name tracking.artifact_location: an unwritable location before any run
exists, an experiment that has another location, and a location that becomes read-only while a
job runs (every point kept, the runs FAILED with the location named)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import StoreReader, cli
from tests.jobs import start, training_metrics
from wdexp.vocabulary import FAILURE_TAG


def _mount(folder: Path, *options: str) -> bool:
    folder.mkdir(exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", ",".join(("size=16m", *options)),
                           "tmpfs", str(folder)], capture_output=True)
    return done.returncode == 0


@pytest.fixture
def mounted(tmp_path: Path) -> Iterator[Path]:
    """A small tmpfs of this test's own (root only): made read-only by the test at will."""
    folder = tmp_path / "disk"
    if not _mount(folder):
        pytest.skip("cannot mount a tmpfs here (needs root): read-only locations untested")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def test_an_unwritable_location_is_named_before_any_run(tmp_path, store_uri, mounted):
    subprocess.run(["mount", "-o", "remount,ro", str(mounted)], check=True)
    location = mounted / "art"
    result = cli(f"tracking.uri={store_uri}", f"tracking.artifact_location={location}",
                 tmp_path=tmp_path)
    assert result.returncode == 2, result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line == ("wdexp: tracking.artifact_location cannot be created: Read-only file "
                    f"system (got '{location}')")
    assert MlflowClient(tracking_uri=store_uri).get_experiment_by_name("weight-decay") is None

    elsewhere = tmp_path / "art"  # another location: the experiment did not keep the first
    result = cli(f"tracking.uri={store_uri}", f"tracking.artifact_location={elsewhere}",
                 "epochs=3", tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    reader = StoreReader(store_uri)
    assert reader.experiment.artifact_location == str(elsewhere)
    assert [p.info.status for p in reader.runs("pair")] == ["FINISHED"]


def test_a_file_as_location_is_named(tmp_path, store_uri):
    location = tmp_path / "not-a-folder"
    location.write_text("x")
    result = cli(f"tracking.uri={store_uri}", f"tracking.artifact_location={location}",
                 tmp_path=tmp_path)
    assert result.returncode == 2, result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("wdexp: tracking.artifact_location is a file, not a folder"), line


def test_an_experiment_keeps_its_location_and_the_error_says_which(tmp_path, store_uri):
    first, second = tmp_path / "first", tmp_path / "second"
    assert cli(f"tracking.uri={store_uri}", f"tracking.artifact_location={first}", "epochs=2",
               tmp_path=tmp_path).returncode == 0
    result = cli(f"tracking.uri={store_uri}", f"tracking.artifact_location={second}",
                 "epochs=2", tmp_path=tmp_path)
    assert result.returncode == 2, result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("wdexp: tracking.artifact_location differs from the artifact "
                           f"location experiment 'weight-decay' has, {first}:"), line
    assert line.endswith(f"(got '{second}')")
    assert len(StoreReader(store_uri).runs("pair")) == 1
    assert not second.exists()


def test_a_location_made_read_only_mid_run_keeps_every_point_and_names_it(
        tmp_path, store_uri, mounted):
    location, epochs = mounted / "art", 8000
    job = start(f"tracking.uri={store_uri}", f"tracking.artifact_location={location}",
                f"epochs={epochs}", tmp_path=tmp_path)
    training_metrics(store_uri, job)  # the pair's config.yaml is written: now it trains
    subprocess.run(["mount", "-o", "remount,ro", str(mounted)], check=True)
    output, _ = job.finish(timeout=300)
    assert job.returncode == 1, output
    last = output.strip().splitlines()[-1]
    assert last.startswith(f"wdexp: tracking.artifact_location {location} failed:"), output
    assert "Read-only file system" in last
    reader = StoreReader(store_uri)
    (pair,) = reader.runs("pair")
    assert pair.info.status == "FAILED"
    assert str(location) in pair.data.tags[FAILURE_TAG]
    for arm, run in reader.arms(pair.info.run_id).items():
        assert run.info.status == "FAILED", arm
        assert [step for step, _ in reader.history(run.info.run_id, "loss")] == \
            list(range(epochs + 1)), arm

"""wdexp's sqlite metric writer against MLflow's own log_batch: the same points written both
ways must leave the same rows, read back the same through MlflowClient."""

from __future__ import annotations

import math
import multiprocessing
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa
from alembic.migration import MigrationContext
from mlflow.entities import Metric
from mlflow.exceptions import MlflowException
from mlflow.store.db.utils import _get_latest_schema_revision
from mlflow.tracking import MlflowClient

from tests.conftest import multirun
from wdexp.tracking import ingest

T0 = 1_700_000_000_000


def _client(path: Path) -> tuple[MlflowClient, str, str]:
    uri = f"sqlite:///{path}"
    client = MlflowClient(tracking_uri=uri)
    return client, client.create_experiment("ingest", artifact_location=str(path.parent)), uri


@pytest.fixture
def store(tmp_path: Path, store_uri: str) -> Iterator[tuple[MlflowClient, str, str]]:
    yield _client(tmp_path / "mlflow.db")  # store_uri's copy of a new store


def _batches() -> list[list[Metric]]:
    """What log_batch has rules for: NaN and ±inf, a key logged twice at one step with
    different timestamps or values, exact duplicates within a batch, steps out of order, a later
    batch whose step is lower than the stored latest, negative steps, zero timestamps, values
    that are not floats (ints, bools, numeric strings, numpy scalars)."""
    nan, inf = float("nan"), float("inf")
    return [
        [Metric("loss", 1.0, T0, 0), Metric("loss", 0.5, T0 + 5, 1), Metric("loss", 0.5, T0 + 5, 1),
         Metric("norm/layers.0.weight", 2.0, T0, 0), Metric("nan_then_value", nan, T0, 3),
         Metric("grad_norm", inf, T0, 0), Metric("grad_norm", -inf, T0, 1),
         Metric("tie", 1.0, T0, 2), Metric("tie", 3.0, T0, 2), Metric("tie", 2.0, T0, 2)],
        [Metric("loss", 0.25, T0 + 9, 2), Metric("loss", 9.0, T0 + 1, 1),
         Metric("nan_then_value", 4.0, T0, 2), Metric("nan_then_value", nan, T0 + 1, 3),
         Metric("old", 7.0, 0, -5), Metric("norm/layers.0.weight", 1.5, T0 - 10, 0),
         Metric("grad_norm", 3.0, T0, 1)],
        [Metric("loss", 0.1, T0 + 9, 2), Metric("tie", 3.0, T0, 2),
         Metric("ints", 3, T0, 4), Metric("ints", True, T0, 5),  # type: ignore[arg-type]
         Metric("ints", "2.5", T0, 6), Metric("ints", np.float32(0.1), T0, 7)],  # type: ignore
    ]


def _rows(uri: str, run_id: str) -> dict[str, list[tuple]]:
    engine = sa.create_engine(uri)
    with engine.connect() as connection:
        tables = {name: sorted(tuple(row) for row in connection.execute(sa.text(
            f"select key, value, timestamp, step, is_nan from {name} where run_uuid = :r"),
            {"r": run_id})) for name in ("metrics", "latest_metrics")}
    engine.dispose()
    return tables


def _read(client: MlflowClient, run_id: str) -> dict[str, object]:
    run = client.get_run(run_id)
    keys = sorted(run.data.metrics)
    nan_safe = lambda v: "nan" if math.isnan(v) else v  # noqa: E731
    return {
        "latest": {k: nan_safe(v) for k, v in run.data.metrics.items()},
        "history": {k: sorted((m.step, m.timestamp, nan_safe(m.value))
                              for m in client.get_metric_history(run_id, k)) for k in keys},
    }


def test_the_writer_stores_what_log_batch_stores(store) -> None:
    client, experiment_id, uri = store
    by_mlflow = client.create_run(experiment_id).info.run_id
    by_wdexp = client.create_run(experiment_id).info.run_id
    writer = ingest.writer(client, uri)
    assert isinstance(writer, ingest.SqliteMetrics), writer.how
    for batch in _batches():
        client.log_batch(by_mlflow, metrics=batch)
        writer.log_metrics(by_wdexp, batch)
    assert _rows(uri, by_wdexp) == _rows(uri, by_mlflow)
    assert _read(client, by_wdexp) == _read(client, by_mlflow)
    latest = client.get_run(by_wdexp).data.metrics
    assert latest["loss"] == 0.25 and latest["tie"] == 3.0 and math.isnan(
        latest["nan_then_value"]) and latest["grad_norm"] == 3.0


def test_a_retried_batch_changes_nothing(store) -> None:
    client, experiment_id, uri = store
    run_id = client.create_run(experiment_id).info.run_id
    writer = ingest.writer(client, uri)
    for batch in _batches():
        writer.log_metrics(run_id, batch)
    once = _rows(uri, run_id)
    for batch in _batches():
        writer.log_metrics(run_id, batch)
    assert _rows(uri, run_id) == once


def test_a_batch_is_one_transaction(store) -> None:
    """A failure after the metrics are inserted (here a trigger refusing the latest_metrics
    upsert) leaves none of the batch behind."""
    client, experiment_id, uri = store
    run_id = client.create_run(experiment_id).info.run_id
    writer = ingest.writer(client, uri)
    writer.log_metrics(run_id, _batches()[0])
    before = _rows(uri, run_id)
    with sqlite3.connect(uri.removeprefix("sqlite:///")) as db:
        db.execute("create trigger refuse before update on latest_metrics "
                   "begin select raise(abort, 'refused'); end")
    with pytest.raises(sa.exc.IntegrityError, match="refused"):
        writer.log_metrics(run_id, _batches()[1])
    assert _rows(uri, run_id) == before


@pytest.mark.parametrize("problem", ["deleted run", "missing run", "bad key", "no value",
                                     "bad value"])
def test_what_log_batch_refuses_the_writer_refuses(store, problem: str) -> None:
    client, experiment_id, uri = store
    run_id = client.create_run(experiment_id).info.run_id
    metrics = [Metric("loss", 1.0, T0, 0)]
    if problem == "deleted run":
        client.delete_run(run_id)
    elif problem == "missing run":
        run_id = "0" * 32
    elif problem == "bad key":
        metrics = [Metric("../escape", 1.0, T0, 0)]
    elif problem == "no value":
        metrics = [Metric("loss", None, T0, 0)]  # type: ignore[arg-type]
    else:
        metrics = [Metric("loss", "one", T0, 0)]  # type: ignore[arg-type]
    with pytest.raises(MlflowException) as by_mlflow:
        client.log_batch(run_id, metrics=metrics)
    with pytest.raises(MlflowException) as by_wdexp:
        ingest.writer(client, uri).log_metrics(run_id, metrics)
    assert by_wdexp.value.error_code == by_mlflow.value.error_code


def test_only_tested_schemas_get_the_writer(store, monkeypatch: pytest.MonkeyPatch) -> None:
    client, _, uri = store
    # This MLflow's schema is one the tests above cover: upgrading MLflow fails here until
    # they have run against the new schema and its revision is added.
    head = _get_latest_schema_revision()
    assert head in ingest.TESTED_REVISIONS
    engine = sa.create_engine(uri)
    with engine.connect() as connection:
        assert MigrationContext.configure(connection).get_current_revision() == head
    engine.dispose()
    # An MLflow whose schema the tests have not seen: its own log_batch.
    monkeypatch.setattr(ingest, "TESTED_REVISIONS", frozenset({"0123456789ab"}))
    other = ingest.writer(client, uri)
    assert isinstance(other, ingest.LogBatch)
    assert f"its MLflow schema {head} is not one wdexp tested" in other.how
    run_id = client.create_run(client.get_experiment_by_name("ingest").experiment_id).info.run_id
    other.log_metrics(run_id, _batches()[0])
    assert len(client.get_metric_history(run_id, "loss")) == 2
    server = ingest.writer(client, "http://127.0.0.1:5000")
    assert isinstance(server, ingest.LogBatch) and "not an sqlite file" in server.how


def _write(path: str, run_id: str, offset: int, batches: int) -> None:
    client = MlflowClient(tracking_uri=f"sqlite:///{path}")
    writer = ingest.writer(client, f"sqlite:///{path}")
    for b in range(batches):
        writer.log_metrics(run_id, [Metric(f"m{k}", float(offset + s), T0, s)
                                    for s in range(b * 500, (b + 1) * 500) for k in range(4)])


def _log_batch(path: str, run_id: str, batches: int) -> None:
    client = MlflowClient(tracking_uri=f"sqlite:///{path}")
    for b in range(batches):
        client.log_batch(run_id, metrics=[Metric("other", float(s), T0, s)
                                          for s in range(b * 250, (b + 1) * 250)])


@pytest.mark.slow
def test_writers_side_by_side_with_a_reader(tmp_path: Path, store_uri: str) -> None:
    """Two processes write with wdexp's writer and one with MLflow's log_batch into one store
    while this process reads it as the UI does: every point arrives, nobody fails."""
    path = tmp_path / "mlflow.db"  # store_uri's copy of a new store
    client, experiment_id, _ = _client(path)
    runs = [client.create_run(experiment_id).info.run_id for _ in range(3)]
    batches = 8
    context = multiprocessing.get_context("spawn")
    writers = [context.Process(target=_write, args=(str(path), run_id, i * 10_000, batches))
               for i, run_id in enumerate(runs[:2])]
    writers.append(context.Process(target=_log_batch, args=(str(path), runs[2], batches)))
    stop, reads, failures = threading.Event(), [0], []

    def read() -> None:
        while not stop.is_set():
            try:
                for run_id in runs:
                    client.get_metric_history(run_id, "m0")
                client.search_runs([experiment_id], "metrics.m0 >= 0")
                reads[0] += 1
            except Exception as error:  # the test fails below, naming it
                failures.append(error)
            time.sleep(0.01)

    reader = threading.Thread(target=read)
    reader.start()
    for process in writers:
        process.start()
    for process in writers:
        process.join(timeout=180)
    stop.set()
    reader.join()
    assert [p.exitcode for p in writers] == [0, 0, 0]
    assert not failures and reads[0] > 0
    for i, run_id in enumerate(runs[:2]):
        for k in range(4):
            history = client.get_metric_history(run_id, f"m{k}")
            assert sorted((m.step, m.value) for m in history) == [
                (s, float(i * 10_000 + s)) for s in range(batches * 500)]
        assert client.get_run(run_id).data.metrics["m3"] == i * 10_000 + batches * 500 - 1
    assert len(client.get_metric_history(runs[2], "other")) == batches * 250


@pytest.mark.slow
def test_a_job_says_once_how_it_writes(tmp_path: Path, store_uri: str) -> None:
    """Two jobs of a multirun share a tracking process: the log says it once."""
    done = multirun("epochs=3", "optimizer.weight_decay=0,0.1", tmp_path=tmp_path,
                    store_uri=store_uri)
    assert done.returncode == 0, done.stderr
    log = done.stdout + done.stderr
    assert log.count("metrics are written into the sqlite store directly") == 1, log

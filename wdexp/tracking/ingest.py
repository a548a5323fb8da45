"""Tracking process: metric batches into an sqlite store, past MLflow's ORM.

``MlflowClient.log_batch`` into sqlite builds one ORM object per value, looks the run up with
its tags and params, and reconciles ``latest_metrics`` row by row: about 6 000 to 13 000 points
per second on this project's machines, while sqlite itself takes over 50 times that. For an
sqlite store whose schema revision the tests cover, :class:`SqliteMetrics` writes the same rows
through SQLAlchemy Core on MLflow's own table definitions (``SqlMetric.__table__``,
``SqlLatestMetric.__table__``), one transaction per batch:

- every metric is checked by MLflow's own validation, and stored as ``log_batch`` stores it:
  NaN as 0 with ``is_nan``, ±inf as ±the largest double, the given timestamp and step;
- rows already present (the whole primary key equal) are skipped, so a batch written twice —
  a retry after an error — changes nothing, as ``log_batch`` skips them;
- ``latest_metrics`` keeps, per key, the value with the greatest (step, timestamp, value):
  ``log_batch``'s rule, here one upsert whose condition compares with the stored row;
- the run must exist and be active, checked in the same transaction;
- the transaction begins IMMEDIATE (SQLAlchemy's recipe for pysqlite), taking sqlite's write
  lock before its first read, so beside other writers (joblib workers, MLflow itself) it waits
  up to MLflow's own 20 s busy timeout instead of failing on a lock upgrade; readers (the UI)
  see a batch whole or not at all.

Any other store — a tracking server (HTTP), another database, another MLflow version's schema —
gets :class:`LogBatch`, MLflow's own call. Which one a store got is said once per store
(:attr:`MetricWriter.how`), in the job's log.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Protocol

import sqlalchemy as sa
from alembic.migration import MigrationContext
from mlflow.entities import LifecycleStage, Metric
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE, RESOURCE_DOES_NOT_EXIST
from mlflow.store.tracking.dbmodels.models import SqlLatestMetric, SqlMetric, SqlRun
from mlflow.tracking import MlflowClient
from mlflow.tracking.metric_value_conversion_utils import convert_metric_value_to_float_if_possible
from mlflow.utils.validation import _validate_metric
from sqlalchemy.dialects.sqlite import insert

# MLflow schema revisions (alembic heads) whose metrics and latest_metrics tables the tests in
# tests/test_ingest.py compare with log_batch's. A store at any other revision gets log_batch.
TESTED_REVISIONS = frozenset({
    "dc11669786a5",  # mlflow 3.17
})
BUSY_TIMEOUT_S = 20  # MLflow's own sqlite busy timeout (PRAGMA busy_timeout = 20000)
LARGEST = 1.7976931348623157e308  # what MLflow stores for ±inf: sql has no infinities

_METRICS: sa.Table = SqlMetric.__table__  # type: ignore[assignment]
_LATEST: sa.Table = SqlLatestMetric.__table__  # type: ignore[assignment]
_RUNS: sa.Table = SqlRun.__table__  # type: ignore[assignment]


class MetricWriter(Protocol):
    how: str  # one line for the job's log: which path and why
    batch: int  # metrics per call, one transaction each

    def log_metrics(self, run_id: str, metrics: Sequence[Metric]) -> None: ...


class LogBatch:
    """MLflow's own ``log_batch``: right for every store, at the ORM's pace."""

    batch = 1000  # MLflow's limit for one log_batch call

    def __init__(self, client: MlflowClient, why: str) -> None:
        self.client = client
        self.how = f"metrics are written with MLflow's log_batch ({why})"

    def log_metrics(self, run_id: str, metrics: Sequence[Metric]) -> None:
        self.client.log_batch(run_id, metrics=metrics)


def _stored(value: float) -> tuple[float, bool]:
    """(value, is_nan) as MLflow's SqlAlchemyStore.sanitize_metric_value stores them."""
    if math.isnan(value):
        return 0.0, True
    if math.isinf(value):
        return (LARGEST if value > 0 else -LARGEST), False
    return value, False


def _plain(metric: Metric) -> bool:
    return (type(metric.value) is float and type(metric.step) is int
            and type(metric.timestamp) is int and metric.timestamp >= 0)


def _begin_immediate(engine: sa.Engine) -> None:
    """pysqlite's own BEGIN is off; every transaction starts with the write lock taken."""

    @sa.event.listens_for(engine, "connect")
    def _connect(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys = ON")  # as MLflow's sessions have it
        cursor.close()

    @sa.event.listens_for(engine, "begin")
    def _begin(connection) -> None:  # type: ignore[no-untyped-def]
        connection.exec_driver_sql("BEGIN IMMEDIATE")


class SqliteMetrics:
    """Metric batches as rows of MLflow's tables; see the module doc for what makes them the
    rows ``log_batch`` would have written."""

    # Over 5 000 rows a batch gains little more (a commit is a few ms); the write lock other
    # writers wait for is held ~0.1 s.
    batch = 5000

    def __init__(self, engine: sa.Engine, revision: str) -> None:
        self.engine = engine
        self.how = (f"metrics are written into the sqlite store directly "
                    f"(MLflow schema {revision}, tested)")
        latest = insert(_LATEST)
        newer = (sa.tuple_(latest.excluded.step, latest.excluded.timestamp, latest.excluded.value)
                 > sa.tuple_(_LATEST.c.step, _LATEST.c.timestamp, _LATEST.c.value))
        self._upsert_latest = latest.on_conflict_do_update(
            index_elements=[_LATEST.c.key, _LATEST.c.run_uuid],
            set_={name: latest.excluded[name] for name in ("value", "timestamp", "step", "is_nan")},
            where=newer)
        # Compiled once by SQLAlchemy for this engine's dialect, then fed plain tuples: the
        # per-row parameter processing of Connection.execute is half the cost of a batch.
        self._insert_metrics = insert(_METRICS).on_conflict_do_nothing().compile(
            dialect=engine.dialect)
        self._checked: set[str] = set()
        self._run_stage = sa.select(_RUNS.c.lifecycle_stage).where(
            _RUNS.c.run_uuid == sa.bindparam("run_id"))

    def log_metrics(self, run_id: str, metrics: Sequence[Metric]) -> None:
        rows = []
        latest: dict[str, dict[str, object]] = {}
        for index, metric in enumerate(metrics):
            # MLflow's conversion and validation, once per key for the plain values the engine
            # sends (the name check is most of the cost); anything else every time.
            value = metric.value
            if metric.key not in self._checked or not _plain(metric):
                value = convert_metric_value_to_float_if_possible(value)
                _validate_metric(metric.key, value, metric.timestamp, metric.step,
                                 path=f"metrics[{index}]")
                self._checked.add(metric.key)
            value, is_nan = _stored(value)
            row = {"key": metric.key, "value": value, "timestamp": metric.timestamp,
                   "step": metric.step, "is_nan": is_nan, "run_uuid": run_id}
            rows.append(row)
            best = latest.get(metric.key)
            if best is None or ((row["step"], row["timestamp"], value)
                                > (best["step"], best["timestamp"], best["value"])):
                latest[metric.key] = row
        if not rows:
            return
        with self.engine.begin() as connection:
            stage = connection.execute(self._run_stage, {"run_id": run_id}).scalar()
            if stage is None:
                raise MlflowException(f"Run with id={run_id} not found",
                                      RESOURCE_DOES_NOT_EXIST)
            if stage != LifecycleStage.ACTIVE:
                raise MlflowException(f"The run {run_id} must be in the 'active' state. "
                                      f"Current state is {stage}.", INVALID_PARAMETER_VALUE)
            order = self._insert_metrics.positiontup or ()
            connection.exec_driver_sql(str(self._insert_metrics),
                                       [tuple(row[name] for name in order) for row in rows])
            connection.execute(self._upsert_latest, list(latest.values()))


def writer(client: MlflowClient, uri: str) -> MetricWriter:
    """The fastest path known to store metrics in ``uri`` exactly as ``log_batch`` would."""
    if not uri.startswith("sqlite:///"):
        return LogBatch(client, "the store is not an sqlite file")
    engine = sa.create_engine(uri, connect_args={"timeout": BUSY_TIMEOUT_S})
    _begin_immediate(engine)
    with engine.connect() as connection:
        revision = MigrationContext.configure(connection).get_current_revision()
    if revision not in TESTED_REVISIONS:
        engine.dispose()
        return LogBatch(client, f"its MLflow schema {revision} is not one wdexp tested")
    return SqliteMetrics(engine, revision)

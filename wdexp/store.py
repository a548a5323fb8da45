"""The MLflow store: reaching it once per process, creating runs, ending them.

wdexp talks to MLflow through one :class:`~mlflow.tracking.MlflowClient` per store and process,
never through the fluent ``mlflow.start_run`` API: a job holds several runs open at once (a pair
and its arms, or a sweep) and each must end with its own status.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock
from mlflow.entities import Param, Run
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

from wdexp.config import ConfigError, TrackingSpec, redact
from wdexp.runs import CONFIG_HASH_TAG, RUN_KIND_TAG, SWEEP_DIR_TAG, RunSpec

MAX_PARAMS_PER_BATCH = 100  # MLflow's limit for one log_batch call
SEARCH_PAGE = 1000
# With no retries, an unreachable server fails the first contact well inside 30 s.
PREFLIGHT_TIMEOUT_S = "10"



def sqlite_path(uri: str) -> Path | None:
    prefix = "sqlite:///"
    return Path(uri[len(prefix):]) if uri.startswith(prefix) else None


@contextmanager
def _fail_fast_http() -> Iterator[None]:
    """MLflow retries a dead server for minutes by default; the first contact should not."""
    overrides = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
                 "MLFLOW_HTTP_REQUEST_TIMEOUT": PREFLIGHT_TIMEOUT_S}
    saved = {key: os.environ.get(key) for key in overrides}
    os.environ.update(overrides)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@dataclass(frozen=True)
class Store:
    client: MlflowClient
    experiment_id: str
    uri: str


@functools.cache
def connect(spec: TrackingSpec, *, create: bool = True) -> Store:
    """Reach the store and get (or create) the experiment, failing with one line naming the URI.

    On a new sqlite file the schema is created under a file lock, so parallel jobs that start
    together neither race the migration nor each create the experiment. Cached: the jobs of a
    sequential multirun share one client and one store. With ``create=False`` (readers) a
    missing store or experiment is an error instead.
    """
    # MLflow prints a raw "View run at <uri>" per finished run, credentials included; wdexp logs
    # one redacted link per job instead (see pair_run).
    os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = "true"
    db = sqlite_path(spec.uri)
    artifact_location = spec.artifact_location
    if db is not None and not create and not db.exists():
        raise ConfigError("tracking.uri", "names no existing store", spec.uri)
    if db is not None:
        db.parent.mkdir(parents=True, exist_ok=True)
        artifact_location = artifact_location or str(db.parent / "mlartifacts")
    guard = FileLock(f"{db}.lock") if db is not None else _fail_fast_http()
    try:
        with guard:
            client = MlflowClient(tracking_uri=spec.uri)
            experiment = client.get_experiment_by_name(spec.experiment)
            if experiment is None and create:
                try:
                    client.create_experiment(spec.experiment, artifact_location=artifact_location)
                except MlflowException as error:  # created meanwhile by another job
                    if error.error_code != "RESOURCE_ALREADY_EXISTS":
                        raise
                experiment = client.get_experiment_by_name(spec.experiment)
    except Exception as error:  # any failure to reach the store is the URI's fault to the user
        reason = redact(" ".join(str(error).split()))[:300]
        raise ConfigError("tracking.uri", f"cannot be used: {reason}", redact(spec.uri)) from None
    if experiment is None:
        raise ConfigError("tracking.experiment", "is not in this store", spec.experiment)
    if experiment.lifecycle_stage != "active":
        raise ConfigError("tracking.experiment", "is deleted in this store; restore it or pick "
                          "another name", spec.experiment)
    return Store(client, experiment.experiment_id, spec.uri)


def find_sweep_run(store: Store, sweep_dir: str) -> str | None:
    """The RUNNING sweep run of the multirun writing to ``sweep_dir``, from any process."""
    runs = store.client.search_runs(
        [store.experiment_id],
        f"tags.`{RUN_KIND_TAG}` = 'sweep' and tags.`{SWEEP_DIR_TAG}` = '{sweep_dir}' "
        "and attributes.status = 'RUNNING'", max_results=1)
    return runs[0].info.run_id if runs else None


def find_finished_pair(store: Store, config_hash: str) -> str | None:
    """A FINISHED pair run of the same computation, if the store has one."""
    runs = store.client.search_runs(
        [store.experiment_id],
        f"tags.`{RUN_KIND_TAG}` = 'pair' and tags.`{CONFIG_HASH_TAG}` = '{config_hash}' "
        "and attributes.status = 'FINISHED'", max_results=1)
    return runs[0].info.run_id if runs else None


def create_run(store: Store, spec: RunSpec, parent_id: str | None = None) -> str:
    tags = dict(spec.tags)
    if parent_id is not None:
        tags[MLFLOW_PARENT_RUN_ID] = parent_id
    run = store.client.create_run(store.experiment_id, tags=tags, run_name=spec.name)
    params = [Param(k, v) for k, v in spec.params.items()]
    for start in range(0, len(params), MAX_PARAMS_PER_BATCH):
        store.client.log_batch(run.info.run_id, params=params[start:start + MAX_PARAMS_PER_BATCH])
    return run.info.run_id


def terminate(client: MlflowClient, run_ids: list[str], status: str) -> None:
    for run_id in reversed(run_ids):
        client.set_terminated(run_id, status)


def search_all(store: Store, filter_string: str) -> list[Run]:
    """Every run of the experiment matching ``filter_string``, across result pages."""
    runs: list[Run] = []
    token = None
    while True:
        page = store.client.search_runs([store.experiment_id], filter_string,
                                        max_results=SEARCH_PAGE, page_token=token,
                                        order_by=["attributes.start_time ASC"])
        runs.extend(page)
        token = page.token
        if not token:
            return runs

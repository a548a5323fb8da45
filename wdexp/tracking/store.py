"""The MLflow store: reaching it once per process, creating runs, finding them, ending them.

Used where MLflow is imported: the tracking process, and the readers (report, analysis). wdexp
talks to MLflow through one :class:`~mlflow.tracking.MlflowClient` per store and process, never
through the fluent ``mlflow.start_run`` API: a job holds several runs open at once (a pair and
its arms, or a sweep) and each must end with its own status.
"""

from __future__ import annotations

import contextlib
import functools
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from mlflow.entities import Param, Run
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

from wdexp.tracking import artifacts, consent, ingest, view
from wdexp.tracking.records import RunSpec, sweep_key
from wdexp.vocabulary import (
    CONFIG_HASH_TAG,
    RUN_KIND_TAG,
    SWEEP_KEY_TAG,
    ConfigError,
    TrackingSpec,
    redact,
)

MAX_PARAMS_PER_BATCH = 100  # MLflow's limit for one log_batch call
INVALID_HOST = "Invalid Host header"  # an mlflow server's 403 for a host name it does not allow
SEARCH_PAGE = 1000
# The first contact with a server makes no retries: a wrong URI fails in seconds, not minutes.


def sqlite_path(uri: str) -> Path | None:
    prefix = "sqlite:///"
    return Path(uri[len(prefix):]) if uri.startswith(prefix) else None


@contextlib.contextmanager
def _environment(**values: str) -> Iterator[None]:
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def http_limits(timeout_s: float) -> dict[str, str]:
    """MLflow's HTTP settings for a job: every request bounded by ``timeout_s``, a few quick
    retries (a restarting server), not MLflow's default of minutes per request."""
    return {"MLFLOW_HTTP_REQUEST_TIMEOUT": str(max(1, int(timeout_s // 2))),
            "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1"}


@contextlib.contextmanager
def reading(spec: TrackingSpec) -> Iterator[Store]:
    """An existing store and experiment, for reading in any process: every HTTP request bounded
    by ``tracking.timeout_s`` as the tracking process's are, and artifacts downloaded without
    MLflow's progress bar (a reader's caller shows what it read)."""
    with _environment(**http_limits(spec.timeout_s), MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR="false"):
        yield connect(spec, create=False)


def _check_sqlite(db: Path, uri: str, create: bool) -> None:
    """The sqlite file's own problems, named before MLflow retries them for minutes."""
    shown = redact(uri)
    if db.is_dir():
        raise ConfigError("tracking.uri", "names a folder, not an sqlite file", shown)
    if not create:
        if not db.exists():
            raise ConfigError("tracking.uri", "names no existing store", shown)
        return
    for folder in (db.parent, *db.parent.parents):
        if folder.exists():
            if not folder.is_dir():
                raise ConfigError("tracking.uri", f"cannot be created: {folder} is a file",
                                  shown)
            break
    try:
        db.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ConfigError("tracking.uri", f"cannot be created: {error.strerror}", shown) from None
    target = db if db.exists() else db.parent
    if os.statvfs(target).f_flag & os.ST_RDONLY or not os.access(target, os.W_OK):
        raise ConfigError("tracking.uri", "is read-only: wdexp writes its runs there", shown)


@dataclass(frozen=True)
class Store:
    client: MlflowClient
    experiment_id: str
    uri: str
    artifact_location: str = ""  # the experiment's

    @functools.cached_property
    def metrics(self) -> ingest.MetricWriter:
        """How per-step metrics go in: MLflow's log_batch, or faster where that is tested."""
        return ingest.writer(self.client, self.uri)


@functools.cache
def connect(spec: TrackingSpec, *, create: bool = True) -> Store:
    """Reach the store and get (or create) the experiment, failing with one line naming the key.

    Cached: the jobs of a sequential multirun share one client. With ``create=False`` (readers)
    a missing store or experiment is an error instead.
    """
    # MLflow prints a raw "View run at <uri>" per finished run, credentials included; wdexp logs
    # one redacted link per job instead.
    os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = "true"
    db = sqlite_path(spec.uri)
    artifact_location = spec.artifact_location
    if db is not None:
        _check_sqlite(db, spec.uri, create)
        consent.check(db, spec, create=create)
        artifact_location = artifact_location or str(db.parent / "mlartifacts")
        guard = consent.creating(db, spec) if create else contextlib.nullcontext()
    else:
        # The server has answered (wdexp.tracking.first_contact) or this is a reader: a busy
        # server's slow answer is waited for, as any request's.
        guard = _environment(**http_limits(spec.timeout_s))
    experiment = None
    try:
        with guard:
            client = MlflowClient(tracking_uri=spec.uri)
            experiment = client.get_experiment_by_name(spec.experiment)
            if experiment is None and create:
                if artifact_location is not None:  # before the experiment takes it for good
                    artifacts.check_writable(artifact_location)
                try:
                    client.create_experiment(spec.experiment, artifact_location=artifact_location,
                                             tags=view.experiment_tags(_now_ms()))
                except MlflowException as error:  # created meanwhile by another job
                    if error.error_code != "RESOURCE_ALREADY_EXISTS":
                        raise ConfigError("tracking.experiment",
                                          f"cannot be created: {one_line(error)}",
                                          spec.experiment) from None
                experiment = client.get_experiment_by_name(spec.experiment)
            elif (create and experiment is not None and experiment.lifecycle_stage == "active"
                  and view.VIEW_TAG not in experiment.tags):
                # An experiment made before wdexp set these, or by someone else: add them.
                for key, value in view.experiment_tags(_now_ms()).items():
                    if key not in experiment.tags:
                        client.set_experiment_tag(experiment.experiment_id, key, value)
    except ConfigError:
        raise
    except Exception as error:  # any other failure to reach the store is the URI's
        reason = one_line(error)
        if INVALID_HOST in reason:
            reason += " (an mlflow server answers only the host names given to --allowed-hosts)"
        raise ConfigError("tracking.uri", f"cannot be used: {reason}", redact(spec.uri)) from None
    if experiment is None:
        raise ConfigError("tracking.experiment", "is not in this store", spec.experiment)
    if experiment.lifecycle_stage != "active":
        raise ConfigError("tracking.experiment", "is deleted in this store; restore it or pick "
                          "another name", spec.experiment)
    if create:  # before any run: where this job's files would go
        artifacts.check_experiment(spec.artifact_location, experiment.artifact_location,
                                   spec.experiment)
    return Store(client, experiment.experiment_id, spec.uri, experiment.artifact_location)


def _now_ms() -> int:
    return int(time.time() * 1000)


def one_line(error: BaseException) -> str:
    """``error`` as one redacted line of at most ~300 characters, without SQLAlchemy's link."""
    text = redact(" ".join(str(error).split(" (Background on this error")[0].split()))
    return (text[:300] + "…" if len(text) > 300 else text) or type(error).__name__


def quoted(value: str) -> str:
    """``value`` as a string literal in an MLflow search filter. The filter grammar has no
    escapes, so a value holding both quote characters cannot be searched for."""
    for quote in ("'", '"'):
        if quote not in value:
            return f"{quote}{value}{quote}"
    raise ValueError(f"cannot search for a value holding both quote characters: {value!r}")


def find_sweep_run(store: Store, sweep_dir: str) -> str | None:
    """The RUNNING sweep run of the multirun writing to ``sweep_dir``, from any process."""
    runs = store.client.search_runs(
        [store.experiment_id],
        f"tags.`{RUN_KIND_TAG}` = 'sweep' and tags.`{SWEEP_KEY_TAG}` = "
        f"{quoted(sweep_key(sweep_dir))} and attributes.status = 'RUNNING'", max_results=1)
    return runs[0].info.run_id if runs else None


def find_finished_pair(store: Store, config_hash: str) -> tuple[str, dict[str, float]] | None:
    """A FINISHED pair run of the same computation, if the store has one: its id and its
    summary metrics."""
    runs = store.client.search_runs(
        [store.experiment_id],
        f"tags.`{RUN_KIND_TAG}` = 'pair' and tags.`{CONFIG_HASH_TAG}` = {quoted(config_hash)} "
        "and attributes.status = 'FINISHED'", max_results=1)
    return (runs[0].info.run_id, dict(runs[0].data.metrics)) if runs else None


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

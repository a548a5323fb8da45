"""The edge between Hydra's config and the rest of wdexp.

Everything a job needs is checked here (or by the component that owns the key, raising
:class:`ConfigError`) before a single MLflow run exists, so a typo costs a one-line error
instead of a half-written store.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.utils import get_object
from omegaconf import DictConfig, ListConfig, OmegaConf

from wdexp.credentials import warn_once
from wdexp.vocabulary import (
    DEFAULT_CONNECT_WAIT_S,
    DEFAULT_ORPHAN_AFTER_S,
    DEFAULT_TIMEOUT_S,
    ConfigError,
    TrackingSpec,
    redact,
)

ROOT = Path(__file__).resolve().parent.parent
"""The checkout that holds conf/: the anchor for the default store and Hydra's output dirs."""

# `${wdexp.root:}` lets config.yaml name paths from the checkout, not the current directory.
OmegaConf.register_new_resolver("wdexp.root", lambda: str(ROOT), replace=True)


def quiet_launcher_schema() -> None:
    """conf/hydra/launcher/{joblib,submitit_local}.yaml and conf/hydra/sweeper/basic.yaml take the
    place of the plugins' configs of those names (wdexp's classes, the plugins' keys): Hydra
    validates each against the plugin's schema and warns, in every process that composes it,
    that such matching is deprecated."""
    warnings.filterwarnings("ignore", category=UserWarning,
                            message=r"\s*'hydra/(launcher/joblib|launcher/submitit_local|sweeper/basic)'"
                            " is validated against ConfigStore schema with the same name")


quiet_launcher_schema()


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def finite_number(key: str, value: Any, *, minimum: float | None = None,
                  strict: bool = False, below: float | None = None) -> float:
    """``value`` as a float, or a ConfigError that states the allowed range."""
    parts = []
    if minimum is not None:
        parts.append(f"{'>' if strict else '>='} {minimum:g}")
    if below is not None:
        parts.append(f"< {below:g}")
    requirement = "must be a finite number" + (f" {' and '.join(parts)}" if parts else "")
    if not _is_number(value) or not math.isfinite(value):
        raise ConfigError(key, requirement, value)
    if minimum is not None and (value <= minimum if strict else value < minimum):
        raise ConfigError(key, requirement, value)
    if below is not None and value >= below:
        raise ConfigError(key, requirement, value)
    return float(value)


def positive_int(key: str, value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigError(key, "must be a positive integer", value)
    return value


def integer(key: str, value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise ConfigError(key, "must be an integer", value)
    return value


# torch.manual_seed accepts [-2**63, 2**64) and raises a bare "Overflow" outside it.
SEED_RANGE = (-2**63, 2**64)


def torch_seed(key: str, value: Any) -> int:
    """An integer torch.manual_seed accepts (negative ones it takes modulo 2**64)."""
    low, high = SEED_RANGE
    value = integer(key, value)
    if not low <= value < high:
        raise ConfigError(key, "must be an integer >= -2**63 and < 2**64, the range torch "
                          "accepts", value)
    return value


def finite_list(key: str, value: Any, *, length: int | None = None) -> list[float]:
    if isinstance(value, ListConfig):
        value = OmegaConf.to_container(value)
    if not isinstance(value, list | tuple) or not value:
        raise ConfigError(key, "must be a non-empty list of finite numbers", value)
    if not all(_is_number(v) and math.isfinite(v) for v in value):
        raise ConfigError(key, "must be a non-empty list of finite numbers", list(value))
    if length is not None and len(value) != length:
        raise ConfigError(key, f"must have {length} entries, one per weight", list(value))
    return [float(v) for v in value]


def instantiable(group: str, cfg: DictConfig, base: type, base_name: str, *,
                 reserved: tuple[str, ...] = (), callable_target: bool = False,
                 ) -> tuple[Any, dict[str, Any]]:
    """``cfg._target_`` as a class (a subclass of ``base``, called ``base_name`` in errors; or,
    with ``callable_target``, any callable) and the group's other keys as its keyword
    arguments, each checked against its signature — except ``reserved`` keys, which are
    wdexp's own and popped by the caller."""
    kwargs: dict[str, Any] = OmegaConf.to_container(cfg, resolve=True)  # type: ignore[assignment]
    target = kwargs.pop("_target_", None)
    try:
        found = get_object(target) if isinstance(target, str) else None
    except Exception:
        found = None
    if isinstance(found, type):
        allowed = issubclass(found, base)
    else:
        allowed = callable_target and callable(found)
    if not allowed:
        raise ConfigError(f"{group}._target_", f"must name a {base_name}", target)
    parameters = inspect.signature(found).parameters
    if not any(p.kind is p.VAR_KEYWORD for p in parameters.values()):
        name = f"{found.__module__}.{found.__qualname__}"
        for key, value in kwargs.items():
            if (key not in parameters or key == "params") and key not in reserved:
                raise ConfigError(f"{group}.{key}", f"is not an argument of {name}", value)
    return found, kwargs


@dataclass(frozen=True)
class JobSpec:
    """The top-level keys of a job, checked; groups (model, optimizer) are checked as built."""

    seed: int
    epochs: int
    device: str
    tracking: TrackingSpec
    resume: bool = False
    geometry_steps: int | None = 8  # steps measured per epoch (wdexp.geometry); None: all


# MLflow's validation allows 500 characters, but its experiments table stores names in a
# String(256) column (mlflow/store/tracking/dbmodels/models.py): PostgreSQL and MySQL refuse
# longer names at insert time, sqlite keeps them. 256 works in every store.
MAX_EXPERIMENT_NAME = 256


def _hydra_saves_command_line() -> bool:
    """Whether Hydra keeps this process's command line in its output files: not where it is
    known to write none (``hydra.output_subdir=null``, as for python -m wdexp.report, whose
    standard output is its table and must carry no warning)."""
    return not HydraConfig.initialized() or HydraConfig.get().output_subdir is not None


def parse_tracking(cfg: DictConfig) -> TrackingSpec:
    tracking = cfg.get("tracking") or {}
    uri = tracking.get("uri")
    if not isinstance(uri, str) or not uri:
        raise ConfigError("tracking.uri", "must be a tracking URI such as sqlite:///path/mlflow.db "
                          "or http://host:port", uri)
    experiment = tracking.get("experiment")
    if not isinstance(experiment, str) or not experiment.strip():
        raise ConfigError("tracking.experiment", "must be a non-empty experiment name", experiment)
    if len(experiment) > MAX_EXPERIMENT_NAME:
        # The name itself would fill the terminal: its length is what needs fixing.
        raise ConfigError("tracking.experiment", f"must be at most {MAX_EXPERIMENT_NAME} "
                          "characters, the size of MLflow's experiment name column "
                          f"(got {len(experiment)} characters)", show_value=False)
    artifact_location = tracking.get("artifact_location")
    if artifact_location is not None and not isinstance(artifact_location, str):
        raise ConfigError("tracking.artifact_location", "must be a path, a URI or null",
                          artifact_location)
    timeout_s = finite_number("tracking.timeout_s", tracking.get("timeout_s", DEFAULT_TIMEOUT_S),
                              minimum=1)
    upgrade_store = tracking.get("upgrade_store", False)
    if not isinstance(upgrade_store, bool):
        raise ConfigError("tracking.upgrade_store", "must be true or false", upgrade_store)
    connect_wait_s = finite_number("tracking.connect_wait_s",
                                   tracking.get("connect_wait_s", DEFAULT_CONNECT_WAIT_S),
                                   minimum=0)
    orphan_after_s = finite_number("tracking.orphan_after_s",
                                   tracking.get("orphan_after_s", DEFAULT_ORPHAN_AFTER_S),
                                   minimum=1)
    if _hydra_saves_command_line():
        warn_once("tracking.uri", uri)
    return TrackingSpec(uri, experiment, artifact_location, timeout_s, upgrade_store,
                        connect_wait_s, orphan_after_s)


def parse_job(cfg: DictConfig) -> JobSpec:
    tracking = parse_tracking(cfg)
    device = cfg.get("device", "cpu")
    if not isinstance(device, str) or not device:
        raise ConfigError("device", "must be a torch device string such as cpu or cuda", device)
    resume = cfg.get("resume", False)
    if not isinstance(resume, bool):
        raise ConfigError("resume", "must be true or false", resume)
    geometry = cfg.get("geometry") or {}
    steps = geometry.get("steps_per_epoch", 8)
    if steps is not None and (not isinstance(steps, int) or isinstance(steps, bool)
                              or steps < 0):
        raise ConfigError("geometry.steps_per_epoch", "must be an integer >= 0 (0: none) or "
                          "null (every step)", steps)
    return JobSpec(
        resume=resume,
        geometry_steps=steps,
        seed=torch_seed("seed", cfg.get("seed")),
        epochs=positive_int("epochs", cfg.get("epochs")),
        device=device,
        tracking=tracking,
    )


def loggable(cfg: DictConfig) -> dict[str, Any]:
    """The resolved config as plain data, with every credential redacted: what MLflow may see."""
    def scrub(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: scrub(v) for k, v in node.items()}
        if isinstance(node, list):
            return [scrub(v) for v in node]
        return redact(node) if isinstance(node, str) else node

    return scrub(OmegaConf.to_container(cfg, resolve=True))


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested config → ``{"optimizer.lr": "0.01", ...}``: MLflow params are flat strings."""
    flat: dict[str, str] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = "null" if value is None else str(value)
    return flat


# Keys that say where or how a job runs, not what it computes: left out of its identity.
_NOT_IDENTITY = ("tracking", "paths", "resume", "hydra")


def config_hash(tree: dict[str, Any]) -> str:
    """A stable digest of what a job computes, for recognising a finished job (resume)."""
    def canonical(node: Any) -> Any:  # 0 and 0.0 are the same weight decay
        if isinstance(node, dict):
            return {k: canonical(v) for k, v in node.items()}
        if isinstance(node, list):
            return [canonical(v) for v in node]
        return float(node) if _is_number(node) else node

    identity = {k: canonical(v) for k, v in tree.items() if k not in _NOT_IDENTITY}
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:20]


def to_yaml(tree: dict[str, Any]) -> str:
    return OmegaConf.to_yaml(OmegaConf.create(tree))

"""Tracking process: where a job's files go, checked before any run exists, and named when
writing them fails.

An experiment keeps the artifact location it was created with. A local one (a path or a
``file://`` URI) must be a folder this job can write: checked before the experiment or a run is
created, a one-line error naming ``tracking.artifact_location`` otherwise. A location given for
an experiment that has another one is an error saying which it has. Remote locations (a
server's ``mlflow-artifacts:``, object stores) are the server's to check.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import unquote, urlsplit

from wdexp.vocabulary import ConfigError, redact

KEY = "tracking.artifact_location"


class ArtifactsFailed(OSError):
    """Writing a run's files to its artifact location failed (one line, naming the location)."""

    def __init__(self, location: str, reason: str) -> None:
        super().__init__(f"{KEY} {redact(location)} failed: {reason}")
        self.location = location


def local_path(location: str) -> Path | None:
    """The folder of a local location, or None for a remote one."""
    parts = urlsplit(location)
    if parts.scheme == "file":
        return Path(unquote(parts.path))
    if parts.scheme and len(parts.scheme) > 1:  # a Windows drive letter is no scheme
        return None
    return Path(location).expanduser().resolve()


def same(given: str, stored: str) -> bool:
    here, there = local_path(given), local_path(stored)
    if here is not None and there is not None:
        return here.resolve() == there.resolve()
    return given.rstrip("/") == stored.rstrip("/")


def check_writable(location: str) -> None:
    """A local location exists as a folder this process can write, or is created as one."""
    folder = local_path(location)
    if folder is None:
        return
    shown = redact(location)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise ConfigError(KEY, "is a file, not a folder for the runs' files", shown) from None
    except OSError as error:
        raise ConfigError(KEY, f"cannot be created: {error.strerror}", shown) from None
    if not folder.is_dir():
        raise ConfigError(KEY, "is a file, not a folder for the runs' files", shown)
    if os.statvfs(folder).f_flag & os.ST_RDONLY or not os.access(folder, os.W_OK | os.X_OK):
        raise ConfigError(KEY, "is not writable: each pair's config.yaml and figures go there",
                          shown)


def check_experiment(given: str | None, stored: str, experiment: str) -> None:
    """The location an existing experiment has must be the one given (if any), and usable."""
    if given is not None and not same(given, stored):
        raise ConfigError(KEY, f"differs from the artifact location experiment {experiment!r} "
                          f"has, {redact(stored)}: an experiment keeps the location it was "
                          "created with (give that one, or another experiment name)",
                          redact(given))
    check_writable(stored)

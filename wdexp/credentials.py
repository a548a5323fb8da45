"""Passwords in URIs: hidden from MLflow and from every log line, and warned about.

A password in ``tracking.uri`` would otherwise travel far: into MLflow params and tags (the
callers of :func:`redact` and :func:`wdexp.config.loggable` take it out), and into every log
line that quotes the command line — Hydra's launchers log each job's overrides
(``#0 : tracking.uri=http\\://user\\:pass@host …``) to the console and to log files. The
project's Hydra logging configs (``conf/hydra/hydra_logging/wdexp.yaml``,
``conf/hydra/job_logging/wdexp.yaml``) put :class:`Redacting` on every handler for that.

What stays out of reach is Hydra's own record of the command line (``.hydra/*.yaml``,
``multirun.yaml``, a launcher's pickled jobs): :func:`warn_once` says so, and how to pass
credentials instead.

Only the standard library and :mod:`wdexp.vocabulary` (which holds :func:`redact` itself) here:
Hydra imports this module to configure logging, before any job, and the tracking process
imports it for its own log.
"""

from __future__ import annotations

import logging
from urllib.parse import urlsplit

from wdexp.vocabulary import has_password, redact

log = logging.getLogger("wdexp")

class Redacting(logging.Filter):
    """Takes passwords out of a log record before any handler formats it: its message with
    the arguments filled in, its traceback and its stack. A filter on the handlers, not on
    loggers, sees the records of every library, which reach handlers by propagation."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if has_password(message):
            record.msg, record.args = redact(message), None
        if record.exc_info and not record.exc_text:
            # Formatters reuse exc_text once set, so the traceback is formatted here, once.
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text and has_password(record.exc_text):
            record.exc_text = redact(record.exc_text)
        if record.stack_info and has_password(record.stack_info):
            record.stack_info = redact(record.stack_info)
        return True


_warned = False


def warn_once(key: str, uri: str) -> None:
    """One warning per process when ``uri`` (the value of config ``key``) holds a password."""
    global _warned
    if _warned or not has_password(uri):
        return
    _warned = True
    if urlsplit(uri).scheme in ("http", "https"):
        instead = ("pass credentials in MLflow's MLFLOW_TRACKING_USERNAME and "
                   "MLFLOW_TRACKING_PASSWORD environment variables instead")
    else:
        instead = ("pass the password to the database driver instead, e.g. PGPASSWORD or "
                   "~/.pgpass for PostgreSQL")
    log.warning("wdexp: %s holds a password; wdexp hides it in MLflow and in logs, but Hydra "
                "writes the command line to its output files (.hydra/*.yaml, multirun.yaml, a "
                "launcher's job files): %s", key, instead)

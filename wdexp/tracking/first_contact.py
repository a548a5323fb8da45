"""A tracking server's first answer, before MLflow's first request to it.

A server that is starting (its port not open yet) or busy (open, its workers still importing,
or stalled) must not fail a job that meets it at that moment — on a cluster, a whole job array.
So the tracking process asks the server's ``/health`` first, with the standard library:

- nothing listens: it says so once and asks again every second, for
  ``tracking.connect_wait_s``;
- the server takes its connection but answers slowly: it waits for ``tracking.timeout_s``;
- a name that does not resolve, or a proxy that refuses wdexp (401, 403), fails at once, with
  one line. (An ``mlflow server`` checks credentials and host names on its API, not on
  ``/health``: MLflow's first request meets those, unretried, and says so in one line.)

Any other answer, even an error page (a proxy, a path without ``/health``), is a server that
answers: MLflow's own requests go on from there.
"""

from __future__ import annotations

import logging
import socket
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from http.client import HTTPException

from wdexp.vocabulary import ConfigError, TrackingSpec, redact

log = logging.getLogger("wdexp.tracking")

RETRY_EVERY_S = 1.0
STARTING = {502, 503, 504}  # a proxy whose server is not up yet


def wait_for_server(spec: TrackingSpec, alive: Callable[[], bool]) -> None:
    """Return once the server at ``spec.uri`` answers; raise ConfigError naming the key that
    bounds what failed. ``alive()`` is asked between tries: False (the job is gone) stops."""
    shown = redact(spec.uri)
    deadline = time.monotonic() + spec.connect_wait_s
    said = False
    while True:
        reason = _ask(spec)
        if reason is None:
            return
        if time.monotonic() >= deadline or not alive():
            raise ConfigError("tracking.uri", f"cannot be used: {reason} after waiting "
                              f"{spec.connect_wait_s:g} s (tracking.connect_wait_s)", shown)
        if not said:
            said = True
            log.warning("%s: %s; waiting up to %g s for it (tracking.connect_wait_s)", shown,
                        reason, spec.connect_wait_s)
        time.sleep(RETRY_EVERY_S)


def _ask(spec: TrackingSpec) -> str | None:
    """None if the server answered; why not, if it is worth asking again; raises if not."""
    shown = redact(spec.uri)
    parts = urllib.parse.urlsplit(spec.uri)
    # /health asks for no credentials: a URI's user:password@ stays out of the request
    health = parts._replace(netloc=parts.netloc.rpartition("@")[2],
                            path=parts.path.rstrip("/") + "/health", query="", fragment="")
    try:
        with urllib.request.urlopen(health.geturl(), timeout=spec.timeout_s):
            return None
    except urllib.error.HTTPError as error:
        if error.code in (401, 403):  # a proxy's: an mlflow server checks no one on /health
            raise ConfigError("tracking.uri", f"cannot be used: the server refused wdexp (HTTP "
                              f"{error.code} {error.reason})", shown) from None
        return f"the server is starting (HTTP {error.code})" if error.code in STARTING else None
    except urllib.error.URLError as error:
        if isinstance(error.reason, socket.gaierror):
            raise ConfigError("tracking.uri", "cannot be used: its host name does not resolve",
                              shown) from None
        if isinstance(error.reason, TimeoutError):
            raise _silent(spec) from None
        if isinstance(error.reason, ConnectionRefusedError):
            return "nothing listens there yet"
        if isinstance(error.reason, ssl.SSLError):  # it answers; MLflow's TLS settings decide
            return None
        raise ConfigError("tracking.uri", f"cannot be used: {error.reason}", shown) from None
    except TimeoutError:
        raise _silent(spec) from None
    except (ConnectionError, HTTPException) as error:  # a server going down as it answers
        return f"the connection failed ({error})"


def _silent(spec: TrackingSpec) -> ConfigError:
    return ConfigError("tracking.uri", f"cannot be used: the server took the connection but "
                       f"answered nothing for {spec.timeout_s:g} s (tracking.timeout_s)",
                       redact(spec.uri))

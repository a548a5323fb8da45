"""Credentials: never in MLflow, the console or log files; warned about where Hydra keeps them.

The logging filter and the warning, in this process. The end-to-end tests (real multiruns
against a real ``mlflow server``, a real job against one that checks passwords) are in
tests/system/test_secrets.py.
"""

from __future__ import annotations

import io
import logging

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf

from tests.conftest import compose_config
from wdexp import credentials
from wdexp.config import ROOT, parse_tracking

SECRET = "s3cret"
WARNING = "tracking.uri holds a password"


# --- the logging filter and the warning, in this process ----------------------------------------

def test_redacting_filter_hides_passwords_in_messages_arguments_and_tracebacks():
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(credentials.Redacting())
    logger = logging.getLogger("tests.test_secrets.redacting")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning(r"\t#0 : tracking.uri=http\://user\:%s@127.0.0.1\:5000 seed=0", SECRET)
        logger.warning("from %s", {"uri": f"postgresql://db:{SECRET}@10.0.0.1/mlflow"})
        try:
            raise RuntimeError(f"API request to http://user:{SECRET}@h:1/api failed")
        except RuntimeError:
            logger.exception("request failed")
        logger.warning("no password at %s, %d%% done", "http://user@h:1", 50)
    finally:
        logger.removeHandler(handler)
    lines = stream.getvalue().splitlines()
    assert SECRET not in stream.getvalue()
    assert lines[0] == r"\t#0 : tracking.uri=http\://user\:***@127.0.0.1\:5000 seed=0"
    assert lines[1] == "from {'uri': 'postgresql://db:***@10.0.0.1/mlflow'}"
    assert lines[2] == "request failed"
    assert "RuntimeError: API request to http://user:***@h:1/api failed" in lines
    assert lines[-1] == "no password at http://user@h:1, 50% done"


@pytest.fixture
def fresh_process(monkeypatch):
    """As in a new process: nothing warned yet, no Hydra run config."""
    monkeypatch.setattr(credentials, "_warned", False)
    monkeypatch.setattr(HydraConfig.instance(), "cfg", None)


@pytest.mark.parametrize(("uri", "advice"), [
    (f"http://user:{SECRET}@127.0.0.1:5000", "MLFLOW_TRACKING_USERNAME and "
                                              "MLFLOW_TRACKING_PASSWORD environment variables"),
    (f"postgresql://db:{SECRET}@10.0.0.1/mlflow", "PGPASSWORD or ~/.pgpass"),
])
def test_a_password_in_the_uri_is_warned_about_once_per_process(fresh_process, caplog, uri,
                                                                 advice):
    caplog.set_level(logging.WARNING, logger="wdexp")
    for _ in range(3):  # a sweep's callback, then each job in the same process
        parse_tracking(compose_config(f"tracking.uri={uri}"))
    (record,) = caplog.records
    assert record.name == "wdexp" and record.levelno == logging.WARNING
    message = record.getMessage()
    assert message.startswith(f"wdexp: {WARNING}") and "\n" not in message
    assert "Hydra writes the command line to its output files" in message and advice in message
    assert SECRET not in message


def test_no_warning_without_a_password_or_where_hydra_writes_no_files(fresh_process, caplog):
    caplog.set_level(logging.WARNING, logger="wdexp")
    parse_tracking(compose_config("tracking.uri=http://user@127.0.0.1:5000"))
    assert not caplog.records
    # python -m wdexp.report (hydra.output_subdir=null): its standard output is a CSV table
    with initialize_config_dir(version_base="1.3", config_dir=str(ROOT / "conf")):
        report = compose(config_name="report", return_hydra_config=True,
                         overrides=[f"tracking.uri=http://user:{SECRET}@127.0.0.1:5000"])
    HydraConfig.instance().set_config(report)
    parse_tracking(report)
    assert not caplog.records


def test_every_logging_handler_of_the_real_config_redacts():
    with initialize_config_dir(version_base="1.3", config_dir=str(ROOT / "conf")):
        cfg = compose(config_name="config", return_hydra_config=True)
    for group in ("hydra_logging", "job_logging"):
        logging_cfg = cfg.hydra[group]
        assert logging_cfg.filters.redact["()"] == "wdexp.credentials.Redacting"
        assert logging_cfg.handlers, group
        for name, handler in logging_cfg.handlers.items():
            assert "redact" in handler.filters, f"{group}.handlers.{name}"
    file_handler = OmegaConf.to_container(cfg.hydra.job_logging.handlers.file)  # unresolved
    assert file_handler["filename"] == "${hydra.runtime.output_dir}/${hydra.job.name}.log"

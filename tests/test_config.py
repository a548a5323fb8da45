"""Units of the config edge: credential redaction and flattening for MLflow params."""

from __future__ import annotations

import pytest

from wdexp.config import config_hash, flatten, redact


@pytest.mark.parametrize(("text", "expected"), [
    ("http://alice:s3cr:et@host:5000/path", "http://alice:***@host:5000/path"),
    ("https://u:p@mlflow.example.org", "https://u:***@mlflow.example.org"),
    ("tracking.uri=postgresql://db:pw@10.0.0.1/mlflow", "tracking.uri=postgresql://db:***@10.0.0.1/mlflow"),
    ("failed: http://a:b@h:1/api/2.0 and http://a:b@h:1/x", "failed: http://a:***@h:1/api/2.0 and http://a:***@h:1/x"),
    ("http://alice@host:5000", "http://alice@host:5000"),
    ("sqlite:////tmp/mlflow.db", "sqlite:////tmp/mlflow.db"),
    ("0.01", "0.01"),
])
def test_redact_hides_only_passwords(text, expected):
    assert redact(text) == expected


def test_flatten_gives_dotted_string_params():
    tree = {"optimizer": {"lr": 0.01, "betas": [0.9, 0.999]}, "model": {"init": None},
            "empty": {}, "seed": 0}
    assert flatten(tree) == {"optimizer.lr": "0.01", "optimizer.betas": "[0.9, 0.999]",
                             "model.init": "null", "empty": "{}", "seed": "0"}


def test_config_hash_ignores_where_a_job_runs_but_not_what_it_computes():
    base = {"optimizer": {"lr": 0.01, "weight_decay": 0}, "seed": 0,
            "tracking": {"uri": "sqlite:///a.db"}, "resume": False, "paths": {"root": "/a"}}
    moved = {**base, "tracking": {"uri": "http://h:5000"}, "resume": True, "paths": {"root": "/b"}}
    assert config_hash(base) == config_hash(moved)
    assert config_hash(base) == config_hash({**base, "optimizer": {"lr": 0.01,
                                                                   "weight_decay": 0.0}})
    assert config_hash(base) != config_hash({**base, "seed": 1})
    assert config_hash(base) != config_hash({**base, "optimizer": {"lr": 0.02,
                                                                   "weight_decay": 0}})

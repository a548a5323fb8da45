"""Units of the config edge: credential redaction and flattening for MLflow params."""

from __future__ import annotations

import pytest
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra._internal.grammar.utils import escape_special_characters
from hydra.core.override_parser.overrides_parser import OverridesParser

from wdexp.config import config_hash, flatten, redact


@pytest.mark.parametrize(("text", "expected"), [
    ("http://alice:s3cr:et@host:5000/path", "http://alice:***@host:5000/path"),
    ("https://u:p@mlflow.example.org", "https://u:***@mlflow.example.org"),
    ("tracking.uri=postgresql://db:pw@10.0.0.1/mlflow", "tracking.uri=postgresql://db:***@10.0.0.1/mlflow"),
    ("failed: http://a:b@h:1/api/2.0 and http://a:b@h:1/x", "failed: http://a:***@h:1/api/2.0 and http://a:***@h:1/x"),
    ("http://alice@host:5000", "http://alice@host:5000"),
    ("sqlite:////tmp/mlflow.db", "sqlite:////tmp/mlflow.db"),
    ("0.01", "0.01"),
    # as Hydra hands a job its overrides: ":" escaped as "\:"
    (r"tracking.uri=http\://user\:s3cret@127.0.0.1\:5000 epochs=5",
     r"tracking.uri=http\://user\:***@127.0.0.1\:5000 epochs=5"),
    (r"tracking.uri=postgresql\://db\:pw@10.0.0.1/mlflow",
     r"tracking.uri=postgresql\://db\:***@10.0.0.1/mlflow"),
    ("postgresql+psycopg2://db:pw@10.0.0.1:5432/mlflow",
     "postgresql+psycopg2://db:***@10.0.0.1:5432/mlflow"),
    ("mysql+pymysql://root:pw@db/mlflow", "mysql+pymysql://root:***@db/mlflow"),
    # every character RFC 3986 allows in a userinfo, percent-encoding included
    ("https://u:a1-._~!$&'()*+,;=:%40%2F@host/x", "https://u:***@host/x"),
    ("http://:token@host", "http://:***@host"),  # no user, only a password
    ("http://u:p@ss@host/x", "http://u:***@host/x"),  # an unencoded "@": hide up to the last
    ("[HYDRA] \t#0 : tracking.uri=http\\://u\\:pw@h\\:1 seed=0",
     "[HYDRA] \t#0 : tracking.uri=http\\://u\\:***@h\\:1 seed=0"),
    # no password: unchanged, escaped or not, whatever "@" or ":" come after the host
    (r"tracking.uri=http\://127.0.0.1\:5000", r"tracking.uri=http\://127.0.0.1\:5000"),
    (r"http\://alice@host\:5000", r"http\://alice@host\:5000"),
    ("http://host:5000/runs/a@b", "http://host:5000/runs/a@b"),
    ("https://host:8443?user=a@b", "https://host:8443?user=a@b"),
    ("http://user:@host", "http://user:@host"),
    ("file:///tmp/a:b@c", "file:///tmp/a:b@c"),
    ("user:pw@host", "user:pw@host"),  # not a URI
])
def test_redact_hides_only_passwords(text, expected):
    assert redact(text) == expected


# Passwords with characters legal in a URI's userinfo. Hydra's lexer takes some of them only in
# a quoted value (e.g. "!", "&", ";", "~", "'").
BARE = ["s3cret", "p:ss", "p=ss", "a,b(c)d", "p$*+-._x", "%40%2F%20"]
QUOTED = [*BARE, "p!$&'*+;~x"]


@pytest.mark.parametrize(("password", "quoted"), [*((p, False) for p in BARE),
                                                  *((p, True) for p in QUOTED)])
def test_redact_hides_passwords_in_the_overrides_hydra_hands_each_job(password, quoted):
    """Each job's overrides as Hydra's basic sweeper renders them (what launchers log and wdexp
    tags), for a fixed and a swept tracking.uri. A bare value needs its special characters
    escaped and is rendered escaped again (":" too); a quoted one is rendered as typed."""
    shown = password if quoted else escape_special_characters(password)

    def uri(host: str) -> str:
        return f'"http://user:{password}@{host}:5000"' if quoted else \
            f"http://user:{shown}@{host}:5000"

    for override, count in ((f"tracking.uri={uri('h1')}", 2),
                            (f"tracking.uri={uri('h1')},{uri('h2')}", 4)):
        parsed = OverridesParser.create().parse_overrides([override, "seed=0,1"])
        (jobs,) = BasicSweeper.split_arguments(parsed, None)
        assert len(jobs) == count
        for job in jobs:
            line = " ".join(job)
            assert shown in line
            assert redact(line) == line.replace(shown, "***"), line


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

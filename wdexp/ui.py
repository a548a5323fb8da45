"""``python -m wdexp.ui`` (``make ui``): MLflow's UI for the checkout's store, on loopback.

Prints the link that opens the experiment on its runs, in the saved "paired comparison" view
(see :mod:`wdexp.tracking.view`), then becomes ``mlflow ui`` for that store::

    python -m wdexp.ui                      # http://127.0.0.1:5000, ./mlflow.db, weight-decay
    python -m wdexp.ui --port 5001 --experiment other
"""

from __future__ import annotations

import argparse
import os
import sys

from wdexp.config import ROOT
from wdexp.tracking import view
from wdexp.tracking.store import connect
from wdexp.vocabulary import ConfigError, TrackingSpec

DEFAULT_STORE = f"sqlite:///{ROOT}/mlflow.db"


def experiment_id(store: str, experiment: str) -> str | None:
    """The experiment's id, or None where the store or the experiment does not exist yet (a
    reader's connect creates nothing)."""
    try:
        return connect(TrackingSpec(store, experiment), create=False).experiment_id
    except ConfigError:
        return None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="wdexp-ui", description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", default=DEFAULT_STORE, help="backend store URI")
    parser.add_argument("--experiment", default="weight-decay")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5000)
    args = parser.parse_args(argv)
    base = f"http://{args.host}:{args.port}"
    found = experiment_id(args.store, args.experiment)
    if found is None:
        print(f"wdexp: no experiment {args.experiment!r} in {args.store} yet (make run makes "
              f"one); the UI lists experiments at {view.link(base)}")
    else:
        print(f"wdexp: experiment {args.experiment!r} opens at {view.link(base, found)}")
    sys.stdout.flush()
    # MLflow's server-side job runner (a worker pool for its GenAI features) has nothing to do
    # for wdexp's experiments and would compete with training for the cores.
    os.environ.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
    os.execv(sys.executable, [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri",
                              args.store, "--host", args.host, "--port", str(args.port)])


if __name__ == "__main__":
    main()

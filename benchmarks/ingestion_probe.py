"""Metric ingestion throughput into a fresh sqlite MLflow store, in points per second.

Two paths log the same points (KEYS metrics x STEPS steps into one run), measured alternately in
one process, REPEAT times each, each into its own fresh store; medians are reported:
  direct  MlflowClient.log_batch in chunks of 1000 Metrics (MLflow's per-call limit)
  wdexp   wdexp's logging path: per-step records handed to its tracking process, as the
          training loop does, until the pair run is closed (into sqlite that is
          wdexp.tracking.ingest's direct writer, where MLflow's schema is a tested one)
Only the logging is timed (Metric construction and the final write included), not store
creation.
Usage: python benchmarks/ingestion_probe.py [--keys 6] [--steps 10000] [--repeat 5]; prints one
JSON line.
"""

import argparse
import json
import logging
import random
import statistics
import tempfile
import time
from pathlib import Path

from mlflow.entities import Metric
from mlflow.tracking import MlflowClient

BATCH = 1000  # MLflow's limit on metrics per log_batch call


def new_client(tmp_dir: Path) -> tuple[MlflowClient, str]:
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_dir}/mlflow.db")
    return client, client.create_experiment("ingest", artifact_location=str(tmp_dir / "art"))


def values(keys: list[str], steps: int) -> list[dict[str, float]]:
    rng = random.Random(0)
    return [{key: rng.random() for key in keys} for _ in range(steps)]


def ingest_direct(tmp_dir: Path, keys: list[str], steps: int) -> float:
    client, experiment_id = new_client(tmp_dir)
    run_id = client.create_run(experiment_id).info.run_id
    points = values(keys, steps)
    start = time.perf_counter()
    timestamp = int(time.time() * 1000)
    metrics = [Metric(key, value, timestamp, step)
               for step, row in enumerate(points) for key, value in row.items()]
    for i in range(0, len(metrics), BATCH):
        client.log_batch(run_id, metrics=metrics[i:i + BATCH])
    return time.perf_counter() - start


def ingest_wdexp(tmp_dir: Path, keys: list[str], steps: int) -> float:
    # The one place that knows wdexp's logging path, which may change: a pair run opened in the
    # tracking process (wdexp.tracking), fed one Step per epoch as the training loop does, and
    # closed, which waits until every point is in the store. One arm, so its points land in one
    # run like the direct path's.
    from wdexp.pair_runs import PairRun
    from wdexp.tracking import client
    from wdexp.tracking.records import RunSpec, Step
    from wdexp.vocabulary import TrackingSpec

    spec = TrackingSpec(f"sqlite:///{tmp_dir}/mlflow.db", "ingest", str(tmp_dir / "art"))
    client.get().connect(spec)  # one tracking process for every repetition, as in a multirun
    points = values(keys, steps)
    record = PairRun(spec, RunSpec("pair", {}), {"arm": RunSpec("arm", {})}, {})
    start = time.perf_counter()
    for step, row in enumerate(points):
        record.log_step(Step(step, {"arm": row}))
    record.send()
    record.tracker.close_pair(spec, record.pair_id, list(record.arm_ids.values()), "FINISHED")
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=6)
    parser.add_argument("--steps", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    logging.getLogger("mlflow").setLevel(logging.WARNING)  # store creation chatter, every rep
    keys = [f"m{i}" for i in range(args.keys)]
    times: dict[str, list[float]] = {"direct": [], "wdexp": []}
    for _ in range(args.repeat):
        for name, ingest in (("direct", ingest_direct), ("wdexp", ingest_wdexp)):
            with tempfile.TemporaryDirectory() as tmp:
                times[name].append(ingest(Path(tmp), keys, args.steps))
    n = args.keys * args.steps
    rate = {name: n / statistics.median(t) for name, t in times.items()}
    print(json.dumps({"points": n, "repeat": args.repeat,
                      "direct_points_per_s": round(rate["direct"]),
                      "wdexp_points_per_s": round(rate["wdexp"]),
                      "ratio": round(rate["wdexp"] / rate["direct"], 3)}))


if __name__ == "__main__":
    main()

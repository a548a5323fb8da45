"""``python -m tests.system.store_dump URI EXPERIMENT FOLDER``: a store read back through MLflow's
client as a user on another host reads it, printed as JSON: every run (status, tags, params,
the steps of each metric) and its artifacts, downloaded into FOLDER (through the server, for a
server that proxies them)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from mlflow.tracking import MlflowClient


def dump(uri: str, experiment: str, folder: Path) -> list[dict[str, object]]:
    client = MlflowClient(tracking_uri=uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return []
    runs = []
    for run in client.search_runs([found.experiment_id], max_results=10_000):
        run_id = run.info.run_id
        into = folder / run_id
        into.mkdir(parents=True)
        client.download_artifacts(run_id, "", str(into))
        runs.append({
            "run_id": run_id, "status": run.info.status, "tags": run.data.tags,
            "params": run.data.params, "artifact_uri": run.info.artifact_uri,
            "steps": {key: sorted(m.step for m in client.get_metric_history(run_id, key))
                      for key in run.data.metrics},
            "artifacts": sorted(str(p.relative_to(into)) for p in into.rglob("*")
                                if p.is_file()),
        })
    return runs


if __name__ == "__main__":
    uri, experiment, folder = sys.argv[1:]
    print(json.dumps(dump(uri, experiment, Path(folder))))

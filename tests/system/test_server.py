"""A job against a real MLflow tracking server on loopback."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import StoreReader, cli


def test_job_tracks_to_a_server_and_never_logs_its_credentials(tmp_path, mlflow_server):
    secret_uri = mlflow_server.replace("http://", "http://alice:hunter2@")
    result = cli(f"tracking.uri={secret_uri}", "epochs=5", tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "hunter2" not in result.stdout + result.stderr

    reader = StoreReader(mlflow_server)
    (pair,) = reader.runs("pair")
    arms = reader.arms(pair.info.run_id)
    assert set(arms) == {"baseline", "decay"}
    assert [s for s, _ in reader.history(arms["decay"].info.run_id, "loss")] == list(range(6))
    assert pair.data.params["tracking.uri"] == mlflow_server.replace("http://", "http://alice:***@")

    config = reader.client.download_artifacts(pair.info.run_id, "config.yaml", str(tmp_path))
    logged = [Path(config).read_text()]
    for run in [pair, *arms.values()]:
        logged += [*run.data.params.values(), *run.data.tags.values()]
    assert not [text for text in logged if "hunter2" in text]

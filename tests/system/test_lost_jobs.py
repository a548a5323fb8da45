"""One job's death costs one pair: a sweep's worker killed the way the out-of-memory killer
does it (SIGKILL), on the real launcher, process and store. The dead job's pair ends KILLED
with what it had written, every other job runs to its end, the sweep run ends FAILED counting
the lost pair, and the process exits non-zero with a line naming the lost job."""

from __future__ import annotations

import csv
import signal
import time

import psutil

from tests.conftest import StoreReader
from tests.jobs import start, training_metrics, wait_for
from wdexp.vocabulary import JOB, tag

EPOCHS = 3000


def _workers(pid: int, name: str) -> list[psutil.Process]:
    return [child for child in psutil.Process(pid).children(recursive=True)
            if name in " ".join(child.cmdline())]


def test_a_killed_joblib_worker_loses_its_own_pair_and_the_sweep_goes_on(tmp_path, store_uri):
    job = start(f"tracking.uri={store_uri}", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
                "optimizer.weight_decay=0.01,0.1,0.2", f"epochs={EPOCHS}", tmp_path=tmp_path,
                multirun=True)
    training_metrics(store_uri, job, pairs=2)  # two jobs train, the third waits for a worker
    victim = wait_for(lambda: _workers(job.pid, "LokyProcess"), "the joblib workers", job=job)[0]
    victim.send_signal(signal.SIGKILL)
    killed_at = time.monotonic()
    output, _ = job.finish(timeout=300)
    took = time.monotonic() - killed_at
    assert job.returncode == 1, output
    assert "Traceback" not in output, output

    reader = StoreReader(store_uri)
    (sweep,) = reader.runs("sweep")
    pairs = {int(p.data.tags[tag(JOB)]): p for p in reader.runs("pair")}
    assert sorted(pairs) == [0, 1, 2]  # the third job ran on the worker that replaced it
    (lost,) = [n for n, p in pairs.items() if p.info.status != "FINISHED"]
    lines = [line for line in output.splitlines() if " lost: " in line]
    assert lines and all(f"wdexp: job #{lost} (" in line for line in lines), output
    assert lines[0].endswith("lost: its worker process was killed by SIGKILL (the "
                             "out-of-memory killer's way)"), lines
    print(f"from the worker's death to the sweep's end: {took:.1f} s")

    assert pairs[lost].info.status == "KILLED"
    assert sweep.info.status == "FAILED"
    assert sweep.data.metrics["failed_pairs"] == 1 and sweep.data.metrics["pairs"] == 3
    summary = reader.client.download_artifacts(sweep.info.run_id, "summary.csv", str(tmp_path))
    with open(summary) as handle:
        statuses = sorted(row["status"] for row in csv.DictReader(handle))
    assert statuses == ["FINISHED", "FINISHED", "KILLED"]
    for number, pair in pairs.items():
        for arm in reader.arms(pair.info.run_id).values():
            steps = [step for step, _ in reader.history(arm.info.run_id, "loss")]
            if number == lost:  # what it wrote before it died, in order, none twice
                assert arm.info.status == "KILLED"
                assert steps == list(range(len(steps))) and steps
            else:
                assert arm.info.status == "FINISHED"
                assert steps == list(range(EPOCHS + 1))

"""A running job as a user watches it: its metrics reach the store while it goes on."""

from __future__ import annotations

import time

import pytest

from tests.jobs import start, training_metrics
from wdexp.config import ROOT
from wdexp.models import Quadratic

# Deadlines and timings: under pytest-xdist these run one at a time, on one worker.
pytestmark = pytest.mark.xdist_group("timing")


class SlowQuadratic(Quadratic):
    """A model whose every step takes a while, like a real network's epoch."""

    def loss(self):
        time.sleep(0.1)
        return super().loss()


def test_metrics_reach_the_store_within_two_seconds_while_a_run_goes_on(tmp_path, store_uri):
    # 8 values a step never fill a batch: only the tracking process's idle flush shows them.
    job = start(f"tracking.uri={store_uri}", "epochs=80",
                f"model._target_={__name__}.SlowQuadratic", tmp_path=tmp_path,
                env={"PYTHONPATH": str(ROOT)})
    reader = training_metrics(store_uri, job)
    (arm, _) = reader.runs("arm")
    lags, seen, statuses = [], 0, set()
    while job.poll() is None:
        points = reader.client.get_metric_history(arm.info.run_id, "loss")
        now = time.time()
        # Each point's timestamp is when training produced it: the lag is how long a user
        # watching the UI waits for it.
        lags += [now - p.timestamp / 1000 for p in points if p.step >= seen]
        seen = max([seen, *(p.step + 1 for p in points)])
        statuses.add(reader.client.get_run(arm.info.run_id).info.status)
        time.sleep(0.2)
    output, _ = job.finish(timeout=60)
    assert job.returncode == 0, output
    assert "RUNNING" in statuses and seen > 20  # polled while it ran, saw most of it live
    lags.sort()
    median, worst = lags[len(lags) // 2], lags[-1]
    assert median < 2.0 and worst < 3.5, f"median {median:.2f} s, max {worst:.2f} s"

"""Tracking: everything between a job's training loop and the MLflow store.

Two processes share a job. The **training process** (the one you started) owns the model; the
**tracking process** owns the store. Modules say which side they run on:

- both sides: ``records`` (run specs, steps, tag names), ``messages`` (the typed requests and
  what comes back), ``channel`` (the pipe between them);
- training process: ``client`` (starts the tracking process, turns requests into typed calls,
  never waits without a bound), ``pair`` (one pair run's life and its honest end status);
- tracking process: ``server`` (the request loop), ``watchdog`` (a bound on every store
  operation; failures as one line), ``runtree``
  (pair, arm and sweep runs; batched metrics; files; statuses), ``orphans`` (owners,
  heartbeats, and ending the runs of jobs that died), ``store`` (the MLflow store itself, which
  the readers in :mod:`wdexp.analysis` and :mod:`wdexp.report` open too).

Importing any of them starts nothing: a job starts its tracking process when it runs.
"""

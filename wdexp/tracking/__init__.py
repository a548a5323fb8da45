"""Tracking: everything between a job's training loop and the MLflow store.

Two processes share a job. The **training process** (the one you started) owns the model; the
**tracking process** owns the store. This package is the store side only: it imports MLflow and
the base layer (:mod:`wdexp.vocabulary`, :mod:`wdexp.signals`, :mod:`wdexp.credentials`), never
torch, Hydra or the application (names, params and figures are decided one layer up, in
:mod:`wdexp.pair_runs`). Modules say which side they run on:

- both sides: ``records`` (run specs and steps), ``messages`` (the typed requests and what
  comes back), ``channel`` (the pipe between them);
- training process: ``client`` (starts the tracking process, turns requests into typed calls,
  never waits without a bound);
- tracking process: ``server`` (the request loop), ``watchdog`` (a bound on every store
  operation; failures as one line), ``runtree`` (pair, arm and sweep runs; batched metrics;
  files; statuses), ``ingest`` (metric batches into sqlite past MLflow's ORM, or
  ``log_batch``), ``orphans`` (owners, heartbeats, and ending the runs of jobs that died),
  ``view`` (the experiment's default view in MLflow's UI), ``store`` (the MLflow store itself,
  which the readers in :mod:`wdexp.analysis` and :mod:`wdexp.report` open too).

Importing any of them starts nothing: a job starts its tracking process when it runs.
"""

"""wdexp's Hydra sweeper plugin: ``hydra/sweeper=optuna`` (see :mod:`wdexp.search`)."""

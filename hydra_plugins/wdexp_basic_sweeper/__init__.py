"""wdexp's Hydra sweeper plugin: ``hydra/sweeper=basic``, the grid, told once at its end (see
:func:`wdexp.lost_jobs.sweep_ended`)."""

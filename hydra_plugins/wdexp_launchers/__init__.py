"""wdexp's Hydra launcher plugin: ``hydra/launcher=joblib`` whose jobs outlive a dead worker
(see :mod:`wdexp.launch`)."""

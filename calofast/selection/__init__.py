"""Checkpoint selection: the named selection scores and the one selection of the best (seed,
epoch) of a stage (:mod:`.select`), and the scoring of hyperparameter scans (:mod:`.scan`)."""

"""Run directories over time: scanning them, series of checkpoints, the latest, the state file,
repair and the directory lock. May import formats/ and storage/ only (nothing else of ops/)."""

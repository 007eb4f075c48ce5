"""Training: jobs of one or more worker processes, checkpoints, restarts on failure."""

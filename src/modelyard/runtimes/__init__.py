"""Where work runs: one small interface, one folder per backend."""

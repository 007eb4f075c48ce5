"""Pipelines: Python-defined DAGs of tasks, their graph, and (soon) their run engine."""

"""NYC yellow-taxi example data: a seeded generator of trips in the TLC schema.

See ``examples/taxi/generate.py`` (run it with ``--help``).
"""

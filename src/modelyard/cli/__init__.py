"""The ``modelyard`` command line (Typer), one module per command group."""

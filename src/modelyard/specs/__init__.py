"""Typed, versioned specs: the contract between the API, the client, the CLI and services."""

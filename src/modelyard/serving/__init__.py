"""The model server: wire protocols (``protocol``) and, later, its routes and service."""

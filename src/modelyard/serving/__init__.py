"""The model server: wire formats, models, batching and the ASGI app."""

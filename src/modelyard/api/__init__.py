"""Control-plane HTTP API. Build it with ``create_app(settings)``."""

from modelyard.api.app import create_app

__all__ = ["create_app"]

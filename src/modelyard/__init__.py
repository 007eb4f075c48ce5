"""modelyard: a self-service ML platform, from a laptop to Kubernetes.

This module is the public SDK; everything else may change between releases.
"""

from modelyard._version import __version__
from modelyard.client import ModelyardClient
from modelyard.config import Settings
from modelyard.errors import (
    AuthenticationError,
    ConflictError,
    InvalidInputError,
    ModelyardError,
    NotFoundError,
    PermissionDeniedError,
)

__all__ = [
    "AuthenticationError",
    "ConflictError",
    "InvalidInputError",
    "ModelyardClient",
    "ModelyardError",
    "NotFoundError",
    "PermissionDeniedError",
    "Settings",
    "__version__",
]

"""The Python HTTP client of the control-plane API, shared by the CLI and the SDK."""

from modelyard.client.credentials import Credentials, load_credentials, save_credentials
from modelyard.client.http import ModelyardClient

__all__ = ["Credentials", "ModelyardClient", "load_credentials", "save_credentials"]

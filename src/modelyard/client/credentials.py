"""Where the CLI keeps the server address and token: a JSON file readable by its owner only.

``MODELYARD_URL`` and ``MODELYARD_TOKEN`` override the file; the file is
``$MODELYARD_CREDENTIALS`` or ``$XDG_CONFIG_HOME/modelyard/credentials.json``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

DEFAULT_URL = "http://127.0.0.1:8420"


@dataclass(frozen=True)
class Credentials:
    url: str
    token: str | None


def credentials_path() -> Path:
    explicit = os.environ.get("MODELYARD_CREDENTIALS")
    if explicit:
        return Path(explicit).expanduser()
    config_home = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return config_home / "modelyard" / "credentials.json"


def load_credentials() -> Credentials:
    stored: dict[str, str] = {}
    path = credentials_path()
    if path.is_file():
        loaded = json.loads(path.read_text())
        if isinstance(loaded, dict):
            stored = {k: str(v) for k, v in loaded.items() if isinstance(v, str)}
    return Credentials(
        url=os.environ.get("MODELYARD_URL") or stored.get("url") or DEFAULT_URL,
        token=os.environ.get("MODELYARD_TOKEN") or stored.get("token"),
    )


def save_credentials(credentials: Credentials) -> Path:
    """Write the file with mode 0600 (created so, never widened afterwards)."""
    path = credentials_path()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump({"url": credentials.url, "token": credentials.token}, handle)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)
    return path

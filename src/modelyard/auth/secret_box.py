"""Encryption at rest of project secrets with Fernet (AES-128-CBC + HMAC-SHA256).

Keys come from ``MODELYARD_SECRET_KEY`` (comma-separated, newest first) or from a key
file (one key a line, newest first) that ``modelyard init`` creates with mode 0600.
Several keys let a rotation proceed without a moment where a value cannot be read.
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from modelyard.config import Settings
from modelyard.errors import ConfigurationError


class SecretKeyMissingError(ConfigurationError):
    default_code = "secrets/key_missing"


class SecretBox:
    """Encrypts with the newest key, decrypts with any configured key."""

    def __init__(self, keys: list[bytes]) -> None:
        if not keys:
            raise SecretKeyMissingError("no secret key configured")
        try:
            self._fernet = MultiFernet([Fernet(key) for key in keys])
        except ValueError as exc:
            raise ConfigurationError(
                "the secret key is not a valid Fernet key (32 url-safe base64-encoded bytes)",
                code="secrets/key_invalid",
            ) from exc

    def encrypt(self, plaintext: str) -> bytes:
        return self._fernet.encrypt(plaintext.encode())

    def decrypt(self, ciphertext: bytes) -> str:
        try:
            return self._fernet.decrypt(ciphertext).decode()
        except InvalidToken as exc:
            raise ConfigurationError(
                "a secret could not be decrypted with the configured keys",
                code="secrets/key_mismatch",
            ) from exc

    def rotate(self, ciphertext: bytes) -> bytes:
        """Re-encrypt with the newest key (the value must decrypt with one of the keys)."""
        try:
            return self._fernet.rotate(ciphertext)
        except InvalidToken as exc:
            raise ConfigurationError(
                "a secret could not be decrypted during rotation", code="secrets/key_mismatch"
            ) from exc


def generate_key() -> bytes:
    return Fernet.generate_key()


def load_keys(settings: Settings) -> list[bytes]:
    """The configured keys, newest first; raises if none is configured."""
    if settings.secret_key is not None:
        keys = [k.strip() for k in settings.secret_key.get_secret_value().split(",")]
        return [k.encode() for k in keys if k]
    path = settings.resolved_secret_key_file
    if path.is_file():
        return [line.strip().encode() for line in path.read_text().splitlines() if line.strip()]
    raise SecretKeyMissingError(
        f"no secret key: set MODELYARD_SECRET_KEY or run 'modelyard init' to create {path}",
        details={"key_file": str(path)},
    )


def load_box(settings: Settings) -> SecretBox:
    return SecretBox(load_keys(settings))


def write_key_file(path: Path, keys: list[bytes]) -> None:
    """Write the key file atomically, readable by its owner only (mode 0600)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(b"\n".join(keys) + b"\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def ensure_key_file(settings: Settings) -> bool:
    """Create the key file if no key is configured; return whether one was created."""
    if settings.secret_key is not None or settings.resolved_secret_key_file.exists():
        return False
    write_key_file(settings.resolved_secret_key_file, [generate_key()])
    return True

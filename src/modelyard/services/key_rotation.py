"""Re-encrypt every stored secret under a new key, with no moment where a value is unreadable.

With a key file: under the secret key lock, the new key is added in front of the old
ones and every value is re-encrypted in one transaction; after it commits the old keys
are dropped from the file. A crash at any step leaves a key file that still decrypts
every stored value, and a secret written concurrently waits for the lock, then uses the
new key.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.orm import Session, sessionmaker

from modelyard.auth.secret_box import SecretBox, generate_key, load_keys, write_key_file
from modelyard.config import Settings
from modelyard.store.db import transaction
from modelyard.store.models import AuditEvent
from modelyard.store.repositories import SecretKeyLockRepository, SecretRepository


@dataclass(frozen=True)
class RotationResult:
    rotated: int
    new_key: str
    key_file_written: bool


def rotate_secret_key(
    settings: Settings, factory: sessionmaker[Session], new_key: bytes | None = None
) -> RotationResult:
    """Re-encrypt all secrets with ``new_key`` (generated when omitted).

    When the key comes from ``MODELYARD_SECRET_KEY`` the environment cannot be rewritten:
    the caller must set the returned key there before the next start.
    """
    key = new_key or generate_key()
    key_file = settings.resolved_secret_key_file
    from_file = settings.secret_key is None
    with transaction(factory) as session:
        # Secret writes take this lock before they read the keys, so none can slip a
        # value encrypted under an old key in between the re-encryption and the drop.
        SecretKeyLockRepository(session).acquire()
        old_keys = load_keys(settings)
        box = SecretBox([key, *old_keys])
        if from_file:
            write_key_file(key_file, [key, *old_keys])
        secrets = SecretRepository(session).all_for_update()
        for secret in secrets:
            secret.ciphertext = box.rotate(secret.ciphertext)
        session.add(
            AuditEvent(
                actor="local",
                action="secret.rotate_key",
                resource_type="secret",
                resource_name=None,
                client_ip="local",
                user_agent="modelyard secrets rotate-key",
                details={"rotated": len(secrets)},
            )
        )
    if from_file:
        write_key_file(key_file, [key])
    return RotationResult(rotated=len(secrets), new_key=key.decode(), key_file_written=from_file)

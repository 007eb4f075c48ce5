"""Identifiers that sort by creation time, so keyset pagination follows insertion order."""

from __future__ import annotations

import secrets
import time


def new_id() -> str:
    """A 28-character lowercase hex id: microseconds since the epoch, then 64 random bits."""
    return f"{time.time_ns() // 1000:012x}{secrets.token_hex(8)}"

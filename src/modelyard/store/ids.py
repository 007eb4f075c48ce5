"""Identifiers that sort by creation time, so keyset pagination follows insertion order."""

from __future__ import annotations

import secrets
import threading
import time

_lock = threading.Lock()
_last_micros = 0


def new_id() -> str:
    """A 29-character lowercase hex id: microseconds since the epoch, then 64 random bits.

    Within a process ids strictly increase, even for calls in the same microsecond or
    across a backwards step of the wall clock.
    """
    global _last_micros
    with _lock:
        _last_micros = max(time.time_ns() // 1000, _last_micros + 1)
        micros = _last_micros
    return f"{micros:013x}{secrets.token_hex(8)}"

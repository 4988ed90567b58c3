"""Identifiers: time-ordered task ids and unguessable lease ids."""

from __future__ import annotations

import random
import secrets
import threading
import time

_lock = threading.Lock()
_last_ms = 0
_counter = 0


def new_task_id() -> str:
    """A 32-hex-digit id that sorts by creation time (UUIDv7-like).

    48 bits of milliseconds, a 16-bit counter that keeps ids minted in the same millisecond
    in order, then 64 random bits. Time-ordered ids keep inserts at the right edge of every
    index, which is worth 2-3x on SQLite over random ids.
    """
    global _last_ms, _counter
    now_ms = time.time_ns() // 1_000_000
    with _lock:
        if now_ms > _last_ms:
            _last_ms = now_ms
            _counter = random.getrandbits(12)
        else:
            _counter += 1
            if _counter > 0xFFFF:  # more than 65k ids in one ms: borrow the next ms
                _last_ms += 1
                _counter = 0
        ms, counter = _last_ms, _counter
    return "%032x" % (ms << 80 | counter << 64 | random.getrandbits(64))


LEASE_ID_LENGTH = 32


def new_lease_id() -> str:
    """A fencing token: unguessable, so a worker cannot settle another worker's lease."""
    return secrets.token_hex(LEASE_ID_LENGTH // 2)


def new_lease_ids(count: int) -> str:
    """`count` lease ids as `new_lease_id` makes them, concatenated, from one draw."""
    return secrets.token_hex(count * LEASE_ID_LENGTH // 2)

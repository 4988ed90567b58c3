"""Callbacks: what is POSTed when a task ends, how it is signed, and where it may go."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import random
from typing import Any

import msgspec

from conveyor.domain.tasks import Task

SIGNATURE_HEADER = "X-Conveyor-Signature"
TIMESTAMP_HEADER = "X-Conveyor-Timestamp"
RETRY_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})
MAX_RETRY_DELAY_S = 60.0


def payload(task: Task) -> bytes:
    """The JSON body of a task's callback."""
    body: dict[str, Any] = {
        "object": "task.callback",
        "task_id": task.task_id,
        "queue": task.queue,
        "status": task.status,
        "result": task.result,
        "error": task.error,
        "custom_id": task.custom_id,
        "batch_id": task.batch_id,
        "metadata": task.metadata,
        "attempts": task.attempts,
        "completed_at": task.completed_at,
    }
    return msgspec.json.encode(body)


def signature(secret: bytes, timestamp: int, body: bytes) -> str:
    """HMAC-SHA256 over `"{timestamp}." + body`, as `v1=<hex>`.

    A receiver recomputes it with the shared secret and refuses stale timestamps, so a
    captured callback cannot be replayed later.
    """
    mac = hmac.new(secret, b"%d." % timestamp + body, hashlib.sha256)
    return "v1=" + mac.hexdigest()


def is_public(address: str) -> bool:
    """False for loopback, private, link-local, multicast, reserved or unspecified addresses."""
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


def retry_delay_s(
    attempt: int, retry_after_s: float | None, rng: random.Random | None = None
) -> float:
    """How long to wait before delivery attempt `attempt + 1`: the server's word, else backoff."""
    if retry_after_s is not None:
        return min(max(retry_after_s, 0.0), MAX_RETRY_DELAY_S * 5)
    base = min(MAX_RETRY_DELAY_S, 2.0 ** (attempt - 1))
    return base * (0.5 + 0.5 * (rng or random).random())

"""Callback rules: signatures, which addresses are public, retry delays."""

from __future__ import annotations

import hashlib
import hmac
import random

import pytest

from conveyor.domain.callbacks import MAX_RETRY_DELAY_S, is_public, retry_delay_s, signature


def test_signature_is_hmac_sha256_over_timestamp_and_body() -> None:
    expected = hmac.new(b"k", b"1700000000.{}", hashlib.sha256).hexdigest()
    assert signature(b"k", 1_700_000_000, b"{}") == f"v1={expected}"
    assert signature(b"k", 1_700_000_001, b"{}") != signature(b"k", 1_700_000_000, b"{}")


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "10.0.0.1",
        "172.16.5.4",
        "192.168.1.1",
        "169.254.169.254",
        "::1",
        "fe80::1",
        "0.0.0.0",
        "::ffff:127.0.0.1",
        "224.0.0.1",
    ],
)
def test_non_public_addresses(address: str) -> None:
    assert not is_public(address)


@pytest.mark.parametrize(
    "address", ["93.184.216.34", "2606:2800:220:1:248:1893:25c8:1946", "8.8.8.8"]
)
def test_public_addresses(address: str) -> None:
    assert is_public(address)


def test_retry_delay_grows_is_capped_and_honours_retry_after() -> None:
    rng = random.Random(1)
    delays = [retry_delay_s(attempt, None, rng) for attempt in range(1, 12)]
    assert all(0 < d <= MAX_RETRY_DELAY_S for d in delays)
    assert delays[-1] > delays[0]
    assert retry_delay_s(3, 7.0) == 7.0
    assert retry_delay_s(3, -1.0) == 0.0

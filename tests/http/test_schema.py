"""A short schemathesis run over /openapi.json: no request makes the server fail (5xx)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")


@pytest.mark.slow
def test_generated_requests_never_make_a_server_error(server: str) -> None:
    if not SCHEMATHESIS.exists():
        pytest.fail("schemathesis is not installed: run `make test`, which installs the dev extras")
    run = subprocess.run(
        [
            str(SCHEMATHESIS),
            "run",
            f"{server}/openapi.json",
            "--checks",
            "not_a_server_error",
            "--max-examples",
            "10",
            "--request-timeout",
            "10",
            "--seed",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]

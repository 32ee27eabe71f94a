"""The README's demo (`stream-app demo`) prints the cells' counts from a real broker."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration


def test_demo_prints_counts_and_dead_letters(bootstrap: str) -> None:
    exe = Path(sys.executable).with_name("stream-app")
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": bootstrap}
    result = subprocess.run(
        [str(exe), "demo"], env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    for line in ("alice  count = 10", "bob    count = 15", "carol  count = 7", "erin   count = 4"):
        assert line in out, out
    assert "dave   dead (reset: key deleted)" in out
    for reason in ("schema", "malformed-json", "unknown-type"):
        assert f"    {reason}" in out, out
    assert "demo done: worker stopped" in out

"""Runs the crash-safety harness (tests/crash_harness.py) in full: every step boundary + 300 random kills.

Many kills land while a smoke test child runs; the harness checks that the child dies with its parent and
that no version is behind the active link before its staged smoke test passed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

HARNESS = Path(__file__).resolve().parents[1] / "crash_harness.py"


@pytest.mark.slow
def test_sigkill_at_every_step_and_300_random_moments_leaves_a_valid_model() -> None:
    # every install runs two smoke test children now (~0.2 s each on an idle machine): a generous bound
    proc = subprocess.run([sys.executable, str(HARNESS), "--random", "300", "--json"],
                          capture_output=True, text=True, timeout=2400, check=False)
    report = json.loads(proc.stdout)
    print(json.dumps(report["total"]))
    assert report["violation_details"] == []
    assert proc.returncode == 0
    assert report["total"]["random_moments"] >= 300
    # every instrumented boundary of every scenario was hit by a kill
    for sc in report["scenarios"]:
        assert sc["boundaries"] > 0
        assert sc["boundary_kills"] == sc["boundaries"], sc
    # most random moments must land mid-operation, or the random part proves little
    assert report["total"]["random_kills"] >= 200
    # and many kills during a smoke test: the parent died mid-test, its child with it (R1)
    assert report["total"]["killed_during_smoke_test"] >= 20

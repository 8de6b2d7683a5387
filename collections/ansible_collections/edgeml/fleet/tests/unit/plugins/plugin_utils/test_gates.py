# Copyright (c) edgeml maintainers
# SPDX-License-Identifier: Apache-2.0
"""The wave gate's exact comparisons, at each threshold and one step beyond (ansible-test units)."""

from __future__ import annotations

from fractions import Fraction

import pytest

from ansible_collections.edgeml.fleet.plugins.plugin_utils.gates import exact, host_failure


def installed(**measures):
    model = {"status": "installed", "smoke_passed": True}
    model.update(measures)
    return {"ok": True, "models": {"m": model}}


def test_exact_takes_the_written_decimal():
    assert exact(0.1) == Fraction(1, 10)
    assert exact("1.0") - exact(0.98) == Fraction(2, 100)
    for bad in (True, float("nan"), float("inf"), "x", None, "1e999999"):
        with pytest.raises(ValueError):
            exact(bad)


@pytest.mark.parametrize(("p95", "fails"), [(50, False), (50.0, False), (50.001, True), ("50.0000001", True)])
def test_p95_limit_is_inclusive(p95, fails):
    why = host_failure(installed(p95_ms=p95), {"max_p95_latency_ms": 50})
    assert (why is not None) is fails, why


@pytest.mark.parametrize(("new", "fails"), [(0.98, False), (0.9799, True)])
def test_error_rate_increase_exact_at_the_limit(new, fails):
    # 1.0 - 0.98 is exactly 0.02 (in floats it is 0.020000000000000018, which would fail)
    why = host_failure(installed(label_agreement=new, previous_label_agreement=1.0),
                       {"max_error_rate_increase": 0.02})
    assert (why is not None) is fails, why


def test_unknown_is_never_healthy():
    assert host_failure(None, {}) is not None
    assert "no smoke p95" in host_failure(installed(), {"max_p95_latency_ms": 50})
    assert "no mean confidence" in host_failure(installed(), {"min_mean_confidence": 0.5})
    assert "no smoke test result" in host_failure(
        {"ok": True, "models": {"m": {"status": "installed"}}}, {})


def test_unchanged_devices_are_not_gated_again():
    result = {"ok": True, "models": {"m": {"status": "unchanged"}}}
    assert host_failure(result, {"max_p95_latency_ms": 1}) is None

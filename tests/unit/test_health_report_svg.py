"""The dashboard's charts (pygal): static, self-contained SVG with device-reported text as escaped text only."""

from __future__ import annotations

import re
from typing import Any

import pytest

pytest.importorskip("pygal", reason="pygal is not installed (pip extra reports)")

from edge_runtime import health_report

HOSTILE = "</script><script>alert(1)</script>-->$\\bad{$<b>&amp;"


def report(version: str = "1.0.0", device: str = "dev-1") -> dict[str, Any]:
    series = [[1_800_000_000 + 60 * i, 10, 0.9, 2.0 + i] for i in range(5)]
    return {
        "run_id": "r1", "failed": False, "total": 1, "breaches": [], "unreachable": [],
        "counts": {"in_sync": 1, "out_of_sync": 0, "degraded": 0, "rolled_back": 0, "unknown": 0},
        "versions": {"line_a": {"m": {version: 1}}},
        "devices": [{"device": device, "group": "line_a", "status": "in_sync", "reasons": [],
                     "models": [{"model": "m", "telemetry": {"p95_latency_ms": 3.0, "mean_confidence": 0.9,
                                                             "series": series}}],
                     "drift": [{"model": "m",
                                "features": [{"feature": "pixel_mean", "psi": 0.3, "verdict": "drift"}]}]}],
    }


TREND = {"runs": [{"at": f"2026-12-03T06:0{i}:00Z", "in_sync": 1, "out_of_sync": 0, "degraded": 0,
                   "rolled_back": 0, "unknown": 0} for i in range(3)], "devices": {}}
DEPLOY = {"kind": "deploy", "at": "2026-12-03T05:59:00Z", "data": {"counts": {"installed": 3}, "halted": {}}}


def test_every_chart_is_one_static_svg_with_a_stable_id() -> None:
    charts = health_report._charts(report(), TREND, DEPLOY)
    assert list(charts) == ["versions", "status", "trend", "latency", "confidence", "drift", "gates"]
    for key, svg in charts.items():
        assert svg.startswith("<svg"), key
        assert svg.count("<svg") == 1, key
        assert "<script" not in svg, key
        assert "<!--" not in svg, key
        assert f'id="edge-chart-{key}"' in svg, key
        assert not re.search(r"chart-[0-9a-f]{8}-", svg), key  # pygal's random id is gone, also from its CSS
    # the same data draws the same file
    assert health_report._charts(report(), TREND, DEPLOY) == charts
    assert charts["latency"].count('class="line') >= 1
    assert "no telemetry" not in charts["latency"]


def test_device_reported_text_is_escaped_text_never_markup() -> None:
    page = health_report.html_report(report(version=HOSTILE, device=HOSTILE), TREND, DEPLOY)
    assert "<script" not in page
    assert "<b>" not in page
    assert "&lt;/script&gt;&lt;script&gt;alert(1)" in page  # still shown, as text
    assert "$\\bad{$" in page  # no mathtext: drawn as it is


def test_empty_inputs_draw_charts_that_say_why() -> None:
    empty = report()
    empty["devices"], empty["versions"] = [], {}
    charts = health_report._charts(empty, {"runs": [], "devices": {}}, None)
    assert "no telemetry in the window" in charts["latency"]
    assert "no drift evaluation reported" in charts["drift"]
    assert "no deploy in the history" in charts["gates"]
    assert "no earlier health run in the history" in charts["trend"]

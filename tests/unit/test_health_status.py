"""The fleet health decision (plugin_utils/health.py): each status from its rule, thresholds exactly at the limit
and one step beyond, the limits of models.yaml, and the report against its JSON Schema."""

from __future__ import annotations

import copy
import json
import math
import re
import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "collections"))

from ansible_collections.edgeml.fleet.plugins.plugin_utils import health

from tests.support.health_fleet import (
    NOW,
    RUN_ID,
    plan_entry,
    snapshot,
    summary,
    synthetic_fleet,
    twin_model,
)

REPO = Path(__file__).resolve().parents[2]
POL = health.policy({})
ENTRY = plan_entry("line_a", "1.1.0")


def status(snap: dict[str, Any] | None, pol: dict[str, Any] | None = None,
           entry: dict[str, Any] | None = None) -> dict[str, Any]:
    return health.device_status(entry or ENTRY, snap, pol or POL)


def good(**kw: Any) -> dict[str, Any]:
    return snapshot({"defect-classifier": twin_model("1.1.0")},
                    tel={"defect-classifier": summary("1.1.0", NOW - 60)}, **kw)


def test_a_fresh_device_at_its_pin_is_in_sync() -> None:
    assert status(good()) == {"status": "in_sync", "reasons": []}


def test_no_answer_is_unknown_never_healthy() -> None:
    assert status(None) == {"status": "unknown", "reasons": ["no answer from this device in this run"]}
    assert status({"run_id": RUN_ID})["status"] == "unknown"  # no facts: not an answer


@pytest.mark.parametrize(("age", "expected"), [(900, "in_sync"), (901, "unknown"), (0, "in_sync"),
                                               (-60, "in_sync"), (-61, "unknown")])
def test_telemetry_ttl_exactly_and_one_second_beyond(age: int, expected: str) -> None:
    assert POL["telemetry_ttl_s"] == 900
    got = status(good(newest=NOW - age))
    assert got["status"] == expected, got


@pytest.mark.parametrize(("skew", "expected"), [(300, "in_sync"), (301, "unknown"), (-300, "in_sync"),
                                                (-301, "unknown"), (0, "in_sync")])
def test_device_clock_against_the_controllers_exactly_and_one_second_beyond(skew: int, expected: str) -> None:
    """A device clock that stopped (or jumped) stamps old telemetry as fresh: the controller's clock at the
    answer (set by the action plugin) is compared with the device's, ``max_clock_skew_s`` (default 300)."""
    assert POL["max_clock_skew_s"] == 300
    snap = good()
    snap["controller_received_s"] = NOW - skew  # the device's collected_at_s is NOW
    got = status(snap)
    assert got["status"] == expected, got
    if expected == "unknown":
        side = "ahead of" if skew > 0 else "behind"
        assert got["reasons"] == [f"the device's clock is {abs(skew)} s {side} the controller's (limit 300 s): "
                                  "its telemetry's age cannot be judged; fix the device's time (NTP)"]
    # a device whose clock stopped an hour ago reports telemetry "60 s old" by its own clock: not believed
    frozen = good()
    frozen["controller_received_s"] = NOW + 3600
    assert status(frozen)["status"] == "unknown"
    # also when the fleet does not require telemetry: every time the device reports is in doubt
    assert status(frozen, {**POL, "require_telemetry": False})["status"] == "unknown"


def test_clock_skew_is_reported_per_device() -> None:
    snap = good()
    snap["controller_received_s"] = NOW - 12.34
    report = health.fleet_health({"hosts": {"dev-1": ENTRY}}, {"dev-1": snap}, RUN_ID)
    assert report["devices"][0]["clock_skew_s"] == 12.3
    assert report["devices"][0]["status"] == "in_sync"
    no_stamp = health.fleet_health({"hosts": {"dev-1": ENTRY}}, {"dev-1": good()}, RUN_ID)
    assert no_stamp["devices"][0]["clock_skew_s"] is None  # not collected through health.yml: not checked


def test_no_telemetry_is_unknown_unless_the_fleet_says_telemetry_is_not_required() -> None:
    snap = good(newest=None)
    assert status(snap)["reasons"] == ["no telemetry recorded (no inference seen)"]
    assert status(snap, {**POL, "require_telemetry": False})["status"] == "in_sync"
    # stale telemetry is still unknown when telemetry is optional: a device that stopped recording
    assert status(good(newest=NOW - 5000), {**POL, "require_telemetry": False})["status"] == "unknown"


def test_an_unreadable_store_is_unknown() -> None:
    snap = good()
    snap["telemetry"]["error"] = "telemetry database x cannot be read (corrupt)"
    assert status(snap)["status"] == "unknown"


def test_self_rollback_is_rolled_back_with_its_reason() -> None:
    snap = snapshot({"defect-classifier": twin_model(
        "1.0.0", bad_versions=["1.1.0"], last_op="self_rollback", last_version="1.1.0", last_result="rolled_back",
        last_reason="mean confidence 0.52 < 0.75 for 5 consecutive minutes")})
    got = status(snap)
    assert got["status"] == "rolled_back"
    assert got["reasons"][0] == ("defect-classifier 1.1.0 rolled back (self_rollback): mean confidence 0.52 < 0.75 "
                                 "for 5 consecutive minutes")
    # the deploy's notion agrees it is not in sync: listed too
    assert any("quarantined" in r for r in got["reasons"][1:])


def test_a_quarantined_pin_without_a_rollback_record_is_rolled_back_with_the_quarantine_reason() -> None:
    snap = snapshot({"defect-classifier": twin_model("1.0.0", bad_versions=["1.1.0"])},
                    quarantine={"defect-classifier": {"1.1.0": "smoke test failed: label agreement 0.5"}})
    assert status(snap)["reasons"][0] == ("defect-classifier 1.1.0 is quarantined on the device: smoke test failed: "
                                          "label agreement 0.5")


@pytest.mark.parametrize("finding", ["breach", "drift", "cannot_roll_back"])
def test_monitor_findings_of_the_active_version_degrade(finding: str) -> None:
    mon = {"models": {"defect-classifier": {"version": "1.1.0", "findings": [
        {"rule": "confidence", "status": finding, "action": "report", "message": "numbers"}]}}}
    assert status(good(monitor=mon))["status"] == "degraded"
    mon["models"]["defect-classifier"]["version"] = "1.0.0"  # about a version no longer active: history
    assert status(good(monitor=mon))["status"] == "in_sync"
    ok = {"models": {"defect-classifier": {"version": "1.1.0", "findings": [
        {"rule": "confidence", "status": "insufficient_data", "action": "none", "message": "too few"}]}}}
    assert status(good(monitor=ok))["status"] == "in_sync"


def test_degraded_or_corrupt_state_and_store_errors_degrade() -> None:
    snap = good()
    snap["facts"]["models"]["defect-classifier"]["state"] = "degraded"
    snap["facts"]["models"]["defect-classifier"]["degraded_reason"] = "kept 1.0.0 no longer verifies"
    assert status(snap)["status"] == "degraded"
    snap = good(telemetry_state="error")
    assert status(snap)["status"] == "degraded"


def test_out_of_sync_is_the_deploys_own_decision() -> None:
    old = snapshot({"defect-classifier": twin_model("1.0.0")})
    assert status(old) == {"status": "out_of_sync",
                           "reasons": [status(old)["reasons"][0]]}
    unchecked = snapshot({"defect-classifier": twin_model("1.1.0", checked=False)})
    assert status(unchecked)["reasons"] == ["defect-classifier 1.1.0: no passed post-install check recorded"]
    other_build = good()
    other_build["facts"]["models"]["defect-classifier"]["digest"] = "sha256:" + "c" * 64
    assert status(other_build)["status"] == "out_of_sync"


def test_precedence_unknown_before_rolled_back_before_degraded_and_every_reason_kept() -> None:
    snap = snapshot({"defect-classifier": twin_model("1.0.0", bad_versions=["1.1.0"])}, newest=NOW - 5000,
                    telemetry_state="error")
    got = status(snap)
    assert got["status"] == "unknown"
    assert len(got["reasons"]) == 4  # stale, quarantined, store error, not in sync


@pytest.mark.parametrize(("limit", "total", "allowed"), [(0, 7, 0), (2, 7, 2), ("0%", 7, 0), ("15%", 7, 1),
                                                         ("14%", 7, 0), ("100%", 7, 7), ("50%", 10, 5)])
def test_limit_counts(limit: int | str, total: int, allowed: int) -> None:
    assert health.limit_count(limit, total) == allowed


def test_limits_are_exceeded_strictly_above() -> None:
    pol = {**POL, "max_unknown": 2}
    counts = {"unknown": 2, "rolled_back": 0, "degraded": 0, "out_of_sync": 0}
    assert health.exceeded(counts, 10, pol) == []
    [b] = health.exceeded({**counts, "unknown": 3}, 10, pol)
    assert b["message"] == "3 of 10 devices unknown, more than max_unknown 2 allows (2)"
    assert health.exceeded({**counts, "unknown": 0, "out_of_sync": 10}, 10, POL) == []  # default 100%: a rollout


def test_policy_takes_models_yaml_over_defaults() -> None:
    pol = health.policy({"health": {"telemetry_ttl_s": 120, "max_degraded": "5%"}})
    assert (pol["telemetry_ttl_s"], pol["max_degraded"], pol["max_unknown"]) == (120, "5%", 0)


def test_fleet_report_of_a_mixed_fleet_is_valid_against_its_schema() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    plan, snaps = synthetic_fleet(300, seed=3)
    report = health.fleet_health(plan, snaps, RUN_ID)
    report.update(generated_at="2026-12-03T06:00:00Z", check_mode=False)
    schema = json.loads((REPO / "schemas" / "health-report.schema.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.Draft202012Validator(schema).validate(json.loads(json.dumps(report)))
    assert set(report["counts"]) == set(health.STATUSES)
    assert all(report["counts"][s] > 0 for s in health.STATUSES), report["counts"]
    assert sum(report["counts"].values()) == report["total"] == 300
    assert report["unreachable"] == [d["device"] for d in report["devices"] if not d["answered"]]
    assert report["failed"]
    broken = copy.deepcopy(report)
    broken["devices"][0]["status"] = "healthy"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft202012Validator(schema).validate(broken)


def test_markdown_puts_what_is_wrong_first_and_stays_comment_sized() -> None:
    from edge_runtime.health_report import MD_MAX_BYTES, markdown

    plan, snaps = synthetic_fleet(3000, seed=4)
    report = health.fleet_health(plan, snaps, RUN_ID)
    md = markdown(report)
    assert len(md.encode()) <= MD_MAX_BYTES
    lines = md.splitlines()
    assert lines[0] == f"# Fleet health {RUN_ID}: FAILED"
    assert lines[4].startswith("- **limit exceeded**: ")
    first_unknown = next(i for i, line in enumerate(lines) if "**unknown**" in line)
    first_degraded = next(i for i, line in enumerate(lines) if "**degraded**" in line)
    assert first_unknown < first_degraded < lines.index("## Versions per group")
    assert "cut at 60 kB" in md


def _set(snap: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    *parents, last = path.split("/")
    t = snap
    for k in parents:
        t = t[k]
    t[last] = value
    return snap


def _checked_report(snap: dict[str, Any]) -> dict[str, Any]:
    """The fleet report of one device with ``snap``, which must serialise as strict JSON and fit the schema."""
    jsonschema = pytest.importorskip("jsonschema")
    report = health.fleet_health({"hosts": {"dev-1": ENTRY}}, {"dev-1": snap}, RUN_ID)
    report.update(generated_at="2026-12-03T06:00:00Z", check_mode=False)
    text = json.dumps(report, allow_nan=False)  # what write_reports writes
    schema = json.loads((REPO / "schemas" / "health-report.schema.json").read_text())
    jsonschema.Draft202012Validator(schema).validate(json.loads(text))
    return report


M = "facts/models/defect-classifier"


@pytest.mark.parametrize(("path", "value"), [
    (f"{M}/bad_versions", 5), (f"{M}/bad_versions", "1.1.0-rc1"), (f"{M}/corrupt_versions", 7),
    (f"{M}/active_version", ["1.1.0"]), (f"{M}/state", {"x": 1}), (f"{M}/kept_digests", "x"),
    ("facts/models", ["defect-classifier"]), ("facts/monitor", {"models": []}),
    ("facts/monitor", {"models": {"defect-classifier": {"version": "1.1.0", "findings": 3}}}),
    ("quarantine", "x"), ("quarantine", {"defect-classifier": ["1.1.0"]}), ("telemetry/models", [1]),
])
def test_a_snapshot_of_the_wrong_shape_is_unknown_and_never_breaks_the_fleets_report(path: str, value: Any) -> None:
    """A device is hostile input: a field of the wrong type is neither a crash of every device's report nor
    misread (``"1.1.0" in "1.1.0-rc1"``); the device is unknown, naming the field."""
    got = _checked_report(_set(good(), path, value))
    [dev] = got["devices"]
    assert dev["status"] == "unknown", dev
    assert dev["reasons"][0].startswith("malformed answer: "), dev["reasons"]


@pytest.mark.parametrize(("path", "value", "status"), [
    ("telemetry/models/defect-classifier/1.1.0/mean_confidence", math.nan, "in_sync"),
    ("telemetry/models/defect-classifier/1.1.0/p95_latency_ms", math.inf, "in_sync"),
    ("telemetry/models/defect-classifier/1.1.0/inferences", -5, "in_sync"),
    ("telemetry/models/defect-classifier/1.1.0/series",
     [[math.nan, 1, 0.5, 1.0], "x", [1e300, 1, 0.5, 1.0], [NOW - 60, 1, math.inf, -math.inf], [1, 2]], "in_sync"),
    ("facts/system/temperature_c", math.nan, "in_sync"),
    ("facts/system/load_avg", [math.inf, -math.inf, 1e308 * 10], "in_sync"),
    ("telemetry/newest_minute", math.nan, "unknown"),
    ("telemetry/newest_minute", -1e308, "unknown"),
    ("collected_at_s", math.inf, "unknown"),
    ("drift", {"defect-classifier": {"version": "1.1.0", "verdict": "drift",
                                     "features": [{"feature": "pixel_mean", "psi": math.nan}, 5]}}, "in_sync"),
])
def test_nan_infinite_and_out_of_range_numbers_of_a_device_never_reach_the_report(path: str, value: Any,
                                                                                  status: str) -> None:
    """NaN or an infinity (a failing sensor, a broken runtime, a hostile device) made the strict JSON writer of
    the whole fleet's report raise; each is null in the report now, and a clock that cannot be read is unknown."""
    snap = good()
    snap["collected_at_s"] = 1e308 if path == "telemetry/newest_minute" and value == -1e308 else NOW
    [dev] = _checked_report(_set(snap, path, value))["devices"]
    assert dev["status"] == status, dev


HOSTILE_VERSION = ("1.1.0|x\n# pwned @octocat <img src=x onerror=alert(1)> `c` [a](javascript:alert(1)) \\| "
                   "$\\bad{$ &#124;")
HOSTILE_DEVICE = "dev<script>|@team\\"


def _hostile_report() -> dict[str, Any]:
    snap = snapshot({"defect-classifier": twin_model("1.1.0", active_version=HOSTILE_VERSION)},
                    tel={"defect-classifier": summary("1.1.0", NOW - 60)})
    return health.fleet_health({"hosts": {HOSTILE_DEVICE: ENTRY}}, {HOSTILE_DEVICE: snap}, RUN_ID)


def _unescaped(ch: str, line: str) -> int:
    """How many ``ch`` in ``line`` Markdown sees as ``ch`` (not preceded by an odd number of backslashes)."""
    n, backslashes = 0, 0
    for c in line:
        if c == ch and backslashes % 2 == 0:
            n += 1
        backslashes = backslashes + 1 if c == "\\" else 0
    return n


def test_markdown_of_hostile_names_and_versions_is_inert() -> None:
    """A PR comment / job summary: a device-reported version or a device name holding a table pipe, a newline
    and a heading, HTML, a link, code, math or an @mention must stay one cell's plain text."""
    from edge_runtime.health_report import markdown

    md = markdown(_hostile_report())
    lines = md.splitlines()
    columns = {i + 1: line.count("|") for i, line in enumerate(lines[1:]) if line.startswith("|---")}
    rows = 0
    for i, line in enumerate(lines):
        if line.startswith("|"):
            cells = columns[max(k for k in columns if k <= i + 1)]  # the table's separator row (next to its header)
            assert _unescaped("|", line) == cells, line
            rows += 1
        assert not line.startswith("#") or line.startswith(("# Fleet health", "## ")), line
        for ch in "<`[$":
            assert _unescaped(ch, line) == 0, (ch, line)
    assert rows >= 7
    assert re.search(r"@[A-Za-z0-9]", md) is None
    assert "1.1.0" in md  # still readable: the text is escaped, not dropped


def test_dashboard_of_hostile_names_and_versions_renders_them_as_text() -> None:
    """The HTML: a device name is escaped, and a version that looks like mathtext (``$\\bad{$``) is drawn as text
    in the charts -- it made matplotlib (which drew them before pygal) raise, and the whole dashboard was lost."""
    pytest.importorskip("pygal")
    from edge_runtime.health_report import html_report

    page = html_report(_hostile_report(), {"runs": []}, None)
    assert "<script>" not in page
    assert "dev&lt;script&gt;" in page
    assert "\\bad{" in page

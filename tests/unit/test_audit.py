"""The audit history (edge_runtime.audit): append-only JSON lines, a torn line reported, deploy events."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edge_runtime.audit import HISTORY_SCHEMA, append_event, fleet_event, history_path, read_events


def test_events_are_appended_in_order_and_a_torn_last_line_is_reported_not_fatal(tmp_path: Path) -> None:
    append_event(tmp_path, "release", "m 1.0.0", "published", {"gate": {"value": 0.9}})
    append_event(tmp_path, "deploy", "deploy 1", "ok", {"failed": False})
    with history_path(tmp_path).open("ab") as fh:
        fh.write(b'{"schema": 1, "kind": "depl')  # a crash mid-append
    events = list(read_events(tmp_path))
    assert [e["kind"] for e in events] == ["release", "deploy", "unreadable"]
    assert events[0]["schema"] == HISTORY_SCHEMA
    assert events[2]["line"] == 3
    assert [e["subject"] for e in read_events(tmp_path, "release")] == ["m 1.0.0"]


def test_an_event_too_large_for_the_history_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="larger than"):
        append_event(tmp_path, "deploy", "x", "x", {"blob": "x" * 300_000})
    assert not history_path(tmp_path).exists()


def test_fleet_event_names_changes_with_digests_and_halts_with_reasons() -> None:
    plan = {"hosts": {"a1": {"models": {"m": {"version": "1.2.0", "digest": "sha256:" + "1" * 64}}},
                      "a2": {"models": {"m": {"version": "1.2.0", "digest": "sha256:" + "1" * 64}}}}}
    report = {
        "rows": [
            {"device": "a1", "group": "line_a", "wave": 1, "model": "m", "desired": "1.2.0", "reported": "1.1.0",
             "previous": "1.1.0", "result": "rolled_back", "reason": "smoke test failed: label agreement 0.1 < 0.9"},
            {"device": "a2", "group": "line_a", "wave": 2, "model": "m", "desired": "1.2.0", "reported": "1.1.0",
             "previous": None, "result": "skipped_halted", "reason": "line_a halted at wave 1"},
        ],
        "counts": {"rolled_back": 1, "skipped_halted": 1},
        "halted": {"line_a": {"wave": 1, "reason": "wave 1: 1/1 device(s) failed (100% > 0% allowed): a1: ..."}},
        "failed": True,
    }
    summary, data = fleet_event("deploy", report, plan)
    assert summary.startswith("deploy FAILED: 1 rolled_back, 1 skipped_halted; line_a halted at wave 1: wave 1: 1/1")
    assert [c["device"] for c in data["changes"]] == ["a1"]
    assert data["changes"][0]["digest"] == "sha256:" + "1" * 64
    assert {p["device"] for p in data["problems"]} == {"a1", "a2"}
    json.dumps(data)  # plain JSON

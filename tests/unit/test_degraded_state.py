"""The corrupt/degraded records of a model's persisted state (edge_runtime._state.ModelState)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from edge_runtime._state import ModelState, Pending, state_label
from edge_runtime.errors import StateCorruptError

MODEL = "defect-classifier"
PATH = Path("/root/models") / MODEL / "state.json"


def three_kept() -> ModelState:
    info = {"digest": "sha256:" + "0" * 64, "counter": 1, "committed_at": None, "smoke": None}
    return ModelState(
        model=MODEL,
        active="1.2.0",
        versions={v: dict(info) for v in ("1.0.0", "1.1.0", "1.2.0")},
        order=["1.0.0", "1.1.0", "1.2.0"],
        highest_counter=3,
    )


def test_previous_is_never_a_version_known_to_be_corrupt() -> None:
    s = three_kept()
    assert s.previous_committed() == "1.1.0"
    s.mark_corrupt("1.1.0", "model.tflite no longer verifies")
    assert s.previous_committed() == "1.0.0"
    assert s.kept_versions() == ["1.0.0", "1.2.0"]
    s.mark_corrupt("1.0.0", "labels.txt no longer verifies")
    assert s.previous_committed() is None
    assert s.corrupt["1.0.0"]["digest"] == s.versions["1.0.0"]["digest"]


def test_health_is_pending_then_degraded_then_committed() -> None:
    s = three_kept()
    assert s.health() == "committed"
    s.set_degraded("cannot roll back to 1.1.0: model.tflite no longer verifies", op="install", version="1.1.0")
    assert s.health() == "degraded"
    assert s.degraded is not None
    assert s.degraded["active"] == "1.2.0"
    s.pending = Pending("install", "1.3.0", "sha256:x", 4, "staging", "1.2.0", "now")
    assert s.health() == "pending"
    assert state_label(s, busy=False) == "recovery pending"
    s.pending = None
    s.active = None
    assert s.health() == "degraded", "a degraded model with nothing active is still degraded, not 'none'"


def test_a_committed_version_clears_degraded_and_its_own_corrupt_mark_only() -> None:
    s = three_kept()
    s.mark_corrupt("1.0.0", "x")
    s.mark_corrupt("1.1.0", "y")
    s.set_degraded("cannot roll back to 1.1.0: y", op="install", version="1.1.0")
    s.mark_healthy("1.1.0")
    assert s.degraded is None
    assert set(s.corrupt) == {"1.0.0"}


def test_records_survive_the_state_file_round_trip() -> None:
    s = three_kept()
    s.mark_corrupt("1.0.0", "labels.txt no longer verifies")
    s.set_degraded("cannot roll back to 1.0.0: labels.txt no longer verifies", op="rollback", version="1.0.0")
    back = ModelState.from_json(s.to_json(), PATH)
    assert (back.corrupt, back.degraded) == (s.corrupt, s.degraded)
    assert back.health() == "degraded"


def test_a_state_file_written_before_these_records_existed_still_loads() -> None:
    doc = json.loads(three_kept().to_json())
    del doc["corrupt"], doc["degraded"]
    s = ModelState.from_json(json.dumps(doc).encode(), PATH)
    assert (s.corrupt, s.degraded, s.health()) == ({}, None, "committed")


@pytest.mark.parametrize(("field", "value"), [("corrupt", ["1.0.0"]), ("degraded", "yes"), ("corrupt", None)])
def test_records_of_the_wrong_type_make_the_state_file_corrupt(field: str, value: object) -> None:
    doc = json.loads(three_kept().to_json())
    doc[field] = value
    with pytest.raises(StateCorruptError):
        ModelState.from_json(json.dumps(doc).encode(), PATH)


def test_fleet_report_outcome_of_a_rollback_that_could_not_reach_its_target_says_degraded() -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "collections"))
    from ansible_collections.edgeml.fleet.plugins.plugin_utils import rollout

    why = "cannot roll back to 1.1.0: model.tflite no longer verifies (...); 1.0.0 is active instead"
    item = {"item": {"key": MODEL, "value": {"version": "1.2.0"}}, "failed": True, "rolled_back": True,
            "reason": "smoke test failed: label agreement 0%", "degraded": True, "degraded_reason": why}
    out = rollout.classify_item(item, check_mode=False)
    assert out["status"] == "rolled_back"
    assert out["degraded"] == why
    assert out["reason"] == f"smoke test failed: label agreement 0%; DEGRADED: {why}"
    # a no-op run on a degraded model fails with the reason in its message, which the report shows as is
    item = {"item": {"key": MODEL, "value": {"version": "1.0.0"}}, "failed": True, "error": "degraded",
            "msg": f"{MODEL} is DEGRADED on this device: {why}", "degraded": True, "degraded_reason": why}
    out = rollout.classify_item(item, check_mode=False)
    assert (out["status"], out["reason"], out["degraded"]) == ("failed", item["msg"], why)

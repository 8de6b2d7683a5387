"""The operator rollback's controller-side decisions (plugin_utils/rollback.py), without Ansible.

What to roll back and from/to what is resolved once; the outcome of each device is classified from the
module's answer; the models.yaml warning names the exact line and replacement, or says why there is none.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "collections"))

from ansible_collections.edgeml.fleet.plugins.plugin_utils import rollback

D100, D110 = "sha256:" + "a" * 64, "sha256:" + "b" * 64


def plan(**overrides: Any) -> dict[str, Any]:
    pin_a = {"version": "1.1.0", "digest": D110}
    base = {
        "models_file": "/nowhere/models.yaml",
        "hosts": {
            "a1": {"groups": ["line_a"], "rollout_group": "line_a", "wave": 1, "models": {"dc": pin_a}},
            "a2": {"groups": ["line_a"], "rollout_group": "line_a", "wave": 2, "models": {"dc": pin_a}},
            "l1": {"groups": ["lab"], "rollout_group": "lab", "wave": 1,
                   "models": {"int8": {"version": "1.0.0", "digest": D100}}},
        },
        "groups": {"line_a": {"hosts": ["a1", "a2"], "waves": [["a1"], ["a2"]],
                              "pins": {"dc": {"version": "1.1.0", "line": 40}}},
                   "lab": {"hosts": ["l1"], "waves": [["l1"]], "pins": {"int8": {"version": "1.0.0", "line": 55}}}},
        "catalogue": {"dc": {"1.0.0": D100, "1.1.0": D110}, "int8": {"1.0.0": D100}},
    }
    base.update(overrides)
    return base


def test_rollback_without_target_rolls_back_from_each_devices_pin() -> None:
    r = rollback.rollback_plan(plan(), ["a1", "a2"], run_id="run-1")
    assert r["problems"] == []
    assert r["steps"] == {"a1": [{"model": "dc", "from": "1.1.0", "to": None}],
                          "a2": [{"model": "dc", "from": "1.1.0", "to": None}]}
    assert set(r["plan"]["hosts"]) == {"a1", "a2"}
    assert r["plan"]["excluded"] == ["l1"]
    assert r["plan"]["run_id"] == "run-1"
    assert {e["run_id"] for e in r["plan"]["hosts"].values()} == {"run-1"}


def test_rollback_with_explicit_target_names_it_and_no_from() -> None:
    r = rollback.rollback_plan(plan(), ["a1"], to=" 1.0.0 ")
    assert r["problems"] == []
    assert r["steps"] == {"a1": [{"model": "dc", "from": None, "to": "1.0.0"}]}
    assert r["plan"]["run_id"]  # an id of its own when no lock gave one


@pytest.mark.parametrize(("targets", "models", "to", "problem"), [
    ([], None, None, "match no device"),
    (["not-planned"], None, None, "no group of models.yaml pins a model for not-planned"),
    (["a1"], ["int8"], None, "model(s) int8 not pinned for any target device (pinned: dc)"),
    (["a1", "l1"], None, "1.0.0", "names one version, but the targets run 2 models (dc, int8)"),
])
def test_ambiguous_or_empty_rollback_request_is_refused(
    targets: list[str], models: list[str] | None, to: str | None, problem: str
) -> None:
    r = rollback.rollback_plan(plan(), targets, models, to)
    assert any(problem in p for p in r["problems"]), r["problems"]


def test_explicit_target_with_one_model_chosen_is_accepted_on_mixed_targets() -> None:
    r = rollback.rollback_plan(plan(), ["a1", "l1"], ["dc"], "1.0.0")
    assert r["problems"] == []
    assert r["steps"] == {"a1": [{"model": "dc", "from": None, "to": "1.0.0"}], "l1": []}
    assert set(r["plan"]["hosts"]) == {"a1"}


def item(step: dict[str, Any], **res: Any) -> dict[str, Any]:
    return {"item": step, **res}


@pytest.mark.parametrize(("res", "check", "status", "reason"), [
    ({"changed": True, "previous": "1.1.0", "active": "1.0.0"}, False, "rolled_back",
     "rolled back from 1.1.0 to 1.0.0 (operator rollback)"),
    ({"changed": True, "previous": "1.1.0", "active": "1.0.0"}, True, "would_change",
     "would roll back from 1.1.0 to 1.0.0"),
    ({"changed": False, "previous": "1.1.0", "active": "1.0.0"}, False, "unchanged",
     "runs 1.0.0, not the pinned 1.1.0: nothing to roll back"),
    ({"failed": True, "msg": "1.3.0 is not kept on this device"}, False, "failed", "1.3.0 is not kept on this device"),
    ({"unreachable": True, "msg": "ssh: timeout"}, False, "unreachable", "ssh: timeout"),
])
def test_each_device_outcome_is_classified_with_its_reason(
    res: dict[str, Any], check: bool, status: str, reason: str
) -> None:
    entry = plan()["hosts"]["a1"]
    out = rollback.rollback_result({"results": [item({"model": "dc", "from": "1.1.0", "to": None}, **res)]}, entry,
                                   check)
    assert out["models"]["dc"]["status"] == status
    assert out["models"]["dc"]["reason"] == reason
    assert out["models"]["dc"]["desired"] == "1.1.0"
    assert out["ok"] is (status in ("rolled_back", "would_change", "unchanged"))


def test_rollback_that_left_the_model_degraded_says_so_in_its_reason() -> None:
    res = item({"model": "dc", "from": "1.1.0", "to": None}, failed=True, msg="rollback of dc refused: 1.0.0 no "
               "longer verifies", degraded=True, degraded_reason="cannot roll back to 1.0.0; 1.1.0 is active instead")
    out = rollback.rollback_result({"results": [res]}, plan()["hosts"]["a1"])
    m = out["models"]["dc"]
    assert (m["status"], m["degraded"]) == ("failed", "cannot roll back to 1.0.0; 1.1.0 is active instead")
    assert m["reason"].endswith("; DEGRADED: cannot roll back to 1.0.0; 1.1.0 is active instead")


def test_device_without_any_answer_is_unreachable_for_every_pinned_model() -> None:
    out = rollback.rollback_result({"unreachable": True, "msg": "gone"}, plan()["hosts"]["a1"])
    assert (out["status"], out["ok"], out["models"]["dc"]["status"]) == ("unreachable", False, "unreachable")


def rows(*device_now: tuple[str, str]) -> list[dict[str, Any]]:
    return [{"device": d, "model": "dc", "desired": "1.1.0", "reported": now, "result": "rolled_back"}
            for d, now in device_now]


def test_pin_warning_names_file_line_devices_and_the_one_line_fix_with_digest() -> None:
    [w] = rollback.pin_warnings(plan(), rows(("a1", "1.0.0"), ("a2", "1.0.0")), {})
    assert w["line"] == 40
    assert w["fix"] == 'dc: "1.0.0"'
    assert w["message"] == (
        "/nowhere/models.yaml:40 still pins line_a dc 1.1.0, but a1, a2 now run 1.0.0: the next deploy would roll "
        f'them forward to 1.1.0 again. To keep the rollback, change it to "1.0.0" (digest {D100}): dc: "1.0.0"')


def test_no_pin_warning_when_the_devices_run_the_pin() -> None:
    assert rollback.pin_warnings(plan(), rows(("a1", "1.1.0"), ("a2", "1.1.0")), {}) == []


def test_pin_warning_for_devices_on_different_versions_offers_no_single_fix() -> None:
    [w] = rollback.pin_warnings(plan(), rows(("a1", "1.0.0"), ("a2", "0.9.0")), {})
    assert w["fix"] is None
    assert "a2 now runs 0.9.0; a1 now runs 1.0.0" in w["message"]
    assert "pin the one to keep" in w["message"]


def test_pin_warning_for_a_version_missing_from_the_catalogue_says_to_add_it_with_the_reported_digest() -> None:
    facts = {"a1": {"models": {"dc": {"active_version": "0.9.0", "digest": "sha256:" + "c" * 64}}}}
    [w] = rollback.pin_warnings(plan(), rows(("a1", "0.9.0")), facts)
    assert w["fix"] == 'dc: "0.9.0"'
    assert "add dc 0.9.0 to the catalogue" in w["message"]
    assert "sha256:" + "c" * 64 in w["message"]


def test_rollback_report_counts_rolled_back_and_unchanged_as_success() -> None:
    gone = {"device": "a2", "model": "dc", "desired": "1.1.0", "reported": None, "result": "unreachable", "reason": "x"}
    report = {"rows": [*rows(("a1", "1.0.0")), gone]}
    out = rollback.finish_report(report, plan(), {})
    assert [r["device"] for r in out["problems"]] == ["a2"]
    assert out["failed"] is True
    assert len(out["pin_warnings"]) == 1
    assert "## models.yaml still pins" in rollback.markdown_tail(out)


def test_why_is_kept_in_the_plan_and_the_report_bounded_and_absent_when_not_given() -> None:
    why = "alert EdgeModelErrorRateHigh firing on a1 (dc 1.1.0): inference error rate 0.3000"
    out = rollback.rollback_plan(plan(), ["a1", "a2"], why=f"  {why}\n")
    assert out["plan"]["why"] == why
    report = rollback.finish_report({"rows": []}, out["plan"], {})
    assert report["why"] == why
    assert rollback.markdown_tail(report).startswith(f"## Why\n\n{why}\n")
    assert rollback.summary_lines(report, "rollback")[0] == f"why: {why}"
    long = rollback.rollback_plan(plan(), ["a1"], why="x" * 10_000)["plan"]["why"]
    assert len(long) == rollback.MAX_WHY_CHARS
    plain = rollback.rollback_plan(plan(), ["a1"])["plan"]
    assert "why" not in plain
    assert "why" not in rollback.finish_report({"rows": []}, plain, {})
    assert rollback.markdown_tail({"rows": []}) == ""

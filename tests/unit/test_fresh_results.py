"""Fresh state only, on the controller: what counts as a device's answer in this run, and when it is healthy.

``plugin_utils/hostvars.py`` reads twins and results only when they carry this run's id; ``rollout``
counts a device healthy only with a recorded passed post-install check.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "collections"))

from ansible_collections.edgeml.fleet.plugins.plugin_utils import rollout
from ansible_collections.edgeml.fleet.plugins.plugin_utils.hostvars import results_and_twins, twins

D = "sha256:" + "a" * 64
PIN = {"version": "1.1.0", "digest": D, "release_counter": 2}


def plan(run_id: str | None = "run-2") -> dict[str, Any]:
    return {"run_id": run_id,
            "hosts": {h: {"rollout_group": "g", "wave": 1, "run_id": run_id, "models": {"m": PIN}} for h in ("a", "b")},
            "groups": {"g": {"waves": [["a", "b"]], "policy": {"max_fail_percent": 0, "health_gate": {}}}}}


def twin(run_id: str | None, checked: bool = True, version: str = "1.1.0") -> dict[str, Any]:
    return {"run_id": run_id, "models": {"m": {
        "active_version": version, "digest": D, "state": "committed", "kept_digests": {version: D},
        "highest_counter": 2, "bad_versions": [], "check_passed": checked}}}


def hostvars(**twins_by_host: dict[str, Any]) -> dict[str, Any]:
    return {h: {"ansible_facts": {"edge_runtime": t}} for h, t in twins_by_host.items()}


def test_a_twin_from_an_earlier_run_or_a_fact_cache_is_not_an_answer() -> None:
    hv = hostvars(a=twin("run-2"), b=twin("run-1"))
    assert set(twins(plan(), hv)) == {"a"}
    assert rollout.converge_targets(plan(), twins(plan(), hv)) == [{"host": "b", "wave": 1}]
    results, _ = results_and_twins(plan(), hv)
    assert set(results) == {"a"}  # b: no answer -> the gate fails it, the report says unreachable
    report = rollout.fleet_report(plan(), results, twins(plan(), hv), {})
    row_b = next(r for r in report["rows"] if r["device"] == "b")
    assert row_b["result"] == "unreachable"
    assert row_b["reported"] is None
    assert "in this run" in row_b["reason"]
    assert report["failed"]


def test_a_twin_without_a_run_id_or_a_plan_without_one_is_never_fresh() -> None:
    hv = hostvars(a=twin(None), b=twin("run-2"))
    assert set(twins(plan(), hv)) == {"b"}
    assert twins(plan(None), hostvars(a=twin(None))) == {}


def test_a_stale_result_is_ignored() -> None:
    old = {"status": "installed", "ok": True, "run_id": "run-1", "models": {}}
    hv = {"a": {"edge_model_result": old}, "b": {}}
    results, _ = results_and_twins(plan(), hv)
    assert results == {}


def test_in_sync_needs_the_runtimes_noop_and_a_recorded_passed_check() -> None:
    entry = plan()["hosts"]["a"]
    assert rollout.twin_in_sync(entry, twin("run-2"))
    assert not rollout.twin_in_sync(entry, twin("run-2", checked=False))
    assert not rollout.twin_in_sync(entry, twin("run-2", version="1.0.0"))
    pending = twin("run-2")
    pending["models"]["m"]["state"] = "recovery pending"
    assert not rollout.twin_in_sync(entry, pending)
    assert not rollout.twin_in_sync(entry, None)


def _noop_item(healthy: bool) -> dict[str, Any]:
    return {"item": {"key": "m", "value": PIN}, "changed": False, "active": "1.1.0", "reason": "already active",
            "healthy": healthy}


def test_an_active_but_unchecked_version_is_unverified_until_its_check_passes() -> None:
    res = rollout.device_result({"results": [_noop_item(False)]}, plan()["hosts"]["a"], False)
    assert (res["status"], res["ok"], res["needs_check"], res["run_id"]) == ("unverified", False, True, "run-2")
    checked = rollout.mark_checked(res, {"results": [{"item": {"key": "m"}, "smoke": {"passed": True}}]})
    assert (checked["status"], checked["ok"], checked["needs_check"]) == ("unchanged", True, False)
    failed = rollout.mark_checked(res, {"results": [{"item": {"key": "m"}, "rolled_back": True, "msg": "x"}]})
    assert failed["status"] == "rolled_back"
    # in check mode the check would run: a change, not a failure
    assert rollout.device_result({"results": [_noop_item(False)]}, plan()["hosts"]["a"], True)["status"] == \
        "would_change"
    assert rollout.device_result({"results": [_noop_item(True)]}, plan()["hosts"]["a"], False)["status"] == \
        "unchanged"


def test_an_install_without_a_passed_post_install_check_fails_the_gate_and_is_rolled_back() -> None:
    item = {"item": {"key": "m", "value": PIN}, "changed": True, "active": "1.1.0",
            "smoke": {"passed": True, "p95_ms": 1.0}}
    res = rollout.device_result({"results": [item]}, plan()["hosts"]["a"], False)
    eff = rollout.effective_results(plan(), {"a": res}, {})
    assert eff["a"]["ok"] is False
    assert eff["a"]["models"]["m"]["status"] == "unverified"
    assert eff["a"]["status"] == "installed"  # so the gate of a failed wave rolls it back
    checked = rollout.mark_checked(res, {"results": [{"item": {"key": "m"}, "smoke": {"passed": True}}]})
    assert rollout.effective_results(plan(), {"a": checked}, {})["a"]["ok"] is True


def test_an_install_that_recorded_its_check_needs_no_second_check_and_passes_the_gate() -> None:
    item = {"item": {"key": "m", "value": PIN}, "changed": True, "active": "1.1.0", "checked": True,
            "smoke": {"passed": True, "p95_ms": 1.0}}
    res = rollout.device_result({"results": [item]}, plan()["hosts"]["a"], False)
    assert (res["status"], res["needs_check"], res["check_models"]) == ("installed", False, [])
    assert (res["models"]["m"]["check_passed"], res["models"]["m"]["check_p95_ms"]) == (True, 1.0)
    assert rollout.effective_results(plan(), {"a": res}, {})["a"]["ok"] is True
    # without the record (a runtime that does not check with the install) the handler checks it
    unrecorded = rollout.device_result({"results": [{**item, "checked": False}]}, plan()["hosts"]["a"], False)
    assert (unrecorded["needs_check"], unrecorded["check_models"]) == (True, ["m"])
    # a failed install never counts as checked, whatever it says
    failed = rollout.device_result({"results": [{**item, "failed": True, "msg": "x"}]}, plan()["hosts"]["a"], False)
    assert "check_passed" not in failed["models"]["m"]
    assert failed["check_models"] == []


def test_a_bundle_is_pushed_unless_this_runs_twin_shows_the_pinned_build_active() -> None:
    want = {**PIN, "push_src": "/registry/m/1.1.0.edgebundle", "source": "/device/downloads/m-1.1.0.edgebundle"}
    entry = {"run_id": "run-2", "models": {"m": want}}

    def pushed(t: Any, e: dict[str, Any] = entry) -> list[str]:
        return [item["key"] for item in rollout.bundles_to_push(e, t)]

    assert pushed(twin("run-2")) == []  # the pinned build is active: the runtime does not read the bundle
    assert pushed(twin("run-2", checked=False)) == []  # unchecked: re-checked from its installed files
    assert pushed(twin("run-2", version="1.0.0")) == ["m"]  # another version active: it needs the bundle
    assert pushed({"run_id": "run-2", "models": {}}) == ["m"]  # not installed
    assert pushed(twin("run-1")) == ["m"]  # another run's twin (a fact cache) is not an answer
    assert pushed(None) == ["m"]
    assert pushed(twin(None), {**entry, "run_id": None}) == ["m"]  # no run id: nothing is fresh
    assert rollout.bundles_to_push(entry, twin("run-2", version="1.0.0"))[0]["value"] == want
    assert pushed(None, {"run_id": "run-2", "models": {"m": {**want, "push_src": None}}}) == []  # a pull model

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


def _loop(run_id: str | None, **item: Any) -> dict[str, Any]:
    """The converge task's registered loop of one device, its items planned for ``run_id`` (device_plan)."""
    return {"results": [{"item": {"key": "m", "value": {**PIN, "run_id": run_id}}, "changed": True, "active": "1.1.0",
                         "checked": True, "smoke": {"passed": True, "p95_ms": 1.0}, **item}]}


def test_a_result_is_read_from_the_converge_loop_of_this_run_when_the_device_published_none() -> None:
    hv = {"a": {"__edge_model_install": _loop("run-2")}, "b": {"__edge_model_install": _loop("run-1")}}
    results, _ = results_and_twins(plan(), hv)
    # the same decision as the role's verify.yml (rollout.device_result), with this run's id
    assert results["a"] == rollout.require_checked(rollout.device_result(_loop("run-2"), plan()["hosts"]["a"], False))
    assert (results["a"]["status"], results["a"]["ok"], results["a"]["run_id"]) == ("installed", True, "run-2")
    assert "b" not in results  # a loop of another run is no answer: the gate fails b, the report says unreachable
    # a loop whose items carry no run id (made outside deploy.yml's plan) is no answer either
    assert results_and_twins(plan(), {"a": {"__edge_model_install": _loop(None)}})[0] == {}
    # one item of another run makes the whole loop stale
    mixed = _loop("run-2")
    mixed["results"].append({**mixed["results"][0], "item": {"key": "n", "value": {**PIN, "run_id": "run-1"}}})
    assert results_and_twins(plan(), {"a": {"__edge_model_install": mixed}})[0] == {}
    # hostile shapes are no answer, never an exception
    for junk in ("x", {"results": "x"}, {"results": [None]}, {"results": [{"item": "m"}]}, {"results": []}):
        assert results_and_twins(plan(), {"a": {"__edge_model_install": junk}})[0] == {}


def test_a_published_result_of_this_run_wins_over_the_loop_and_check_mode_comes_from_the_plan() -> None:
    rolled = rollout.mark_rolled_back(rollout.device_result(_loop("run-2"), plan()["hosts"]["a"], False),
                                      {"results": [{"item": {"key": "m"}, "rolled_back": True, "changed": True}]},
                                      "wave gate failed: x")
    hv = {"a": {"__edge_model_install": _loop("run-2"), "edge_model_result": rolled}}
    assert results_and_twins(plan(), hv)[0]["a"]["status"] == "rolled_back"
    # an earlier run's published result does not hide this run's loop
    hv["a"]["edge_model_result"] = {**rolled, "run_id": "run-1"}
    assert results_and_twins(plan(), hv)[0]["a"]["status"] == "installed"
    assert results_and_twins({**plan(), "check_mode": True}, hv)[0]["a"]["status"] == "would_change"


def test_a_wave_converges_its_out_of_sync_devices_of_groups_not_halted() -> None:
    from ansible_collections.edgeml.fleet.plugins.filter.rollout import edge_check_hosts, edge_wave_hosts

    p = plan()
    p["hosts"]["c"] = {**p["hosts"]["a"], "rollout_group": "h"}
    lh = {"edge_plan": p, "edge_converge_waves": {"1": ["a", "b", "c"]}, "edge_gate": {"halted": {}}}
    assert edge_wave_hosts(lh, 1) == ["a", "b", "c"]
    assert edge_wave_hosts({**lh, "edge_gate": {"halted": {"h": {"reason": "x"}}}}, 1) == ["a", "b"]
    assert edge_wave_hosts(lh, 2) == []
    # localhost did not plan (its play failed, or a syntax check): no device
    for lh_bad in ({}, None, {"edge_plan": p}, {"edge_plan": "x", "edge_converge_waves": {"1": ["a"]}}):
        assert edge_wave_hosts(lh_bad, 1) == []
    # the health check play: only the devices whose loop of this run asks for it
    hv = {"a": {"__edge_model_install": _loop("run-2", changed=False, healthy=False)},
          "b": {"__edge_model_install": _loop("run-2")}, "c": {}}
    assert edge_check_hosts(lh, 1, hv) == ["a"]
    assert edge_check_hosts(lh, 2, hv) == []


def test_role_arguments_checks_what_the_inventory_gives_never_the_roles_template_defaults() -> None:
    from ansible_collections.edgeml.fleet.plugins.action.role_arguments import _without_defaults

    spec = {"p": {"type": "dict", "default": "{{ edge_device_plan | default({}) }}"},
            "q": {"type": "dict", "options": {"r": {"type": "int", "default": "{{ x }}"}}}}
    assert _without_defaults(spec) == {"p": {"type": "dict"}, "q": {"type": "dict", "options": {"r": {"type": "int"}}}}
    assert spec["p"]["default"]  # the role's own spec is not changed

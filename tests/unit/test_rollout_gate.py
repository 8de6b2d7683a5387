"""The wave health gate (pure functions behind the deploy playbook's gate play)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

_PATH = (Path(__file__).resolve().parents[2]
         / "collections/ansible_collections/edgeml/fleet/plugins/module_utils/rollout.py")
_spec = importlib.util.spec_from_file_location("edgeml_rollout", _PATH)
assert _spec is not None
assert _spec.loader is not None
rollout = importlib.util.module_from_spec(_spec)
sys.modules["edgeml_rollout"] = rollout
_spec.loader.exec_module(rollout)


def plan(gate: dict[str, Any], max_fail: float = 0, waves: list[list[str]] | None = None) -> dict[str, Any]:
    return {"groups": {"line_a": {"waves": waves or [["a1"], ["a2", "a3"]],
                                  "policy": {"max_fail_percent": max_fail, "health_gate": gate}}}}


def installed(agree: float = 1.0, prev_agree: float | None = 1.0, conf: float = 0.95, p95: float = 0.1,
              passed: bool = True) -> dict[str, Any]:
    item = {"item": {"key": "m", "value": {"version": "1.1.0"}}, "changed": True, "active": "1.1.0",
            "smoke": {"passed": passed, "p95_ms": p95, "label_agreement": agree, "mean_confidence": conf},
            "previous_smoke": None if prev_agree is None else {"label_agreement": prev_agree}}
    return rollout.device_result({"results": [item]}, {"rollout_group": "line_a", "wave": 1}, False)


def test_gate_passes_healthy_canary() -> None:
    g = rollout.wave_gate(plan({"max_p95_latency_ms": 20}), 1, {"a1": installed()}, {})
    assert g["halted"] == {}
    assert g["report"]["line_a"]["passed"] is True


def test_gate_counts_missing_result_as_failure_and_halts() -> None:
    g = rollout.wave_gate(plan({}), 1, {}, {})
    assert "line_a" in g["halted"]
    assert "no result" in g["halted"]["line_a"]["reason"]


def test_gate_halts_on_latency_over_budget_and_rolls_back_installed_hosts() -> None:
    g = rollout.wave_gate(plan({"max_p95_latency_ms": 5}), 1, {"a1": installed(p95=9.0)}, {})
    assert "p95" in g["halted"]["line_a"]["reason"]
    assert g["rollback_hosts"] == ["a1"]


def test_gate_halts_on_error_rate_increase() -> None:
    g = rollout.wave_gate(plan({"max_error_rate_increase": 0.02}), 1, {"a1": installed(0.9, 1.0)}, {})
    assert "error rate rose by 10.0%" in g["halted"]["line_a"]["reason"]
    ok = rollout.wave_gate(plan({"max_error_rate_increase": 0.02}), 1, {"a1": installed(0.9, None)}, {})
    assert ok["halted"] == {}, "a first install has nothing to compare with"


def test_gate_halts_on_low_confidence() -> None:
    g = rollout.wave_gate(plan({"min_mean_confidence": 0.75}), 1, {"a1": installed(conf=0.6)}, {})
    assert "confidence" in g["halted"]["line_a"]["reason"]


def test_gate_respects_max_fail_percent() -> None:
    waves = [["a1", "a2"]]
    res = {"a1": installed(), "a2": installed(passed=False)}
    assert "line_a" in rollout.wave_gate(plan({}, 0, waves), 1, res, {})["halted"]
    assert rollout.wave_gate(plan({}, 50, waves), 1, res, {})["halted"] == {}


def test_halted_group_is_not_evaluated_again() -> None:
    halted = {"line_a": {"wave": 1, "reason": "x"}}
    g = rollout.wave_gate(plan({}), 2, {}, halted)
    assert g["halted"] == halted
    assert g["report"] == {}


# ---- which devices the deploy converges: the device twin against the plan --------------------------

PIN = {"version": "1.1.0", "digest": "sha256:" + "ab" * 32}


def entry(wave: int = 1, **models: dict[str, Any]) -> dict[str, Any]:
    return {"rollout_group": "line_a", "wave": wave, "models": models or {"m": PIN}}


def twin(**models: dict[str, Any]) -> dict[str, Any]:
    return {"schema": 1, "models": models}


def committed(version: str = "1.1.0", digest: str = PIN["digest"]) -> dict[str, Any]:
    return {"active_version": version, "digest": digest, "state": "committed", "previous_version": "1.0.0"}


def test_device_running_the_pin_committed_with_its_digest_is_in_sync() -> None:
    assert rollout.twin_in_sync(entry(), twin(m=committed()))


def test_anything_else_is_converged_where_the_runtime_decides() -> None:
    cases = {
        "no facts (unreachable, failed setup)": None,
        "facts without models": {"schema": 1},
        "model never installed": twin(),
        "older version active": twin(m=committed("1.0.0")),
        "same version, another build (digest)": twin(m=committed(digest="sha256:" + "cd" * 32)),
        "interrupted operation pending": twin(m={**committed(), "state": "pending"}),
        "corrupt state file": twin(m={"state": "corrupt", "error": "bad json"}),
    }
    for why, facts in cases.items():
        assert not rollout.twin_in_sync(entry(), facts), why


def test_every_pinned_model_must_be_in_sync() -> None:
    e = entry(m=PIN, other={"version": "2.0.0", "digest": "sha256:" + "ee" * 32})
    assert not rollout.twin_in_sync(e, twin(m=committed()))
    assert rollout.twin_in_sync(
        e, twin(m=committed(), other=committed("2.0.0", "sha256:" + "ee" * 32))
    )


def test_converge_targets_are_the_out_of_sync_devices_with_their_wave() -> None:
    p = {"hosts": {"a1": entry(1), "a2": entry(2), "a3": entry(2), "a4": entry(3)}}
    facts = {"a1": twin(m=committed()), "a2": twin(m=committed("1.0.0")), "a4": twin(m=committed())}
    assert rollout.converge_targets(p, facts) == [{"host": "a2", "wave": 2}, {"host": "a3", "wave": 2}]


def test_in_sync_devices_pass_the_gate_and_report_unchanged_from_their_twin() -> None:
    p = {**plan({"max_p95_latency_ms": 20}, waves=[["a1", "a2"]]), "hosts": {"a1": entry(1), "a2": entry(1)}}
    facts = {"a1": twin(m=committed()), "a2": twin(m=committed("1.0.0"))}
    results = rollout.effective_results(p, {}, facts)
    assert results["a1"]["status"] == "unchanged"
    assert results["a1"]["ok"]
    assert "a2" not in results, "an out-of-sync device without a result of this run must not look fine"
    g = rollout.wave_gate(p, 1, results, {})
    assert g["report"]["line_a"]["failures"].keys() == {"a2"}
    rows = {r["device"]: r for r in rollout.fleet_report(p, results, facts, g["halted"])["rows"]}
    assert (rows["a1"]["result"], rows["a1"]["reported"]) == ("unchanged", "1.1.0")
    assert (rows["a2"]["result"], rows["a2"]["reported"]) == ("unreachable", "1.0.0")


def test_a_result_of_this_run_wins_over_the_twin() -> None:
    p = {"hosts": {"a1": entry(1)}}
    mine = {"a1": {"status": "rolled_back", "ok": False, "models": {}}}
    assert rollout.effective_results(p, mine, {"a1": twin(m=committed())})["a1"]["status"] == "rolled_back"


def test_plan_subset_keeps_wave_membership_and_lists_the_devices_left_alone() -> None:
    p = {"hosts": {"a1": entry(1), "a2": entry(2), "a3": entry(2)},
         "groups": {"line_a": {"hosts": ["a1", "a2", "a3"], "waves": [["a1"], ["a2", "a3"]], "policy": {}}}}
    sub = rollout.plan_subset(p, ["a2", "zz"])
    assert set(sub["hosts"]) == {"a2"}
    assert sub["groups"]["line_a"]["waves"] == [[], ["a2"]]
    assert sub["excluded"] == ["a1", "a3"]
    g = rollout.wave_gate(sub, 1, {}, {})  # an empty wave in this run has nothing to fail
    assert g["halted"] == {}

"""The wave health gate (pure functions behind the deploy playbook's gate play)."""

from __future__ import annotations

import math
import re
import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "collections"))

from ansible_collections.edgeml.fleet.plugins.plugin_utils import gates, rollout


def plan(gate: dict[str, Any], max_fail: float = 0, waves: list[list[str]] | None = None) -> dict[str, Any]:
    return {"groups": {"line_a": {"waves": waves or [["a1"], ["a2", "a3"]],
                                  "policy": {"max_fail_percent": max_fail, "health_gate": gate}}}}


def installed(agree: float | None = 1.0, prev_agree: float | None = 1.0, conf: float | None = 0.95,
              p95: float | None = 0.1, passed: bool | None = True) -> dict[str, Any]:
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
    assert "error rate rose by 10 percentage points > gate 2 " in g["halted"]["line_a"]["reason"]
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
    return {"active_version": version, "digest": digest, "state": "committed", "previous_version": "1.0.0",
            "check_passed": True}


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
        "no passed health check recorded": twin(m={**committed(), "check_passed": False}),
        "health check never ran": twin(m={k: v for k, v in committed().items() if k != "check_passed"}),
        "degraded": twin(m={**committed(), "state": "degraded"}),
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


# ---- exact thresholds: every gate at exactly its limit (passes, as the schema says) and one step beyond --------

def _beyond(x: float, direction: float) -> float:
    """The next binary float after ``x``: the smallest step a device's JSON number can take."""
    return math.nextafter(x, direction)


GATE_CASES = [
    # (gate, measurement kwargs at the limit, kwargs one step beyond, phrase of the failure)
    pytest.param({"max_p95_latency_ms": 20.0}, {"p95": 20.0}, {"p95": _beyond(20.0, math.inf)}, "p95 latency",
                 id="p95-latency-inclusive"),
    pytest.param({"max_p95_latency_ms": 0.3}, {"p95": 0.3}, {"p95": 0.30000000000000004},
                 "p95 latency", id="p95-latency-binary-float-neighbour"),
    pytest.param({"max_error_rate_increase": 0.02}, {"agree": 0.98, "prev_agree": 1.0},
                 {"agree": _beyond(0.98, 0.0), "prev_agree": 1.0}, "error rate rose", id="error-rate-1.0-minus-0.98"),
    pytest.param({"max_error_rate_increase": 0.02}, {"agree": 0.88, "prev_agree": 0.9},
                 {"agree": 0.87, "prev_agree": 0.9}, "error rate rose", id="error-rate-0.9-minus-0.88"),
    pytest.param({"max_error_rate_increase": 0.1}, {"agree": 0.7, "prev_agree": 0.8},
                 {"agree": 0.6999999999999999, "prev_agree": 0.8}, "error rate rose", id="error-rate-0.8-minus-0.7"),
    pytest.param({"max_error_rate_increase": 0}, {"agree": 0.9, "prev_agree": 0.9},
                 {"agree": _beyond(0.9, 0.0), "prev_agree": 0.9}, "error rate rose", id="error-rate-zero-tolerance"),
    pytest.param({"min_mean_confidence": 0.75}, {"conf": 0.75}, {"conf": _beyond(0.75, 0.0)}, "mean confidence",
                 id="confidence-inclusive"),
    pytest.param({"min_mean_confidence": 0.7}, {"conf": 0.7}, {"conf": 0.6999999999999999}, "mean confidence",
                 id="confidence-decimal"),
]


@pytest.mark.parametrize(("gate", "at_limit", "beyond", "phrase"), GATE_CASES)
def test_health_gate_passes_at_its_limit_and_fails_one_step_beyond(
    gate: dict[str, Any], at_limit: dict[str, Any], beyond: dict[str, Any], phrase: str
) -> None:
    ok = rollout.wave_gate(plan(gate), 1, {"a1": installed(**at_limit)}, {})
    assert ok["halted"] == {}, ok["report"]
    bad = rollout.wave_gate(plan(gate), 1, {"a1": installed(**beyond)}, {})
    reason = bad["halted"]["line_a"]["reason"]
    assert phrase in reason
    assert bad["rollback_hosts"] == ["a1"]
    assert_numbers_differ(reason)


def assert_numbers_differ(reason: str) -> None:
    """Every "X > Y" / "X < Y" in a message shows two different numbers (never "12% > 12%")."""
    pairs = re.findall(r"(-?\d+(?:\.\d+)?)(%?)(?: ms| percentage points)? [<>] (?:gate )?(-?\d+(?:\.\d+)?)", reason)
    assert pairs, reason
    for left, _, right in pairs:
        assert float(left) != float(right), reason


def test_smoke_pass_gate_at_and_beyond() -> None:
    gate = {"require_smoke_pass": True}
    assert rollout.wave_gate(plan(gate), 1, {"a1": installed(passed=True)}, {})["halted"] == {}
    assert "smoke test did not pass" in rollout.wave_gate(plan(gate), 1, {"a1": installed(passed=False)},
                                                          {})["halted"]["line_a"]["reason"]


@pytest.mark.parametrize(("gate", "missing"), [
    ({"max_p95_latency_ms": 20.0}, {"p95": None}),
    ({"min_mean_confidence": 0.5}, {"conf": None}),
    ({"max_error_rate_increase": 0.02}, {"agree": None, "prev_agree": 1.0}),
    ({"require_smoke_pass": True}, {"passed": None}),
])
def test_a_measurement_the_device_did_not_report_fails_its_gate(gate: dict[str, Any], missing: dict[str, Any]) -> None:
    g = rollout.wave_gate(plan(gate), 1, {"a1": installed(**missing)}, {})
    assert "line_a" in g["halted"], "unknown must never count as healthy"


@pytest.mark.parametrize(("limit", "hosts", "passing_failures"), [
    (12.5, 8, 1),      # 1/8 = 12.5 % exactly at the limit
    (50, 2, 1),
    (0, 3, 0),
    (33.3, 3, 0),      # 1/3 = 33.33.. % is above 33.3
    (20, 5, 1),
    (100 / 3, 3, 1),   # the float 33.333333333333336 is above 1/3 = 33.33..%: one failure passes
    (12, 25, 3),       # 3/25 = 12 % exactly
    (0.1, 1000, 1),    # 1/1000 = 0.1 %
])
def test_max_fail_percent_passes_at_the_limit_and_halts_one_device_beyond(
    limit: float, hosts: int, passing_failures: int
) -> None:
    names = [f"h{i}" for i in range(hosts)]
    p = plan({}, limit, [names])

    def results(failures: int) -> dict[str, Any]:
        return {h: installed(passed=i >= failures) for i, h in enumerate(names)}

    expected_passing = passing_failures
    ok = rollout.wave_gate(p, 1, results(expected_passing), {})
    assert ok["halted"] == {}, ok["report"]
    assert ok["report"]["line_a"]["passed"] is True
    bad = rollout.wave_gate(p, 1, results(expected_passing + 1), {})
    assert bad["report"]["line_a"]["passed"] is False
    reason = bad["halted"]["line_a"]["reason"]
    assert f"{expected_passing + 1}/{hosts} device(s) failed" in reason
    assert_numbers_differ(reason)


def test_fail_percent_message_never_reads_the_same_number_on_both_sides() -> None:
    names = [f"h{i}" for i in range(8)]
    res = {h: installed(passed=i >= 1) for i, h in enumerate(names)}
    reason = rollout.wave_gate(plan({}, 12, [names]), 1, res, {})["halted"]["line_a"]["reason"]
    assert "(12.5% > 12% allowed)" in reason


@pytest.mark.parametrize(("value", "limit", "shown"), [
    ("0.02", "0.02", ("0.02", "0.02")),
    ("0.125", "0.12", ("0.125", "0.12")),
    ("12.0000001", "12", ("12.0000001", "12")),
])
def test_messages_show_real_values(value: str, limit: str, shown: tuple[str, str]) -> None:
    assert gates.show_pair(gates.exact(value), gates.exact(limit)) == shown


def test_exact_takes_numbers_as_the_decimals_they_were_written_as() -> None:
    assert gates.exact(1.0) - gates.exact(0.98) == gates.exact(0.02)
    assert gates.exact("0.1") + gates.exact("0.2") == gates.exact(0.3)
    for bad in (True, None, "abc", float("nan"), float("inf"), [1], "1e999999", "NaN", "-Infinity"):
        with pytest.raises(ValueError, match=r"number|range"):
            gates.exact(bad)


def test_an_unusable_measurement_fails_the_gate_closed() -> None:
    res = installed()
    res["models"]["m"]["p95_ms"] = "fast"
    g = rollout.wave_gate(plan({"max_p95_latency_ms": 20}), 1, {"a1": res}, {})
    assert "unusable measurement" in g["halted"]["line_a"]["reason"]


def test_the_schema_states_how_each_limit_is_compared() -> None:
    """The gate's inclusive comparisons are the ones the schema documents for models.yaml authors."""
    import json

    schema = json.loads((Path(__file__).resolve().parents[2] / "schemas" / "models.schema.json").read_text())
    rollout_props = schema["$defs"]["group"]["properties"]["rollout"]["properties"]
    described = {"max_fail_percent": rollout_props["max_fail_percent"]["description"],
                 **{k: v["description"] for k, v in rollout_props["health_gate"]["properties"].items()
                    if k != "require_smoke_pass"}}
    assert set(described) == {"max_fail_percent", "max_p95_latency_ms", "max_error_rate_increase",
                              "min_mean_confidence"}
    for key, text in described.items():
        assert "Inclusive" in text, key
        assert "exact" in text, key


def test_gate_decisions_accumulate_over_waves_with_the_measurements_they_read() -> None:
    p = plan({"max_p95_latency_ms": 5})
    first = rollout.wave_gate(p, 1, {"a1": installed(p95=0.5)}, {})
    second = rollout.wave_gate(p, 2, {"a2": installed(p95=9.0), "a3": installed(p95=0.5)}, first["halted"],
                               first["decisions"])
    assert [(d["group"], d["wave"], d["passed"], d["failed"], d["devices"]) for d in second["decisions"]] == [
        ("line_a", 1, True, 0, 1), ("line_a", 2, False, 1, 2)]
    assert second["decisions"][1]["measurements"]["a2"]["m"]["p95_ms"] == 9.0
    assert second["decisions"][1]["health_gate"] == {"max_p95_latency_ms": 5}


# ---- check mode: the gate is not evaluated and halts nothing (make plan) ------------------------------------------

def test_check_mode_gate_is_not_evaluated_and_never_halts() -> None:
    p = plan({"max_p95_latency_ms": 5}, 0, [["a1", "a2", "a3"], ["a4"]])
    unreachable = rollout.device_result({"unreachable": True, "msg": "ssh: connect timed out"},
                                        {"models": {"m": {"version": "1.1.0"}}}, True)
    refused = rollout.device_result({"results": [{"item": {"key": "m", "value": {"version": "1.1.0"}},
                                                  "failed": True, "msg": "downgrade"}]}, {}, True)
    results = {"a2": unreachable, "a3": refused}  # a1 gave no answer at all
    real = rollout.wave_gate(p, 1, results, {})
    assert "line_a" in real["halted"], "the same wave halts a real deploy"
    assert real["report"]["line_a"]["line"].startswith("line_a wave 1: 3/3 failed, max 0%: HALTED: wave 1: ")
    g = rollout.wave_gate(p, 1, results, {}, check_mode=True)
    assert (g["halted"], g["rollback_hosts"]) == ({}, [])
    r = g["report"]["line_a"]
    assert (r["passed"], r["evaluated"], r["failed"], r["failures"]) == (None, False, 0, {})
    assert r["unreachable"] == {"a1": "no answer from this device in this run",
                                "a2": "m: ssh: connect timed out"}
    assert r["line"] == f"line_a wave 1: 3 device(s), max 0% failed: {gates.NOT_EVALUATED}; unreachable: a1, a2"
    assert "passed" not in r["line"]
    assert "HALTED" not in r["line"]
    # the plan goes on: the next wave is shown (not evaluated either), never skipped as halted
    nxt = rollout.wave_gate(p, 2, results, g["halted"], g["decisions"], check_mode=True)
    assert nxt["report"]["line_a"]["line"].startswith("line_a wave 2: 1 device(s), ")
    assert nxt["report"]["line_a"]["unreachable"] == {"a4": "no answer from this device in this run"}
    assert [(d["wave"], d["passed"]) for d in nxt["decisions"]] == [(1, None), (2, None)]


def test_real_gate_lists_unreachable_devices_and_says_passed() -> None:
    p = plan({}, 50, [["a1", "a2"]])
    g = rollout.wave_gate(p, 1, {"a1": installed()}, {})
    r = g["report"]["line_a"]
    assert (g["halted"], r["passed"], r["evaluated"]) == ({}, True, True)
    assert r["unreachable"] == {"a2": "no answer from this device in this run"}
    assert r["line"] == "line_a wave 1: 1/2 failed, max 50%: passed"

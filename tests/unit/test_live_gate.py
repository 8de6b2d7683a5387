"""The live canary gate's verdict (plugin_utils/live_gate.py) at its boundaries, and the device-side summary."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "collections"))

from ansible_collections.edgeml.fleet.plugins.plugin_utils import live_gate as lg

from edge_runtime.telemetry.aggregate import LATENCY_BUCKETS_MS, MinuteAggregate, latency_bucket
from edge_runtime.telemetry.live import summarise


def side(n: int = 1000, errors: int = 0, feedback: int = 0, wrong: int = 0, conf: float = 0.9,
         p95: float | str | None = 1.0) -> dict[str, Any]:
    return {"inferences": n, "errors": errors, "feedback": feedback, "feedback_wrong": wrong,
            "conf_sum": conf * (n - errors), "conf_n": n - errors, "p95_ms": p95}


def summary(new: dict[str, Any], base: dict[str, Any]) -> dict[str, Any]:
    return {"model": "m", "version": "1.1.0", "previous_version": "1.0.0", "activated_at": 0.0,
            "new": new, "baseline": base}


POLICY = {"min_samples": 200, "min_feedback": 100}


def verdict(new: dict[str, Any], base: dict[str, Any], **policy: Any) -> dict[str, Any]:
    return lg.model_verdict(summary(new, base), {**POLICY, **policy})


# ------------------------------------------------------------------------------- error rate: halt at +2 points


def test_error_rate_exactly_two_points_above_halts_one_step_below_passes() -> None:
    base = side(feedback=1000, wrong=100)  # 10 %
    at = verdict(side(feedback=1000, wrong=120), base)  # 12 %: exactly +2 points
    assert at["verdict"] == "halt"
    assert at["numbers"]["basis"] == "ground_truth"
    assert "error rate (ground truth) 10% -> 12%: error rate increase 2 points >= halt at 2 points" in at["reasons"][0]
    below = verdict(side(feedback=1000, wrong=119), base)  # +1.9 points
    assert below["verdict"] == "pass", below
    beyond = verdict(side(feedback=1000, wrong=121), base)  # +2.1 points
    assert beyond["verdict"] == "halt"


def test_error_rate_limit_is_exact_decimal_not_binary_float() -> None:
    # 0.07 - 0.05 is 0.020000000000000004 in binary floating point; exactly 0.02 here, and 0.02 halts
    base = side(feedback=100, wrong=5)
    assert verdict(side(feedback=100, wrong=7), base, halt_at_error_rate_increase=0.02)["verdict"] == "halt"
    assert verdict(side(feedback=100, wrong=7), base, halt_at_error_rate_increase=0.0201)["verdict"] == "pass"


def test_without_enough_feedback_the_error_rate_is_the_inference_failure_rate() -> None:
    base = side(feedback=99, wrong=0, errors=10)  # 1 %
    v = verdict(side(feedback=500, wrong=400, errors=30), base, halt_at_inference_error_increase=1)
    assert v["numbers"]["basis"] == "inference_failures"
    assert v["verdict"] == "halt"  # 3 % - 1 % = 2 points
    assert "error rate (inference failures) 1% -> 3%" in v["reasons"][0]
    assert verdict(side(feedback=500, errors=29), base, halt_at_inference_error_increase=1)["verdict"] == "pass"


def test_inference_failure_increase_at_and_below_its_limit() -> None:
    base = side(feedback=1000, wrong=100, errors=0)
    at = verdict(side(feedback=1000, wrong=100, errors=10), base)  # +1 point of failures
    assert at["verdict"] == "halt"
    assert any("inference failures 0% -> 1%" in r for r in at["reasons"])
    assert verdict(side(feedback=1000, wrong=100, errors=9), base)["verdict"] == "pass"


# ------------------------------------------------------------------------------- latency, confidence


def test_p95_ratio_at_the_limit_halts() -> None:
    base = side(p95=1.0)
    assert verdict(side(p95=2.5), base, halt_at_p95_latency_ratio=2.5)["verdict"] == "halt"
    assert verdict(side(p95=2.5), base, halt_at_p95_latency_ratio="2.5000001")["verdict"] == "pass"
    assert verdict(side(p95=2.5), base)["verdict"] == "pass"  # default 3.0: one bucket up passes
    assert verdict(side(p95=5.0), base)["verdict"] == "halt"  # two buckets up
    assert verdict(side(p95="inf"), base)["verdict"] == "halt"
    assert verdict(side(p95="inf"), side(p95="inf"))["verdict"] == "pass"


def test_confidence_drop_at_the_limit_halts() -> None:
    base = side(conf=0.9)
    at = verdict(side(conf=0.85), base)
    assert at["verdict"] == "halt", at
    assert "mean confidence 0.9000 -> 0.8500" in at["reasons"][0]
    assert verdict(side(conf=0.8501), base)["verdict"] == "pass"


def test_no_successful_inference_of_the_new_version_halts() -> None:
    assert verdict(side(errors=1000), side())["verdict"] == "halt"


# ------------------------------------------------------------------------------- insufficient data


def test_below_min_samples_is_insufficient_data_at_min_samples_it_is_judged() -> None:
    v = verdict(side(n=199), side())
    assert v["verdict"] == "insufficient_data"
    assert "199 inferences of 1.1.0 since its activation; the gate needs 200 each" in v["reasons"][0]
    assert verdict(side(n=200), side())["verdict"] == "pass"
    b = verdict(side(), side(n=199))
    assert b["verdict"] == "insufficient_data"
    assert "199 of the baseline 1.0.0" in b["reasons"][0]


def test_first_install_has_no_baseline() -> None:
    s = summary(side(), side(n=0))
    s["previous_version"] = None
    v = lg.model_verdict(s, POLICY)
    assert v["verdict"] == "insufficient_data"
    assert "(no previous version)" in v["reasons"][0]


def test_unreadable_or_missing_telemetry_fails_closed() -> None:
    spec = {"group": "g", "models": ["m"]}
    d = lg.device_verdict(None, spec, POLICY)
    assert d["verdict"] == "insufficient_data"
    assert "no live telemetry read" in d["failure"]
    d = lg.device_verdict({"failed": True, "msg": "boom", "attempts": 3}, spec, POLICY)
    assert "(boom)" in d["failure"]
    d = lg.device_verdict({"telemetry": {"m": {"problem": "telemetry of m cannot be read: corrupt"}}}, spec, POLICY)
    assert d["verdict"] == "insufficient_data"
    assert "corrupt" in d["failure"]


def test_reads_count_every_check_of_an_exhausted_bake() -> None:
    spec = {"group": "g", "models": ["m"], "retries": 10, "min_samples": 200}
    short = {"telemetry": {"m": summary(side(n=5), side())}}
    # ansible-core says attempts=10 when all 11 checks (the first + 10 retries) found too few samples
    assert lg.device_verdict({**short, "failed": True, "attempts": 10}, spec, POLICY)["reads"] == 11
    assert lg.device_verdict({**short, "attempts": 4}, spec, POLICY)["reads"] == 4
    ready = {"telemetry": {"m": summary(side(), side())}, "attempts": 10}
    assert lg.device_verdict(ready, spec, POLICY)["reads"] == 10


def test_hostile_numbers_halt_with_a_reason() -> None:
    bad = side()
    bad["conf_sum"] = float("nan")
    v = verdict(bad, side())
    assert v["verdict"] == "halt"
    assert "unusable" in v["reasons"][0]
    # counts that are not counts are no samples
    junk = side()
    junk["inferences"] = "1000"
    assert verdict(junk, side())["verdict"] == "insufficient_data"


# ------------------------------------------------------------------------------- bake plan, readiness, wave


def plan(live: dict[str, Any] | None, max_fail: float = 0) -> dict[str, Any]:
    pol: dict[str, Any] = {"max_fail_percent": max_fail, "health_gate": {}}
    if live is not None:
        pol["live_gate"] = lg.live_gate_policy(live)
    return {"run_id": "r1", "groups": {"g": {"waves": [["a1", "a2"], ["a3"]], "policy": pol}}}


INSTALLED = {"models": {"m": {"status": "installed"}}}


def test_no_bake_time_bakes_nothing() -> None:
    assert lg.bake_plan(plan(None), 1, {"a1": INSTALLED}, {})["hosts"] == []
    assert lg.bake_plan(plan({"bake_seconds": 0}), 1, {"a1": INSTALLED}, {})["hosts"] == []


def test_bake_plan_polls_about_the_bake_time_and_only_installed_devices_of_unhalted_groups() -> None:
    b = lg.bake_plan(plan({"bake_seconds": 60, "poll_seconds": 7}), 1,
                     {"a1": INSTALLED, "a2": {"models": {"m": {"status": "unchanged"}}}}, {})
    assert b["hosts"] == ["a1"]
    assert (b["devices"]["a1"]["retries"], b["devices"]["a1"]["delay"]) == (9, 7.0)  # ceil(60 / 7)
    ext = lg.bake_plan(plan({"bake_seconds": 60, "poll_seconds": 10, "on_insufficient_data": "extend"}), 1,
                       {"a1": INSTALLED}, {})
    assert ext["devices"]["a1"]["retries"] == 12  # extend_seconds defaults to bake_seconds
    assert lg.bake_plan(plan({"bake_seconds": 60}), 1, {"a1": INSTALLED}, {"g": {"wave": 1}})["hosts"] == []
    short = lg.bake_plan(plan({"bake_seconds": 2, "poll_seconds": 10}), 1, {"a1": INSTALLED}, {})
    assert (short["devices"]["a1"]["retries"], short["devices"]["a1"]["delay"]) == (1, 2.0)


def test_bake_ready_needs_min_samples_on_both_sides() -> None:
    spec = {"models": ["m"], "min_samples": 200}
    assert not lg.bake_ready({}, spec)
    assert not lg.bake_ready({"telemetry": {"m": summary(side(n=199), side())}}, spec)
    assert not lg.bake_ready({"telemetry": {"m": summary(side(), side(n=199))}}, spec)
    assert lg.bake_ready({"telemetry": {"m": summary(side(n=200), side(n=200))}}, spec)
    assert lg.bake_ready({"telemetry": {"m": {"problem": "unreadable"}}}, spec)  # waiting would not help


def test_a_device_polled_late_stops_at_the_bake_deadline() -> None:
    b = lg.bake_plan(plan({"bake_seconds": 60}), 1, {"a1": INSTALLED}, {}, now=1000.0)
    spec = b["devices"]["a1"]
    assert spec["deadline"] == 1060.0
    short = {"telemetry": {"m": summary(side(n=5), side())}}
    assert not lg.bake_ready(short, spec, now=1059.999)
    assert lg.bake_ready(short, spec, now=1060.0)  # at the deadline: stop (and judge: insufficient_data)


def test_live_wave_gate_halts_the_group_and_rolls_back_its_baked_devices() -> None:
    p = plan({"bake_seconds": 60})
    bake = lg.bake_plan(p, 1, {"a1": INSTALLED, "a2": INSTALLED}, {})
    good = {"telemetry": {"m": summary(side(feedback=1000, wrong=50), side(feedback=1000, wrong=50))}, "attempts": 2}
    bad = {"telemetry": {"m": summary(side(feedback=1000, wrong=80), side(feedback=1000, wrong=50))}}
    gate = {"halted": {}, "rollback_hosts": [], "decisions": [{"group": "g", "wave": 1}]}
    out = lg.live_wave_gate(p, 1, {"a1": good, "a2": bad}, gate, bake)
    assert out["halted"]["g"]["gate"] == "live"
    assert "1/2 device(s) failed (50% > 0% allowed): a2: m: live gate halt: error rate (ground truth) 5% -> 8%" \
        in out["halted"]["g"]["reason"]
    assert out["rollback_hosts"] == ["a1", "a2"]
    live = out["decisions"][-1]
    assert (live["kind"], live["passed"], live["failed"], live["devices"]) == ("live", False, 1, 2)
    assert live["verdicts"]["a1"]["reads"] == 2
    assert live["verdicts"]["a2"]["models"]["m"]["numbers"]["error_rate"] == 0.08
    # the same wave under max_fail_percent 50 passes (the smoke gate's rule: failed * 100 <= limit * devices)
    ok = lg.live_wave_gate(plan({"bake_seconds": 60}, max_fail=50), 1, {"a1": good, "a2": bad}, gate, bake)
    assert ok["halted"] == {}
    assert ok["rollback_hosts"] == []


# ------------------------------------------------------------------------------- device-side summary


def minute(version: str, t: int, n: int, wrong: int = 0, ms: float = 0.3) -> MinuteAggregate:
    lat = [0] * len(LATENCY_BUCKETS_MS)
    lat[latency_bucket(ms)] = n
    return MinuteAggregate("m", version, t, count=n, conf_sum=0.9 * n, conf_n=n, feedback_n=n, feedback_wrong=wrong,
                           latency_counts=lat, latency_sum_ms=ms * n)


def test_summary_splits_new_since_activation_and_baseline_before_it() -> None:
    act = 600_030.0  # inside the minute 600000
    rows = [minute("1.0.0", 600_000 - 61 * 60, 5),  # older than the 60 baseline minutes
            minute("1.0.0", 600_000 - 60 * 60, 7), minute("1.0.0", 600_000, 3),
            minute("1.1.0", 600_000, 11, wrong=2, ms=2.0), minute("1.1.0", 600_060, 13, ms=2.0),
            minute("0.9.0", 599_940, 17)]
    s = summarise(rows, "m", "1.1.0", "1.0.0", act, 60)
    assert (s["new"]["inferences"], s["new"]["feedback_wrong"], s["new"]["minutes"]) == (24, 2, 2)
    assert s["baseline"]["inferences"] == 10
    assert s["new"]["p95_ms"] == 2.5
    assert s["baseline"]["p95_ms"] == 0.5
    assert s["new"]["mean_confidence"] == pytest.approx(0.9)
    none = summarise(rows, "m", "1.1.0", None, act, 60)
    assert none["baseline"]["inferences"] == 0
    assert none["baseline"]["p95_ms"] is None


def test_a_device_that_no_longer_runs_the_version_this_run_installed_halts_never_passes() -> None:
    """Fresh facts only: a device that rolled the new version back during the bake (its monitor, an operator)
    reports the telemetry of whatever is active now -- the old version against its own previous one, which
    passes on its numbers. Those are not the new version's numbers: the device halts its wave."""
    p = plan({"bake_seconds": 60})
    installed = {"models": {"m": {"status": "installed", "desired": "1.1.0"}}}
    bake = lg.bake_plan(p, 1, {"a1": installed, "a2": installed}, {})
    fine = {"telemetry": {"m": summary(side(), side())}}
    rolled_back = {"telemetry": {"m": {**summary(side(), side()), "version": "1.0.0", "previous_version": "1.1.0"}}}
    assert lg.bake_ready(rolled_back, bake["devices"]["a2"])  # waiting would not bring 1.1.0 back
    gate: dict[str, Any] = {"halted": {}, "rollback_hosts": [], "decisions": []}
    out = lg.live_wave_gate(p, 1, {"a1": fine, "a2": rolled_back}, gate, bake)
    live = out["decisions"][-1]
    assert live["verdicts"]["a1"]["verdict"] == "pass"
    assert live["verdicts"]["a2"]["verdict"] == "halt"
    assert "1.1.0 (installed in this run) is no longer active on the device (1.0.0 is)" in out["halted"]["g"]["reason"]
    assert bake["devices"]["a1"]["versions"] == {"m": "1.1.0"}


@pytest.mark.parametrize(("new", "base"), [
    (side(errors=100), {**side(), "errors": 2000}),                      # baseline: more errors than inferences
    (side(feedback=1000, wrong=100), side(feedback=1000, wrong=1500)),  # more wrong answers than feedback
    (side(feedback=5000, wrong=100), side(feedback=1000, wrong=50)),    # more feedback than inferences
    ({**side(), "conf_sum": 1500.0}, side()),                            # mean confidence 1.5
    ({**side(), "conf_sum": -1.0}, side(conf=0.0)),                      # negative confidence
    ({**side(), "conf_n": 5000, "conf_sum": 4500.0}, side()),            # more confidences than inferences
    (side(p95=-1.0), side(p95=1.0)),                                     # negative latency
    (side(p95=10000.0), side(p95=0.0)),                                  # a 0 ms baseline skipped the ratio
])
def test_impossible_telemetry_halts_instead_of_turning_a_comparison_around(new: dict[str, Any],
                                                                           base: dict[str, Any]) -> None:
    """Numbers no real device can report (a part larger than its whole, a confidence outside [0, 1], a negative
    latency) made the comparison pass: a baseline with more errors than inferences let any new error rate
    through. Broken or forged telemetry fails closed."""
    v = verdict(new, base)
    assert v["verdict"] == "halt", v
    assert "unusable measurement" in v["reasons"][0]
    assert verdict(side(), side())["verdict"] == "pass"

"""The monitor's rules (edge_runtime.monitor) at their boundaries: pure functions, time passed in."""

from __future__ import annotations

import math

import pytest

from edge_runtime.errors import ConfigError
from edge_runtime.monitor import MonitorConfig, evaluate, minute_floor, rollback_reason
from edge_runtime.telemetry.aggregate import MinuteAggregate

MODEL = "defect-classifier"
T0 = 1_800_000_000 - 1_800_000_000 % 60  # a minute stamp
ACTIVATED = T0 + 7  # activated during minute T0
CFG = MonitorConfig()


def row(i: int, n: int = 20, mean: float = 0.5, *, version: str = "1.1.0", count: int | None = None,
        errors: int = 0, fb_n: int = 0, fb_wrong: int = 0, conf_sum: float | None = None) -> MinuteAggregate:
    """The aggregate of minute T0 + i*60: ``n`` confidences with mean ``mean``."""
    return MinuteAggregate(
        MODEL, version, T0 + 60 * i, count=n + errors if count is None else count, errors=errors,
        conf_sum=n * mean if conf_sum is None else conf_sum, conf_n=n, feedback_n=fb_n, feedback_wrong=fb_wrong,
    )


def now_after(i: int) -> float:
    """A time at which minute i (and all before it) is complete and minute i+1 is in progress."""
    return T0 + 60 * (i + 1) + 30


def conf(rows: list[MinuteAggregate], now: float, cfg: MonitorConfig = CFG, activated: float | None = ACTIVATED,
         version: str = "1.1.0"):  # type: ignore[no-untyped-def]
    ev = evaluate(MODEL, version, activated, rows, now, cfg)
    return ev, next(f for f in ev.findings if f.rule == "confidence")


# ---------------------------------------------------------------- the confidence rule -----------------


def test_five_consecutive_low_minutes_breach_and_ask_for_a_rollback() -> None:
    ev, f = conf([row(i, mean=0.61) for i in range(5)], now_after(4))
    assert f.status == "breach"
    assert ev.rollback is f
    assert rollback_reason(f) == (
        "self-rollback: mean confidence 0.61 < 0.75 for 5 consecutive minutes (min 20 inferences/min)"
    )
    assert f.evidence["run_start"] == T0
    assert f.evidence["run_end"] == T0 + 300
    assert [m["minute"] for m in f.evidence["per_minute"]] == [T0 + 60 * i for i in range(5)]


def test_four_consecutive_low_minutes_do_not_breach() -> None:
    ev, f = conf([row(i, mean=0.61) for i in range(4)], now_after(3))
    assert f.status == "ok"
    assert f.evidence["current_run"] == 4
    assert ev.rollback is None


def test_a_mean_of_exactly_the_threshold_is_not_low() -> None:
    rows = [row(i, n=16, mean=0.75) for i in range(5)]
    assert all(r.conf_sum / r.conf_n == 0.75 for r in rows)
    _, f = conf(rows, now_after(4), MonitorConfig(min_inferences=16))
    assert f.status == "ok"
    assert f.evidence["minutes_healthy"] == 5


def test_a_mean_one_ulp_below_the_threshold_is_low() -> None:
    below = math.nextafter(0.75, 0.0)
    rows = [row(i, n=16, mean=below) for i in range(5)]
    assert all(r.conf_sum / r.conf_n == below for r in rows)  # n = 16: the product and quotient are exact
    _, f = conf(rows, now_after(4), MonitorConfig(min_inferences=16))
    assert f.status == "breach"
    # the message never prints a mean that reads as equal to the threshold
    mean_text = f.message.split()[2]
    assert float(mean_text) < 0.75, f.message


def test_the_threshold_and_run_length_are_configurable() -> None:
    rows = [row(i, mean=0.69) for i in range(3)]
    cfg = MonitorConfig(confidence_threshold=0.7, confidence_minutes=3)
    assert conf(rows, now_after(2), cfg)[1].status == "breach"
    assert conf(rows, now_after(2), MonitorConfig(confidence_threshold=0.69, confidence_minutes=3))[1].status == "ok"


def test_a_minute_with_exactly_the_minimum_of_inferences_counts() -> None:
    _, f = conf([row(i, n=20, mean=0.5) for i in range(5)], now_after(4), MonitorConfig(min_inferences=20))
    assert f.status == "breach"


def test_a_minute_one_inference_short_of_the_minimum_breaks_the_run() -> None:
    rows = [row(i, n=20, mean=0.5) for i in range(5)]
    rows[2] = row(2, n=19, mean=0.5)
    _, f = conf(rows, now_after(4))
    assert f.status == "ok"
    assert f.evidence["minutes_insufficient"] == 1
    assert f.evidence["minutes_low"] == 4
    assert f.evidence["current_run"] == 2


def test_insufficient_minutes_are_not_skipped_low_minutes_around_them_do_not_add_up() -> None:
    """4 low, 1 near-silent, 4 low: no breach (skipping would have made 8 "consecutive" low minutes)."""
    rows = [row(i, mean=0.3) for i in range(4)] + [row(4, n=2, mean=0.3)] + [row(i, mean=0.3) for i in range(5, 9)]
    _, f = conf(rows, now_after(8))
    assert f.status == "ok"
    # the other side: the same minutes with the quiet one busy enough breach
    rows[4] = row(4, mean=0.3)
    assert conf(rows, now_after(8))[1].status == "breach"


def test_insufficient_minutes_are_not_healthy_either() -> None:
    """Only insufficient minutes: the rule reports insufficient_data, never ok."""
    _, f = conf([row(i, n=5, mean=0.99) for i in range(10)], now_after(9))
    assert f.status == "insufficient_data"
    assert f.evidence["minutes_healthy"] == 0


def test_a_healthy_minute_breaks_the_run() -> None:
    rows = [row(i, mean=0.5) for i in range(9)]
    rows[4] = row(4, mean=0.9)
    _, f = conf(rows, now_after(8))
    assert f.status == "ok"
    assert f.evidence["current_run"] == 4


def test_a_missing_minute_breaks_the_run() -> None:
    rows = [row(i, mean=0.5) for i in (0, 1, 2, 4, 5)]  # no row for minute 3: it had no inferences
    _, f = conf(rows, now_after(5))
    assert f.status == "ok"
    assert f.evidence["current_run"] == 2


def test_errors_have_no_confidence_the_minimum_counts_confidences() -> None:
    """40 inferences, 25 of them errors: 15 confidences are fewer than 20 -> insufficient."""
    _, f = conf([row(i, n=15, mean=0.4, errors=25) for i in range(5)], now_after(4))
    assert f.status == "insufficient_data"


def test_a_run_in_the_past_since_the_activation_still_breaches() -> None:
    """A monitor that ran late (timer missed, device busy) does not lose a breach that ended."""
    rows = [row(i, mean=0.5) for i in range(5)] + [row(i, mean=0.95) for i in range(5, 30)]
    _, f = conf(rows, now_after(29))
    assert f.status == "breach"
    assert f.evidence["run_start"] == T0


def test_the_latest_run_is_the_one_reported() -> None:
    rows = [row(i, mean=0.5) for i in range(5)] + [row(5, mean=0.9)] + [row(i, mean=0.6) for i in range(6, 12)]
    _, f = conf(rows, now_after(11))
    assert f.evidence["run_start"] == T0 + 60 * 7  # the last 5 of the 6-minute run at 0.6
    assert f.evidence["mean_confidence"] == pytest.approx(0.6)


def test_the_action_decides_whether_a_breach_asks_for_a_rollback() -> None:
    rows = [row(i, mean=0.5) for i in range(5)]
    ev, f = conf(rows, now_after(4), MonitorConfig(confidence_action="report"))
    assert f.status == "breach"
    assert ev.rollback is None
    ev, f = conf(rows, now_after(4), MonitorConfig(confidence_action="off"))
    assert f.status == "off"
    assert ev.rollback is None


# ---------------------------------------------------------------- which minutes count ------------------


def test_only_minutes_since_the_activation_count() -> None:
    """3 low minutes before the activation and 2 after: 2, not 5."""
    rows = [row(i, mean=0.5) for i in range(-3, 2)]
    ev, f = conf(rows, now_after(1))
    assert f.status == "ok"
    assert f.evidence["minutes_low"] == 2
    assert ev.since == T0
    # the minute of the activation counts (its rows are this version's, served after the swap)
    assert conf([row(i, mean=0.5) for i in range(5)], now_after(4))[1].status == "breach"


def test_the_previous_versions_minutes_never_count() -> None:
    rows = [row(i, mean=0.3, version="1.0.0") for i in range(-10, 0)] + [row(i, mean=0.3) for i in range(3)]
    _, f = conf(rows, now_after(2))
    assert f.evidence["minutes_low"] == 3
    assert f.status == "ok"


def test_a_version_rolled_back_to_does_not_inherit_its_minutes_from_before() -> None:
    """1.0.0 low for 5 minutes, then 1.1.0, then back to 1.0.0 with an unknown activation time: the
    data boundary (after 1.1.0's last minute) keeps 1.0.0's old minutes out."""
    rows = (
        [row(i, mean=0.3, version="1.0.0") for i in range(5)]
        + [row(i, mean=0.9, version="1.1.0") for i in range(5, 8)]
        + [row(i, mean=0.3, version="1.0.0") for i in range(8, 10)]
    )
    ev, f = conf(rows, now_after(9), activated=None, version="1.0.0")
    assert f.status == "ok"
    assert f.evidence["minutes_low"] == 2
    assert ev.since == T0 + 8 * 60


def test_the_minute_in_progress_does_not_count_until_it_is_complete() -> None:
    rows = [row(i, mean=0.5) for i in range(5)]
    in_minute_4 = T0 + 4 * 60 + 59.999
    assert conf(rows, in_minute_4)[1].status == "ok"
    assert conf(rows, T0 + 5 * 60)[1].status == "breach"  # exactly at its end it is complete


def test_minutes_in_the_future_are_ignored_and_reported_until_the_clock_reaches_them() -> None:
    """The clock went back 10 minutes after five low minutes were written: they are in the future now."""
    rows = [row(i, mean=0.5) for i in range(5)]
    ev, f = conf(rows, T0 - 600 + 30, activated=T0 - 3600)
    assert f.status == "insufficient_data"
    clock = [x for x in ev.findings if x.rule == "clock"]
    assert len(clock) == 1
    assert clock[0].evidence["future_rows"] == 5
    assert "future" in clock[0].message
    # once the clock has passed them they count (once)
    assert conf(rows, now_after(4), activated=T0 - 3600)[1].status == "breach"


def test_an_activation_in_the_future_is_reported_and_nothing_counts() -> None:
    rows = [row(i, mean=0.5) for i in range(5)]
    ev, f = conf(rows, now_after(4), activated=now_after(4) + 3600)
    assert f.status == "insufficient_data"
    assert any(x.rule == "clock" and "activated" in x.message for x in ev.findings)


def test_a_backwards_jump_never_makes_a_minute_count_twice() -> None:
    """The clock stepped back 2 minutes: minutes 2 and 3 got a second row each. 4 minutes, not 6."""
    rows = [row(i, mean=0.5) for i in range(4)] + [row(2, n=10, mean=0.5), row(3, n=10, mean=0.5)]
    ev, f = conf(rows, now_after(3))
    assert f.status == "ok"
    assert f.evidence["minutes_low"] == 4
    assert any(x.rule == "rows" and x.evidence["duplicates"] == 2 for x in ev.findings)


def test_consecutive_means_consecutive_minute_stamps_not_consecutive_rows() -> None:
    """A forward jump of 3 minutes between rows: the rows are adjacent, the minutes are not."""
    rows = [row(i, mean=0.5) for i in (0, 1, 2, 6, 7)]
    assert conf(rows, now_after(7))[1].status == "ok"


def test_the_lookback_bounds_what_is_read() -> None:
    rows = [row(i, mean=0.5) for i in range(5)]
    cfg = MonitorConfig(lookback_minutes=60)
    assert conf(rows, now_after(4) + 55 * 60, cfg, activated=None)[1].status == "breach"
    _, f = conf(rows, now_after(4) + 56 * 60, cfg, activated=None)  # minute 0 is 61 minutes old now
    assert (f.status, f.evidence["minutes_low"]) == ("ok", 4)


@pytest.mark.parametrize(
    ("bad", "why"),
    [
        (MinuteAggregate(MODEL, "1.1.0", T0 + 121, count=20, conf_sum=10.0, conf_n=20), "start of a minute"),
        (MinuteAggregate(MODEL, "1.1.0", T0 + 120, count=20, conf_sum=math.nan, conf_n=20), "finite"),
        (MinuteAggregate(MODEL, "1.1.0", T0 + 120, count=20, conf_sum=-1.0, conf_n=20), "outside"),
        (MinuteAggregate(MODEL, "1.1.0", T0 + 120, count=20, conf_sum=21.0, conf_n=20), "outside"),
        (MinuteAggregate(MODEL, "1.1.0", T0 + 120, count=10, conf_sum=5.0, conf_n=20), "exceed"),
        (MinuteAggregate(MODEL, "1.1.0", T0 + 120, count=-1, conf_sum=0.0, conf_n=0), "negative"),
        (MinuteAggregate(MODEL, "1.1.0", T0 + 120, count=20, conf_sum=5.0, conf_n=20, feedback_n=1,
                         feedback_wrong=2), "wrong answers"),
    ],
)
def test_an_invalid_row_is_ignored_reported_and_breaks_the_run(bad: MinuteAggregate, why: str) -> None:
    rows = [row(i, mean=0.5) for i in (0, 1, 3, 4, 5)] + [bad]
    ev, f = conf(rows, now_after(5))
    assert f.status == "ok"
    found = [x for x in ev.findings if x.rule == "rows"]
    assert len(found) == 1
    assert why in found[0].message
    assert found[0].evidence["invalid_rows"] == 1


def test_rows_of_other_models_are_not_read() -> None:
    other = [MinuteAggregate("other", "1.1.0", T0 + 60 * i, count=20, conf_sum=4.0, conf_n=20) for i in range(5)]
    assert conf(other, now_after(4))[1].status == "insufficient_data"


def test_minute_floor_is_exact_at_and_just_below_a_minute() -> None:
    assert minute_floor(T0) == T0
    assert minute_floor(T0 - 1e-6) == T0 - 60
    assert minute_floor(T0 + 59.999999) == T0


# ---------------------------------------------------------------- error rules ---------------------------


def _rule(rows: list[MinuteAggregate], now: float, rule: str, cfg: MonitorConfig = CFG):  # type: ignore[no-untyped-def]
    ev = evaluate(MODEL, "1.1.0", ACTIVATED, rows, now, cfg)
    return ev, next(f for f in ev.findings if f.rule == rule)


def test_error_rate_at_the_maximum_passes_and_one_more_error_breaches() -> None:
    # window 10 minutes, 100 inferences, max 0.05: 5 errors pass, 6 breach
    rows = [row(i, n=10, mean=0.9) for i in range(10)]
    rows[3] = row(3, n=5, mean=0.9, errors=5)
    _, f = _rule(rows, now_after(9), "errors")
    assert (f.status, f.evidence["n"], f.evidence["bad"]) == ("ok", 100, 5)
    rows[4] = row(4, n=9, mean=0.9, errors=1)
    _, f = _rule(rows, now_after(9), "errors")
    assert (f.status, f.evidence["bad"]) == ("breach", 6)
    assert f.action == "report"


def test_error_rate_needs_the_minimum_of_inferences() -> None:
    rows = [row(i, n=9, mean=0.9, errors=1) for i in range(10)]  # 100 inferences, 10 % errors
    assert _rule(rows, now_after(9), "errors")[1].status == "breach"
    rows[0] = row(0, n=8, mean=0.9, errors=1)  # 99 inferences
    assert _rule(rows, now_after(9), "errors")[1].status == "insufficient_data"


def test_error_rate_looks_at_the_trailing_window_only() -> None:
    rows = [row(i, n=0, mean=0.0, errors=50) for i in range(5)] + [row(i, n=50, mean=0.9) for i in range(5, 20)]
    assert _rule(rows, now_after(19), "errors")[1].status == "ok"
    assert _rule(rows, now_after(9), "errors")[1].status == "breach"


def test_error_rule_can_be_made_a_rollback() -> None:
    rows = [row(i, n=5, mean=0.9, errors=5) for i in range(10)]
    ev, f = _rule(rows, now_after(9), "errors", MonitorConfig(error_action="rollback"))
    assert f.status == "breach"
    assert ev.rollback is f
    assert rollback_reason(f).startswith("self-rollback: errors rate 0.5 > 0.05 over the last 10 minutes")


def test_wrong_rate_against_ground_truth_at_the_boundary() -> None:
    # 50 inferences with feedback, max 0.25: 12 wrong (0.24) pass... 12.5 is not a count; use 100 feedback
    rows = [row(i, n=20, mean=0.9, fb_n=10, fb_wrong=2) for i in range(10)]  # 100 feedback, 20 wrong
    rows[0] = row(0, n=20, mean=0.9, fb_n=10, fb_wrong=7)  # 25 wrong = exactly 0.25
    _, f = _rule(rows, now_after(9), "wrong")
    assert (f.status, f.evidence["rate"]) == ("ok", 0.25)
    rows[1] = row(1, n=20, mean=0.9, fb_n=10, fb_wrong=3)  # 26 wrong
    assert _rule(rows, now_after(9), "wrong")[1].status == "breach"


def test_wrong_rate_needs_the_minimum_of_feedback() -> None:
    rows = [row(i, n=20, mean=0.9, fb_n=7, fb_wrong=7) for i in range(7)]  # 49 feedback, all wrong
    assert _rule(rows, now_after(6), "wrong")[1].status == "insufficient_data"
    rows.append(row(7, n=20, mean=0.9, fb_n=1, fb_wrong=1))
    assert _rule(rows, now_after(7), "wrong")[1].status == "breach"


def test_the_first_rollback_breach_in_rule_order_is_the_one_acted_on() -> None:
    rows = [row(i, n=20, mean=0.5, errors=20) for i in range(10)]
    ev = evaluate(MODEL, "1.1.0", ACTIVATED, rows, now_after(9), MonitorConfig(error_action="rollback"))
    assert ev.rollback is not None
    assert ev.rollback.rule == "confidence"


# ---------------------------------------------------------------- settings ------------------------------


def test_defaults_are_the_fields_rule() -> None:
    c = MonitorConfig()
    assert (c.confidence_threshold, c.confidence_minutes, c.min_inferences, c.confidence_action) == (
        0.75, 5, 20, "rollback"
    )
    assert c.drift_action == "report"


def test_settings_are_read_from_a_mapping_and_checked() -> None:
    c = MonitorConfig.from_mapping({"confidence_threshold": 0.7, "min_inferences": 10, "confidence_minutes": 3})
    assert (c.confidence_threshold, c.min_inferences, c.confidence_minutes) == (0.7, 10, 3)
    assert MonitorConfig.from_mapping({"confidence_threshold": 1}).confidence_threshold == 1.0
    assert MonitorConfig.from_mapping(None) == MonitorConfig()


@pytest.mark.parametrize(
    ("doc", "words"),
    [
        ({"confidence_treshold": 0.7}, "unknown"),
        ({"confidence_threshold": 1.0000001}, "[0, 1]"),
        ({"confidence_threshold": -0.1}, "[0, 1]"),
        ({"confidence_threshold": "0.7"}, "must be float"),
        ({"min_inferences": 0}, ">= 1"),
        ({"min_inferences": 2.5}, "must be int"),
        ({"min_inferences": True}, "must be int"),
        ({"confidence_action": "reboot"}, "one of"),
        ({"drift_action": "rollback"}, "report or off"),
        ({"lock_wait_s": -1}, "lock_wait_s"),
        ({"lookback_minutes": 2}, "longest rule window"),
    ],
)
def test_bad_settings_are_refused_with_the_field_named(doc: dict[str, object], words: str) -> None:
    with pytest.raises(ConfigError) as err:
        MonitorConfig.from_mapping(doc)
    assert words in err.value.message
    assert "monitor" in (err.value.hint or "")


def test_a_settings_section_that_is_not_an_object_is_refused() -> None:
    with pytest.raises(ConfigError, match="must be an object"):
        MonitorConfig.from_mapping([1, 2])  # type: ignore[arg-type]


# ---------------------------------------------------------------- data drift (report only) ---------------


def _baseline() -> dict[str, object]:
    import json

    from tests.support.factory import release_dir

    doc: dict[str, object] = json.loads((release_dir("1.0.0") / "baseline.json").read_text())
    return doc


def _drift_rows(shift: float, per_minute: int, minutes: int, seed: int = 7) -> tuple[list[MinuteAggregate], object]:
    """Rows whose pixel_mean values are the baseline's distribution shifted by ``shift``, and their samples."""
    import numpy as np

    from edge_runtime.drift import bin_counts

    base = _baseline()["features"]["pixel_mean"]  # type: ignore[index]
    rng = np.random.default_rng(seed)
    rows, values = [], []
    for i in range(minutes):
        xs = rng.choice(np.asarray(base["sample"]), size=per_minute) + shift + rng.normal(0, 0.01, per_minute)
        values.append(xs)
        r = row(i, n=per_minute, mean=0.9)
        r.features["pixel_mean"] = bin_counts(base["bin_edges"], xs)[0]
        rows.append(r)
    return rows, np.concatenate(values)


def _drift(rows: list[MinuteAggregate], samples: object, now: float, **cfg: object):  # type: ignore[no-untyped-def]
    from edge_runtime._drift_config import DriftConfig
    from edge_runtime.monitor import DriftInput

    baseline = _baseline()
    feats = baseline["features"]  # type: ignore[index]
    baseline["features"] = {"pixel_mean": feats["pixel_mean"]}  # type: ignore[index]
    seen: list[tuple[str, int]] = []

    def sampler(feature: str, since: int) -> object:
        seen.append((feature, since))
        return samples

    inp = DriftInput(baseline, DriftConfig.from_mapping(cfg or None), sampler)
    ev = evaluate(MODEL, "1.1.0", ACTIVATED, rows, now, CFG, drift=inp)
    return ev, next(f for f in ev.findings if f.rule == "drift"), seen


def test_a_shifted_input_is_a_drift_finding_that_never_rolls_back() -> None:
    rows, samples = _drift_rows(0.2, 50, 10)
    ev, f, seen = _drift(rows, samples, now_after(9))
    assert f.status == "drift"
    assert f.action == "report"
    assert ev.rollback is None
    assert f.evidence["drifted"] == ["pixel_mean"]
    assert "pixel_mean" in f.message
    assert "PSI" in f.message
    assert seen == [("pixel_mean", T0)]  # samples since the window's start, never before the activation


def test_inputs_like_the_baseline_are_not_drift() -> None:
    rows, samples = _drift_rows(0.0, 50, 10)
    _, f, _ = _drift(rows, samples, now_after(9))
    assert f.status == "ok", f.message
    assert f.action == "none"


def test_too_few_inputs_are_insufficient_data_never_drift() -> None:
    rows, samples = _drift_rows(0.3, 19, 10)  # 190 values < min_samples 200
    _, f, _ = _drift(rows, samples, now_after(9))
    assert f.status == "insufficient_data"
    rows, samples = _drift_rows(0.3, 20, 10)  # exactly 200
    assert _drift(rows, samples, now_after(9))[1].status == "drift"


def test_the_drift_window_is_the_drift_configs() -> None:
    rows, samples = _drift_rows(0.3, 50, 10)
    _, f, seen = _drift(rows, samples, now_after(9), window_minutes=3)
    assert f.evidence["window_start"] == T0 + 7 * 60
    assert seen == [("pixel_mean", T0 + 7 * 60)]


def test_a_missing_baseline_is_reported_not_drift() -> None:
    from edge_runtime._drift_config import DriftConfig
    from edge_runtime.monitor import DriftInput

    rows, samples = _drift_rows(0.3, 50, 10)
    inp = DriftInput(None, DriftConfig(), lambda feature, since: samples)
    ev = evaluate(MODEL, "1.1.0", ACTIVATED, rows, now_after(9), CFG, drift=inp)
    f = next(f for f in ev.findings if f.rule == "drift")
    assert f.status == "invalid_baseline"
    assert f.action == "none"


def test_a_drift_rule_that_is_off_reports_off() -> None:
    from edge_runtime._drift_config import DriftConfig
    from edge_runtime.monitor import DriftInput

    rows, samples = _drift_rows(0.3, 50, 10)
    inp = DriftInput(_baseline(), DriftConfig(), lambda feature, since: samples)
    ev = evaluate(MODEL, "1.1.0", ACTIVATED, rows, now_after(9), MonitorConfig(drift_action="off"), drift=inp)
    assert next(f for f in ev.findings if f.rule == "drift").status == "off"

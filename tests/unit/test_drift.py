"""Drift statistics (edge_runtime.drift): values against scipy and an independent PSI, statistical quality on
fixed seeds, thresholds at the threshold and one step beyond, bad baselines and bad live data as findings."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import ks_2samp

from edge_runtime import drift
from edge_runtime.baseline import feature_summary
from edge_runtime.drift import DriftConfig, FeatureBaseline
from edge_runtime.errors import ConfigError
from edge_runtime.telemetry.aggregate import MinuteAggregate

REPO = Path(__file__).resolve().parents[2]
DEMO_BASELINES = sorted((REPO / "demo" / "models").glob("*/*/baseline.json"))


def feature_spec(train: np.ndarray, seed: int = 7, sample_size: int = 1000) -> dict[str, Any]:
    """A baseline feature as bundles are built (edge_runtime.baseline: decile bins with open ends, a sample of
    1,000 for KS), with a sample of another size when asked."""
    spec = feature_summary(train, seed)
    if sample_size != 1000:
        idx = np.random.default_rng(seed).choice(len(train), size=min(len(train), sample_size), replace=False)
        spec["sample"] = [float(x) for x in np.asarray(train)[idx]]
    return spec


def reference_psi(edges: list[float], fractions: list[float], live: list[float], floor: float) -> float:
    """PSI written out by hand, independently of drift.py: clip to the outer edges, np.histogram, a loop."""
    clipped = np.clip(np.asarray(live, np.float64), edges[0], edges[-1])
    counts, _ = np.histogram(clipped, bins=np.asarray(edges))
    total = sum(int(c) for c in counts)
    out = 0.0
    for e, c in zip(fractions, counts, strict=True):
        a = max(int(c) / total, floor)
        e = max(e, floor)
        out += (a - e) * math.log(a / e)
    return out


# Two feature shapes: a symmetric one and a skewed one (sigma is the distribution's standard deviation).
DISTRIBUTIONS = {
    "normal": (lambda rng, n: rng.normal(0.5, 0.1, n), 0.1),
    "lognormal": (lambda rng, n: rng.lognormal(0.0, 0.5, n), math.sqrt((math.exp(0.25) - 1) * math.exp(0.25))),
}


# --- values -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("n_live", "sample_size"), [(1000, 1000), (250, 400), (5000, 1000), (20_000, 1000)])
def test_ks_matches_scipy_ks_2samp_on_the_finite_live_values(n_live: int, sample_size: int) -> None:
    rng = np.random.default_rng(n_live)
    spec = feature_spec(rng.normal(size=4000), sample_size=sample_size)
    live = rng.normal(0.1, 1.1, n_live)
    live[:7] = [np.nan, np.inf, -np.inf, np.nan, np.nan, np.inf, np.nan]
    f = drift.evaluate_feature("x", spec, values=live)
    ref = ks_2samp(spec["sample"], live[7:])
    assert f["ks_statistic"] == pytest.approx(ref.statistic, abs=0, rel=1e-12)
    assert f["p_value"] == pytest.approx(ref.pvalue, rel=1e-9)
    assert (f["n_ks"], f["n"], f["nonfinite"]) == (n_live - 7, n_live - 7, 7)


def test_psi_from_values_and_from_counts_matches_a_reference_psi() -> None:
    rng = np.random.default_rng(3)
    spec = feature_spec(rng.normal(size=4000))
    edges = spec["bin_edges"]
    # Values exactly on inner edges, below the first and above the last edge, and a shifted bulk.
    live = [*edges[1:-1], -2e9, 2e9, *rng.normal(0.3, 1.0, 990).tolist()]
    fb = FeatureBaseline.from_spec("x", spec)
    ref = reference_psi(edges, spec["bin_fractions"], live, 1e-4)
    from_values = drift.evaluate_feature("x", fb, values=live)["psi"]
    counts, nonfinite = drift.bin_counts(edges, live)
    from_counts = drift.evaluate_feature("x", fb, counts=counts)["psi"]
    assert nonfinite == 0
    assert from_values == pytest.approx(ref, rel=1e-12)
    assert from_counts == pytest.approx(ref, rel=1e-12)
    assert counts == [int(c) for c in np.histogram(np.clip(live, edges[0], edges[-1]), bins=edges)[0]]


def test_psi_with_an_empty_live_bin_uses_the_floor_and_stays_finite() -> None:
    fractions = [0.25, 0.25, 0.25, 0.25]
    counts = [0, 100, 100, 100]
    expected = (1e-4 - 0.25) * math.log(1e-4 / 0.25) + 3 * (1 / 3 - 0.25) * math.log((1 / 3) / 0.25)
    assert drift.psi(fractions, counts) == pytest.approx(expected, rel=1e-12)
    assert drift.psi([0.0, 1.0], [1.0, 0.0], floor=1e-4) == pytest.approx(2 * (1 - 1e-4) * math.log(1e4))


def test_bin_index_and_bin_counts_put_every_value_in_the_same_bin() -> None:
    edges = [-1e9, 0.1, 0.2, 0.2000001, 0.5, 1e9]
    values = [-5e9, -1e9, 0.0, 0.1, 0.15, 0.2, 0.2000001, 0.3, 0.5, 0.9, 1e9, 5e9]
    expected = [0] * (len(edges) - 1)
    for v in values:
        expected[drift.bin_index(edges, v)] += 1
    assert drift.bin_counts(edges, values) == (expected, 0)
    assert [drift.bin_index(edges, v) for v in (0.1, 0.2, 1e9)] == [1, 2, 4]  # a bin is [left, right)


def test_non_finite_live_values_are_counted_and_excluded() -> None:
    rng = np.random.default_rng(5)
    spec = feature_spec(rng.normal(size=4000))
    live = rng.normal(size=500)
    dirty = np.concatenate([live, [np.nan] * 30, [np.inf] * 20, [-np.inf] * 10])
    clean_f = drift.evaluate_feature("x", spec, values=live)
    dirty_f = drift.evaluate_feature("x", spec, values=dirty, nonfinite=4)
    assert dirty_f["nonfinite"] == 64
    for key in ("n", "n_ks", "psi", "ks_statistic", "p_value", "verdict"):
        assert dirty_f[key] == clean_f[key]


# --- statistical quality on fixed seeds -------------------------------------------------------------


def _trials(dist: str, shift_sigmas: float, trials: int = 500, n: int = 1000, seed: int = 20261203) -> float:
    """Fraction of trials whose verdict is drift: a fresh training set (4,000), baseline and live window each
    trial, the live window shifted by ``shift_sigmas`` standard deviations."""
    draw, sigma = DISTRIBUTIONS[dist]
    rng = np.random.default_rng(seed)
    alarms = 0
    for _ in range(trials):
        fb = FeatureBaseline.from_spec(dist, feature_spec(draw(rng, 4000), seed=int(rng.integers(1 << 31))))
        f = drift.evaluate_feature(dist, fb, values=draw(rng, n) + shift_sigmas * sigma)
        assert f["verdict"] in ("ok", "drift")
        alarms += f["verdict"] == "drift"
    return alarms / trials


@pytest.mark.parametrize("dist", sorted(DISTRIBUTIONS))
def test_false_alarm_rate_without_drift_is_at_most_7_percent_over_500_trials(dist: str) -> None:
    assert _trials(dist, 0.0) <= 0.07


@pytest.mark.parametrize("dist", sorted(DISTRIBUTIONS))
def test_a_half_sigma_mean_shift_is_detected_in_95_percent_of_500_trials(dist: str) -> None:
    assert _trials(dist, 0.5) >= 0.95


def test_identical_distributions_at_a_million_values_do_not_alarm() -> None:
    rng = np.random.default_rng(11)
    fb = FeatureBaseline.from_spec("x", feature_spec(rng.normal(size=4000)))
    f = drift.evaluate_feature("x", fb, values=rng.normal(size=1_000_000))
    assert (f["verdict"], f["n"], f["n_ks"]) == ("ok", 1_000_000, 1_000_000)


def test_a_tiny_but_significant_difference_on_large_samples_is_not_drift() -> None:
    # 200,000 values on each side, 0.03 sigma apart: the p-value is tiny, the effect is not worth an alarm.
    rng = np.random.default_rng(12)
    train = rng.normal(size=200_000)
    spec = feature_spec(train, sample_size=200_000)
    f = drift.evaluate_feature("x", spec, values=rng.normal(0.03, 1.0, 200_000))
    assert f["p_value"] < 1e-6
    assert f["ks_statistic"] < 0.1
    assert f["psi"] < 0.2
    assert f["verdict"] == "ok"


# --- thresholds, exactly at and one step beyond ----------------------------------------------------


def test_psi_threshold_is_inclusive() -> None:
    cfg = DriftConfig(psi_threshold=0.2)
    assert drift.psi_drifts(0.2, cfg)
    assert not drift.psi_drifts(math.nextafter(0.2, 0.0), cfg)


def test_ks_needs_the_statistic_at_or_above_and_the_p_value_strictly_below() -> None:
    cfg = DriftConfig(ks_statistic_threshold=0.1, ks_p_value=0.01)
    assert drift.ks_drifts(0.1, math.nextafter(0.01, 0.0), cfg)
    assert not drift.ks_drifts(0.1, 0.01, cfg)
    assert not drift.ks_drifts(math.nextafter(0.1, 0.0), 1e-30, cfg)
    assert not drift.ks_drifts(1.0, 0.5, cfg)


def test_thresholds_set_to_the_measured_values_flip_the_verdict_one_step_beyond() -> None:
    rng = np.random.default_rng(21)
    fb = FeatureBaseline.from_spec("x", feature_spec(rng.normal(size=4000)))
    live = rng.normal(0.3, 1.0, 1000)
    m = drift.evaluate_feature("x", fb, values=live)
    never_ks = {"ks_statistic_threshold": 1.0}
    at_psi = DriftConfig(psi_threshold=m["psi"], **never_ks)
    beyond_psi = DriftConfig(psi_threshold=math.nextafter(m["psi"], math.inf), **never_ks)
    assert drift.evaluate_feature("x", fb, values=live, config=at_psi)["verdict"] == "drift"
    assert drift.evaluate_feature("x", fb, values=live, config=beyond_psi)["verdict"] == "ok"
    big = {"psi_threshold": 10.0, "ks_p_value": 1.0}
    at_ks = DriftConfig(ks_statistic_threshold=m["ks_statistic"], **big)
    beyond_ks = DriftConfig(ks_statistic_threshold=math.nextafter(m["ks_statistic"], math.inf), **big)
    assert drift.evaluate_feature("x", fb, values=live, config=at_ks)["verdict"] == "drift"
    assert drift.evaluate_feature("x", fb, values=live, config=beyond_ks)["verdict"] == "ok"


def test_below_min_samples_a_window_is_insufficient_data_never_drift() -> None:
    rng = np.random.default_rng(22)
    fb = FeatureBaseline.from_spec("x", feature_spec(rng.normal(size=4000)))
    far_away = rng.normal(10.0, 1.0, 200)
    at_min = drift.evaluate_feature("x", fb, values=far_away)
    below = drift.evaluate_feature("x", fb, values=far_away[:199])
    assert at_min["verdict"] == "drift"
    assert below["verdict"] == "insufficient_data"
    assert below["psi"] is None
    assert below["ks_statistic"] is None
    assert "199" in below["reason"]
    assert "min_samples=200" in below["reason"]
    counts, _ = drift.bin_counts(fb.edges, far_away[:199])
    assert drift.evaluate_feature("x", fb, counts=counts)["verdict"] == "insufficient_data"


def test_psi_alone_decides_when_the_live_sample_for_ks_is_too_small() -> None:
    rng = np.random.default_rng(23)
    fb = FeatureBaseline.from_spec("x", feature_spec(rng.normal(size=4000)))
    shifted = rng.normal(2.0, 1.0, 5000)
    counts, _ = drift.bin_counts(fb.edges, shifted)
    f = drift.evaluate_feature("x", fb, counts=counts, values=shifted[:50])
    assert (f["verdict"], f["n"], f["n_ks"], f["ks_statistic"], f["psi_drift"]) == ("drift", 5000, 50, None, True)


# --- bad baselines, bad live data: findings, never crashes ------------------------------------------


def _bad(spec: dict[str, Any], **change: Any) -> dict[str, Any]:
    return {**spec, **change}


BAD_SPECS: dict[str, tuple[Any, str]] = {
    "not an object": ([1, 2], "must be an object"),
    "edges missing": ({"bin_fractions": [1.0], "sample": [1.0]}, "bin_edges is missing"),
    "edges not monotonic": ({"bin_edges": [0, 2, 1], "bin_fractions": [0.5, 0.5], "sample": [1.0]},
                            "strictly increasing"),
    "edges repeated": ({"bin_edges": [0, 1, 1, 2], "bin_fractions": [0.5, 0, 0.5], "sample": [1.0]},
                       "strictly increasing"),
    "edge NaN": ({"bin_edges": [0, math.nan, 2], "bin_fractions": [0.5, 0.5], "sample": [1.0]}, "non-finite"),
    "edge infinite": ({"bin_edges": [-math.inf, 0, 2], "bin_fractions": [0.5, 0.5], "sample": [1.0]},
                      "non-finite"),
    "edge a string": ({"bin_edges": [0, "1", 2], "bin_fractions": [0.5, 0.5], "sample": [1.0]}, "numbers only"),
    "edge a bool": ({"bin_edges": [0, True, 2], "bin_fractions": [0.5, 0.5], "sample": [1.0]}, "numbers only"),
    "one edge": ({"bin_edges": [0], "bin_fractions": [], "sample": [1.0]}, "2 to 1001"),
    "too many bins": ({"bin_edges": list(range(1003)), "bin_fractions": [1 / 1002] * 1002, "sample": [1.0]},
                      "2 to 1001"),
    "wrong length": ({"bin_edges": [0, 1, 2], "bin_fractions": [1.0], "sample": [1.0]},
                     "len(bin_edges) - 1 = 2"),
    "fractions sum 0.9": ({"bin_edges": [0, 1, 2], "bin_fractions": [0.4, 0.5], "sample": [1.0]}, "sum to 0.9"),
    "negative fraction": ({"bin_edges": [0, 1, 2], "bin_fractions": [-0.5, 1.5], "sample": [1.0]}, ">= 0"),
    "sample missing": ({"bin_edges": [0, 1, 2], "bin_fractions": [0.5, 0.5]}, "sample is missing"),
    "sample NaN": ({"bin_edges": [0, 1, 2], "bin_fractions": [0.5, 0.5], "sample": [1.0, math.nan]}, "non-finite"),
    "sample empty": ({"bin_edges": [0, 1, 2], "bin_fractions": [0.5, 0.5], "sample": []}, "0 values"),
    "edge beyond float": ({"bin_edges": [0, 1, 10**400], "bin_fractions": [0.5, 0.5], "sample": [1.0]},
                          "too large for a float"),
}


@pytest.mark.parametrize("case", sorted(BAD_SPECS))
def test_a_malformed_baseline_feature_is_a_finding_naming_the_feature_and_the_fix(case: str) -> None:
    spec, problem = BAD_SPECS[case]
    f = drift.evaluate_feature("pixel_mean", spec, values=np.linspace(0, 2, 500))
    assert f["verdict"] == "invalid_baseline"
    assert "'pixel_mean'" in f["reason"]
    assert problem in f["reason"]
    assert "rebuild the bundle" in f["reason"]
    json.dumps(f, allow_nan=False)
    with pytest.raises(drift.BaselineError, match=problem.replace("(", r"\(").replace(")", r"\)")):
        FeatureBaseline.from_spec("pixel_mean", spec)


def test_fractions_summing_to_1_within_1e_6_are_accepted_and_just_beyond_refused() -> None:
    ok = {"bin_edges": [0, 1, 2], "bin_fractions": [0.5, 0.5 - 0.99e-6], "sample": [1.0]}
    FeatureBaseline.from_spec("x", ok)
    for off in (-1.01e-6, 1.01e-6):
        with pytest.raises(drift.BaselineError, match="sum to"):
            FeatureBaseline.from_spec("x", {**ok, "bin_fractions": [0.5, 0.5 + off]})


def test_a_baseline_missing_a_live_feature_and_one_bad_feature_spoil_nothing_else() -> None:
    rng = np.random.default_rng(31)
    good = feature_spec(rng.normal(size=4000))
    doc = {"features": {"pixel_mean": good, "pixel_std": BAD_SPECS["wrong length"][0]}}
    report = drift.evaluate_baseline(doc, values={"pixel_mean": rng.normal(3, 1, 1000), "pixel_max": [1.0] * 300})
    by = {f["feature"]: f for f in report["findings"]}
    assert by["pixel_mean"]["verdict"] == "drift"
    assert by["pixel_std"]["verdict"] == "invalid_baseline"
    assert by["pixel_max"]["verdict"] == "invalid_baseline"
    assert "has no feature 'pixel_max'" in by["pixel_max"]["reason"]
    assert report["verdict"] == "drift"
    assert report["drifted"] == ["pixel_mean"]
    json.dumps(report, allow_nan=False)


@pytest.mark.parametrize("doc", [None, [], "x", {}, {"features": []}, {"features": {}}])
def test_a_document_that_is_no_baseline_is_one_invalid_baseline_finding(doc: Any) -> None:
    report = drift.evaluate_baseline(doc, values={"x": [1.0] * 500})
    assert report["verdict"] == "invalid_baseline"
    assert [f["feature"] for f in report["findings"]] == ["*"]


@pytest.mark.parametrize(
    ("counts", "problem"),
    [([1] * 9, "has 9 counts but the baseline has 10 bins"), ([1] * 11, "11 counts"),
     ([-1] + [100] * 9, "negative"), ([0.5] + [100] * 9, "fractional"), (["a"] * 10, "not a list of counts")],
)
def test_a_histogram_that_does_not_fit_the_bins_is_invalid_data(counts: list[Any], problem: str) -> None:
    rng = np.random.default_rng(41)
    fb = FeatureBaseline.from_spec("x", feature_spec(rng.normal(size=4000)))
    f = drift.evaluate_feature("x", fb, counts=counts)
    assert f["verdict"] == "invalid_data"
    assert problem in f["reason"]


@pytest.mark.parametrize("values", [["a", "b"], [1.0, 10**400]])
def test_live_values_that_are_not_numbers_are_invalid_data(values: list[Any]) -> None:
    fb = FeatureBaseline.from_spec("x", feature_spec(np.random.default_rng(1).normal(size=4000)))
    assert drift.evaluate_feature("x", fb, values=values)["verdict"] == "invalid_data"
    assert drift.evaluate_feature("x", fb, counts=[10**400] * 10)["verdict"] == "invalid_data"


def test_without_scipy_psi_decides_and_the_finding_says_how_to_get_ks(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(42)
    fb = FeatureBaseline.from_spec("x", feature_spec(rng.normal(size=4000)))
    monkeypatch.setitem(sys.modules, "scipy.stats", None)  # `import scipy.stats` now raises ImportError
    assert not drift.ks_available()
    f = drift.evaluate_feature("x", fb, values=rng.normal(3.0, 1.0, 1000))
    assert (f["verdict"], f["ks_statistic"], f["psi_drift"]) == ("drift", None, True)
    assert "edge-runtime[monitor]" in f["reason"]


def test_a_baseline_sample_smaller_than_min_samples_skips_ks_with_a_reason() -> None:
    rng = np.random.default_rng(43)
    spec = feature_spec(rng.normal(size=4000), sample_size=150)
    f = drift.evaluate_feature("x", spec, values=rng.normal(size=1000))
    assert f["verdict"] == "ok"
    assert f["ks_statistic"] is None
    assert f["psi"] is not None
    assert "baseline sample has 150 values" in f["reason"]


# --- per-minute aggregates ----------------------------------------------------------------------------


def test_aggregates_are_merged_and_a_damaged_minute_is_left_out_and_counted() -> None:
    rng = np.random.default_rng(51)
    spec = feature_spec(rng.normal(size=4000))
    fb = FeatureBaseline.from_spec("pixel_mean", spec)
    rows, total = [], np.zeros(10, np.int64)
    for minute in range(5):
        counts, _ = drift.bin_counts(fb.edges, rng.normal(0.4, 1.0, 100))
        total += counts
        rows.append(MinuteAggregate("m", "1.0.0", minute * 60, count=100, features={"pixel_mean": counts},
                                    features_nonfinite={"pixel_mean": 2}))
    damaged: list[Any] = [[1, 2, 3], [-1] + [5] * 9, [0.5] + [5] * 9, [math.nan] + [5] * 9, None]
    rows += [MinuteAggregate("m", "1.0.0", 300 + 60 * i, features={"pixel_mean": h, "pixel_max": [1] * 10})
             for i, h in enumerate(damaged)]
    report = drift.evaluate_aggregates({"features": {"pixel_mean": spec}}, rows)
    by = {f["feature"]: f for f in report["findings"]}
    assert report["skipped_minutes"] == {"pixel_mean": len(damaged)}
    rows.append(MinuteAggregate("m", "1.0.0", 900, features={"pixel_mean": ["x"] * 10}))
    rows.append(MinuteAggregate("m", "1.0.0", 960, features={"pixel_mean": [10**400] * 10}))
    again = drift.evaluate_aggregates({"features": {"pixel_mean": spec}}, rows)
    assert again["skipped_minutes"] == {"pixel_mean": len(damaged) + 2}
    assert {f["feature"]: f["psi"] for f in again["findings"]}["pixel_mean"] == by["pixel_mean"]["psi"]
    assert by["pixel_mean"]["n"] == 500
    assert by["pixel_mean"]["nonfinite"] == 10
    assert by["pixel_mean"]["psi"] == pytest.approx(drift.psi(spec["bin_fractions"], total), rel=1e-12)
    assert by["pixel_max"]["verdict"] == "invalid_baseline"


# --- every demo baseline is usable -------------------------------------------------------------------


@pytest.mark.parametrize("path", DEMO_BASELINES, ids=lambda p: f"{p.parent.parent.name}/{p.parent.name}")
def test_every_demo_baseline_parses_and_its_own_sample_is_not_drift(path: Path) -> None:
    doc = json.loads(path.read_text(encoding="utf-8"))
    good, bad = drift.parse_baseline(doc)
    assert bad == {}
    assert set(good) == {"pixel_mean", "pixel_std"}
    report = drift.evaluate_baseline(doc, values={k: fb.sample for k, fb in good.items()})
    assert report["verdict"] == "ok", report


# --- configuration -----------------------------------------------------------------------------------


def test_config_defaults_and_overrides_device_over_bundle() -> None:
    assert DriftConfig().thresholds() == {"psi": 0.2, "ks_statistic": 0.1, "ks_p_value": 0.01, "min_samples": 200}
    cfg = DriftConfig.resolve(bundle={"psi_threshold": 0.3, "min_samples": 500}, device={"psi_threshold": 0.25})
    assert (cfg.psi_threshold, cfg.min_samples, cfg.window_minutes, cfg.window_seconds) == (0.25, 500, 60, 3600)
    assert DriftConfig.from_mapping({"ks_p_value": 1}).ks_p_value == 1.0


@pytest.mark.parametrize(
    ("doc", "problem"),
    [({"psi_treshold": 0.2}, "unknown drift setting"), ({"psi_threshold": "0.2"}, "must be a number"),
     ({"min_samples": True}, "must be an integer"), ({"min_samples": 200.0}, "must be an integer"),
     ({"psi_threshold": math.nan}, "must be finite"), ({"psi_threshold": 0}, r"psi_threshold must be in \(0"),
     ({"ks_p_value": 0.0}, "ks_p_value must be in"), ({"ks_p_value": math.nextafter(1.0, 2.0)}, "ks_p_value"),
     ({"ks_statistic_threshold": 1.5}, "ks_statistic_threshold"), ({"min_samples": 1}, "min_samples must be in"),
     ({"window_minutes": 0}, "window_minutes"), ({"window_minutes": 10081}, "window_minutes"),
     ({"psi_floor": math.nextafter(0.01, 1.0)}, "psi_floor"), ([1], "must be an object")],
)
def test_bad_drift_settings_are_a_config_error_naming_the_key(doc: Any, problem: str) -> None:
    with pytest.raises(ConfigError, match=problem) as err:
        DriftConfig.from_mapping(doc, "device config /x/config.json: drift")
    assert "device config /x/config.json: drift" in err.value.message or "invalid drift settings" in err.value.message
    assert err.value.hint


def test_config_range_limits_are_inclusive_where_documented() -> None:
    DriftConfig(min_samples=2, window_minutes=7 * 24 * 60, psi_floor=0.01, ks_statistic_threshold=1.0, ks_p_value=1.0)


# --- properties ----------------------------------------------------------------------------------------


counts_pairs = st.integers(min_value=1, max_value=30).flatmap(
    lambda k: st.tuples(*(st.lists(st.integers(0, 10**9), min_size=k, max_size=k).filter(any) for _ in range(2)))
)


@settings(max_examples=300, deadline=None)
@given(pair=counts_pairs, floor=st.sampled_from([1e-6, 1e-4, 1e-2]))
def test_psi_is_finite_non_negative_and_symmetric_for_any_counts(
    pair: tuple[list[int], list[int]], floor: float
) -> None:
    a, b = pair
    ab = drift.psi(a, b, floor)
    assert math.isfinite(ab)
    assert ab >= 0
    assert ab == pytest.approx(drift.psi(b, a, floor), rel=1e-9, abs=1e-12)
    assert drift.psi(a, a, floor) == 0.0
    assert drift.psi(a, [3 * x for x in a], floor) == pytest.approx(0.0, abs=1e-12)


@settings(max_examples=200, deadline=None)
@given(
    edges=st.lists(st.floats(-1e6, 1e6), min_size=2, max_size=12, unique=True).map(sorted),
    values=st.lists(st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.floats(-1e6, 1e6)), max_size=60),
)
def test_bin_counts_agree_with_bin_index_for_any_values(edges: list[float], values: list[float]) -> None:
    expected = [0] * (len(edges) - 1)
    for v in values:
        if math.isfinite(v):
            expected[drift.bin_index(edges, v)] += 1
    assert drift.bin_counts(edges, values) == (expected, sum(not math.isfinite(v) for v in values))


def test_the_device_config_drift_object_is_validated_on_load_and_wins_over_the_bundle(tmp_path: Path) -> None:
    from edge_runtime.device import DeviceConfig

    path = tmp_path / "config.json"
    path.write_text(json.dumps({"architecture": "x86_64", "drift": {"psi_threshold": 0.25}}), encoding="utf-8")
    cfg = DeviceConfig.load(path).drift_config(bundle={"psi_threshold": 0.3, "min_samples": 300})
    assert (cfg.psi_threshold, cfg.min_samples) == (0.25, 300)
    assert DeviceConfig.load(path).drift_config() == DriftConfig(psi_threshold=0.25)
    path.write_text(json.dumps({"architecture": "x86_64", "drift": {"min_samples": 0}}), encoding="utf-8")
    with pytest.raises(ConfigError, match=r"config.json: drift: min_samples must be in \[2"):
        DeviceConfig.load(path)


def test_many_bins_are_counted_as_few_bins_are() -> None:
    # Up to 63 inner edges the counts come from comparison passes, above from one sort: same answers.
    rng = np.random.default_rng(61)
    values = np.concatenate([rng.normal(size=5000), [np.nan, np.inf], np.linspace(-3, 3, 301)])
    for n_edges in (3, 64, 65, 66, 400):
        edges = np.concatenate([[-1e9], np.linspace(-3, 3, n_edges - 2), [1e9]])
        expected = [0] * (n_edges - 1)
        for v in values[np.isfinite(values)]:
            expected[drift.bin_index(edges.tolist(), float(v))] += 1
        assert drift.bin_counts(edges, values) == (expected, 2)


@pytest.mark.parametrize("bad", [-1, 1.5, "3", True, None])
def test_a_non_finite_count_that_is_not_a_count_is_invalid_data(bad: Any) -> None:
    fb = FeatureBaseline.from_spec("x", feature_spec(np.random.default_rng(2).normal(size=4000)))
    f = drift.evaluate_feature("x", fb, values=np.zeros(300), nonfinite=bad)
    assert f["verdict"] == "invalid_data"
    assert "not a count" in f["reason"]


def test_a_non_finite_ks_result_is_left_out_not_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    fb = FeatureBaseline.from_spec("x", feature_spec(np.random.default_rng(3).normal(size=4000)))
    # scipy never returns NaN for finite samples, so this one path is simulated; the guard must hold anyway.
    monkeypatch.setattr(drift, "ks_test", lambda sample, values: (math.nan, math.nan))
    f = drift.evaluate_feature("x", fb, values=np.random.default_rng(4).normal(size=500))
    assert f["ks_statistic"] is None
    assert f["verdict"] == "ok"
    assert "scipy returned statistic nan" in f["reason"]
    json.dumps(f, allow_nan=False)


def test_init_stores_drift_settings_keeps_every_section_on_reinit_and_refuses_bad_ones(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from edge_runtime.cli import main as cli
    from tests.support.keys import make_keypair

    key = make_keypair(tmp_path / "keys", "k").public_path
    root = tmp_path / "dev"
    base = ["--root", str(root), "init", "--trusted-key", str(key)]
    assert cli([*base, "--drift-setting", "psi_threshold=0.25", "--drift-setting", "window_minutes=30",
                "--monitor-setting", "min_inferences=5"]) == 0
    config = json.loads((root / "config.json").read_text())
    assert config["drift"] == {"psi_threshold": 0.25, "window_minutes": 30}
    # A re-init that sets only other sections keeps drift and monitor as they are.
    assert cli([*base, "--telemetry-setting", "retention_days=2", "--download-setting", "retries=1"]) == 0
    again = json.loads((root / "config.json").read_text())
    assert (again["drift"], again["monitor"]) == (config["drift"], config["monitor"])
    assert cli([*base, "--drift-setting", "min_samples=300"]) == 0  # merged into the stored section
    assert json.loads((root / "config.json").read_text())["drift"] == {**config["drift"], "min_samples": 300}
    before = (root / "config.json").read_bytes()
    capsys.readouterr()
    assert cli([*base, "--drift-setting", "ks_p_value=0"]) == 2
    assert "ks_p_value must be in (0, 1]" in capsys.readouterr().err
    assert cli([*base, "--drift-setting", "psi=0.3"]) == 2
    assert "unknown drift setting(s) 'psi'" in capsys.readouterr().err
    assert (root / "config.json").read_bytes() == before

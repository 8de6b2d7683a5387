"""The inference API (issue 9, section 1): hot swap under real installs and rollbacks, error results,
feedback, baselines that cannot be recorded, and the telemetry it writes."""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import stat
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge_runtime._fsutil import swap_symlink
from edge_runtime.device import Device
from edge_runtime.release_cli import main as release_main
from edge_runtime.serve import Predictor, UnknownPredictionError
from edge_runtime.telemetry._status import db_path
from edge_runtime.telemetry.store import TelemetryStore
from tests.support.factory import CREATED, DEMO_MODELS, MODEL, Release

GOLDEN = {v: np.load(DEMO_MODELS / MODEL / v / "golden.npz") for v in ("1.0.0", "1.1.0")}
INPUTS = np.asarray(GOLDEN["1.0.0"]["inputs"], dtype=np.float32)
EXPECTED = {v: np.asarray(g["expected_outputs"], dtype=np.float32) for v, g in GOLDEN.items()}
#: the golden sample whose outputs differ most between 1.0.0 and 1.1.0: a result's outputs tell its version
SAMPLE = int(np.argmax(np.abs(EXPECTED["1.0.0"] - EXPECTED["1.1.0"]).max(axis=1)))
ATOL = 0.02  # the demo models' smoke-test tolerance (both backends)


@pytest.fixture
def device(release: Release, tmp_path: Path) -> Device:
    dev = release.device(tmp_path / "dev", telemetry={"flush_interval_s": 3600})
    assert dev.install(str(release.bundle("1.0.0"))).result == "installed"
    return dev


def version_of(outputs: np.ndarray) -> set[str]:
    """The versions whose own golden outputs these are (for the input SAMPLE)."""
    return {v for v, e in EXPECTED.items() if np.allclose(outputs, e[SAMPLE], atol=ATOL)}


def test_hot_swap_under_installs_rollbacks_and_a_self_rollback_fails_no_call_and_mixes_none(
    device: Device, release: Release
) -> None:
    assert np.abs(EXPECTED["1.0.0"][SAMPLE] - EXPECTED["1.1.0"][SAMPLE]).max() > 2 * ATOL
    results: list[tuple[float, float, Any, int]] = []
    lock = threading.Lock()
    stop = threading.Event()
    predictor = Predictor(device.root, MODEL)

    def loop(n: int) -> None:
        while not stop.is_set():
            t0 = time.monotonic()
            r = predictor.predict(INPUTS[SAMPLE])
            with lock:
                results.append((t0, time.monotonic(), r, n))

    def calls_started_after(t: float) -> int:
        with lock:
            return sum(1 for s, _, _, _ in results if s > t)

    threads = [threading.Thread(target=loop, args=(n,)) for n in range(2)]  # thread 0 is the sequence
    for t in threads:
        t.start()
    ops: list[tuple[float, float, str | None]] = []
    steps = [
        lambda: device.install(str(release.bundle("1.1.0"))),  # installed
        lambda: device.rollback(MODEL),  # operator rollback to 1.0.0
        lambda: device.install(str(release.bundle("1.1.0"))),  # the kept copy, activated again
        lambda: device.install(str(release.bundle("1.2.0"))),  # fails its smoke test: never served
        # the monitor's self-rollback: 1.1.0 quarantined and its files removed while calls may run on it
        lambda: device.self_rollback(MODEL, "1.1.0", "mean confidence below 0.75 for 5 minutes"),
    ]
    try:
        for step in steps:
            before = time.monotonic()
            res = step()
            after = time.monotonic()
            ops.append((before, after, res.active))
            deadline = time.monotonic() + 30
            while calls_started_after(after) < 20 and time.monotonic() < deadline:
                time.sleep(0.01)
    finally:
        stop.set()
        for t in threads:
            t.join()
        predictor.close()
    assert [a for _, _, a in ops] == ["1.1.0", "1.0.0", "1.1.0", "1.1.0", "1.0.0"]
    failed = [r.error for _, _, r, _ in results if not r.ok]
    assert failed == []
    for _, _, r, _ in results:  # each result ran on exactly one version, the one it names
        assert version_of(r.outputs) == {r.version}, (r.version, r.outputs)
    # a call that started after an operation returned runs what that operation committed
    for i, (_, after, active) in enumerate(ops):
        until = ops[i + 1][0] if i + 1 < len(ops) else float("inf")
        seen = {r.version for s, _, r, _ in results if after < s and s < until}
        assert seen == {active}, (i, seen)
    first = {r.version for _, end, r, _ in results if end < ops[0][0]}
    assert first <= {"1.0.0"}
    # one thread's calls, in order: the versions it ran follow the commits, each swap seen once
    sequence = [r.version for _, _, r, n in results if n == 0]
    runs = [v for i, v in enumerate(sequence) if i == 0 or v != sequence[i - 1]]
    assert runs == ["1.0.0", "1.1.0", "1.0.0", "1.1.0", "1.0.0"], runs  # 1.2.0 never ran
    with TelemetryStore(db_path(device.root)) as store:
        rows = store.minutes(MODEL)
        assert sum(r.count for r in rows) == len(results)
        assert {r.version for r in rows} == {"1.0.0", "1.1.0"}
        assert sum(r.errors for r in rows) == 0


def test_a_version_that_is_only_being_tested_is_not_served(device: Device, release: Release) -> None:
    device.install(str(release.bundle("1.1.0")))
    device.rollback(MODEL)  # 1.0.0 committed and active, 1.1.0 kept
    # what an install's activating/activated phase looks like: the link on the new version, not committed
    swap_symlink(device.active_link(MODEL), "versions/1.1.0")
    with Predictor(device.root, MODEL, telemetry=False) as p:
        r = p.predict(INPUTS[SAMPLE])
        assert r.ok
        assert r.version == "1.0.0"
        assert version_of(r.outputs) == {"1.0.0"}


def test_a_version_that_does_not_verify_is_never_loaded(device: Device) -> None:
    model = device.version_dir(MODEL, "1.0.0") / "model.tflite"
    os.chmod(model.parent, 0o700)
    os.chmod(model, 0o644)
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0xFF
    model.write_bytes(bytes(data))
    with Predictor(device.root, MODEL, telemetry=False) as p:
        r = p.predict(INPUTS[0])
        assert not r.ok
        assert r.version is None
        assert "does not verify" in (r.error or "")
        assert "edge-runtime check" in (r.error or "")
        assert r.label is None
        assert r.confidence is None


def test_no_active_version_is_an_error_result(release: Release, tmp_path: Path) -> None:
    dev = release.device(tmp_path / "empty")
    with Predictor(dev.root, MODEL, telemetry=False) as p:
        r = p.predict(INPUTS[0])
        assert not r.ok
        assert "no committed active version" in (r.error or "")
        dev.install(str(release.bundle("1.1.0")))  # installed while the application runs
        r = p.predict(INPUTS[SAMPLE])
        assert r.ok
        assert r.version == "1.1.0"


def test_non_finite_outputs_and_bad_inputs_are_error_results_recorded_as_errors(device: Device) -> None:
    with Predictor(device.root, MODEL) as p:
        nan = p.predict(np.full((32, 32, 1), np.nan, dtype=np.float32))
        wrong_shape = p.predict(np.zeros((3, 3)))
        not_numbers = p.predict("an image")
        good = p.predict(INPUTS[0][None])  # with the batch dimension
        for r in (nan, wrong_shape, not_numbers):
            assert not r.ok
            assert r.confidence is None
            assert r.outputs is None
            assert r.version == "1.0.0"
        assert "non-finite" in (nan.error or "")
        assert "shape" in (wrong_shape.error or "")
        assert good.ok
        assert good.confidence is not None
        assert np.isfinite(good.confidence)
        assert p.store is not None
        p.store.flush()
        (row,) = p.store.minutes(MODEL)
        assert (row.count, row.errors, row.conf_n) == (4, 3, 1)
        assert row.features_nonfinite == {"pixel_mean": 1, "pixel_std": 1}


def test_feedback_counts_right_and_wrong_and_refuses_unknown_ids(device: Device) -> None:
    with Predictor(device.root, MODEL) as p:
        labels = np.asarray(GOLDEN["1.0.0"]["expected_labels"])
        preds = [p.predict(INPUTS[i]) for i in range(len(INPUTS))]
        rights = [p.feedback(r.id, int(labels[i])) for i, r in enumerate(preds)]
        assert sum(rights) == sum(r.label == ("good", "defect")[int(labels[i])] for i, r in enumerate(preds))
        extra = p.predict(INPUTS[0])
        extra_right = p.feedback(extra.id, "good")  # by label name
        assert extra_right is (extra.label == "good")
        with pytest.raises(UnknownPredictionError, match="unknown prediction"):
            p.feedback(preds[0].id, "good")  # feedback twice
        with pytest.raises(UnknownPredictionError):
            p.feedback("never-issued", "good")
        assert p.store is not None
        p.store.flush()
        rows = p.store.minutes(MODEL)
        assert sum(r.feedback_n for r in rows) == len(INPUTS) + 1
        assert sum(r.feedback_wrong for r in rows) == len(INPUTS) + 1 - sum(rights) - extra_right
        (finding,) = [f for f in p.store.status()["findings"] if f["kind"] == "feedback_unknown"]
        assert finding["count"] == 2


def test_records_carry_histograms_on_the_baseline_bins_and_bounded_samples(device: Device) -> None:
    baseline = json.loads((DEMO_MODELS / MODEL / "1.0.0" / "baseline.json").read_text())
    with Predictor(device.root, MODEL) as p:
        for x in INPUTS:
            assert p.predict(x).ok
        assert p.store is not None
        p.store.flush()
        (row,) = p.store.minutes(MODEL)
        edges = baseline["features"]["pixel_mean"]["bin_edges"]
        want = np.histogram([float(x.mean()) for x in INPUTS], bins=edges)[0].tolist()
        assert row.features["pixel_mean"] == want
        assert len(row.features["pixel_std"]) == len(baseline["features"]["pixel_std"]["bin_edges"]) - 1
        xs = p.store.samples(MODEL, "1.0.0", "pixel_mean")
        assert sorted(np.round(xs, 5)) == sorted(np.round([float(x.mean()) for x in INPUTS], 5))


def bundle_with_baseline(release: Release, tmp_path: Path, baseline: dict[str, Any]) -> Path:
    src = tmp_path / "rel"
    shutil.copytree(DEMO_MODELS / MODEL / "1.1.0", src)
    (src / "baseline.json").write_text(json.dumps(baseline))
    out = tmp_path / "custom.edgebundle"
    args = ["build", "--release-dir", str(src), "-o", str(out), "--created", CREATED, "--expires-in-days", "3650",
            "--key", str(release.keys[0].private_path)]
    with contextlib.redirect_stdout(io.StringIO()):
        assert release_main(args) == 0
    return out


def serve_with_baseline(release: Release, tmp_path: Path, baseline: dict[str, Any]) -> tuple[Any, list[dict[str, Any]]]:
    """Install 1.1.0 with ``baseline``, predict :data:`INPUTS` (all must succeed): the minute row and the findings."""
    dev = release.device(tmp_path / "dev", telemetry={"flush_interval_s": 3600})
    assert dev.install(str(bundle_with_baseline(release, tmp_path, baseline))).result == "installed"
    with Predictor(dev.root, MODEL) as p:
        assert all(p.predict(x).ok for x in INPUTS)
        assert p.store is not None
        p.store.flush()
        (row,) = p.store.minutes(MODEL)
        return row, list(p.store.status()["findings"])


def test_a_baseline_missing_a_feature_or_with_bad_bins_is_a_finding_and_inference_goes_on(
    release: Release, tmp_path: Path
) -> None:
    baseline = json.loads((DEMO_MODELS / MODEL / "1.1.0" / "baseline.json").read_text())
    del baseline["features"]["pixel_std"]
    baseline["features"]["pixel_mean"]["bin_edges"][3] = 5.0  # not increasing
    baseline["features"]["audio_rms"] = {"bin_edges": [0, 1]}
    row, findings = serve_with_baseline(release, tmp_path, baseline)
    assert row.count == len(INPUTS)
    assert row.features == {}
    kinds = sorted(f["kind"].split(":")[0] for f in findings)
    assert kinds == ["baseline_bins", "baseline_feature_missing", "baseline_feature_unknown"]
    messages = " ".join(f["message"] for f in findings)
    assert "strictly increasing" in messages
    assert "pixel_std" in messages
    assert "audio_rms" in messages


def test_a_feature_drift_cannot_judge_is_not_recorded_drift_parser_decides(release: Release, tmp_path: Path) -> None:
    # good bins but fractions that do not sum to 1: serve asks drift's parser
    # (FeatureBaseline.from_spec), so it records nothing the monitor would refuse, and says why in drift's words
    baseline = json.loads((DEMO_MODELS / MODEL / "1.1.0" / "baseline.json").read_text())
    std = baseline["features"]["pixel_std"]
    std["bin_fractions"] = [2 * f for f in std["bin_fractions"]]
    row, findings = serve_with_baseline(release, tmp_path, baseline)
    assert set(row.features) == {"pixel_mean"}
    by_kind = {f["kind"]: f["message"] for f in findings}
    assert "bin_fractions sum to 2.0, not 1" in by_kind[f"baseline_bins:{MODEL}:1.1.0:pixel_std"]
    assert f"baseline_bins:{MODEL}:1.1.0:pixel_mean" not in by_kind


@pytest.mark.tflite_runtime
def test_float_and_int8_models_predict_their_golden_outputs(release: Release, tmp_path: Path) -> None:
    for model in ("defect-classifier", "defect-classifier-int8"):
        dev = release.device(tmp_path / model)
        dev.install(str(release.bundle("1.1.0", model=model)))
        golden = np.load(DEMO_MODELS / model / "1.1.0" / "golden.npz")
        with Predictor(dev.root, model, telemetry=False) as p:
            for x, want in zip(golden["inputs"], golden["expected_outputs"], strict=True):
                r = p.predict(x)
                assert r.ok, r.error
                assert np.allclose(r.outputs, want, atol=ATOL)
                assert r.label == ("good", "defect")[int(np.argmax(want))]


def test_telemetry_disabled_in_the_device_config_records_nothing(release: Release, tmp_path: Path) -> None:
    dev = release.device(tmp_path / "dev", telemetry={"enabled": False})
    dev.install(str(release.bundle("1.0.0")))
    with Predictor(dev.root, MODEL) as p:
        assert p.predict(INPUTS[0]).ok
        assert p.store is None
    assert not (dev.root / "telemetry").exists()
    assert stat.S_ISDIR(os.stat(dev.root / "models").st_mode)


def test_feedback_is_accepted_for_exactly_the_last_feedback_window_predictions(
    release: Release, tmp_path: Path
) -> None:
    dev = release.device(tmp_path / "dev", telemetry={"flush_interval_s": 3600, "feedback_window": 3})
    dev.install(str(release.bundle("1.0.0")))
    with Predictor(dev.root, MODEL) as p:
        ids = [p.predict(INPUTS[0]).id for _ in range(4)]
        with pytest.raises(UnknownPredictionError, match="last 3 predictions"):
            p.feedback(ids[0], "good")  # one beyond the window
        for pid in ids[1:]:  # the window itself
            p.feedback(pid, "good")


def test_a_rollback_while_a_version_is_being_loaded_loads_the_new_committed_one(
    device: Device, release: Release
) -> None:
    device.install(str(release.bundle("1.1.0")))
    p = Predictor(device.root, MODEL, telemetry=False)
    real = p.device._verify_dir
    seen: list[str] = []

    def verify_while_rolled_back(vdir: Path, state: Any, version: str, **kw: Any) -> Any:
        if not seen:  # the monitor rolls 1.1.0 back (and removes its files) just as the load reads them
            Device(device.root).self_rollback(MODEL, "1.1.0", "mean confidence below 0.75")
        seen.append(version)
        return real(vdir, state, version, **kw)

    p.device._verify_dir = verify_while_rolled_back  # type: ignore[method-assign]
    try:
        r = p.predict(INPUTS[SAMPLE])
    finally:
        p.close()
    assert seen == ["1.1.0", "1.0.0"]  # the first load failed for real (files gone), the second succeeded
    assert r.ok, r.error
    assert r.version == "1.0.0"
    assert version_of(r.outputs) == {"1.0.0"}


def test_serving_statistics_are_the_ones_the_release_baseline_is_built_from() -> None:
    from edge_runtime.baseline import make_baseline
    from edge_runtime.serve import FEATURES, input_statistics

    baseline = make_baseline(INPUTS, EXPECTED["1.0.0"])
    assert set(FEATURES) == set(baseline["features"])
    served = [input_statistics(x) for x in INPUTS]
    for name in FEATURES:  # 16 images: the baseline's sample is every value, in order, rounded to 6 places
        assert np.allclose([s[name] for s in served], baseline["features"][name]["sample"], atol=1e-6), name

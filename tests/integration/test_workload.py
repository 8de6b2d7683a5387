"""The workload simulator (edge_runtime.workload): real inference on real device roots in accelerated time.

A device running the weaker demo model 1.0.0 with 1.1.0 kept, fed a scrambled sensor readout, rolls itself
back once five consecutive minutes are below the confidence rule; a device fed darker scenes reports drift of
pixel_mean and nothing else; a clean device reports neither. Simulated minutes take well under a second.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edge_runtime.workload import DeviceLoad, inputs, simulate
from tests.support.attacks import active_version, clone_device, model_state
from tests.support.factory import MODEL, Release

REASON_START = "self-rollback: mean confidence 0."


@pytest.fixture(scope="module")
def template(release: Release, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """1.0.0 and 1.1.0 committed, then the operator rolled back to 1.0.0: 1.0.0 active, 1.1.0 previous."""
    dev = release.device(tmp_path_factory.mktemp("workload") / "dev")
    for v in ("1.0.0", "1.1.0"):
        assert dev.install(str(release.bundle(v))).ok
    assert dev.rollback(MODEL).active == "1.0.0"
    return dev.root


def test_collapse_rolls_the_device_back_by_itself_drift_is_reported_only_where_injected(
    template: Path, tmp_path: Path
) -> None:
    devs = {sc: clone_device(template, tmp_path / sc) for sc in ("collapse", "winter", "clean")}
    rep = simulate([DeviceLoad(d.root, sc, seed=i + 1) for i, (sc, d) in enumerate(devs.items())],
                   minutes=7, rate=60)
    by = {s["scenario"]: s for s in rep["devices"]}

    collapse = by["collapse"]
    assert collapse["rolled_back_at_minute"] is not None
    assert collapse["rolled_back_at_minute"] >= 5  # five complete low minutes first
    assert collapse["versions"] == ["1.0.0", "1.1.0"]  # the next call after the swap ran 1.1.0
    assert collapse["mean_confidence"]["1.0.0"] < 0.75 <= collapse["mean_confidence"]["1.1.0"]
    dev = devs["collapse"]
    assert active_version(dev) == "1.1.0"
    st = model_state(dev.root)
    assert st["last"]["op"] == "self_rollback"
    assert st["last"]["reason"].startswith(REASON_START)
    assert "< 0.75 for 5 consecutive minutes (min 20 inferences/min)" in st["last"]["reason"]
    assert "1.0.0" in st["bad"]
    facts = json.loads(dev.facts_file.read_text())
    assert facts["models"][MODEL]["last_reason"] == st["last"]["reason"]

    for sc, d in devs.items():
        last = json.loads((d.root / "monitor" / "last.json").read_text())
        drift = next(f for f in last["models"][MODEL]["findings"] if f["rule"] == "drift")
        assert drift["evidence"]["drifted"] == (["pixel_mean"] if sc == "winter" else []), (sc, drift["message"])
    assert by["winter"]["rolled_back_at_minute"] is None
    assert by["clean"]["rolled_back_at_minute"] is None
    assert active_version(devs["winter"]) == active_version(devs["clean"]) == "1.0.0"
    assert by["clean"]["errors"] == 0


def test_the_errors_scenario_is_an_error_rate_finding_and_never_stops_inference(template: Path,
                                                                                tmp_path: Path) -> None:
    dev = clone_device(template, tmp_path / "errors")
    rep = simulate([DeviceLoad(dev.root, "errors", seed=5)], minutes=2, rate=60)
    s = rep["devices"][0]
    assert s["inferences"] == 120
    assert 0.2 < s["errors"] / s["inferences"] < 0.4
    last = json.loads((dev.root / "monitor" / "last.json").read_text())
    errors = next(f for f in last["models"][MODEL]["findings"] if f["rule"] == "errors")
    assert errors["status"] == "breach"
    assert errors["action"] == "report"
    assert active_version(dev) == "1.0.0"


def test_collapse_keeps_each_images_mean_and_std_and_errors_are_whole_nan_frames() -> None:
    clean, scrambled = inputs("clean", 9), inputs("collapse", 9)
    for _ in range(20):
        (a, la), (b, lb) = next(clean), next(scrambled)
        assert la == lb
        assert not np.array_equal(a, b)
        assert np.sort(a.reshape(-1)).tolist() == np.sort(b.reshape(-1)).tolist()  # the same pixels, moved
    frames = [x for x, _ in (next(inputs("errors", 3, error_rate=1.0)) for _ in range(3))]
    assert all(np.isnan(f).all() for f in frames)
    with pytest.raises(ValueError, match="unknown scenario"):
        next(inputs("summer", 1))
    with pytest.raises(ValueError, match="error_rate"):
        next(inputs("errors", 1, error_rate=1.5))

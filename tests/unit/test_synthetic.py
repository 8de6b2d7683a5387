"""Synthetic demo inputs (edge_runtime._synthetic): the generator is the one the demo models were trained and
baselined on (committed golden inputs and baselines regenerated bit for bit), and the drift statistics flag
the shifted scenarios against every demo baseline, never the clean one."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge_runtime import _synthetic as syn
from edge_runtime import drift
from edge_runtime.baseline import make_baseline
from edge_runtime.serve import FEATURES, input_statistics

REPO = Path(__file__).resolve().parents[2]
DEMO = sorted(p.parent for p in (REPO / "demo" / "models").glob("*/*/baseline.json"))
IDS = [f"{d.parent.name}/{d.name}" for d in DEMO]
#: scripts/train_demo_models.py: the 10 %-data models (1.0.0) are baselined on the first 400 training images
N_TRAIN, N_SMALL, N_HELDOUT = 4000, 400, 1000
SEED_LIVE = 99


@pytest.fixture(scope="module")
def training() -> tuple[np.ndarray, np.ndarray]:
    return syn.make_images(N_TRAIN, syn.SEED_TRAIN_DATA)


@pytest.fixture(scope="module")
def live() -> tuple[np.ndarray, np.ndarray]:
    return syn.make_images(1000, SEED_LIVE)


def _baseline(d: Path) -> dict[str, Any]:
    return json.loads((d / "baseline.json").read_text(encoding="utf-8"))


@pytest.mark.parametrize("d", DEMO, ids=IDS)
def test_the_generator_reproduces_every_demo_golden_input_and_its_label(d: Path) -> None:
    held, labels = syn.make_images(N_HELDOUT, syn.SEED_HELDOUT_DATA)
    golden = np.load(d / "golden.npz", allow_pickle=False)
    flat = held.reshape(N_HELDOUT, -1)
    for g, label in zip(golden["inputs"].reshape(len(golden["inputs"]), -1), golden["expected_labels"], strict=True):
        hits = np.flatnonzero((flat == g).all(axis=1))
        assert len(hits) == 1, "a golden input is not an image of the generator"
        assert labels[hits[0]] == label


@pytest.mark.parametrize("d", DEMO, ids=IDS)
def test_the_generator_and_the_baseline_builder_reproduce_every_demo_baseline(
    d: Path, training: tuple[np.ndarray, np.ndarray]
) -> None:
    doc = _baseline(d)
    assert doc["n_samples"] in (N_TRAIN, N_SMALL)
    images = training[0][: doc["n_samples"]]
    dummy_outputs = np.full((len(images), 2), 0.5)  # the confidence part needs the model; not compared
    assert make_baseline(images, dummy_outputs)["features"] == doc["features"]


def live_features(images: np.ndarray) -> dict[str, np.ndarray]:
    """The input statistics as the serving runtime records them, one float32 input at a time."""
    stats = [input_statistics(img) for img in images]
    return {name: np.array([s[name] for s in stats]) for name in FEATURES}


@pytest.mark.parametrize("d", DEMO, ids=IDS)
def test_drift_flags_winter_and_sensor_noise_and_not_the_clean_scenario(
    d: Path, live: tuple[np.ndarray, np.ndarray]
) -> None:
    doc = _baseline(d)
    expected = {"clean": [], "winter": ["pixel_mean"], "noise": ["pixel_std"]}
    for name, drifted in expected.items():
        feats = live_features(syn.SCENARIOS[name].apply(live[0], SEED_LIVE))
        for n in (1000, 200):  # a full window and the smallest one judged (min_samples)
            report = drift.evaluate_baseline(doc, values={k: v[:n] for k, v in feats.items()})
            assert report["drifted"] == drifted, (name, n, report["findings"])
            assert report["verdict"] == ("drift" if drifted else "ok")


def test_scenarios_keep_scenes_and_labels_and_stay_in_range() -> None:
    images, labels = syn.make_images(50, SEED_LIVE)
    for name in syn.SCENARIOS:
        out, out_labels = syn.generate(50, SEED_LIVE, name)
        assert out.dtype == np.float32
        assert out.shape == (50, 32, 32, 1)
        assert float(out.min()) >= 0.0
        assert float(out.max()) <= 1.0
        assert np.array_equal(out_labels, labels)
        assert np.array_equal(out, syn.generate(50, SEED_LIVE, name)[0])  # deterministic
    assert np.array_equal(syn.generate(50, SEED_LIVE)[0], images)
    winter = syn.generate(50, SEED_LIVE, "winter")[0].astype(np.float64)
    assert float((images - winter).mean()) == pytest.approx(0.12, abs=0.005)


def test_scenario_settings_are_checked() -> None:
    assert syn.scenario("winter", brightness=-0.3).brightness == -0.3
    assert syn.scenario(syn.Scenario("dusk", brightness=-0.05)).name == "dusk"
    with pytest.raises(ValueError, match="unknown scenario 'summer'; known: clean, noise, winter"):
        syn.scenario("summer")
    with pytest.raises(ValueError, match="unknown scenario setting"):
        syn.scenario("winter", gamma=2.0)
    with pytest.raises(ValueError, match="noise_std must be in"):
        syn.Scenario("x", noise_std=-0.1)
    with pytest.raises(ValueError, match="brightness must be in"):
        syn.Scenario("x", brightness=float("nan"))
    with pytest.raises(ValueError, match="n must be"):
        syn.generate(-1, 1)


def test_the_stream_draws_fresh_labelled_images_of_the_scenario() -> None:
    it = syn.stream(5, "noise", batch=8)
    drawn = [next(it) for _ in range(20)]
    assert {label for _, label in drawn} == {0, 1}
    assert all(img.shape == (32, 32, 1) and img.dtype == np.float32 for img, _ in drawn)
    assert len({img.tobytes() for img, _ in drawn}) == 20  # batches do not repeat
    again = syn.stream(5, "noise", batch=8)
    assert all(np.array_equal(next(again)[0], img) for img, _ in drawn)

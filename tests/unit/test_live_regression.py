"""scripts/live_regression.py: the models.yaml edit of the live-gate story and the canary traffic's lifetime."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
import yaml

from scripts import live_regression

REPO = Path(__file__).resolve().parents[2]
ENTRY: dict[str, object] = {"bundle": "defect-classifier/1.6.0.edgebundle", "digest": "sha256:" + "ab" * 32,
                            "release_counter": 5}


def test_with_regression_adds_the_catalogue_entry_the_pin_and_the_live_gate_of_one_group_only() -> None:
    text = (REPO / "models.yaml").read_text()
    doc = yaml.safe_load(live_regression.with_regression(text, ENTRY, group="line_b", pin="1.6.0", live_gate=True))
    before = yaml.safe_load(text)
    assert doc["models"]["defect-classifier"]["versions"]["1.6.0"] == ENTRY
    assert doc["groups"]["line_b"]["models"] == {"defect-classifier": "1.6.0"}
    assert doc["groups"]["line_b"]["rollout"]["live_gate"] == {
        "bake_seconds": 90, "poll_seconds": 2, "min_samples": 300, "min_feedback": 100, "baseline_minutes": 60}
    assert doc["groups"]["line_b"]["rollout"]["health_gate"] == before["groups"]["line_b"]["rollout"]["health_gate"]
    assert doc["groups"]["line_a"] == before["groups"]["line_a"]
    assert doc["groups"]["lab"] == before["groups"]["lab"]
    plain = yaml.safe_load(live_regression.with_regression(text, ENTRY, group="line_a", pin="1.1.0", live_gate=False))
    assert "live_gate" not in plain["groups"]["line_a"]["rollout"]
    assert plain["groups"]["line_a"]["models"] == {"defect-classifier": "1.1.0"}


def test_with_regression_refuses_a_layout_it_cannot_place_instead_of_writing_a_wrong_file() -> None:
    text = (REPO / "models.yaml").read_text()
    with pytest.raises(ValueError, match="the pin of no_such_group"):
        live_regression.with_regression(text, ENTRY, group="no_such_group", pin="1.6.0", live_gate=False)
    with pytest.raises(ValueError, match="catalogue entry"):
        live_regression.with_regression("groups: {}\n", ENTRY, group="line_a", pin="1.6.0", live_gate=False)


def test_canary_traffic_stops_its_thread_when_the_caller_is_interrupted(tmp_path: Path) -> None:
    root = tmp_path / "dev-a1"
    (root / "models" / "defect-classifier").mkdir(parents=True)
    (root / "models" / "defect-classifier" / "state.json").write_text(json.dumps({"active": "1.1.0"}))
    before = set(threading.enumerate())
    traffic = live_regression.CanaryTraffic([root])
    alive: list[bool] = []

    def interrupted() -> None:
        with traffic:
            alive.append(traffic._thread.is_alive())
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        interrupted()
    assert alive == [True]
    assert not traffic._thread.is_alive()
    assert set(threading.enumerate()) == before
    assert traffic.traffic == {}  # the device never ran 1.6.0: nothing was driven

"""The live canary gate end to end: real ansible-playbook deploys, real devices' live telemetry from real inference.

A line_a fleet runs 1.1.0 with live traffic (the workload simulator: real Predictor inference on the
generator's inputs with ground truth). A regression -- the 1.0.0 weights released as 1.6.0, which passes its
golden smoke test -- is deployed with a live gate; while the canary bakes, the simulator drives it, and the
gate halts line_a at its first wave on the live numbers and rolls the canary back. The smoke gate passed first.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

ansible_runner = pytest.importorskip("ansible_runner")

from scripts import live_regression  # noqa: E402
from tests.ansible.test_fleet_playbooks import LINE_A, Fleet, new_fleet  # noqa: E402

pytestmark = pytest.mark.slow


def write_models(fleet: Fleet, version: str, entry: dict[str, object], live_gate: bool) -> None:
    fleet.write_models()
    fleet.models.write_text(live_regression.with_regression(fleet.models.read_text(), entry, group="line_a",
                                                            pin=version, live_gate=live_gate))


def test_a_model_worse_on_live_data_is_halted_at_its_first_wave_by_the_live_gate(tmp_path: Path) -> None:
    fleet = new_fleet(tmp_path)
    entry = live_regression.build(fleet.registry, fleet.keys / "demo-NOT-FOR-PRODUCTION.key", tmp_path / "rel")
    write_models(fleet, "1.1.0", entry, live_gate=False)
    r = fleet.run("deploy.yml", limit="line_a,localhost")
    assert r.rc == 0, r.stdout.read()
    assert all(fleet.active(h) == "1.1.0" for h in LINE_A)

    # the baseline: 20 minutes of live traffic on 1.1.0 before the change (stamped in the past)
    live_regression.baseline_traffic([fleet.root / h for h in LINE_A])

    write_models(fleet, "1.6.0", entry, live_gate=True)
    t0 = time.monotonic()
    with live_regression.CanaryTraffic([fleet.root / h for h in LINE_A]) as driver:
        r = fleet.run("deploy.yml", limit="line_a,localhost")
    traffic = driver.traffic
    elapsed = time.monotonic() - t0
    out = r.stdout.read()
    assert r.rc != 0, out
    report = fleet.report()
    rows = {row["device"]: row for row in report["rows"]}
    canary = next(h for h in LINE_A if rows[h]["wave"] == 1)
    assert list(traffic) == [canary], traffic  # only the canary ever ran 1.6.0
    assert not isinstance(traffic[canary], Exception), traffic[canary]

    # the smoke gate (first line) passed the regression; the live gate halted it
    smoke, live = [g for g in report["gates"] if g["group"] == "line_a" and g["wave"] == 1]
    assert (smoke.get("kind"), smoke["passed"]) == (None, True)
    assert (live["kind"], live["passed"], live["failed"], live["devices"]) == ("live", False, 1, 1)
    verdict = live["verdicts"][canary]["models"]["defect-classifier"]
    assert verdict["verdict"] == "halt"
    numbers = verdict["numbers"]
    assert (numbers["version"], numbers["baseline_version"], numbers["basis"]) == ("1.6.0", "1.1.0", "ground_truth")
    assert numbers["inferences"] >= 300
    assert numbers["baseline_inferences"] >= 300
    assert numbers["error_rate"] - numbers["baseline_error_rate"] >= 0.02
    assert 1 <= live["verdicts"][canary]["reads"] <= 46  # one read per check, at most the bake's checks
    halted = report["halted"]["line_a"]
    assert halted["gate"] == "live"
    assert "live gate halt: error rate (ground truth)" in halted["reason"]

    md = (fleet.reports / "latest.md").read_text()
    assert f"live: {canary} defect-classifier halt (error rate ground_truth" in md

    # rolled back like a failed gate; the other devices never got it
    assert rows[canary]["result"] == "rolled_back"
    assert "wave gate failed" in rows[canary]["reason"]
    assert fleet.active(canary) == "1.1.0"
    for h in LINE_A:
        if h != canary:
            assert rows[h]["result"] == "skipped_halted"
            assert fleet.active(h) == "1.1.0"
    # the bake stopped as soon as the samples were there, far below its 90 s
    assert elapsed < 300

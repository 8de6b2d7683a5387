"""`make demo` (scripts/demo.py) end to end, in a state directory of its own (`--state`).

A newcomer runs the demo, then opens a one-line pull request: the default fleet must run what the committed
models.yaml says (so `make plan` shows nothing), a change to line_b must plan changes on line_b's devices
only, and the demo's output must stay compact while telling the whole story.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.ansible.test_fleet_playbooks import REPO, Fleet, changed_hosts

pytest.importorskip("ansible_runner")

pytestmark = pytest.mark.slow

LOCAL = REPO / "inventory" / "local" / "hosts.yml"
LINE_B = {"dev-b1", "dev-b2", "dev-b3", "dev-b4"}


def stray(marker: str) -> list[str]:
    """Command lines of running processes that mention ``marker``."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes().split(b"\0")
        except OSError:
            continue  # ended meanwhile
        text = " ".join(a.decode(errors="replace") for a in args)
        if marker in text:
            found.append(text[:300])
    return found


def test_after_the_demo_the_default_fleet_runs_the_committed_pins_and_a_line_b_change_plans_only_line_b(
    tmp_path: Path,
) -> None:
    state = tmp_path / "state"
    reports_before = sorted(p.name for p in (REPO / "reports").glob("*")) if (REPO / "reports").exists() else []
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "demo.py"), "--state", str(state)], cwd=REPO,
                          env=dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}"),
                          capture_output=True, text=True, timeout=900, check=False)
    out = proc.stdout
    assert proc.returncode == 0, out[-4000:] + proc.stderr[-2000:]
    # nothing the demo started outlives it (the playbooks, the workload simulator of act 7)
    assert stray(str(state)) == [], "processes of the demo left running"

    # the story, compactly: every act, the canary's failure and halt, the rollback's models.yaml warning
    for act in ("== 1.", "== 2.", "== 2b.", "== 3.", "== 4.", "== 5.", "== 6.", "== 7.", "== 8."):
        assert act in out, act
    # act 5, health: read-only, red because line_b's canary is rolled back; the reports are there
    assert "(ansible-playbook exited 2, as expected: a device is rolled back" in out
    health = json.loads((state / "demo" / "reports" / "health-latest.json").read_text())
    assert (health["failed"], health["counts"]["rolled_back"], health["counts"]["unknown"]) == (True, 1, 0)
    assert all((state / "demo" / "reports" / f"health-latest.{ext}").exists() for ext in ("md", "html"))
    # act 7, the live gate: 1.6.0 passed its smoke test, was halted at wave 1 on live numbers, canary back on 1.1.0
    report = json.loads((state / "demo" / "reports" / "latest.json").read_text())
    [live] = [g for g in report["gates"] if g.get("kind") == "live"]
    [canary] = live["hosts"]
    assert (live["group"], live["wave"], live["passed"], report["halted"]["line_a"]["gate"]) == \
        ("line_a", 1, False, "live")
    assert live["verdicts"][canary]["models"]["defect-classifier"]["verdict"] == "halt"
    assert json.loads((state / "demo" / "fleet" / canary / "models" / "defect-classifier" / "state.json")
                      .read_text())["active"] == "1.1.0"
    assert f"live gate, line_a wave 1, {canary}: HALT" in out
    assert f"workload simulator: stopped; it drove {canary}\n" in out
    assert "error rate (ground_truth)" in out
    # act 6, field telemetry: drift on exactly the two devices it was injected on; dev-a2 rolled itself back
    assert "drift reported on exactly the devices it was injected on: dev-b1, dev-l1" in out
    assert "facts of dev-a2: active_version 1.1.0, bad_versions ['1.0.0'], last_op self_rollback: " \
        "self-rollback: mean confidence 0." in out
    assert "< 0.75 for 5 consecutive minutes (min 20 inferences/min)" in out
    assert "line_b wave 1: 1/1 failed, max 0%: HALTED" in out
    assert "smoke test failed" in out
    assert "still pins line_a defect-classifier 1.1.0" in out
    assert "skipping" not in out
    assert len(out.splitlines()) < 400, len(out.splitlines())  # eight acts, ~330 lines
    # the repository's own reports are not the demo's
    assert (sorted(p.name for p in (REPO / "reports").glob("*")) if (REPO / "reports").exists() else []) == \
        reports_before

    fleet = Fleet(state)  # the demo's default fleet: state/fleet, its registry, reports and models.yaml copy
    fleet.keys = state / "demo-keys"
    before = fleet.snapshot(sorted(p.name for p in fleet.root.iterdir()))
    r = fleet.run("deploy.yml", check=True, inventory=LOCAL)
    assert r.rc == 0, r.stdout.read()
    assert changed_hosts(r) == {}, "after the demo, the default fleet differs from the committed models.yaml"

    fleet.write_models({"line_b": "1.1.0"})  # the newcomer's one-line pull request
    r = fleet.run("deploy.yml", check=True, inventory=LOCAL)
    assert r.rc == 0, r.stdout.read()
    assert set(changed_hosts(r)) == LINE_B
    assert fleet.snapshot(sorted(p.name for p in fleet.root.iterdir())) == before

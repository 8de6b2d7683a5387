"""make plan: the check-mode deploy writes plan.json / plan.md, and the deploy that follows does what it said.

Real ansible-playbook runs (ansible-runner) of playbooks/deploy.yml, --check then for real, on a simulated fleet
in a pytest tmp dir (the fixtures of test_fleet_playbooks.py).
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.ansible.test_fleet_playbooks import DEVICES, LINE_A, Fleet, new_fleet

pytest.importorskip("ansible_runner")
pytestmark = pytest.mark.slow


def plan_of(fleet: Fleet, pins: dict[str, str] | None = None) -> dict[str, Any]:
    fleet.write_models(pins)
    (fleet.reports / "plan.json").unlink(missing_ok=True)
    before = fleet.snapshot()
    r = fleet.run("deploy.yml", check=True)
    out = r.stdout.read()
    assert r.rc == 0, out[-3000:]
    assert fleet.snapshot() == before, "the plan changed a device"
    # the gate is never reported as passed in check mode
    assert "passed" not in [line.rsplit(": ", 1)[-1] for line in out.splitlines() if " wave " in line]
    assert "not evaluated (check mode" in out
    plan = json.loads((fleet.reports / "plan.json").read_text())
    assert (fleet.reports / "plan.md").read_text().startswith("# Deploy plan ")
    assert not (fleet.reports / "latest.json").exists() or pins, "a plan is not a deploy report"
    return plan


def deployed(fleet: Fleet) -> dict[tuple[str, str], dict[str, Any]]:
    r = fleet.run("deploy.yml")
    assert r.rc == 0, r.stdout.read()[-3000:]
    return {(row["device"], row["model"]): row for row in fleet.report()["rows"]}


def assert_deploy_did_what_the_plan_said(plan: dict[str, Any], rows: dict[tuple[str, str], dict[str, Any]]) -> None:
    assert {(r["device"], r["model"]) for r in plan["rows"]} == set(rows)
    for p in plan["rows"]:
        row = rows[(p["device"], p["model"])]
        expected = {"install": "installed", "noop": "unchanged"}[p["action"]]
        assert row["result"] == expected, (p, row)
        assert row["reported"] == p["to"], (p, row)
        assert row["wave"] == p["wave"], (p, row)
        if p["action"] == "noop":
            assert p["from"] == p["to"]
            assert p["bytes"] == 0


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Fleet:
    return new_fleet(tmp_path_factory.mktemp("plan"))


def test_plan_of_a_new_fleet_then_the_deploy(fleet: Fleet) -> None:
    plan = plan_of(fleet)
    assert not fleet.root.exists()
    assert {r["device"] for r in plan["rows"]} == set(DEVICES)
    for r in plan["rows"]:
        assert (r["from"], r["action"], r["code"]) == (None, "install", "not_installed"), r
        assert r["bytes"] > 0
        checks = {name: c["result"] for name, c in r["checks"].items()}
        assert checks == {"schema": "passed", "bundle_present": "passed", "signature_digest": "passed",
                          "expiry": "passed", "compatibility": "not evaluated", "downgrade": "passed",
                          "quarantined": "passed", "gate": "not evaluated"}, r
    assert plan["totals"]["bytes"] == sum(r["bytes"] for r in plan["rows"])
    assert {g["gate"] for g in plan["groups"].values()} == {"not evaluated"}
    assert_deploy_did_what_the_plan_said(plan, deployed(fleet))


def test_plan_of_an_upgrade_then_the_deploy(fleet: Fleet) -> None:
    plan = plan_of(fleet, {"line_a": "1.1.0"})
    by_device = {r["device"]: r for r in plan["rows"]}
    for host in LINE_A:
        assert (by_device[host]["from"], by_device[host]["to"], by_device[host]["action"]) == ("1.0.0", "1.1.0",
                                                                                               "install")
    assert {by_device[h]["action"] for h in DEVICES if h not in LINE_A} == {"noop"}
    assert plan["groups"]["line_a"]["install"] == len(LINE_A)
    md = (fleet.reports / "plan.md").read_text()
    assert "| dev-a1 | line_a |" in md
    assert "| 1.0.0 | 1.1.0 | install (not_installed) |" in md
    assert_deploy_did_what_the_plan_said(plan, deployed(fleet))

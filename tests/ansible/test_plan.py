"""make plan: the check-mode deploy writes plan.json / plan.md, and the deploy that follows does what it said.

Real ansible-playbook runs (ansible-runner) of playbooks/deploy.yml, --check then for real, on a simulated fleet
in a pytest tmp dir (the fixtures of test_fleet_playbooks.py).
"""

from __future__ import annotations

import json
import platform
from typing import Any

import pytest

from tests.ansible.test_fleet_playbooks import DEVICES, INVENTORY, LINE_A, Fleet, new_fleet

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
    assert plan["failed"] is False  # nothing the deploy would refuse: the plan is green (rc 0 above)
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
                          "expiry": "passed", "compatibility": "passed", "downgrade": "passed",
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


def test_an_incompatible_device_fails_the_plan_and_the_deploy_refuses_it_with_the_same_reason(fleet: Fleet) -> None:
    # dev-l2 is configured as a riscv64 device (edge_runtime_architecture): its twin says so, the bundles support
    # x86_64, aarch64 and armv7l. lab upgrades; its gate allows 50% failures, so dev-l1 goes on and dev-l2 is refused.
    inventory = fleet.base / "incompatible.yml"
    inventory.write_text(INVENTORY.read_text().replace("        dev-l2:\n",
                                                       "        dev-l2: {edge_runtime_architecture: riscv64}\n"))
    fleet.write_models({"line_a": "1.1.0", "lab": "1.1.0"})
    before = fleet.snapshot()
    r = fleet.run("deploy.yml", check=True, inventory=inventory)
    out = r.stdout.read()
    # the plan is red: the deploy after the merge would refuse dev-l2 and fail its run (asserted below)
    assert r.rc != 0, out[-3000:]
    assert "dev-l2 defect-classifier-int8: the deploy would refuse it (incompatible)" in out, out[-3000:]
    assert fleet.snapshot() == before, "the plan changed a device"
    plan = json.loads((fleet.reports / "plan.json").read_text())
    assert plan["failed"] is True
    rows = {r["device"]: r for r in plan["rows"]}
    bad, good = rows["dev-l2"], rows["dev-l1"]
    assert bad["checks"]["compatibility"]["result"] == "failed", bad
    detail = bad["checks"]["compatibility"]["detail"]
    assert "defect-classifier-int8 1.1.0 supports architectures " in detail
    assert "this device is riscv64" in detail
    assert (bad["from"], bad["to"], bad["action"], bad["code"], bad["bytes"]) == ("1.0.0", "1.1.0", "refuse",
                                                                                  "incompatible", 0), bad
    assert good["checks"]["compatibility"] == {"result": "passed",
                                               "detail": f"{platform.machine()} with backend litert"}, good
    assert good["action"] == "install"
    assert "| dev-l2 | lab | 1 | defect-classifier-int8 | 1.0.0 | 1.1.0 | refuse (incompatible) |" in \
        (fleet.reports / "plan.md").read_text()
    assert "HALTED" not in out

    r = fleet.run("deploy.yml", inventory=inventory)
    out = r.stdout.read()
    assert r.rc != 0, out[-3000:]
    report = {(row["device"], row["model"]): row for row in fleet.report()["rows"]}
    refused = report[("dev-l2", "defect-classifier-int8")]
    assert refused["result"] == "failed", refused
    assert detail.split(" (hint: ")[0] in refused["reason"], (detail, refused)
    assert fleet.active("dev-l2", "defect-classifier-int8") == "1.0.0"
    assert report[("dev-l1", "defect-classifier-int8")]["result"] == "installed"
    assert fleet.active("dev-l1", "defect-classifier-int8") == "1.1.0"
    assert fleet.report()["halted"] == {}, "lab allows 50% failures: 1 of 2"

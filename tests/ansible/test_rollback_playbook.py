"""playbooks/rollback.yml end to end: real ansible-playbook runs against a simulated fleet.

A fleet at 1.0.0 whose line_a was upgraded to 1.1.0 is rolled back: the rollback writes its report like a
deploy, a second run with the same arguments changes nothing and says so, both name the models.yaml line
that still pins 1.1.0 and the exact change that keeps the rollback, and that change makes the next deploy
a no-op. Explicit targets (edge_rollback_to), check mode and bad requests are covered too.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from tests.ansible.test_fleet_playbooks import DEVICES, LINE_A, REPO, Fleet, changed_hosts, new_fleet

pytest.importorskip("ansible_runner")

pytestmark = pytest.mark.slow

OTHERS = [h for h in DEVICES if h not in LINE_A]


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Fleet:
    """line_a upgraded from 1.0.0 to 1.1.0 by two deploys, the other groups at their 1.0.0 pins."""
    f = new_fleet(tmp_path_factory.mktemp("rollback"))
    assert f.run("deploy.yml").rc == 0
    f.write_models({"line_a": "1.1.0"})
    r = f.run("deploy.yml")
    assert r.rc == 0, r.stdout.read()
    assert all(f.active(h) == "1.1.0" for h in LINE_A)
    return f


def pin_line(models: Path, group: str) -> int:
    """1-based line of ``group``'s defect-classifier pin in ``models``."""
    lines = models.read_text().splitlines()
    start = lines.index(f"  {group}:")
    return next(i + 1 for i in range(start, len(lines)) if lines[i].strip().startswith("defect-classifier:"))


def digest_of(version: str) -> str:
    text = (REPO / "models.yaml").read_text()
    m = re.search(rf'"{re.escape(version)}":\n\s+bundle: defect-classifier/.*\n\s+digest: "(sha256:[0-9a-f]+)"', text)
    assert m, version
    return m.group(1)


def warning_of(report: dict[str, Any]) -> str:
    [w] = report["pin_warnings"]
    return str(w["message"])


def test_rollback_returns_the_group_to_its_previous_version_and_writes_its_report(fleet: Fleet) -> None:
    others = fleet.snapshot(OTHERS)
    r = fleet.run("rollback.yml", extravars={"edge_rollback_targets": "line_a"})
    out = r.stdout.read()
    assert r.rc == 0, out
    assert all(fleet.active(h) == "1.0.0" for h in LINE_A)
    assert fleet.snapshot(OTHERS) == others, "a device outside the targets changed"
    assert set(changed_hosts(r)) == set(LINE_A)
    report = fleet.report()
    assert {row["device"]: row["result"] for row in report["rows"]} == dict.fromkeys(LINE_A, "rolled_back")
    assert all(row["reported"] == "1.0.0" and row["desired"] == "1.1.0" for row in report["rows"])
    assert not report["failed"]
    assert sorted(report["excluded"]) == sorted(OTHERS)
    md = (fleet.reports / "latest.md").read_text()
    assert md.startswith("# Rollback "), md[:200]
    assert {p.suffix for p in fleet.reports.glob("rollback-*")} == {".json", ".md"}
    assert (fleet.reports / "latest.json").exists()


def test_models_yaml_pin_of_the_rolled_back_version_is_named_with_the_one_line_fix(fleet: Fleet) -> None:
    report = fleet.report()
    line = pin_line(fleet.models, "line_a")
    expected = (f'{fleet.models}:{line} still pins line_a defect-classifier 1.1.0, but dev-a1, dev-a2, dev-a3 now run '
                f'1.0.0: the next deploy would roll them forward to 1.1.0 again. To keep the rollback, change it to '
                f'"1.0.0" (digest {digest_of("1.0.0")}): defect-classifier: "1.0.0"')
    assert warning_of(report) == expected
    assert report["pin_warnings"][0]["line"] == line
    assert expected in (fleet.reports / "latest.md").read_text()


def test_second_rollback_with_the_same_arguments_changes_nothing_and_says_so(fleet: Fleet) -> None:
    before = fleet.snapshot()
    r = fleet.run("rollback.yml", extravars={"edge_rollback_targets": "line_a"})
    out = r.stdout.read()
    assert r.rc == 0, out
    assert changed_hosts(r) == {}
    assert fleet.snapshot() == before
    assert all(fleet.active(h) == "1.0.0" for h in LINE_A)
    rows = fleet.report()["rows"]
    assert {row["result"] for row in rows} == {"unchanged"}
    assert all(row["reason"] == "runs 1.0.0, not the pinned 1.1.0: nothing to roll back" for row in rows), rows
    assert "nothing to roll back" in out
    # the run summary repeats the models.yaml warning (the devices still differ from the pin)
    assert f"WARNING: {warning_of(fleet.report())}" in out


def test_check_mode_rollback_plans_and_changes_nothing(fleet: Fleet) -> None:
    before, reports = fleet.snapshot(), sorted(fleet.reports.iterdir())
    r = fleet.run("rollback.yml", check=True, extravars={"edge_rollback_targets": "dev-a1",
                                                           "edge_rollback_to": "1.1.0"})
    out = r.stdout.read()
    assert r.rc == 0, out
    assert set(changed_hosts(r)) == {"dev-a1"}
    assert "dev-a1 | defect-classifier | now 1.0.0 | models.yaml 1.1.0 | would_change" in out
    assert fleet.snapshot() == before
    assert sorted(fleet.reports.iterdir()) == reports, "check mode wrote a report"


def test_explicit_target_version_rolls_to_it_and_is_idempotent(fleet: Fleet) -> None:
    for run in (1, 2):
        r = fleet.run("rollback.yml", extravars={"edge_rollback_targets": "dev-a1,dev-a2",
                                                 "edge_rollback_to": "1.1.0"})
        assert r.rc == 0, r.stdout.read()
        assert set(changed_hosts(r)) == ({"dev-a1", "dev-a2"} if run == 1 else set())
        assert [fleet.active(h) for h in LINE_A] == ["1.1.0", "1.1.0", "1.0.0"]
    report = fleet.report()
    assert {row["result"] for row in report["rows"]} == {"unchanged"}
    assert report["pin_warnings"] == []  # dev-a1/2 run what models.yaml pins again
    r = fleet.run("rollback.yml", extravars={"edge_rollback_targets": "dev-a1,dev-a2", "edge_rollback_to": "1.0.0"})
    assert r.rc == 0
    assert [fleet.active(h) for h in LINE_A] == ["1.0.0", "1.0.0", "1.0.0"]


def test_target_version_not_kept_on_a_device_fails_that_device_and_changes_nothing(fleet: Fleet) -> None:
    def models() -> dict[str, Any]:  # the refused runtime call rewrites its lock file and the facts only
        return {k: v for k, v in fleet.snapshot().items() if "/models/" in k}

    before = models()
    r = fleet.run("rollback.yml", extravars={"edge_rollback_targets": "line_a", "edge_rollback_to": "1.3.0"})
    out = r.stdout.read()
    assert r.rc != 0
    assert models() == before
    report = fleet.report()
    assert {row["result"] for row in report["rows"]} == {"failed"}
    assert all("1.3.0 is not kept on this device" in row["reason"] for row in report["rows"]), report["rows"]
    assert "Rollback incomplete" in out


@pytest.mark.parametrize(("extravars", "needle"), [
    ({"edge_rollback_targets": "no_such_group"}, "match no device"),
    ({"edge_rollback_targets": "line_a", "edge_rollback_models": ["defect-classifier-int8"]},
     "not pinned for any target device"),
    ({"edge_rollback_targets": "line_a,lab", "edge_rollback_to": "1.0.0"}, "choose one with edge_rollback_models"),
    ({}, "set -e edge_rollback_targets"),
])
def test_bad_rollback_request_is_refused_before_any_device_changes(
    fleet: Fleet, extravars: dict[str, Any], needle: str
) -> None:
    before = fleet.snapshot()
    r = fleet.run("rollback.yml", extravars=extravars)
    assert r.rc != 0
    assert fleet.snapshot() == before
    failed = [e["event_data"]["res"]["msg"] for e in r.events if e.get("event") == "runner_on_failed"]
    assert failed, r.stdout.read()
    assert needle in failed[0], failed


def test_applying_the_suggested_pin_makes_the_next_deploy_a_no_op(fleet: Fleet) -> None:
    r = fleet.run("rollback.yml", extravars={"edge_rollback_targets": "line_a"})
    assert r.rc == 0
    [w] = fleet.report()["pin_warnings"]
    lines = fleet.models.read_text().splitlines(keepends=True)
    indent = re.match(r"\s*", lines[w["line"] - 1]).group(0)  # type: ignore[union-attr]
    lines[w["line"] - 1] = f"{indent}{w['fix']}\n"
    fleet.models.write_text("".join(lines))
    before = fleet.snapshot()
    r = fleet.run("deploy.yml")
    assert r.rc == 0, r.stdout.read()
    assert changed_hosts(r) == {}
    assert fleet.snapshot() == before


def test_limit_in_any_form_restricts_the_rollback_and_without_localhost_it_is_refused(
    fleet: Fleet, tmp_path: Path
) -> None:
    hosts_file = tmp_path / "limit.txt"
    hosts_file.write_text("dev-a2\nlocalhost\n")
    others = [h for h in DEVICES if h != "dev-a2"]
    before = fleet.snapshot(others)
    r = fleet.run("rollback.yml", extravars={"edge_rollback_targets": "line_a", "edge_rollback_to": "1.1.0"},
                  limit=f"@{hosts_file}")
    assert r.rc == 0, r.stdout.read()
    assert set(changed_hosts(r)) == {"dev-a2"}
    assert fleet.active("dev-a2") == "1.1.0"
    assert fleet.snapshot(others) == before
    assert [row["device"] for row in fleet.report()["rows"]] == ["dev-a2"]

    before = fleet.snapshot()
    r = fleet.run("rollback.yml", extravars={"edge_rollback_targets": "line_a", "edge_rollback_to": "1.0.0"},
                  limit="dev-a2")
    assert r.rc != 0
    assert fleet.snapshot() == before
    failed = [e["event_data"]["res"]["msg"] for e in r.events if e.get("event") == "runner_on_failed"]
    assert failed, r.stdout.read()
    assert "No resolved rollback" in failed[0]

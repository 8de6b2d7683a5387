"""The fleet playbooks end to end: real ansible-playbook runs (ansible-runner) against a simulated fleet.

One fleet is deployed per module and walked through a release's life: first deploy, no-op rerun, check
mode, a canary-wave upgrade, a bad model halted at its first wave, its quarantine on the next run, an
operator rollback. Device roots, registry, keys and reports live in a pytest tmp dir.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import pytest

ansible_runner = pytest.importorskip("ansible_runner")

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
INVENTORY = Path(__file__).resolve().parent / "inventory" / "hosts.yml"
DEVICES = ["dev-a1", "dev-a2", "dev-a3", "dev-b1", "dev-b2", "dev-l1", "dev-l2"]
LINE_A = ["dev-a1", "dev-a2", "dev-a3"]


class Fleet:
    def __init__(self, base: Path) -> None:
        self.base = base
        self.root = base / "fleet"
        self.registry = base / "registry"
        self.keys = base / "keys"
        self.reports = base / "reports"
        self.models = base / "models.yaml"
        self.runs = 0

    def write_models(self, pins: dict[str, str] | None = None, registry: Path | None = None) -> None:
        text = (REPO / "models.yaml").read_text()
        text = re.sub(r"(?m)^registry: .*$", f"registry: {registry or self.registry}", text)
        for group, version in (pins or {}).items():
            text = re.sub(
                rf"(?ms)^(  {group}:\n    models:\n      [\w-]+: )\"[^\"]+\"", rf'\g<1>"{version}"', text
            )
        self.models.write_text(text)

    def run(self, playbook: str, *, check: bool = False, extravars: dict[str, Any] | None = None,
            inventory: Path = INVENTORY, limit: str | None = None) -> Any:
        self.runs += 1
        pdd = self.base / f"runner-{self.runs}"
        pdd.mkdir()
        env = {
            "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"),
            "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}",
            "ANSIBLE_NOCOLOR": "1",
        }
        ev = {
            "edge_models_file": str(self.models),
            "edge_runtime_root": str(self.root) + "/{{ inventory_hostname }}",
            "edge_runtime_trusted_keys": [str(self.keys / "demo-NOT-FOR-PRODUCTION.pub")],
            "edge_reports_dir": str(self.reports),
            # the fleet lock of this test fleet, not of the repository's (other test sessions may run)
            "edge_lock_dir": str(self.base / "locks"),
            **(extravars or {}),
        }
        return ansible_runner.run(
            private_data_dir=str(pdd),
            playbook=str(REPO / "playbooks" / playbook),
            inventory=str(inventory),
            envvars=env,
            extravars=ev,
            cmdline="--check --diff" if check else None,
            limit=limit,
            quiet=True,
        )

    def report_digest(self, model: str, version: str) -> str:
        """The manifest digest models.yaml pins for ``model`` ``version``."""
        import yaml

        return str(yaml.safe_load(self.models.read_text())["models"][model]["versions"][version]["digest"])

    def state(self, host: str, model: str = "defect-classifier") -> dict[str, Any]:
        p = self.root / host / "models" / model / "state.json"
        return json.loads(p.read_text()) if p.exists() else {}

    def active(self, host: str, model: str = "defect-classifier") -> str | None:
        return self.state(host, model).get("active")

    def snapshot(self, hosts: list[str] | None = None) -> dict[str, tuple[str, int]]:
        out = {}
        for host in hosts or DEVICES:
            base = self.root / host
            for p in sorted(base.rglob("*")) if base.exists() else []:
                if p.is_file() and not p.is_symlink():
                    out[str(p.relative_to(self.root))] = (hashlib.sha256(p.read_bytes()).hexdigest(),
                                                          p.stat().st_mtime_ns)
                elif p.is_symlink():
                    out[str(p.relative_to(self.root))] = (os.readlink(p), 0)
        return out

    def report(self) -> dict[str, Any]:
        return json.loads((self.reports / "latest.json").read_text())


def changed_hosts(r: Any) -> dict[str, int]:
    return {h: n for h, n in (r.stats or {}).get("changed", {}).items() if n}


def converge_order(r: Any) -> list[str]:
    """Devices in the order the converge task finished on them."""
    order = []
    for e in r.events:
        data = e.get("event_data", {})
        if e.get("event") in ("runner_on_ok", "runner_on_failed") and data.get("task", "").startswith(
            "Converge each pinned model"
        ):
            order.append(data["host"])
    return order


def new_fleet(base: Path) -> Fleet:
    """A fleet in ``base`` with its own registry and keys, models.yaml as committed; no device yet."""
    f = Fleet(base)
    subprocess.run(
        [sys.executable, str(REPO / "scripts" / "build_registry.py"), "--out", str(f.registry), "--keys", str(f.keys)],
        check=True, capture_output=True,
    )
    f.write_models()
    return f


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Fleet:
    return new_fleet(tmp_path_factory.mktemp("fleet"))


def test_bad_models_yaml_fails_before_any_device_changes(fleet: Fleet) -> None:
    fleet.write_models({"line_b": "9.9.9"})
    r = fleet.run("deploy.yml")
    assert r.rc != 0
    assert not fleet.root.exists(), "a device was touched although models.yaml is invalid"
    failed = [e["event_data"]["res"]["msg"] for e in r.events if e.get("event") == "runner_on_failed"]
    assert re.search(r"models\.yaml:\d+:\d+: .*9\.9\.9", failed[0]), failed

    text = (REPO / "models.yaml").read_text().replace("  lab:\n", "  no_such_group:\n")
    fleet.models.write_text(re.sub(r"(?m)^registry: .*$", f"registry: {fleet.registry}", text))
    r = fleet.run("deploy.yml")
    assert r.rc != 0
    assert not fleet.root.exists()
    failed = [e["event_data"]["res"]["msg"] for e in r.events if e.get("event") == "runner_on_failed"]
    assert re.search(r"models\.yaml:\d+:\d+: .*no_such_group", failed[0]), failed


def test_check_mode_on_a_new_fleet_plans_the_install_and_creates_nothing(fleet: Fleet) -> None:
    fleet.write_models()
    r = fleet.run("deploy.yml", check=True)
    out = r.stdout.read()
    assert r.rc == 0, out
    assert not fleet.root.exists(), "check mode created device state"
    # check mode writes no deploy report or history: its only output is the plan (make plan, test_plan.py)
    assert sorted(p.name for p in fleet.reports.iterdir()) == ["plan.json", "plan.md"], "check mode wrote a report"
    assert set(changed_hosts(r)) == set(DEVICES)
    assert re.search(r"dev-a1 \| defect-classifier \| - \| 1\.0\.0 \| \d \| would_change", out), out[-3000:]


def test_first_deploy_installs_every_pin(fleet: Fleet) -> None:
    fleet.write_models()
    r = fleet.run("deploy.yml")
    assert r.rc == 0, r.stdout.read()
    for h in DEVICES:
        model = "defect-classifier-int8" if h.startswith("dev-l") else "defect-classifier"
        assert fleet.active(h, model) == "1.0.0", h
    assert {row["result"] for row in fleet.report()["rows"]} == {"installed"}
    # every install recorded its post-install check in its own module run (staged smoke test, active files
    # verified after the swap): the twin counts it healthy, and no second check (handler) ran
    for h in DEVICES:
        model = "defect-classifier-int8" if h.startswith("dev-l") else "defect-classifier"
        assert fleet.state(h, model)["versions"]["1.0.0"]["check"]["passed"] is True, h
    assert not [e for e in r.events if e["event_data"].get("task", "").startswith("Health-check the models")
                and e.get("event") in ("runner_item_on_ok", "runner_on_ok")]
    # local connection: the devices read the file registry themselves, nothing is pushed
    installs = [e["event_data"]["res"] for e in r.events if e.get("event") == "runner_item_on_ok"
                and e["event_data"].get("task", "").startswith("Converge each pinned model")]
    assert len(installs) == len(DEVICES)
    assert not [i for i in installs if i["invocation"]["module_args"]["pushed"]]
    # a device runs its two module runs and nothing else: what its converge loop means (installed, refused,
    # needs a check) is read on the controller, not by bookkeeping tasks on each device (no set_fact, assert,
    # argument validation or skipped task per device)
    per_device: dict[str, list[str]] = {}
    for e in r.events:
        data = e.get("event_data", {})
        if e.get("event") in ("runner_on_ok", "runner_on_failed", "runner_on_skipped") and data.get("host") in DEVICES:
            per_device.setdefault(data["host"], []).append(data["task_action"])
    # the one run_once check that the devices of the play are the planned ones runs once, not per device
    asserts = [h for h, acts in per_device.items() if "ansible.builtin.assert" in acts]
    assert len(asserts) == 1, asserts
    per_device[asserts[0]].remove("ansible.builtin.assert")
    assert per_device == {h: ["edgeml.fleet.edge_runtime_setup", "edgeml.fleet.edge_model"] for h in DEVICES}


def test_a_bad_edge_model_setting_stops_the_run_before_any_device_is_touched(fleet: Fleet) -> None:
    before = fleet.snapshot()
    r = fleet.run("deploy.yml", extravars={"edge_model_retries": "many", "edge_runtime_keep_versions": "several"})
    assert r.rc != 0
    out = r.stdout.read()
    # both roles are checked in the one controller task, and every problem is named before the run stops
    assert "role edgeml.fleet.edge_model: invalid settings" in out, out
    assert "edge_model_retries" in out
    assert "role edgeml.fleet.edge_runtime: invalid settings" in out, out
    assert "edge_runtime_keep_versions" in out
    assert module_runs(r) == {}
    assert fleet.snapshot() == before


def module_runs(r: Any) -> dict[str, list[str]]:
    """Device-side module tasks each device ran (controller-side actions left out)."""
    controller = {"ansible.builtin.validate_argument_spec", "validate_argument_spec", "ansible.builtin.include_tasks",
                  "include_tasks", "ansible.builtin.meta", "meta", "ansible.builtin.set_fact", "set_fact",
                  "ansible.builtin.debug", "debug", "ansible.builtin.assert", "assert", "edgeml.fleet.role_arguments"}
    out: dict[str, list[str]] = {}
    for e in r.events:
        data = e.get("event_data", {})
        if (e.get("event") in ("runner_on_ok", "runner_on_failed") and data.get("host") in DEVICES
                and data.get("task_action") not in controller):
            out.setdefault(data["host"], []).append(data["task_action"])
    return out


def test_second_run_changes_nothing(fleet: Fleet) -> None:
    before = fleet.snapshot()
    r = fleet.run("deploy.yml")
    assert r.rc == 0
    assert changed_hosts(r) == {}
    assert fleet.snapshot() == before
    assert {row["result"] for row in fleet.report()["rows"]} == {"unchanged"}
    # in sync everywhere: one module run per device (runtime setup, which reports the twin), no converge
    assert converge_order(r) == []
    assert module_runs(r) == {h: ["edgeml.fleet.edge_runtime_setup"] for h in DEVICES}


def test_drift_behind_ansibles_back_is_found_and_only_that_device_converges(fleet: Fleet) -> None:
    shutil.rmtree(fleet.root / "dev-b2" / "models")  # e.g. a technician wiped the model store
    others = [h for h in DEVICES if h != "dev-b2"]
    before = fleet.snapshot(others)
    r = fleet.run("deploy.yml")
    assert r.rc == 0, r.stdout.read()
    assert converge_order(r) == ["dev-b2"]
    assert fleet.active("dev-b2") == "1.0.0"
    assert fleet.snapshot(others) == before
    assert set(changed_hosts(r)) == {"dev-b2"}
    rows = {row["device"]: row for row in fleet.report()["rows"]}
    assert rows["dev-b2"]["result"] == "installed"
    assert {rows[h]["result"] for h in others} == {"unchanged"}


def test_check_mode_shows_the_plan_and_changes_nothing(fleet: Fleet) -> None:
    fleet.write_models({"line_a": "1.1.0"})
    before = fleet.snapshot()
    reports_before = sorted(p.name for p in fleet.reports.iterdir())
    r = fleet.run("deploy.yml", check=True)
    assert r.rc == 0, r.stdout.read()
    assert fleet.snapshot() == before
    assert sorted(p.name for p in fleet.reports.iterdir()) == reports_before
    assert set(changed_hosts(r)) == set(LINE_A)
    out = r.stdout.read()
    assert "1.1.0" in out
    assert "would_change" in out


def test_upgrade_rolls_out_canary_first(fleet: Fleet) -> None:
    untouched = fleet.snapshot(["dev-b1", "dev-b2", "dev-l1", "dev-l2"])
    r = fleet.run("deploy.yml")
    assert r.rc == 0, r.stdout.read()
    assert all(fleet.active(h) == "1.1.0" for h in LINE_A)
    assert fleet.snapshot(["dev-b1", "dev-b2", "dev-l1", "dev-l2"]) == untouched
    waves = {row["device"]: row["wave"] for row in fleet.report()["rows"] if row["group"] == "line_a"}
    order = [h for h in converge_order(r) if h in LINE_A]
    assert [waves[h] for h in order] == sorted(waves[h] for h in order), (order, waves)
    assert waves[order[0]] == 1


def test_bad_model_halts_at_first_wave_and_rolls_back_canary(fleet: Fleet) -> None:
    fleet.write_models({"line_a": "1.2.0"})
    others = list(DEVICES)
    r = fleet.run("deploy.yml")
    assert r.rc != 0
    rows = {row["device"]: row for row in fleet.report()["rows"]}
    canary = next(h for h in LINE_A if rows[h]["wave"] == 1)
    others = [h for h in DEVICES if h != canary]
    assert rows[canary]["result"] == "rolled_back"
    assert "smoke test failed" in rows[canary]["reason"]
    assert fleet.active(canary) == "1.1.0"
    assert "1.2.0" in fleet.state(canary)["bad"]
    for h in LINE_A:
        if h != canary:
            assert rows[h]["result"] == "skipped_halted"
            assert fleet.active(h) == "1.1.0"
    assert "line_a" in fleet.report()["halted"]
    # the audit trail: the run's decisions in the fleet history (edge_runtime.audit), with the gate's reason
    from edge_runtime.audit import read_events

    event = list(read_events(fleet.reports))[-1]
    assert (event["kind"], event["data"]["failed"]) == ("deploy", True)
    assert "line_a halted at wave 1" in event["summary"]
    assert "smoke test failed" in event["data"]["halted"]["line_a"]["reason"]
    [change] = [c for c in event["data"]["changes"] if c["device"] == canary]
    assert (change["result"], change["desired"], change["digest"]) == (
        "rolled_back", "1.2.0", fleet.report_digest("defect-classifier", "1.2.0"))
    assert event["reports"][0].endswith(".json")
    [gate] = [g for g in event["data"]["gates"] if g["group"] == "line_a"]
    assert (gate["wave"], gate["passed"], gate["failed"], gate["devices"]) == (1, False, 1, 1)
    assert "## Gate decisions" in (fleet.reports / "latest.md").read_text()
    fleet.canary = canary  # type: ignore[attr-defined]
    fleet.others_after_bad = fleet.snapshot(others)  # type: ignore[attr-defined]


def test_quarantined_version_is_not_pushed_again(fleet: Fleet) -> None:
    canary = fleet.canary  # type: ignore[attr-defined]
    before = fleet.snapshot()
    r = fleet.run("deploy.yml")
    assert r.rc != 0
    rows = {row["device"]: row for row in fleet.report()["rows"]}
    assert rows[canary]["result"] == "quarantined"
    assert rows[canary]["reason"].startswith("quarantined:")
    assert {k: v for k, v in fleet.snapshot().items() if "/facts/" not in k} == {
        k: v for k, v in before.items() if "/facts/" not in k
    }


def test_rollback_playbook_returns_group_to_previous_version(fleet: Fleet) -> None:
    # models.yaml pins the bad 1.2.0, which no device runs: a rollback from the pin has nothing to do ...
    before = fleet.snapshot()
    r = fleet.run("rollback.yml", extravars={"edge_rollback_targets": "line_a"})
    assert r.rc == 0, r.stdout.read()
    assert changed_hosts(r) == {}
    assert fleet.snapshot() == before
    # ... and an explicit target takes the group back (tests/ansible/test_rollback_playbook.py has the rest)
    r = fleet.run("rollback.yml", extravars={"edge_rollback_targets": "line_a", "edge_rollback_to": "1.0.0"})
    assert r.rc == 0, r.stdout.read()
    assert all(fleet.active(h) == "1.0.0" for h in LINE_A)
    assert fleet.active("dev-b1") == "1.0.0"  # untouched group, still at its pin
    assert set(changed_hosts(r)) == set(LINE_A)
    from edge_runtime.audit import read_events

    event = list(read_events(fleet.reports))[-1]
    assert event["kind"] == "rollback"
    assert {c["device"] for c in event["data"]["changes"]} == set(LINE_A)


def test_tampered_bundle_is_refused_before_any_device_changes(fleet: Fleet, tmp_path: Path) -> None:
    registry = tmp_path / "registry"
    shutil.copytree(fleet.registry, registry)
    bundle = registry / "defect-classifier" / "1.1.0.edgebundle"
    with tarfile.open(bundle) as tar:
        member = tar.getmember("model.tflite")
    data = bytearray(bundle.read_bytes())
    data[member.offset_data + member.size // 2] ^= 0x01  # a byte of the model, not of the signed manifest
    bundle.write_bytes(bytes(data))
    fleet.write_models({"line_b": "1.1.0"}, registry=registry)
    before = fleet.snapshot()
    r = fleet.run("deploy.yml")
    assert r.rc != 0
    assert fleet.snapshot() == before
    out = r.stdout.read()
    assert "1.1.0.edgebundle" in out, out[-3000:]
    assert "integrity" in out or "sha256" in out, out[-3000:]


def bundle_plan(fleet: Fleet, version: str) -> dict[str, Any]:
    """A device plan entry (as the desired_state plugin makes) for defect-classifier ``version``."""
    from edge_runtime.bundle import read_envelope
    from edge_runtime.manifest import Manifest

    bundle = fleet.registry / "defect-classifier" / f"{version}.edgebundle"
    digest = Manifest.from_signed(read_envelope(bundle).signed).digest
    return {"rollout_group": "line_a", "wave": 1,
            "models": {"defect-classifier": {"version": version, "digest": digest, "source": str(bundle),
                                             "size": bundle.stat().st_size}}}


def test_post_install_check_handler_rolls_back_a_version_whose_files_rot(fleet: Fleet, tmp_path: Path) -> None:
    def plan(version: str) -> dict[str, Any]:
        return bundle_plan(fleet, version)

    root = tmp_path / "device"
    result_file = tmp_path / "result.json"
    r = fleet.run("../tests/ansible/playbooks/post_install_check.yml", extravars={
        "edge_runtime_root": str(root), "plan_a": plan("1.0.0"), "plan_b": plan("1.1.0"), "version_b": "1.1.0",
        "result_file": str(result_file)})
    assert r.rc == 0, r.stdout.read()
    checks = [e["event_data"] for e in r.events if e.get("event") in ("runner_item_on_ok", "runner_item_on_failed")
              and e["event_data"].get("task", "").startswith("Health-check the models")]
    # A's and B's installs recorded their own checks; only the unverified B was checked by the handler
    assert [c["res"].get("rolled_back", False) for c in checks] == [True], checks
    result = json.loads(result_file.read_text())
    m = result["models"]["defect-classifier"]
    assert (result["status"], result["ok"], m["status"], m["active"]) == ("rolled_back", False, "rolled_back", "1.0.0")
    assert "no longer verify" in m["reason"]
    st = json.loads((root / "models" / "defect-classifier" / "state.json").read_text())
    assert st["active"] == "1.0.0"
    assert "1.1.0" in st["bad"]


def test_unreachable_device_fails_its_wave_gate_and_halts_only_its_group(fleet: Fleet, tmp_path: Path) -> None:
    fleet.write_models()
    root = tmp_path / "fresh"
    r = fleet.run("deploy.yml", extravars={"edge_runtime_root": str(root) + "/{{ inventory_hostname }}"},
                  inventory=INVENTORY.with_name("unreachable.yml"))
    out = r.stdout.read()
    assert r.rc != 0, out
    # unreachable, shown as such; recorded (ignore_unreachable) rather than ending the host's run, so that a run
    # whose devices are all unreachable still reaches its gate and report (test_production_example.py)
    unreachable = {e["event_data"].get("host") for e in r.events if e.get("event") == "runner_on_unreachable"}
    assert "dev-b2" in unreachable, "dev-b2 should have been unreachable"
    report = fleet.report()
    rows = {row["device"]: row for row in report["rows"]}
    assert rows["dev-b2"]["result"] == "unreachable"
    assert "line_b" in report["halted"]
    assert "dev-b2" in report["halted"]["line_b"]["reason"]
    assert not (root / "dev-b2").exists()
    for h in ("dev-a1", "dev-a2", "dev-a3", "dev-l1", "dev-l2"):  # other groups roll on
        assert rows[h]["result"] == "installed", rows[h]
    assert rows["dev-b1"]["result"] in ("installed", "skipped_halted")  # depends on dev-b2's wave
    assert "Rollout incomplete" in out

def test_push_transfer_copies_the_bundle_installs_from_the_copy_and_removes_it(fleet: Fleet, tmp_path: Path) -> None:
    sys.path.insert(0, str(REPO / "collections"))
    from ansible_collections.edgeml.fleet.plugins.plugin_utils.device_plan import device_plan

    root = tmp_path / "device"
    # the device's plan as deploy.yml makes it, for a device that cannot read the registry (transfer push)
    plan_a = device_plan("dev-a1", bundle_plan(fleet, "1.0.0"), "run-1",
                         {"edge_model_transfer": "push", "edge_runtime_root": str(root)})
    assert plan_a["transfer"] == "push"
    # the run id the twin echoes (deploy.yml passes it): only a twin of this run counts for the push decision
    extravars = {"edge_runtime_root": str(root), "plan_a": plan_a, "edge_runtime_run_id": plan_a["run_id"]}
    # check mode sends nothing (and creates nothing)
    r = fleet.run("../tests/ansible/playbooks/push.yml", extravars=extravars, check=True)
    assert r.rc == 0, r.stdout.read()
    assert not root.exists()
    r = fleet.run("../tests/ansible/playbooks/push.yml", extravars=extravars)
    assert r.rc == 0, r.stdout.read()
    pushed = str(root / "downloads" / "defect-classifier-1.0.0.edgebundle.part")
    installs = [e["event_data"]["res"] for e in r.events if e.get("event") == "runner_item_on_ok"
                and e["event_data"].get("task", "").startswith("Converge each pinned model")]
    # edge_model's action plugin sent the bundle next to its device path and the module installed from it
    assert [(i["invocation"]["module_args"]["source"], i["invocation"]["module_args"]["pushed"])
            for i in installs] == [(pushed, True)]
    assert installs[0]["result"] == "installed"
    assert not Path(pushed).exists(), "the pushed copy was left on the device"
    assert list((root / "downloads").iterdir()) == []
    # one device module run for the model: no copy, stat or file module runs around it
    assert module_runs(r) == {"dev-a1": ["edgeml.fleet.edge_runtime_setup", "edgeml.fleet.edge_model"]}
    # a second run: the twin shows the pinned build active, so nothing is sent
    r = fleet.run("../tests/ansible/playbooks/push.yml", extravars=extravars)
    assert r.rc == 0, r.stdout.read()
    again = [e["event_data"]["res"] for e in r.events if e.get("event") == "runner_item_on_ok"
             and e["event_data"].get("task", "").startswith("Converge each pinned model")]
    assert [(i["changed"], i["invocation"]["module_args"]["pushed"]) for i in again] == [(False, False)]
    st = json.loads((root / "models" / "defect-classifier" / "state.json").read_text())
    assert st["active"] == "1.0.0"


def test_bad_role_setting_is_refused_for_the_fleet_before_any_device_changes(fleet: Fleet, tmp_path: Path) -> None:
    fleet.write_models()
    root = tmp_path / "fresh"
    r = fleet.run("deploy.yml", extravars={"edge_runtime_root": str(root) + "/{{ inventory_hostname }}",
                                           "edge_runtime_install_method": "pip"})
    assert r.rc != 0
    assert not root.exists()
    failed = [e["event_data"]["res"]["msg"] for e in r.events if e.get("event") == "runner_on_failed"]
    assert len(failed) == 1, failed  # one controller-side check, not one failure per device
    assert "edge_runtime_install_method" in failed[0]
    assert "preinstalled, venv" in failed[0]
    assert all(h in failed[0] for h in DEVICES), failed[0]


def test_limit_touches_only_the_limited_devices_and_keeps_their_waves(fleet: Fleet, tmp_path: Path) -> None:
    fleet.write_models()
    ev = {"edge_runtime_root": str(tmp_path / "fresh") + "/{{ inventory_hostname }}"}
    assert fleet.run("deploy.yml", extravars=ev).rc == 0
    fleet.write_models({"line_a": "1.1.0", "line_b": "1.1.0"})
    before = {h: json.loads((tmp_path / "fresh" / h / "models" / "defect-classifier" / "state.json").read_text())
              for h in ("dev-a1", "dev-a2", "dev-a3")}

    r = fleet.run("deploy.yml", extravars=ev, limit="line_b")  # without localhost: refused, nothing changes
    assert r.rc != 0
    failed = [e["event_data"]["res"]["msg"] for e in r.events if e.get("event") == "runner_on_failed"]
    assert "--limit 'line_a,localhost'" in failed[0], failed
    r = fleet.run("deploy.yml", extravars=ev, limit="line_b,localhost")
    assert r.rc == 0, r.stdout.read()
    report = fleet.report()
    assert {row["device"] for row in report["rows"]} == {"dev-b1", "dev-b2"}
    assert {row["result"] for row in report["rows"]} == {"installed"}
    # the waves of the full plan for these pins (the limit does not change membership)
    plan = json.loads(subprocess.run(
        [sys.executable, str(REPO / "scripts" / "validate_models.py"), str(fleet.models), "-i", str(INVENTORY),
         "--trusted-key", str(fleet.keys / "demo-NOT-FOR-PRODUCTION.pub"), "--json"],
        check=True, capture_output=True, text=True).stdout)
    assert {row["device"]: row["wave"] for row in report["rows"]} == {
        h: plan["hosts"][h]["wave"] for h in ("dev-b1", "dev-b2")}
    assert set(report["excluded"]) == {"dev-a1", "dev-a2", "dev-a3", "dev-l1", "dev-l2"}
    for h, st in before.items():  # line_a is pinned to 1.1.0 too, but outside the limit
        assert json.loads((tmp_path / "fresh" / h / "models" / "defect-classifier" / "state.json").read_text()) == st


"""inventory/production.example/ works as committed: validation and a plan against it, unreachable devices reported.

A project directory of its own (the repository's playbooks, the example inventory as committed, keys/ with two
release public keys made here, a registry whose bundles carry both signatures): the controller verifies every
bundle with the fleet's keys and threshold 2 from group_vars/all/trust.yml, and the plan reports the devices,
whose example addresses reach nothing, as unreachable (unknown), never in sync.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
EXAMPLE = REPO / "inventory" / "production.example"
DEVICES = ["cam-a01", "cam-a02", "cam-a03", "cam-b01", "cam-b02", "lab-01"]

pytestmark = pytest.mark.slow


def run(argv: list[str], cwd: Path, env: dict[str, str] | None = None, ok: bool = True,
        timeout: int = 300) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    if ok:
        assert proc.returncode == 0, f"{argv}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("production")
    project = base / "project"
    shutil.copytree(REPO / "playbooks", project / "playbooks")
    shutil.copytree(EXAMPLE, project / "inventory" / "production")
    (project / "keys").mkdir()
    run([sys.executable, str(REPO / "scripts" / "build_registry.py"), "--out", str(base / "registry"),
         "--keys", str(base / "demo-keys")], REPO)
    # the release CLI's own functions (edge-release keygen / sign), in this process: one CLI start per bundle and
    # key would cost most of this fixture
    from edge_runtime.bundle import add_signature
    from edge_runtime.keys import generate_keypair, load_private_key

    keys = {}
    for name in ("release-1", "release-2"):
        generate_keypair(base / f"{name}.key", base / f"{name}.pub")
        keys[name] = load_private_key(base / f"{name}.key")
        shutil.copy(base / f"{name}.pub", project / "keys" / f"{name}.pub")  # public keys only in the project
    # two registries: every bundle signed by both release keys, and a copy signed by release-1 only
    shutil.copytree(base / "registry", base / "registry-one")
    for bundle in sorted((base / "registry").rglob("*.edgebundle")):
        add_signature(bundle, keys["release-1"])
        add_signature(bundle, keys["release-2"])
    for bundle in sorted((base / "registry-one").rglob("*.edgebundle")):
        add_signature(bundle, keys["release-1"])
    text = (REPO / "models.yaml").read_text()
    (project / "models.yaml").write_text(re.sub(r"(?m)^registry: .*$", f"registry: {base / 'registry'}", text))
    (project / "models-one.yaml").write_text(re.sub(r"(?m)^registry: .*$", f"registry: {base / 'registry-one'}",
                                                    text))
    (project / "ansible.cfg").write_text((REPO / "ansible.cfg").read_text()
                                         .replace("collections_path = ./collections",
                                                  f"collections_path = {REPO / 'collections'}")
                                         .replace("inventory = inventory/local", "inventory = inventory/production")
                                         .replace("roles_path = ./roles", f"roles_path = {REPO / 'roles'}"))
    return project


def env_for(project: Path) -> dict[str, str]:
    env = {**os.environ, "ANSIBLE_CONFIG": str(project / "ansible.cfg"), "PATH": f"{BIN}:{os.environ['PATH']}",
           "ANSIBLE_NOCOLOR": "1", "ANSIBLE_TIMEOUT": "2"}
    env.pop("ANSIBLE_INVENTORY", None)
    return env


def test_controller_validation_uses_the_fleets_keys_and_threshold(project: Path) -> None:
    inventory = project / "inventory" / "production"
    # scripts/validate_models.py reads trust from the inventory like the playbook does (make validate)
    ok = run([sys.executable, str(REPO / "scripts" / "validate_models.py"), str(project / "models.yaml"),
              "-i", str(inventory), "--reports", str(project / "reports"),
              "--playbook-dir", str(project / "playbooks")], project)
    assert "cam-a01" in ok.stdout
    one = run([sys.executable, str(REPO / "scripts" / "validate_models.py"), str(project / "models-one.yaml"),
               "-i", str(inventory), "--playbook-dir", str(project / "playbooks")], project, ok=False)
    assert one.returncode == 1
    assert "threshold 2" in one.stderr, one.stderr

    out = run([str(BIN / "ansible-playbook"), "playbooks/validate.yml"], project, env_for(project))
    assert "failed=0" in out.stdout
    refused = run([str(BIN / "ansible-playbook"), "playbooks/validate.yml", "-e",
                   json.dumps({"edge_models_file": str(project / "models-one.yaml")})], project, env_for(project),
                  ok=False)
    assert refused.returncode != 0
    assert "threshold 2" in refused.stdout, refused.stdout[-3000:]


def test_plan_reports_the_unreachable_devices(project: Path) -> None:
    reports = project / "reports"
    proc = run([str(BIN / "ansible-playbook"), "playbooks/deploy.yml", "--check", "-e",
                json.dumps({"edge_reports_dir": str(reports), "edge_lock_dir": str(project / "locks")})],
               project, env_for(project), ok=False, timeout=600)
    out = proc.stdout
    # every device is unreachable: recorded, not fatal on the way (the run reaches its summary), and the summary
    # fails the run naming each of them; the plan is written all the same
    assert proc.returncode == 2, out[-4000:]
    for host in DEVICES:
        assert re.search(rf"fatal: \[{host}\]: UNREACHABLE!", out), host
    assert "Rollout incomplete." in out
    assert (reports / "plan.json").is_file(), out[-6000:]
    plan = json.loads((reports / "plan.json").read_text())
    rows = {r["device"]: r for r in plan["rows"]}
    assert set(rows) == set(DEVICES)
    for host in DEVICES:
        assert (rows[host]["action"], rows[host]["code"]) == ("unknown", "unreachable"), rows[host]
        # the controller verified each bundle with the fleet's two keys, threshold 2
        assert rows[host]["checks"]["signature_digest"]["result"] == "passed"
        assert "2 trusted key(s), threshold 2" in rows[host]["checks"]["signature_digest"]["detail"]
    assert plan["totals"]["unknown"] == len(DEVICES)
    assert "Would not converge" in (reports / "plan.md").read_text()
    # check mode gates nothing: no group halts on its unreachable canary, every wave of every group is planned and
    # its gate line says "not evaluated", naming the devices that did not answer
    assert "HALTED" not in out, out[-6000:]
    assert "skipped_halted" not in out, out[-6000:]
    waves: dict[tuple[str, int], list[str]] = {}
    for r in plan["rows"]:
        waves.setdefault((r["group"], r["wave"]), []).append(r["device"])
    assert max(w for _, w in waves) > 1, "the example fleet has more than one wave"
    for (group, wave), hosts in waves.items():
        line = re.search(rf"{group} wave {wave}: .*", out)
        assert line, (group, wave, out[-6000:])
        assert "not evaluated (check mode" in line.group(0), line.group(0)
        assert line.group(0).endswith("unreachable: " + ", ".join(sorted(set(hosts)))), line.group(0)

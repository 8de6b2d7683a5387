"""The collection stands alone: built into a tarball, installed into an empty collections path, it validates
models.yaml and plans a deploy (check mode) with nothing from the repository's collections/ or roles/.

Real ``ansible-galaxy collection build`` / ``install`` (offline: the collection has no dependencies) and real
``ansible-playbook`` runs of the repository's playbooks, copied into a project directory of their own so that no
playbook-adjacent ``collections/`` or ``roles/`` can be picked up.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
COLLECTION = REPO / "collections" / "ansible_collections" / "edgeml" / "fleet"
INVENTORY = Path(__file__).resolve().parent / "inventory" / "hosts.yml"
BIN = Path(sys.executable).parent

pytestmark = pytest.mark.slow


def run(argv: list[str], *, cwd: Path, env: dict[str, str] | None = None, timeout: int = 300) -> str:
    proc = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    assert proc.returncode == 0, f"{argv}: rc={proc.returncode}\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    return proc.stdout


@pytest.fixture(scope="module")
def tarball(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("build")
    run([str(BIN / "ansible-galaxy"), "collection", "build", "--output-path", str(out)], cwd=COLLECTION)
    (path,) = out.glob("edgeml-fleet-*.tar.gz")
    return path


def test_the_tarball_holds_real_files_for_everything_the_playbooks_need(tarball: Path) -> None:
    from edge_runtime import __version__

    with tarfile.open(tarball) as tar:
        members = {m.name: m for m in tar.getmembers()}
        links = sorted(n for n, m in members.items() if m.issym() or m.islnk())
        assert not links, f"links in the tarball (they would dangle once installed): {links}"
        for needed in ("roles/edge_runtime/tasks/main.yml", "roles/edge_runtime/meta/argument_specs.yml",
                       "roles/edge_model/tasks/main.yml", "schemas/models.schema.json", "meta/runtime.yml",
                       "plugins/filter/edge_wave_gate.yml", "changelogs/changelog.yaml", "LICENSE"):
            assert needed in members, needed
            assert members[needed].isfile(), needed
        junk = sorted(n for n in members if "tests/output" in n or "__pycache__" in n or n.endswith(".pyc"))
        assert not junk, junk
        license_text = tar.extractfile("LICENSE").read().decode()  # type: ignore[union-attr]
        manifest = json.load(tar.extractfile("MANIFEST.json"))  # type: ignore[arg-type]
    assert "Apache License" in license_text
    assert "Version 2.0, January 2004" in license_text
    assert "END OF TERMS AND CONDITIONS" in license_text
    info = manifest["collection_info"]
    assert info["version"] == __version__
    assert info["license"] == ["Apache-2.0"]
    assert info["repository"].startswith("https://")
    assert ".invalid" not in info["repository"]


def test_installed_from_the_tarball_it_validates_and_plans_in_check_mode(tarball: Path, tmp_path: Path) -> None:
    cols = tmp_path / "collections"
    run([str(BIN / "ansible-galaxy"), "collection", "install", str(tarball), "-p", str(cols)], cwd=tmp_path)
    installed = cols / "ansible_collections" / "edgeml" / "fleet"
    assert (installed / "roles" / "edge_model" / "tasks" / "main.yml").is_file()

    # a project with the repository's playbooks and nothing else: no collections/, roles/ or schemas/ near it
    project = tmp_path / "project"
    shutil.copytree(REPO / "playbooks", project / "playbooks")
    (project / "ansible.cfg").write_text(
        "[defaults]\n"
        f"collections_path = {cols}\n"
        f"roles_path = {tmp_path / 'no-roles'}\n"
        f"inventory = {INVENTORY}\n"
        "gathering = explicit\ninject_facts_as_vars = False\nhost_key_checking = True\n"
        "callback_result_format = yaml\n"
    )
    registry, keys = tmp_path / "registry", tmp_path / "keys"
    run([sys.executable, str(REPO / "scripts" / "build_registry.py"), "--out", str(registry), "--keys", str(keys)],
        cwd=REPO)
    models = project / "models.yaml"
    models.write_text(re.sub(r"(?m)^registry: .*$", f"registry: {registry}",
                             (REPO / "models.yaml").read_text()))
    env = {**os.environ, "ANSIBLE_CONFIG": str(project / "ansible.cfg"), "PATH": f"{BIN}:{os.environ['PATH']}",
           "ANSIBLE_NOCOLOR": "1"}
    for var in ("ANSIBLE_COLLECTIONS_PATH", "ANSIBLE_COLLECTIONS_PATHS", "ANSIBLE_ROLES_PATH", "EDGEML_MODELS_SCHEMA"):
        env.pop(var, None)

    # the plugins come from the installed copy, not the repository's
    doc = run([str(BIN / "ansible-doc"), "-t", "module", "edgeml.fleet.edge_model"], cwd=project, env=env)
    assert str(installed) in doc
    assert str(COLLECTION) not in doc

    devices = tmp_path / "fleet"
    extra = json.dumps({
        "edge_models_file": str(models),
        "edge_runtime_root": str(devices) + "/{{ inventory_hostname }}",
        "edge_runtime_trusted_keys": [str(keys / "demo-NOT-FOR-PRODUCTION.pub")],
        "edge_reports_dir": str(tmp_path / "reports"),
        "edge_lock_dir": str(tmp_path / "locks"),
    })
    out = run([str(BIN / "ansible-playbook"), "playbooks/validate.yml", "-e", extra], cwd=project, env=env)
    assert "failed=0" in out

    out = run([str(BIN / "ansible-playbook"), "playbooks/deploy.yml", "--check", "--diff", "-e", extra],
              cwd=project, env=env)
    assert not devices.exists(), "check mode created device state"
    assert re.search(r"dev-a1 \| defect-classifier \| - \| 1\.0\.0 \| \d \| would_change", out), out[-3000:]
    # the roles ran from the installed collection
    assert "TASK [edgeml.fleet.edge_runtime : " in out

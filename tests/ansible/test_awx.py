"""The AWX / Automation Platform path: the execution environment's build context (ansible-builder create, offline)
and a run of the repository through ansible-runner with a private data directory laid out as AWX lays it out
(project/, inventory/, env/extravars, env/envvars, env/cmdline), checking its artifacts and set_stats.
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
import yaml

ansible_runner = pytest.importorskip("ansible_runner")

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
INVENTORY = Path(__file__).resolve().parent / "inventory" / "hosts.yml"
LINE_A = ["dev-a1", "dev-a2", "dev-a3"]

pytestmark = pytest.mark.slow


@pytest.mark.skipif(not (BIN / "ansible-builder").exists(), reason="ansible-builder is not installed (.[dev])")
def test_execution_environment_context_is_created_offline(tmp_path: Path) -> None:
    work = tmp_path / "repo"
    for rel in ("execution-environment.yml", "collections/requirements.yml",
                "collections/ansible_collections/edgeml/fleet/meta/ee-requirements.txt"):
        (work / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / rel, work / rel)
    files = work / "dist" / "ee-files"
    files.mkdir(parents=True)
    # the two local artefacts `make ee-context` makes (the wheel without build isolation's download: the wheel's
    # content is not what this test is about, only that the context carries and installs both)
    subprocess.run([str(BIN / "ansible-galaxy"), "collection", "build", "--output-path", str(files)],
                   cwd=REPO / "collections" / "ansible_collections" / "edgeml" / "fleet", check=True,
                   capture_output=True, timeout=120)
    (files / "edge_runtime-0.0.0-py3-none-any.whl").write_bytes(b"PK\x05\x06" + b"\0" * 18)  # an empty zip
    proc = subprocess.run([str(BIN / "ansible-builder"), "create", "-f", "execution-environment.yml", "-c", "context",
                           "--output-filename", "Containerfile"], cwd=work, capture_output=True, text=True,
                          timeout=120, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    context = work / "context"
    containerfile = (context / "Containerfile").read_text()
    assert "COPY _build/local /build/local" in containerfile
    assert "pip install --no-cache-dir /build/local/edge_runtime-*.whl" in containerfile
    assert re.search(r"ansible-galaxy collection install --offline .*edgeml-fleet-\*\.tar\.gz", containerfile)
    assert "ansible-core>=2.17,<2.20" in containerfile
    reqs = (context / "_build" / "requirements.txt").read_text()
    for package in ("jsonschema", "pyyaml", "cryptography", "requests"):
        assert package in reqs.lower(), reqs
    assert sorted(p.name for p in (context / "_build" / "local").iterdir())[0].startswith("edge_runtime-")
    assert any(p.name.startswith("edgeml-fleet-") for p in (context / "_build" / "local").iterdir())


def awx_private_data_dir(base: Path, limit: str, check: bool) -> Path:
    """A private data directory as AWX writes it for a job: the project checkout, the inventory, extra vars,
    environment and command line. Reports go to a directory outside the project (AWX discards the project)."""
    pdd = base / "pdd"
    project = pdd / "project"
    project.mkdir(parents=True)
    shutil.copytree(REPO / "playbooks", project / "playbooks")
    shutil.copytree(REPO / "collections", project / "collections",
                    ignore=shutil.ignore_patterns("output", "__pycache__"))
    shutil.copy(REPO / "ansible.cfg", project / "ansible.cfg")
    subprocess.run([sys.executable, str(REPO / "scripts" / "build_registry.py"), "--out", str(base / "registry"),
                    "--keys", str(base / "keys")], check=True, capture_output=True, timeout=300)
    (project / "models.yaml").write_text(re.sub(r"(?m)^registry: .*$", f"registry: {base / 'registry'}",
                                                (REPO / "models.yaml").read_text()))
    (pdd / "inventory").mkdir()
    shutil.copy(INVENTORY, pdd / "inventory" / "hosts.yml")
    (pdd / "env").mkdir()
    (pdd / "env" / "extravars").write_text(yaml.safe_dump({
        "edge_runtime_root": str(base / "fleet") + "/{{ inventory_hostname }}",
        "edge_runtime_trusted_keys": [str(base / "keys" / "demo-NOT-FOR-PRODUCTION.pub")],
        "edge_reports_dir": str(base / "reports"),
        "edge_lock_dir": str(base / "locks"),
    }))
    (pdd / "env" / "envvars").write_text(yaml.safe_dump({
        "PATH": f"{BIN}:{os.environ.get('PATH', '')}", "ANSIBLE_NOCOLOR": "1",
    }))
    (pdd / "env" / "cmdline").write_text(("--check " if check else "") + f"--limit {limit}")
    return pdd


def test_runner_with_an_awx_private_data_dir(tmp_path: Path) -> None:
    pdd = awx_private_data_dir(tmp_path, "line_a,localhost", check=True)
    r = ansible_runner.run(private_data_dir=str(pdd), playbook="playbooks/deploy.yml", ident="plan", quiet=True)
    out = r.stdout.read()
    assert (r.status, r.rc) == ("successful", 0), out[-3000:]
    artifacts = pdd / "artifacts" / "plan"
    assert (artifacts / "rc").read_text().strip() == "0"
    assert (artifacts / "status").read_text().strip() == "successful"
    assert (artifacts / "job_events").is_dir()
    assert "Write the deploy plan" in (artifacts / "stdout").read_text()
    # set_stats: the run's summary as job artifacts (what AWX shows and passes to a workflow's next node)
    stats = next(e for e in r.events if e.get("event") == "playbook_on_stats")
    report = stats["event_data"]["artifact_data"]["edge_report"]
    assert report["kind"] == "plan"
    assert report["plan_totals"]["devices"] == len(LINE_A)  # the Limit applied
    assert report["failed"] is False
    # the reports directory is the configured one, outside the project
    plan = json.loads((tmp_path / "reports" / "plan.json").read_text())
    assert sorted({row["device"] for row in plan["rows"]}) == LINE_A
    assert str(tmp_path / "reports" / "plan.json") in report["files"]
    assert not (pdd / "project" / "reports").exists()
    assert not (tmp_path / "fleet").exists(), "check mode changed a device"


def test_a_limit_without_localhost_is_refused_with_the_fix(tmp_path: Path) -> None:
    pdd = awx_private_data_dir(tmp_path, "line_a", check=True)
    r = ansible_runner.run(private_data_dir=str(pdd), playbook="playbooks/deploy.yml", ident="nolocal", quiet=True)
    out = r.stdout.read()
    assert r.rc != 0
    assert "With --limit, add it, e.g. --limit 'line_a,localhost'" in re.sub(r"\s+", " ", out), out[-3000:]
    assert not (tmp_path / "fleet").exists()

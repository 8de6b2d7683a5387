"""The SSH test fleet (scripts/ssh_fleet.py) for tests: a fleet per test module, playbook runs against it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from scripts.ssh_fleet import Fleet, prerequisites

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent

__all__ = ["REPO", "Fleet", "Run", "SshFleet", "prerequisites"]


@dataclass
class Run:
    rc: int
    output: str
    seconds: float
    report: dict[str, Any]

    def rows(self) -> dict[str, dict[str, Any]]:
        """Report rows by device (every device here pins one model)."""
        return {r["device"]: r for r in self.report.get("rows", [])}

    def recap(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for line in self.output.splitlines():
            parts = line.split()
            if len(parts) >= 3 and parts[1] == ":" and "=" in parts[2]:
                out[parts[0]] = {k: int(v) for k, v in (p.split("=") for p in parts[2:] if "=" in p)}
        return out


class SshFleet:
    """A fleet, a registry with demo keys, a models.yaml of its own and playbook runs against the fleet."""

    def __init__(self, base: Path, fleet: Fleet) -> None:
        self.base = base
        self.fleet = fleet
        self.registry = base / "registry"
        self.keys = base / "keys"
        self.reports = base / "reports"
        self.models = base / "models.yaml"
        self.runs = 0

    @classmethod
    def build_registry(cls, base: Path) -> None:
        subprocess.run([sys.executable, str(REPO / "scripts" / "build_registry.py"), "--out", str(base / "registry"),
                        "--keys", str(base / "keys")], check=True, capture_output=True)

    def write_models(self, pins: dict[str, tuple[str, str]], rollout: dict[str, dict[str, Any]] | None = None) -> None:
        """models.yaml as committed with this registry, ``pins`` {group: (model, version)} and rollout overrides."""
        doc = yaml.safe_load((REPO / "models.yaml").read_text())
        doc["registry"] = str(self.registry)
        for group, (model, version) in pins.items():
            doc["groups"][group]["models"] = {model: version}
        for group, policy in (rollout or {}).items():
            doc["groups"][group]["rollout"] = policy
        self.models.write_text(yaml.safe_dump(doc, sort_keys=False))

    def playbook(self, playbook: str, *, check: bool = False, timeout: float = 300,
                 extravars: dict[str, Any] | None = None) -> Run:
        self.runs += 1
        ev = {
            "edge_models_file": str(self.models),
            "edge_runtime_trusted_keys": [str(self.keys / "demo-NOT-FOR-PRODUCTION.pub")],
            "edge_reports_dir": str(self.reports),
            "edge_lock_dir": str(self.base / "locks"),
            **(extravars or {}),
        }
        evfile = self.base / f"extravars-{self.runs}.json"
        evfile.write_text(json.dumps(ev))
        env = {**os.environ, "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1",
               "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
        argv = [str(VENV_BIN / "ansible-playbook"), "-i", str(self.fleet.inventory), str(REPO / "playbooks" / playbook),
                "-e", f"@{evfile}"] + (["--check", "--diff"] if check else [])
        latest = self.reports / "latest.json"
        before = latest.stat().st_mtime_ns if latest.exists() else 0
        t0 = time.monotonic()
        try:
            proc = subprocess.run(argv, env=env, cwd=REPO, capture_output=True, text=True, timeout=timeout, check=False)
        except subprocess.TimeoutExpired as exc:
            out = exc.stdout.decode(errors="replace") if isinstance(exc.stdout, bytes) else str(exc.stdout or "")
            raise AssertionError(f"{playbook} did not finish in {timeout:.0f} s (a hang):\n{out[-6000:]}") from exc
        seconds = time.monotonic() - t0
        fresh = latest.exists() and latest.stat().st_mtime_ns != before
        report = json.loads(latest.read_text()) if fresh else {}
        return Run(proc.returncode, proc.stdout + proc.stderr, seconds, report)

    def device_state(self, host: str, model: str) -> dict[str, Any]:
        """``edge-runtime status --json`` of the device's root, read from this machine (the device's disk)."""
        argv = [str(VENV_BIN / "edge-runtime"), "--root", str(self.fleet.root(host)), "--json", "status"]
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
        assert proc.returncode == 0, (host, proc.stdout, proc.stderr)
        return dict(json.loads(proc.stdout)["models"].get(model, {}))

    def verify(self, host: str, model: str, version: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(VENV_BIN / "edge-runtime"), "--root", str(self.fleet.root(host)), "verify", model,
                               "--model-version", version], capture_output=True, text=True, timeout=120, check=False)

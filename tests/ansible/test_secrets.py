"""Private keys never reach devices, logs, caches or reports: real ansible-playbook runs at -vvv.

A small local fleet (one device per group of models.yaml) is deployed with ``ANSIBLE_LOG_PATH`` set and a
jsonfile fact cache enabled: first with the correct trusted key, then with the release PRIVATE key listed as
trusted (for every device, then for one device only in its own host vars). The wrong runs must fail before
any device changes, with a message naming the key file; and the private key's material (its PEM body lines,
the base64 and hex of its raw private scalar) must appear nowhere: not in stdout/stderr, the log file, the fact
cache, the reports, nor any device root.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.ansible.test_fleet_playbooks import Fleet

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
HOSTS = {"line_a": "dev-a1", "line_b": "dev-b1", "lab": "dev-l1"}
DEVICES = sorted(HOSTS.values())


class SecretsFleet(Fleet):
    """A Fleet run through ansible-playbook itself, at -vvv, with a log file and a jsonfile fact cache."""

    def __init__(self, base: Path) -> None:
        super().__init__(base)
        self.log = base / "ansible.log"
        self.cache = base / "fact-cache"
        self.outputs: list[str] = []

    @property
    def public_key(self) -> Path:
        return self.keys / "demo-NOT-FOR-PRODUCTION.pub"

    @property
    def private_key(self) -> Path:
        return self.keys / "demo-NOT-FOR-PRODUCTION.key"

    def inventory(self, keys: list[Path], host_keys: dict[str, list[Path]] | None = None) -> Path:
        """One device per group; ``keys`` for every host, ``host_keys`` in a device's own host vars."""
        host_keys = host_keys or {}
        children = {
            group: {"hosts": {host: ({"edge_runtime_trusted_keys": [str(k) for k in host_keys[host]]}
                                     if host in host_keys else None)}}
            for group, host in HOSTS.items()
        }
        inv = {"all": {"vars": {"edge_runtime_trusted_keys": [str(k) for k in keys]},
                       "children": {"edge_devices": {"vars": {"ansible_connection": "local",
                                                              "ansible_python_interpreter": sys.executable},
                                                     "children": children}}}}
        path = self.base / f"inventory-{len(self.outputs)}.yml"
        path.write_text(json.dumps(inv))
        return path

    def playbook(self, playbook: Path, inventory: Path) -> subprocess.CompletedProcess[str]:
        extra = {"edge_models_file": str(self.models), "edge_reports_dir": str(self.reports),
                 "edge_runtime_root": str(self.root) + "/{{ inventory_hostname }}",
                 # the fleet lock of this test fleet, not the repository's (another test session may hold it)
                 "edge_lock_dir": str(self.base / "locks")}
        env = {
            **os.environ,
            "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"),
            "ANSIBLE_LOG_PATH": str(self.log),
            "ANSIBLE_CACHE_PLUGIN": "jsonfile",
            "ANSIBLE_CACHE_PLUGIN_CONNECTION": str(self.cache),
            "ANSIBLE_NOCOLOR": "1",
            "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}",
        }
        r = subprocess.run(
            [str(Path(sys.executable).with_name("ansible-playbook")), "-vvv", "-i", str(inventory), str(playbook),
             "-e", json.dumps(extra)],
            capture_output=True, text=True, env=env, cwd=self.base, check=False, timeout=900,
        )
        self.outputs += [r.stdout, r.stderr]
        return r

    def secret_material(self) -> list[str]:
        """What of the private key must never appear: PEM body lines, raw scalar in base64 and hex."""
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ec

        pem = self.private_key.read_bytes()
        key = serialization.load_pem_private_key(pem, password=None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        scalar = key.private_numbers().private_value.to_bytes(32, "big")
        body = [ln for ln in pem.decode().splitlines() if ln and not ln.startswith("-----")]
        return [*body, base64.b64encode(scalar).decode(), base64.urlsafe_b64encode(scalar).decode().rstrip("="),
                scalar.hex(), "".join(body)]

    def leaks(self) -> list[str]:
        """Every place where some private key material was found."""
        needles = self.secret_material()
        found = [f"output #{i}: {n[:12]}..." for i, out in enumerate(self.outputs) for n in needles if n in out]
        for where in (self.log, self.cache, self.reports, self.root):
            files = [where] if where.is_file() else sorted(p for p in where.rglob("*") if p.is_file() and
                                                            not p.is_symlink())
            for f in files:
                text = f.read_bytes().decode("latin-1")
                found += [f"{f}: {n[:12]}..." for n in needles if n in text]
        return found


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> SecretsFleet:
    f = SecretsFleet(tmp_path_factory.mktemp("secrets"))
    subprocess.run(
        [sys.executable, str(REPO / "scripts" / "build_registry.py"), "--out", str(f.registry), "--keys", str(f.keys)],
        check=True, capture_output=True,
    )
    assert f.private_key.is_file()
    f.write_models()
    return f


def devices_changed(fleet: SecretsFleet, before: dict[str, Any]) -> bool:
    return fleet.snapshot(DEVICES) != before


def test_a_deploy_leaks_no_key_material_and_a_private_key_listed_as_trusted_is_refused_before_any_device(
    fleet: SecretsFleet,
) -> None:
    deploy = REPO / "playbooks" / "deploy.yml"
    good = fleet.playbook(deploy, fleet.inventory([fleet.public_key]))
    assert good.returncode == 0, good.stdout[-4000:]
    assert fleet.log.is_file(), "ANSIBLE_LOG_PATH was not written"
    assert any(fleet.cache.iterdir()), "the fact cache is empty: the test would prove nothing about it"
    assert fleet.active("dev-a1") == "1.0.0"
    before = fleet.snapshot(DEVICES)

    for name, inventory in {
        "listed for every device": fleet.inventory([fleet.public_key, fleet.private_key]),
        "in one device's own host vars": fleet.inventory([fleet.public_key],
                                                         host_keys={"dev-b1": [fleet.private_key]}),
    }.items():
        bad = fleet.playbook(deploy, inventory)
        assert bad.returncode != 0, name
        assert not devices_changed(fleet, before), f"a device changed although a private key was {name}"
        assert f"{fleet.private_key}: holds a private key" in bad.stdout, bad.stdout[-4000:]

    assert fleet.leaks() == []


def test_the_runtime_role_alone_refuses_a_private_key_on_the_controller(fleet: SecretsFleet, tmp_path: Path) -> None:
    """The setup module's action plugin is the last gate: even without validate.yml nothing is sent."""
    playbook = tmp_path / "runtime.yml"
    playbook.write_text(json.dumps([{"name": "runtime only", "hosts": "edge_devices", "gather_facts": False,
                                     "roles": [{"role": "edgeml.fleet.edge_runtime"}]}]))
    fleet.root = tmp_path / "fresh-fleet"
    r = fleet.playbook(playbook, fleet.inventory([fleet.private_key]))
    assert r.returncode != 0
    assert not fleet.root.exists(), "a device root was created although its only trusted key is private"
    assert f"{fleet.private_key}: holds a private key" in r.stdout
    assert fleet.leaks() == []

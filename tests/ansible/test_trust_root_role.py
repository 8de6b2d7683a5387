"""The edge_runtime role hands devices their trust root chain (edge_runtime_trust_root): real ansible-playbook
runs on local devices. A legacy device (key list) moves to root version 2 through the chain; a chain with a gap
or a root going backwards fails on the device with the reason and changes nothing; check mode changes nothing."""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from edge_runtime.release_cli import main as release_cli
from tests.support.factory import snapshot
from tests.support.keys import KeyPair, make_keypair

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]


def release(*args: str) -> None:
    with contextlib.redirect_stdout(io.StringIO()):
        assert release_cli(list(args)) == 0


def root(path: Path, root_key: KeyPair, release_key: KeyPair, signers: list[KeyPair], previous: Path | None) -> Path:
    release("root", "new", "-o", str(path), "--root-key", str(root_key.public_path),
            "--release-key", str(release_key.public_path), *(["--previous", str(previous)] if previous else []))
    release("root", "sign", str(path), *[a for k in signers for a in ("--key", str(k.private_path))])
    return path


def play(base: Path, device: Path, check: bool = False, **role_vars: object) -> subprocess.CompletedProcess[str]:
    playbook = base / "runtime.yml"
    playbook.write_text(json.dumps([{"name": "runtime", "hosts": "dev1", "gather_facts": False,
                                     "roles": [{"role": "edgeml.fleet.edge_runtime"}]}]))
    inventory = base / "inventory.yml"
    inventory.write_text(json.dumps({"all": {"hosts": {"dev1": {
        "ansible_connection": "local", "ansible_python_interpreter": sys.executable}}}}))
    env = {**os.environ, "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1",
           "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"}
    extra = {"edge_runtime_root": str(device), "edge_runtime_boot_recovery": "none", **role_vars}
    return subprocess.run(
        [str(Path(sys.executable).with_name("ansible-playbook")), "-i", str(inventory), str(playbook),
         "-e", json.dumps(extra), *(["--check", "--diff"] if check else [])],
        capture_output=True, text=True, env=env, cwd=base, check=False, timeout=300,
    )


def test_role_moves_a_legacy_device_to_a_root_chain_and_refuses_gaps_and_going_back(tmp_path: Path) -> None:
    keys = {n: make_keypair(tmp_path / "keys", n) for n in ("old", "new")}
    v1 = root(tmp_path / "1.root.json", keys["old"], keys["old"], [keys["old"]], None)
    v2 = root(tmp_path / "2.root.json", keys["new"], keys["new"], [keys["old"], keys["new"]], v1)
    v3 = root(tmp_path / "3.root.json", keys["new"], keys["new"], [keys["new"]], v2)
    device = tmp_path / "dev1"
    r = play(tmp_path, device, edge_runtime_trusted_keys=[str(keys["old"].public_path)])
    assert r.returncode == 0, r.stdout
    # a gap (the device has the key list = version 0; 3 alone skips 1 and 2): fails, nothing changes
    before = snapshot(device)
    r = play(tmp_path, device, edge_runtime_trust_root=[str(v3)])
    assert r.returncode != 0
    assert "versions 1..2 are missing" in r.stdout
    assert snapshot(device) == before
    # check mode shows the change and makes none
    r = play(tmp_path, device, check=True, edge_runtime_trust_root=[str(v1), str(v2)])
    assert r.returncode == 0, r.stdout
    assert "changed=1" in r.stdout
    assert snapshot(device) == before
    # the chain: version 0 -> 2; a second run changes nothing
    r = play(tmp_path, device, edge_runtime_trust_root=[str(v1), str(v2)])
    assert r.returncode == 0, r.stdout
    assert json.loads((device / "trust" / "root.json").read_bytes())["signed"]["version"] == 2
    assert "changed=0" in play(tmp_path, device, edge_runtime_trust_root=[str(v1), str(v2)]).stdout
    # going back (an inventory still listing only version 1) and a key list again: both refused
    r = play(tmp_path, device, edge_runtime_trust_root=[str(v1)])
    assert r.returncode != 0
    assert "a device never goes back" in r.stdout
    r = play(tmp_path, device, edge_runtime_trusted_keys=[str(keys["old"].public_path)])
    assert r.returncode != 0
    assert "trust comes from root documents" in r.stdout
    assert json.loads((device / "trust" / "root.json").read_bytes())["signed"]["version"] == 2

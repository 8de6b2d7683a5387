"""The SSH fleet simulator itself (scripts/ssh_fleet.py): isolation, host keys, inventory, complete teardown."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.sshfleet import REPO, Fleet, prerequisites

pytestmark = pytest.mark.slow

_REASON = prerequisites()
SCRIPT = REPO / "scripts" / "ssh_fleet.py"


def _leftovers(prefix: str, state: Path) -> list[str]:
    """What of a fleet is still on this machine: namespaces, the root veth, tmpfs mounts, processes."""
    out = [ns for ns in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True)
           .stdout.split() if ns.startswith(f"{prefix}-")]
    if subprocess.run(["ip", "link", "show", f"{prefix}-root"], capture_output=True, check=False).returncode == 0:
        out.append(f"{prefix}-root")
    out += [line for line in Path("/proc/mounts").read_text().splitlines() if str(state) in line]
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmd = (proc / "cmdline").read_bytes()
            except OSError:
                continue
            if str(state).encode() in cmd and b"pytest" not in cmd:
                out.append(cmd.replace(b"\0", b" ").decode(errors="replace"))
    return out


def _ssh(fleet: Fleet, host: str, *extra: str, known_hosts: Path | None = None) -> subprocess.CompletedProcess[str]:
    d = fleet.device(host)
    return subprocess.run(
        ["ssh", "-i", str(fleet.key), "-o", f"UserKnownHostsFile={known_hosts or fleet.known_hosts}",
         "-o", "GlobalKnownHostsFile=/dev/null", "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes",
         "-o", "ConnectTimeout=5", "-o", "ControlMaster=no", *extra, f"root@{d.ip}", "hostname; ip route; ls -A ~"],
        capture_output=True, text=True, timeout=30, check=False)


@pytest.mark.skipif(_REASON is not None, reason=_REASON or "")
def test_devices_are_isolated_keyed_and_torn_down_completely(tmp_path: Path) -> None:
    from edge_runtime.keys import generate_keypair

    state = tmp_path / "fleet"
    fleet = Fleet(state)
    key = tmp_path / "release.pub"
    generate_keypair(tmp_path / "release.key", key)
    prefix = "(none)"
    try:
        fleet.up(3, prefix=None, subnet=None, trusted_key=key, log=lambda _m: None)  # free names and subnet
        prefix, subnet = fleet.prefix, fleet.record["subnet"]
        hosts = [d.host for d in fleet.devices]
        assert hosts == ["ssh-a01", "ssh-b01", "ssh-l01"]
        # each device: its own hostname, only its /16 on the bridge (no default route), an empty home
        for h in hosts:
            r = _ssh(fleet, h)
            assert r.returncode == 0, r.stderr
            name, *routes = r.stdout.splitlines()
            assert name == h
            assert routes == [f"{subnet} dev eth0 proto kernel scope link src {fleet.device(h).ip} "], routes
        # nothing leaves the machine: no default route in the device or the bridge namespace
        for ns in (fleet.ctl, fleet.device("ssh-a01").netns):
            r = subprocess.run(["ip", "netns", "exec", ns, "ip", "route", "get", "192.0.2.1"],
                               capture_output=True, text=True, check=False)
            assert r.returncode != 0, (ns, r.stdout)
            assert "unreachable" in r.stderr.lower(), r.stderr
        # host key checking stays on: a device whose key is not the recorded one is refused
        wrong = tmp_path / "known_hosts"
        other = fleet.known_hosts.read_text().splitlines()
        wrong.write_text("".join(f"{a.split()[0]} {b.split(' ', 1)[1]}\n" for a, b in zip(other, other[1:] + other[:1],
                                                                                           strict=True)))
        r = _ssh(fleet, "ssh-a01", known_hosts=wrong)
        assert r.returncode == 255, r.stdout
        assert "host key verification failed" in r.stderr.lower(), r.stderr
        # the pinned key exchange: the costly default one is not offered by the device
        r = _ssh(fleet, "ssh-a01", "-o", "KexAlgorithms=sntrup761x25519-sha512@openssh.com")
        assert r.returncode == 255, r.stdout
        assert "no matching key exchange" in r.stderr.lower(), r.stderr
        # the inventory names models.yaml's groups: models.yaml validates against it
        v = subprocess.run([sys.executable, str(REPO / "scripts" / "validate_models.py"), str(REPO / "models.yaml"),
                            "--inventory", str(fleet.inventory), "--no-registry"],
                           capture_output=True, text=True, check=False, cwd=REPO)
        assert v.returncode == 0, v.stdout + v.stderr
        st = json.loads(subprocess.run([sys.executable, str(SCRIPT), "--state", str(state), "--json", "status"],
                                       capture_output=True, text=True, check=True).stdout)
        assert (st["up"], st["total"]) == (3, 3)
        fleet.kill_sshd("ssh-b01")
        assert [r["sshd"] for r in fleet.status()["devices"]] == [True, False, True]
    finally:
        fleet.down(log=lambda _m: None)
    assert _leftovers(prefix, state) == []
    again = subprocess.run([sys.executable, str(SCRIPT), "--state", str(state), "down"], capture_output=True,
                           text=True, check=False)
    assert again.returncode == 0, again.stderr
    assert "no fleet" in again.stderr


@pytest.mark.skipif(_REASON is not None, reason=_REASON or "")
def test_down_after_an_interrupted_up_removes_everything(tmp_path: Path) -> None:
    state = tmp_path / "fleet"
    proc = subprocess.Popen([sys.executable, str(SCRIPT), "--state", str(state), "up", "40", "--name", "auto",
                             "--subnet", "auto"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    record = state / "fleet.json"
    prefix = "(none)"
    deadline = time.monotonic() + 60
    # killed once some device namespaces exist, before the fleet is complete
    while time.monotonic() < deadline:
        if record.exists():
            try:
                created = json.loads(record.read_text()).get("created", {})
            except ValueError:
                created = {}
            if len(created.get("netns", [])) > 5:
                prefix = json.loads(record.read_text())["prefix"]
                break
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert _leftovers(prefix, state), "the interrupted up left nothing: it was not interrupted"
    r = subprocess.run([sys.executable, str(SCRIPT), "--state", str(state), "down"], capture_output=True, text=True,
                       check=False)
    assert r.returncode == 0, r.stderr
    assert _leftovers(prefix, state) == []

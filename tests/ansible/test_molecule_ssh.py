"""The Molecule scenario of both roles over SSH, run as ``molecule test -s ssh`` from the repository root.

Its create and destroy steps bring two devices of the SSH fleet simulator (scripts/ssh_fleet.py) up and down;
ssh-a01 installs the runtime by the venv method from the controller's wheelhouse (no network on the device),
ssh-b01 runs the shared read-only runtime image; the bundle is pushed over SSH. The scenario's playbooks
assert the device state (active version, verified digest, facts file) and the venv contents; this test also
checks that the sequence really converged both devices, then changed nothing in the idempotence and check
steps, and that destroy left nothing of the fleet behind.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from scripts.ssh_fleet import prerequisites
from tests.support.molecule import MOLECULE, REPO, run_molecule, step

pytestmark = pytest.mark.slow

HOSTS = ("ssh-a01", "ssh-b01")


def _missing_prerequisite() -> str | None:
    if not MOLECULE.exists():
        return f"molecule is not installed next to {sys.executable}"
    return prerequisites()


@pytest.mark.skipif(_missing_prerequisite() is not None, reason=_missing_prerequisite() or "")
def test_molecule_ssh_scenario_converges_both_roles_over_ssh_idempotently() -> None:
    rc, output = run_molecule("ssh", timeout=900)
    assert rc == 0, output[-8000:]

    converge = step(output, "ssh", "converge")
    idempotence = step(output, "ssh", "idempotence")
    check = step(output, "ssh", "check")
    verify = step(output, "ssh", "verify")
    # the venv device got its runtime offline in converge; both got the bundle pushed over SSH
    for task in ("Create the venv on the device", "Install edge-runtime offline into the venv"):
        assert re.search(rf"(?m)^TASK \[[\w.]*edge_runtime : {re.escape(task)}\].*\n(.*\n)??changed: \[ssh-a01\]",
                         converge), (task, converge)
    # the push is part of the converge task (edge_model's action plugin): no separate copy task any more
    assert "Copy each file-registry bundle" not in converge, converge
    install = "TASK [edgeml.fleet.edge_model : Converge each pinned model through the edge runtime]"
    for host in HOSTS:
        assert re.search(rf"(?m)^{re.escape(install)}.*\n(.*\n)*?changed: \[{host}\]", converge), converge
        assert re.search(rf"(?m)^{host}\s+: ok=\d+\s+changed=[1-9]\d*\s+unreachable=0\s+failed=0", converge), converge
        for part in (idempotence, check):
            assert re.search(rf"(?m)^{host}\s+: ok=\d+\s+changed=0\s+unreachable=0\s+failed=0", part), part
    for task in ("Assert the pinned version is active, committed and has the pinned digest",
                 "Assert that the check-mode run reports no change"):
        for host in HOSTS:
            assert re.search(rf"(?m)^TASK \[{re.escape(task)}\].*\n(.*\n)*?ok: \[{host}\]", verify), (task, verify)
    venv_task = "TASK [Assert that the venv holds exactly the wheelhouse's packages]"
    assert re.search(rf"(?m)^{re.escape(venv_task)}.*\n(.*\n)??ok: \[ssh-a01\]", verify), verify
    # destroy took the fleet down: its record, mounts and processes are gone
    state = REPO / ".state" / "molecule-ssh-fleet"
    assert not (state / "fleet.json").exists()
    assert str(state) not in Path("/proc/mounts").read_text()
    sshd = subprocess.run(["pgrep", "-af", str(state)], capture_output=True, text=True, check=False).stdout
    assert not sshd.strip(), sshd

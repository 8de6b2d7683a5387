"""The Molecule scenario of the `venv` install method, run as ``molecule test -s venv`` from the repository root.

The controller builds a wheelhouse (``pip wheel``, PyPI and pip's cache allowed); the one local-connection
device has no network at all (its shell runs every command in a new network namespace) and installs the
runtime into its own venv from the copied wheelhouse with ``--no-index``. The scenario's playbooks assert
the device state, the LiteRT smoke test in that venv and that the venv holds exactly the wheelhouse's
packages; this test also checks that the sequence really installed offline once, then changed nothing in
the idempotence and check steps.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.molecule import MOLECULE, run_molecule, step

pytestmark = pytest.mark.slow

SYSTEM_PYTHON = Path("/usr/bin/python3")  # edge_runtime_system_python of molecule/venv/molecule.yml
HOST = "molecule-venv-1"


def _missing_prerequisite() -> str | None:
    if not MOLECULE.exists():
        return f"molecule is not installed next to {sys.executable}"
    if shutil.which("unshare") is None:
        return "unshare (util-linux) is missing: the scenario's device runs in a network namespace"
    probe = ["unshare", "--net", "true"] if os.geteuid() == 0 else ["unshare", "--map-root-user", "--net", "true"]
    if subprocess.run(probe, capture_output=True, check=False).returncode != 0:
        return "this machine does not allow network namespaces (unshare --net)"
    if subprocess.run([SYSTEM_PYTHON, "-c", "import ensurepip, venv"], capture_output=True, check=False).returncode:
        return f"{SYSTEM_PYTHON} cannot create venvs (install python3-venv)"
    return None


@pytest.mark.skipif(_missing_prerequisite() is not None, reason=_missing_prerequisite() or "")
def test_molecule_venv_scenario_installs_offline_idempotently_and_check_mode_changes_nothing() -> None:
    rc, output = run_molecule("venv", timeout=1200)
    assert rc == 0, output[-8000:]

    converge = step(output, "venv", "converge")
    idempotence = step(output, "venv", "idempotence")
    check = step(output, "venv", "check")
    verify = step(output, "venv", "verify")
    # converge built the wheelhouse on the controller, then created the venv and installed into it on the device.
    for task in (
        "Build the wheelhouse on the controller (once per run)",
        "Create the venv on the device",
        "Install edge-runtime offline into the venv",
    ):
        assert re.search(
            rf"(?m)^TASK \[edgeml\.fleet\.edge_runtime : {re.escape(task)}\].*\n(.*\n)??changed: \[{HOST}", converge
        ), (
            task,
            converge,
        )
    # The assertion task of converge.yml that only runs under --check ran in the check step.
    check_task = "TASK [Assert that check mode finds nothing to change on a converged device]"
    assert re.search(rf"(?m)^{re.escape(check_task)}.*\n(.*\n)??ok: \[{HOST}\]", check), check
    assert re.search(rf"(?m)^{re.escape(check_task)}.*\n(.*\n)??skipping: \[{HOST}\]", converge), converge
    # verify ran the venv's own checks: LiteRT smoke test in the venv, venv contents == wheelhouse.
    for task in (
        "Assert the pin is active and committed after a real LiteRT smoke test in the venv",
        "Assert that the venv holds exactly the wheelhouse's packages",
    ):
        assert re.search(rf"(?m)^TASK \[{re.escape(task)}\].*\n(.*\n)??ok: \[{HOST}\]", verify), (task, verify)
    # The second converge and check mode after converge changed nothing.
    assert re.search(rf"(?m)^{HOST}\s+: ok=\d+\s+changed=[1-9]", converge), converge
    for part in (idempotence, check):
        assert re.search(rf"(?m)^{HOST}\s+: ok=\d+\s+changed=0\s+unreachable=0\s+failed=0", part), part

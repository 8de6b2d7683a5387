"""The Molecule scenario of the two roles, run as ``molecule test`` from the repository root.

Offline: two local-connection devices, a demo registry built in the scenario's ephemeral directory, no
Galaxy. The scenario's own playbooks assert the device state; this test also checks that the sequence
really contained the idempotence and check steps and that check mode changed nothing.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
MOLECULE = Path(sys.executable).with_name("molecule")
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _step(output: str, name: str) -> str:
    """The part of molecule's output that belongs to step ``name``.

    Molecule logs ``INFO [default > NAME] Executing`` without colours (``default ➜ NAME: Executing`` with).
    """
    head = rf"^INFO\s+\[?default (?:>|➜) {name}\]?:? "
    match = re.search(rf"(?ms){head}Executing$(.*?){head}Executed: Successful$", output)
    assert match, f"molecule did not run the {name} step successfully:\n{output[-4000:]}"
    return match.group(1)


@pytest.mark.skipif(not MOLECULE.exists(), reason=f"molecule is not installed next to {sys.executable}")
def test_molecule_scenario_converges_idempotently_and_check_mode_changes_nothing() -> None:
    env = {
        **os.environ,
        # molecule finds ansible-playbook and ansible-config on PATH: use the ones of this venv.
        "PATH": f"{MOLECULE.parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "NO_COLOR": "1",
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_FORCE_COLOR": "0",
        "PY_COLORS": "0",
    }
    for var in ("MOLECULE_EPHEMERAL_DIRECTORY", "ANSIBLE_CONFIG", "ANSIBLE_ROLES_PATH", "ANSIBLE_COLLECTIONS_PATH"):
        env.pop(var, None)
    proc = subprocess.run(
        [str(MOLECULE), "test"],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,  # molecule logs to stderr, ansible-playbook to stdout: keep their order
        text=True,
        timeout=600,
        check=False,
    )
    output = ANSI.sub("", proc.stdout)
    assert proc.returncode == 0, output[-8000:]

    converge = _step(output, "converge")
    idempotence = _step(output, "idempotence")
    check = _step(output, "check")
    # The assertion task of converge.yml that only runs under --check ran on both devices in the check step.
    check_task = "TASK [Assert that check mode finds nothing to change on a converged device]"
    assert re.search(rf"(?m)^{re.escape(check_task)}.*\n(ok: \[molecule-dev-\d\]\n){{2}}", check), check
    assert re.search(rf"(?m)^{re.escape(check_task)}.*\n(skipping: \[molecule-dev-\d\]\n){{2}}", converge), converge
    # Both devices took part; the second converge and check mode after converge changed nothing anywhere.
    for host in ("molecule-dev-1", "molecule-dev-2"):
        assert re.search(rf"(?m)^{host}\s+: ok=\d+\s+changed=[1-9]", converge), converge
        for step in (idempotence, check):
            assert re.search(rf"(?m)^{host}\s+: ok=\d+\s+changed=0\s+unreachable=0\s+failed=0", step), step

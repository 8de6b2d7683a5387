"""The Molecule scenario of the two roles, run as ``molecule test`` from the repository root.

Offline: two local-connection devices, a demo registry built in the scenario's ephemeral directory, no
Galaxy. The scenario's own playbooks assert the device state; this test also checks that the sequence
really contained the idempotence and check steps and that check mode changed nothing.
"""

from __future__ import annotations

import re
import sys

import pytest

from tests.support.molecule import MOLECULE, run_molecule, step

pytestmark = pytest.mark.slow



@pytest.mark.skipif(not MOLECULE.exists(), reason=f"molecule is not installed next to {sys.executable}")
def test_molecule_scenario_converges_idempotently_and_check_mode_changes_nothing() -> None:
    rc, output = run_molecule("default", timeout=600)
    assert rc == 0, output[-8000:]

    converge = step(output, "default", "converge")
    idempotence = step(output, "default", "idempotence")
    check = step(output, "default", "check")
    # The assertion task of converge.yml that only runs under --check ran on both devices in the check step.
    check_task = "TASK [Assert that check mode finds nothing to change on a converged device]"
    assert re.search(rf"(?m)^{re.escape(check_task)}.*\n(ok: \[molecule-dev-\d\]\n){{2}}", check), check
    assert re.search(rf"(?m)^{re.escape(check_task)}.*\n(skipping: \[molecule-dev-\d\]\n){{2}}", converge), converge
    # Both devices took part; the second converge and check mode after converge changed nothing anywhere.
    for host in ("molecule-dev-1", "molecule-dev-2"):
        assert re.search(rf"(?m)^{host}\s+: ok=\d+\s+changed=[1-9]", converge), converge
        for part in (idempotence, check):
            assert re.search(rf"(?m)^{host}\s+: ok=\d+\s+changed=0\s+unreachable=0\s+failed=0", part), part

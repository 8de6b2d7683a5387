"""Run a Molecule scenario from the repository root and split its output by step."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
MOLECULE = Path(sys.executable).with_name("molecule")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def run_molecule(scenario: str, timeout: int) -> tuple[int, str]:
    """``molecule test -s SCENARIO`` with this venv's tools; returns the exit code and colourless output."""
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
        [str(MOLECULE), "test", "-s", scenario],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,  # molecule logs to stderr, ansible-playbook to stdout: keep their order
        text=True,
        timeout=timeout,
        check=False,
    )
    return proc.returncode, _ANSI.sub("", proc.stdout)


def step(output: str, scenario: str, name: str) -> str:
    """The part of molecule's output that belongs to step ``name``; fails unless the step succeeded.

    Molecule logs ``INFO [SCENARIO > NAME] Executing`` without colours (``SCENARIO ➜ NAME: Executing`` with).
    """
    head = rf"^INFO\s+\[?{scenario} (?:>|➜) {name}\]?:? "
    match = re.search(rf"(?ms){head}Executing$(.*?){head}Executed: Successful$", output)
    assert match, f"molecule did not run the {name} step successfully:\n{output[-4000:]}"
    return match.group(1)

"""ansible-test on the collection, offline, as part of ``make test``.

``make sanity`` runs every sanity test; here only the ones that guard what users of an installed collection see
(plugin documentation, plugins that import on any controller, meta/runtime.yml, links inside the tarball) plus the
collection's ``ansible-test units``. The rest of the full run (pylint, pep8, yamllint, changelog, code smells) is
``make sanity``'s; ruff and yamllint in ``make lint`` overlap with them. Cost: each sanity test has its own
environment, made once per machine (~25 s each, kept in ~/.cache/edgeml/ansible-test-home); then ~20 s.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "ansible_test.sh"
SUBSET = ("validate-modules", "import", "ansible-doc", "action-plugin-docs", "runtime-metadata", "symlinks")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (Path(sys.executable).parent / "ansible-test").exists(),
                       reason="ansible-test (ansible-core) is not installed in this environment"),
]


def ansible_test(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PY": sys.executable}
    return subprocess.run(["bash", str(SCRIPT), *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=900, check=False)


def errors(proc: subprocess.CompletedProcess[str]) -> str:
    lines = (proc.stdout + proc.stderr).splitlines()
    return "\n".join(line for line in lines if line.startswith(("ERROR", "FATAL", "Running"))) or "\n".join(lines[-40:])


def test_sanity_subset_is_clean() -> None:
    proc = ansible_test("sanity", *(a for t in SUBSET for a in ("--test", t)))
    assert proc.returncode == 0, errors(proc)
    for test in SUBSET:
        assert f'Running sanity test "{test}"' in proc.stdout, f"{test} did not run:\n{errors(proc)}"


def test_units() -> None:
    # --venv: its own environment (pytest-xdist, tests/unit/requirements.txt) without the repository's packages, so
    # the tests also prove the plugins they cover need no edge_runtime package
    proc = ansible_test("units", "--venv")
    assert proc.returncode == 0, errors(proc)
    assert " passed" in proc.stdout
    assert " failed" not in proc.stdout

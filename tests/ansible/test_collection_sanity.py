"""ansible-test on the collection, offline, as part of ``make test``: every sanity test, and the units.

The full ``ansible-test sanity`` (all 24 tests, pep8 and pylint included: ``make sanity`` runs the same) plus the
collection's ``ansible-test units``. Cost: each sanity test with requirements (changelog, pep8, pylint, yamllint,
import, validate-modules ...) has its own environment, made once per machine (~25 s each, kept in
~/.cache/edgeml/ansible-test-home); then the sanity run takes ~60 s at load ~7.5 on 2 cores, ~50 s more than the
six tests this file ran before (pylint alone ~25-70 s depending on load: it starts once per context, collection /
modules / module_utils / units, and infers ansible-core each time). ``tests/ansible/test_plugin_docs.py`` renders
its plugins in one ansible-doc run per kind to pay for it (docs/CI.md, "Sanity in make test").
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "ansible_test.sh"
#: tests that must have run (the full list is ansible-test's: ``ansible-test sanity --list-tests``)
EXPECTED = ("validate-modules", "import", "ansible-doc", "action-plugin-docs", "runtime-metadata", "symlinks",
            "pep8", "pylint", "yamllint", "changelog", "compile", "no-assert", "shebang", "line-endings")

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


def test_sanity_is_clean() -> None:
    listed = ansible_test("sanity", "--list-tests")
    assert listed.returncode == 0, errors(listed)
    tests = [t for t in listed.stdout.split() if t]
    assert set(EXPECTED) <= set(tests), tests
    proc = ansible_test("sanity")
    assert proc.returncode == 0, errors(proc)
    for test in tests:
        assert f'Running sanity test "{test}"' in proc.stdout, f"{test} did not run:\n{errors(proc)}"


def test_units() -> None:
    # --venv: its own environment (pytest-xdist, tests/unit/requirements.txt) without the repository's packages, so
    # the tests also prove the plugins they cover need no edge_runtime package
    proc = ansible_test("units", "--venv")
    assert proc.returncode == 0, errors(proc)
    assert " passed" in proc.stdout
    assert " failed" not in proc.stdout

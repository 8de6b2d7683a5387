"""Every plugin of the in-repo collection documents itself: `ansible-doc` renders it without errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
FILTERS = REPO / "collections" / "ansible_collections" / "edgeml" / "fleet" / "plugins" / "filter"


def ansible_doc(*args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"),
               PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    return subprocess.run([str(Path(sys.executable).with_name("ansible-doc")), *args],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=120, check=False)


def filter_names() -> set[str]:
    """Every filter the collection's filter plugins export (read from their FilterModule, not from the docs)."""
    import importlib

    if str(REPO / "collections") not in sys.path:
        sys.path.insert(0, str(REPO / "collections"))
    names: set[str] = set()
    for path in sorted(FILTERS.glob("*.py")):
        module = importlib.import_module(f"ansible_collections.edgeml.fleet.plugins.filter.{path.stem}")
        names |= set(module.FilterModule().filters())
    return names


def test_every_filter_is_documented_by_a_sidecar() -> None:
    names = filter_names()
    assert len(names) >= 9
    proc = ansible_doc("-l", "--json", "-t", "filter", "edgeml.fleet")
    assert proc.returncode == 0, proc.stderr
    assert "[WARNING]" not in proc.stderr, proc.stderr
    listed = json.loads(proc.stdout)
    assert set(listed) == {f"edgeml.fleet.{n}" for n in names}
    undocumented = sorted(n for n, short in listed.items() if not short or "UNDOCUMENTED" in short)
    assert not undocumented, f"filters without a doc sidecar (plugins/filter/<name>.yml): {undocumented}"
    # each sidecar renders, with its examples and return value
    for name in sorted(names):
        proc = ansible_doc("-t", "filter", f"edgeml.fleet.{name}")
        assert proc.returncode == 0, (name, proc.stderr)
        assert "EXAMPLES" in proc.stdout, name
        assert "RETURN" in proc.stdout, name


@pytest.mark.parametrize(
    ("plugin", "kind"),
    [("edge_model", "module"), ("edge_model_info", "module"), ("edge_runtime_setup", "module"),
     ("desired_state", "module"), ("fleet_report", "module"), ("role_arguments", "module"),
     ("fleet_lock", "module"), ("device_plan", "module"), ("edge_health_info", "module"), ("fleet_health", "module")],
)
def test_ansible_doc_renders(plugin: str, kind: str) -> None:
    proc = ansible_doc("-t", kind, f"edgeml.fleet.{plugin}")
    assert proc.returncode == 0, proc.stderr
    assert "OPTIONS" in proc.stdout
    assert "EXAMPLES" in proc.stdout
    assert "[WARNING]" not in proc.stderr, proc.stderr

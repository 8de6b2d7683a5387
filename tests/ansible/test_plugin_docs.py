"""Every plugin of the in-repo collection documents itself: `ansible-doc` renders it without errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

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


def docs(kind: str, names: list[str]) -> dict[str, object]:
    """Every named plugin rendered by one ``ansible-doc --json`` run (one process per kind, not per plugin:
    each start of ansible-doc costs ~3 s here)."""
    proc = ansible_doc("--json", "-t", kind, *(f"edgeml.fleet.{n}" for n in names))
    assert proc.returncode == 0, proc.stderr
    assert "[WARNING]" not in proc.stderr, proc.stderr
    rendered = json.loads(proc.stdout)
    assert set(rendered) == {f"edgeml.fleet.{n}" for n in names}, sorted(rendered)
    return rendered


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
    for name, doc in docs("filter", sorted(names)).items():
        assert isinstance(doc, dict), name
        assert doc.get("doc", {}).get("short_description"), name
        assert doc.get("examples"), name
        assert doc.get("return"), name


MODULES = ["edge_model", "edge_model_info", "edge_runtime_setup", "desired_state", "fleet_report", "role_arguments",
           "fleet_lock", "device_plan", "edge_health_info", "fleet_health"]


def test_every_module_renders_with_options_and_examples() -> None:
    for name, doc in docs("module", MODULES).items():
        assert isinstance(doc, dict), name
        assert doc.get("doc", {}).get("options"), name
        assert doc.get("examples"), name


#: the JSON-args device modules: no AnsibleModule, so validate-modules cannot compare their spec with their docs
DEVICE_MODULES = ["edge_model", "edge_model_info", "edge_health_info", "edge_runtime_setup"]


def _spec_of_doc(options: dict[str, Any]) -> dict[str, Any]:
    keys = ("type", "elements", "default", "choices", "required")  # (no_log is not documentation)
    out = {}
    for name, opt in options.items():
        entry = {k: opt[k] for k in keys if k in opt and not (k == "required" and opt[k] is False)}
        entry.setdefault("type", "str")
        if "suboptions" in opt:
            entry["options"] = _spec_of_doc(opt["suboptions"])
        out[name] = entry
    return out


def _normal(spec: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for name, opt in spec.items():
        entry = {k: v for k, v in opt.items()
                 if k not in ("options", "no_log") and not (k == "required" and v is False)}
        entry.setdefault("type", "str")
        if "options" in opt:
            entry["options"] = _normal(opt["options"])
        out[name] = entry
    return out


def test_device_module_specs_say_what_their_documentation_says() -> None:
    """The check validate-modules makes for an AnsibleModule (types, defaults, choices, required, elements,
    suboptions), made here for the JSON-args device modules: their action plugins validate with ARGUMENT_SPEC."""
    import importlib

    if str(REPO / "collections") not in sys.path:
        sys.path.insert(0, str(REPO / "collections"))
    for fqcn, rendered in docs("module", DEVICE_MODULES).items():
        assert isinstance(rendered, dict)
        module = importlib.import_module(f"ansible_collections.edgeml.fleet.plugins.modules.{fqcn.split('.')[-1]}")
        assert _normal(module.ARGUMENT_SPEC) == _spec_of_doc(rendered["doc"]["options"]), fqcn

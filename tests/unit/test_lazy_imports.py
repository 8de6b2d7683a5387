"""The device-side import contract: a no-op query of a device loads no heavy library.

Every Ansible module run on a device starts a fresh Python; on a converged fleet the runtime's setup
module is the only module run per device (bench/fleet.py), so what ``edge_runtime`` imports up front is
paid on every device on every run.
"""

from __future__ import annotations

import json
import subprocess
import sys

from edge_runtime import device, manifest

HEAVY = ("cryptography", "tarfile", "numpy", "requests", "edge_runtime.bundle", "edge_runtime.trust",
         "edge_runtime.manifest", "edge_runtime.smoke", "edge_runtime._fetch")


def test_importing_the_device_api_and_facts_loads_no_heavy_module() -> None:
    code = ("import sys, json; from edge_runtime import Device; import edge_runtime.facts; "
            f"print(json.dumps([m for m in {list(HEAVY)!r} if m in sys.modules]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert json.loads(out) == []


def test_the_device_module_protocol_loads_no_heavy_module() -> None:
    """What every device module run imports first (edge_runtime/ansible_module.py, the JSON-args protocol)."""
    code = ("import sys, json; import edge_runtime.ansible_module; "
            f"print(json.dumps([m for m in {list(HEAVY)!r} + ['ansible'] if m in sys.modules]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert json.loads(out) == []


def test_facts_of_a_device_load_no_heavy_module(tmp_path: object) -> None:
    code = ("import sys, json; from edge_runtime import Device; from edge_runtime.facts import collect_facts; "
            f"collect_facts(Device({str(tmp_path)!r})); "
            f"print(json.dumps([m for m in {list(HEAVY)!r} if m in sys.modules]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert json.loads(out) == []


def test_the_device_module_names_the_manifest_file_as_the_manifest_module_does() -> None:
    assert device.MANIFEST_NAME == manifest.MANIFEST_NAME

#!/usr/bin/python
# Copyright (c) edgeml maintainers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Ansible module ``edgeml.fleet.edge_model_info``: read a device's model state, change nothing."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: edge_model_info
short_description: Report the model state and facts of an edge device
version_added: 0.1.0
description:
  - Reads the device root of the C(edge_runtime) (state files and config) and returns the device twin
    (the same data as the local facts file) with each model's quarantined versions and their reasons.
  - Read-only, like C(edge-runtime status); it never resolves an interrupted operation nor runs a smoke
    test. A model with an operation in progress reports C(state=busy) while a process holds the device lock,
    and C(state=recovery pending) when nobody does (an interrupted operation that the next
    C(edge-runtime) command or M(edgeml.fleet.edge_model) run resolves).
extends_documentation_fragment:
  - edgeml.fleet.device
  - edgeml.fleet.device.info
options:
  name:
    description: Only report these models (default all).
    type: list
    elements: str
    default: []
  run_id:
    description: The controller's id of this run, echoed in C(facts.run_id) (see M(edgeml.fleet.edge_model)).
    type: str
  telemetry:
    description:
      - Also summarise the live telemetry of these models (read-only, one read of the device's telemetry store)
        since their active version's activation, and of the version it replaced over O(baseline_minutes)
        before it (see C(edge_runtime.telemetry.live)). Returned in RV(telemetry). The live canary gate of
        C(playbooks/_wave.yml) polls with it.
    type: list
    elements: str
    default: []
  baseline_minutes:
    description: Minutes before the activation that the previous version's baseline covers.
    type: int
    default: 60
seealso:
  - module: edgeml.fleet.edge_model
"""

EXAMPLES = r"""
- name: Read the device state
  edgeml.fleet.edge_model_info:
    root: /var/lib/edge-runtime
  register: device_info

- name: Check the active version
  ansible.builtin.assert:
    that: device_info.models['defect-classifier'].active_version == '1.1.0'
"""

RETURN = r"""
initialised:
  description: Whether the root holds a device config.
  returned: always
  type: bool
  sample: true
config:
  description: The device config (architecture, threshold, allowed models, keep_versions).
  returned: when initialised
  type: dict
  sample: {"architecture": "x86_64", "threshold": 1, "allowed_models": ["defect-classifier"]}
models:
  description: Per model, the facts of the runtime plus C(bad), the quarantined versions and why.
  returned: always
  type: dict
  sample: {"defect-classifier": {"active_version": "1.1.0", "previous_version": "1.0.0", "bad": {}}}
telemetry:
  description:
    - Per model named in O(telemetry), the live summary (C(version), C(previous_version), C(activated_at),
      C(new) and C(baseline) counts, errors, feedback, mean confidence, merged latency counts and p95), or
      C(problem) when the store could not be read.
  returned: when O(telemetry) is given
  type: dict
  sample: {"defect-classifier": {"version": "1.1.0", "new": {"inferences": 600, "errors": 0}}}
facts:
  description: The full device twin (schema, runtime version, models, system).
  returned: always
  type: dict
  sample: {"schema": 1, "runtime_version": "0.1.0"}
"""

import json
import sys
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from edge_runtime import Device

# The controller writes the task's arguments here as JSON (a JSON-args module: see plugin_utils/device_module.py).
ARGS = r"""<<INCLUDE_ANSIBLE_MODULE_JSON_ARGS>>"""

#: validated on the controller by the action plugin (Ansible's ArgumentSpecValidator); the device expands paths
ARGUMENT_SPEC: dict[str, Any] = {
    "root": {"type": "path", "required": True},
    "name": {"type": "list", "elements": "str", "default": []},
    "run_id": {"type": "str"},  # echoed in the facts: the controller acts only on this run's answers
    "telemetry": {"type": "list", "elements": "str", "default": []},
    "baseline_minutes": {"type": "int", "default": 60},
}


def _live(dev: Device, names: list[str], baseline_minutes: int) -> dict[str, Any]:
    """The live summary of each named model (edge_runtime.telemetry.live), from one read of the store."""
    from edge_runtime._monitor_record import parse_time as _epoch
    from edge_runtime.errors import EdgeRuntimeError
    from edge_runtime.telemetry._status import db_path
    from edge_runtime.telemetry.live import summarise
    from edge_runtime.telemetry.store import TelemetryStore

    out: dict[str, Any] = {}
    store = TelemetryStore(db_path(dev.root), dev.config.telemetry_config())
    try:
        for name in sorted(set(names)):
            try:
                state = dev.store.load(name)
                info = state.versions.get(state.active or "") or {}
                activated = _epoch(info.get("activated_at")) or _epoch(info.get("committed_at"))
                since = None if activated is None else activated - (baseline_minutes + 1) * 60
                rows = store.minutes(name, since=since) if activated is not None else []
                out[name] = summarise(rows, name, state.active, state.previous_committed(), activated,
                                      baseline_minutes)
            except EdgeRuntimeError as exc:
                out[name] = {"model": name, "problem": f"telemetry of {name} cannot be read: {exc}"}
    finally:
        store.close()
    return out


def _show_spec() -> None:
    """Not run by Ansible (no arguments were written in): hand ``ARGUMENT_SPEC`` to Ansible's ``AnsibleModule``,
    which is how ansible-test (validate-modules, import) reads a module's options. Nothing else runs."""
    import importlib

    try:
        basic = importlib.import_module("ansible.module_utils" + ".basic")  # (not a module_utils import for Ansible)
    except ImportError:
        return
    basic.AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)


def main() -> None:
    if ARGS.startswith("<<INCLUDE_"):
        _show_spec()
        return
    try:
        from edge_runtime import Device
        from edge_runtime.ansible_module import DeviceModule, device_facts
        from edge_runtime.errors import EdgeRuntimeError
    except ImportError as exc:  # no runtime here, or one older than this collection: the action plugin says the fix
        sys.stdout.write(json.dumps({"failed": True, "error": "missing_runtime", "msg": "no edge runtime",
                                     "python": sys.executable, "import_error": str(exc)}) + "\n")
        raise SystemExit(1) from None
    module = DeviceModule(ARGS, ARGUMENT_SPEC)
    dev = Device(module.params["root"])
    result: dict[str, Any] = {"changed": False, "initialised": (dev.root / "config.json").is_file()}
    try:
        if result["initialised"]:
            cfg = asdict(dev.config)
            cfg["allowed_models"] = list(cfg["allowed_models"])
            result["config"] = cfg
        facts = device_facts(dev)
        wanted = set(module.params["name"])
        models = {}
        for name, info in facts["models"].items():
            if wanted and name not in wanted:
                continue
            bad = {} if info.get("state") == "corrupt" else dev.store.load(name).bad
            models[name] = {**info, "bad": bad}
        result.update(models=models, facts={**facts, "run_id": module.params["run_id"]})
        if module.params["telemetry"]:
            if module.params["baseline_minutes"] < 1:
                module.fail_json(msg=f"baseline_minutes must be >= 1, not {module.params['baseline_minutes']}")
            result["telemetry"] = _live(dev, module.params["telemetry"], module.params["baseline_minutes"])
    except EdgeRuntimeError as exc:
        module.fail_runtime_error(exc)
    module.exit_json(**result)


if __name__ == "__main__":
    main()

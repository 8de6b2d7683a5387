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

from dataclasses import asdict
from typing import Any

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.edgeml.fleet.plugins.module_utils.edge_device import (
    RUN_ID_OPTION,
    Device,
    EdgeRuntimeError,
    device_facts,
    fail_runtime_error,
    require_runtime,
)


def _live(dev: Device, names: list[str], baseline_minutes: int) -> dict[str, Any]:
    """The live summary of each named model (edge_runtime.telemetry.live), from one read of the store."""
    from edge_runtime._monitor_record import parse_time as _epoch
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


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "root": {"type": "path", "required": True},
            "name": {"type": "list", "elements": "str", "default": []},
            "run_id": RUN_ID_OPTION,
            "telemetry": {"type": "list", "elements": "str", "default": []},
            "baseline_minutes": {"type": "int", "default": 60},
        },
        supports_check_mode=True,
    )
    require_runtime(module)
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
        fail_runtime_error(module, exc)
    module.exit_json(**result)


if __name__ == "__main__":
    main()

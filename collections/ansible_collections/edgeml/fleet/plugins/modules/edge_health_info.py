#!/usr/bin/python
# Copyright (c) edgeml maintainers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Ansible module ``edgeml.fleet.edge_health_info``: a device's health snapshot in one read, change nothing."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: edge_health_info
short_description: Read an edge device's twin, host facts, telemetry summary and monitor findings in one run
version_added: 0.2.0
description:
  - Everything C(playbooks/health.yml) needs from one device, in one module run - the device twin (per model
    the active and previous version, digests, state, quarantined versions, the last operation with its
    reason, so self-rollbacks of the monitor with their numbers), host facts (uptime, load, CPU, memory,
    disk, temperature), the telemetry store's status, the monitor's last findings (drift, confidence, error
    rate) and a summary of the telemetry of the last O(window_s) seconds per model and version (inferences,
    errors, error rate, ground-truth error rate, p95 latency, mean top-1 confidence, a per-minute series of
    at most 60 points) with the newest telemetry minute.
  - Read-only, like C(edge-runtime status); it never resolves an interrupted operation, runs no smoke test
    and writes nothing on the device. The fleet side (C(edgeml.fleet.fleet_health)) decides the status.
extends_documentation_fragment:
  - edgeml.fleet.device
  - edgeml.fleet.device.info
options:
  window_s:
    description: The telemetry window summarised, in seconds.
    type: int
    default: 3600
  lookback_s:
    description: How far back the newest telemetry minute is looked for, in seconds (older counts as none).
    type: int
    default: 86400
  run_id:
    description: The controller's id of this run, echoed in the snapshot (C(health.run_id)); the controller ignores a
      snapshot carrying another id (a fact cache, an earlier run).
    type: str
seealso:
  - module: edgeml.fleet.edge_model_info
  - module: edgeml.fleet.fleet_health
"""

EXAMPLES = r"""
- name: Read the device's health snapshot
  edgeml.fleet.edge_health_info:
    root: /var/lib/edge-runtime
    run_id: "{{ edge_health_run_id }}"
  register: edge_health
"""

RETURN = r"""
health:
  description: The snapshot - C(schema), C(run_id), C(collected_at_s) (device clock), C(facts) (the twin),
    C(telemetry) (C(window_s), C(models) model to version to summary, C(newest_minute), C(error)), and
    C(controller_received_s) (the controller's clock when the answer arrived, added by the action plugin).
  returned: always
  type: dict
  sample: {"schema": 1, "run_id": "20261203T061000Z-3f9a1c2b", "collected_at_s": 1796278200.5}
"""

import json
import sys
from typing import Any

# The controller writes the task's arguments here as JSON (a JSON-args module: see plugin_utils/device_module.py).
ARGS = r"""<<INCLUDE_ANSIBLE_MODULE_JSON_ARGS>>"""

#: validated on the controller by the action plugin (Ansible's ArgumentSpecValidator); the device expands paths
ARGUMENT_SPEC: dict[str, Any] = {
    "root": {"type": "path", "required": True},
    "window_s": {"type": "int", "default": 3600},
    "lookback_s": {"type": "int", "default": 86400},
    "run_id": {"type": "str"},  # echoed in the snapshot: the controller acts only on this run's answers
}


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
        from edge_runtime import __version__ as runtime_version
        from edge_runtime.ansible_module import DeviceModule
        from edge_runtime.errors import EdgeRuntimeError
    except ImportError as exc:  # no runtime here, or one older than this collection: the action plugin says the fix
        sys.stdout.write(json.dumps({"failed": True, "error": "missing_runtime", "msg": "no edge runtime",
                                     "python": sys.executable, "import_error": str(exc)}) + "\n")
        raise SystemExit(1) from None
    module = DeviceModule(ARGS, ARGUMENT_SPEC)
    if module.params["window_s"] < 60 or module.params["lookback_s"] < module.params["window_s"]:
        module.fail_json(msg="window_s must be >= 60 and lookback_s >= window_s")
    try:
        from edge_runtime.health import health_snapshot
    except ImportError:
        module.fail_json(msg=f"the edge runtime on this device ({runtime_version}) has no health snapshot "
                         "(edge_runtime.health): update it with the edge_runtime role (deploy.yml)",
                         error="runtime_too_old")

    try:
        snap: dict[str, Any] = health_snapshot(Device(module.params["root"]), window_s=module.params["window_s"],
                                               lookback_s=module.params["lookback_s"])
    except EdgeRuntimeError as exc:
        module.fail_runtime_error(exc)
    module.exit_json(changed=False, health={**snap, "run_id": module.params["run_id"]})


if __name__ == "__main__":
    main()

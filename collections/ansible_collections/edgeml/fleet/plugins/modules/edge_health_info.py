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

from typing import Any

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.edgeml.fleet.plugins.module_utils.edge_device import (
    RUN_ID_OPTION,
    RUNTIME_VERSION,
    Device,
    EdgeRuntimeError,
    fail_runtime_error,
    require_runtime,
)


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "root": {"type": "path", "required": True},
            "window_s": {"type": "int", "default": 3600},
            "lookback_s": {"type": "int", "default": 86400},
            "run_id": RUN_ID_OPTION,
        },
        supports_check_mode=True,
    )
    require_runtime(module)
    if module.params["window_s"] < 60 or module.params["lookback_s"] < module.params["window_s"]:
        module.fail_json(msg="window_s must be >= 60 and lookback_s >= window_s")
    try:
        from edge_runtime.health import health_snapshot
    except ImportError:
        module.fail_json(msg=f"the edge runtime on this device ({RUNTIME_VERSION}) has no health snapshot "
                         "(edge_runtime.health): update it with the edge_runtime role (deploy.yml)",
                         error="runtime_too_old")

    try:
        snap: dict[str, Any] = health_snapshot(Device(module.params["root"]), window_s=module.params["window_s"],
                                               lookback_s=module.params["lookback_s"])
    except EdgeRuntimeError as exc:
        fail_runtime_error(module, exc)
    module.exit_json(changed=False, health={**snap, "run_id": module.params["run_id"]})


if __name__ == "__main__":
    main()

#!/usr/bin/python
# Copyright (c) edgeml maintainers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Documentation of the ``edgeml.fleet.fleet_health`` action plugin (the work is done on the controller).

Documentation only, as for ansible.builtin.debug: the action plugin
``plugins/action/fleet_health.py`` runs every task.
"""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: fleet_health
short_description: Judge each device's health snapshot of this run, check the fleet's limits, write the reports
version_added: 0.2.0
description:
  - Reads the snapshot every planned device returned in this run (M(edgeml.fleet.edge_health_info), registered
    as O(var), carrying O(run_id)); a device without one (unreachable, failed, a fact cache, an earlier run) is
    C(unknown).
  - Decides each device's status (C(in_sync), C(out_of_sync), C(degraded), C(rolled_back), C(unknown)) once, in
    C(plugin_utils/health.py), and compares the counts with the C(health) limits of C(models.yaml).
  - Writes C(health-<run id>.json), C(.md) and C(.html) and C(health-latest.*) into O(dest), appends the run to the
    history (C(history/events.jsonl) and C(history/history.db)); nothing in check mode.
  - Takes no fleet lock (read-only); when O(lock_dir) is given and a deploy or rollback holds the lock, the report
    says so.
  - This is an action plugin; it runs on the controller only (use it on C(localhost)).
extends_documentation_fragment:
  - edgeml.fleet.controller
options:
  plan:
    description: The plan returned by M(edgeml.fleet.desired_state) (its C(health) key carries the settings).
    type: dict
    required: true
  run_id:
    description: This run's id, the one sent to every device.
    type: str
    required: true
  dest:
    description: Directory on the controller for the report files and the history; created if missing.
    type: path
    required: true
  var:
    description: The registered variable holding each device's M(edgeml.fleet.edge_health_info) result.
    type: str
    default: edge_health
  lock_dir:
    description: The fleet lock directory, only read (to say that a rollout is in progress).
    type: path
  fleet:
    description: The fleet's lock name (default derived from the inventory sources, as M(edgeml.fleet.fleet_lock)).
    type: str
  write:
    description: Write the files and the history. In check mode nothing is written whatever this says.
    type: bool
    default: true
attributes:
  check_mode:
    description: Judges and writes nothing.
    support: full
notes:
  - C(changed) is always false.
"""

EXAMPLES = r"""
- name: Judge the fleet
  edgeml.fleet.fleet_health:
    plan: "{{ edge_plan }}"
    run_id: "{{ edge_health_run_id }}"
    dest: "{{ playbook_dir }}/../reports"
  register: health
"""

RETURN = r"""
report:
  description: The health report (schema C(schemas/health-report.schema.json)) - C(counts), C(failed),
    C(breaches), C(unreachable), C(versions), C(devices) (status, reasons, models, host facts, drift).
  returned: success
  type: dict
summary:
  description: One line per device not in sync, the totals and every limit exceeded.
  returned: success
  type: str
files:
  description: The files written (empty in check mode).
  returned: success
  type: list
  elements: path
"""

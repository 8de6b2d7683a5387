#!/usr/bin/python
# Copyright (c) edgeml maintainers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Documentation of the ``edgeml.fleet.fleet_report`` action plugin (the work is done on the controller).

Documentation only, as for ansible.builtin.debug: the action plugin
``plugins/action/fleet_report.py`` runs every task.
"""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: fleet_report
short_description: Build the fleet's deploy or rollback report (desired vs reported per device), write JSON and Markdown
version_added: 0.1.0
description:
  - Builds the device-twin view of a rollout from the plan of M(edgeml.fleet.desired_state), the
    C(edge_model_result) of every device converged in this run and the C(ansible_facts.edge_runtime)
    every device reported; a device that was not converged because it already ran the pinned versions is
    reported as C(unchanged) from its twin.
  - Writes C(<kind>-<UTC time>.json), C(<kind>-<UTC time>.md), C(latest.json) and C(latest.md) into
    O(dest), each atomically (a reader never sees a torn file). The timestamped files keep the history.
  - Appends one line to the fleet history C(<dest>/history/events.jsonl) (C(edge_runtime.audit), docs/RELEASE.md), with
    the counts, every halted group with its reason, every device that changed or failed with the manifest
    digest it was given, every rollback or quarantine with why, and the wave gate decisions O(gates).
  - With O(kind=rollback) (C(playbooks/rollback.yml)) the devices' C(edge_model_result) comes from the rollback;
    C(rolled_back) and C(unchanged) are successes, and RV(report.pin_warnings) names every C(models.yaml) line
    that still pins a version the devices no longer run, with the one-line change that keeps the rollback.
  - This is an action plugin; it runs on the controller only (use it on C(localhost)).
extends_documentation_fragment:
  - edgeml.fleet.controller
options:
  plan:
    description: The plan returned by M(edgeml.fleet.desired_state).
    type: dict
    required: true
  halted:
    description: Rollout groups halted by a wave gate, group name to C({wave, reason}).
    type: dict
    default: {}
  gates:
    description:
      - The run's wave gate decisions (C(edge_gate.decisions)), one per group and wave with its numbers; kept
        in the report (C(gates)), its Markdown and the history line (C(reports/history/events.jsonl)).
    type: list
    elements: dict
    default: []
  dest:
    description: Directory on the controller for the report files; created if missing.
    type: path
    required: true
  kind:
    description:
      - File name prefix and title of the report.
      - C(plan) is the pull-request plan of a check-mode deploy (C(make plan)), and runs in check mode only. Per
        group and device it gives from -> to (the runtime's install decision on the twin of this run), wave, bytes
        to move and each check (schema, bundle present, signature and digest with the device's trusted keys,
        expiry, compatibility, downgrade, quarantined; health gates are always C(not evaluated)). It writes
        C(plan.json) and C(plan.md) into O(dest), even in check mode (they are the output of the check).
    type: str
    choices: [deploy, rollback, plan]
    default: deploy
  write:
    description: Write the files. In check mode nothing is written whatever this says (except O(kind=plan)).
    type: bool
    default: true
  verified:
    description:
      - For O(kind=plan) the bundles that C(edgeml.fleet.desired_state) verified (its C(verified) result).
    type: list
    elements: dict
    default: []
  desired_metrics:
    description:
      - Also write C(edge_desired.prom) (Prometheus text format, C(edge_desired_model_info{device, group, model,
        version})) into O(desired_metrics.dir) from the whole plan O(desired_metrics.plan) (not this run's
        C(--limit)), for the out-of-sync alert rule (docs/MONITORING.md). Written atomically, normal runs only.
    type: dict
    suboptions:
      dir:
        description: node_exporter's textfile directory on the controller.
        type: path
        required: true
      plan:
        description: The whole plan of M(edgeml.fleet.desired_state).
        type: dict
        required: true
attributes:
  check_mode:
    description: Builds the report and writes nothing (O(kind=plan) writes the plan).
    support: full
notes:
  - C(changed) is always false; the report files are a record of the run, not a change of the fleet.
"""

EXAMPLES = r"""
- name: Write the deploy report
  edgeml.fleet.fleet_report:
    plan: "{{ edge_plan }}"
    halted: "{{ edge_gate.halted }}"
    dest: "{{ playbook_dir }}/../reports"
  register: report

- name: Fail when the rollout is incomplete
  ansible.builtin.fail:
    msg: "{{ report.report.problems }}"
  when: report.report.failed
"""

RETURN = r"""
report:
  description: The report.
  returned: success
  type: dict
  contains:
    rows:
      description: >-
        One row per device and model - C(device), C(group), C(wave), C(model), C(desired), C(reported) (the
        version the device runs), C(previous), C(result) (C(installed), C(unchanged), C(would_change),
        C(rolled_back), C(quarantined), C(failed), C(unreachable), C(skipped_halted)) and C(reason).
      type: list
      elements: dict
    counts:
      description: Rows per result.
      type: dict
    halted:
      description: The halted rollout groups with wave and reason.
      type: dict
    problems:
      description: The rows whose result is not C(installed), C(unchanged) or C(would_change).
      type: list
      elements: dict
    failed:
      description: True when a group halted or a device is quarantined, failed or unreachable.
      type: bool
    generated_at:
      description: UTC time stamp of the report, also in the file names.
      type: str
      sample: 20261123T145826Z
    check_mode:
      description: Whether the run was a check-mode run.
      type: bool
    pin_warnings:
      description: >-
        With O(kind=rollback) only. Per pinning group and model whose devices no longer run the pinned version:
        C(file), C(line), C(group), C(model), C(pinned), C(running) (version to devices), C(fix) (the line to
        write, or null when the devices run different versions) and C(message).
      type: list
      elements: dict
summary:
  description: The outcome for people, one line per device and model, then totals and warnings.
  returned: success
  type: str
files:
  description: The files written (empty in check mode or with O(write=false)).
  returned: success
  type: list
  elements: path
"""

#!/usr/bin/python
# Copyright (c) edgeml maintainers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Documentation of the ``edgeml.fleet.device_plan`` action plugin (the work is done on the controller).

Documentation only, as for ansible.builtin.debug: the action plugin
``plugins/action/device_plan.py`` runs every task.
"""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: device_plan
short_description: The plan of one run, per device - the run's devices under --limit, pins, transfer, paths
version_added: 0.2.0
description:
  - Restricts the validated fleet plan (M(edgeml.fleet.desired_state)) to the devices of this run, as Ansible
    itself resolves the play pattern O(pattern) under O(limit) (C(--limit) in every form Ansible accepts -
    names, groups, patterns, C(@file), C(!negation), C(&intersection)). Waves keep their membership; the
    planned devices left out are listed in C(plan.excluded). A limit that leaves no planned device fails.
  - Computes, once, each device's C(edge_device_plan) - pins, rollout group, wave, the run id it must echo,
    the models its runtime may run, and push or pull per bundle with every path (host variables
    C(edge_model_transfer) V(auto)/V(push)/V(pull), C(ansible_connection), C(edge_runtime_root)).
    Every device play of C(deploy.yml) binds the device's entry as C(edge_device_plan) (play vars, no per-device
    task); the roles read it as their input.
  - This is an action plugin; it runs on the controller only.
extends_documentation_fragment:
  - edgeml.fleet.controller
options:
  plan:
    description: The plan returned by M(edgeml.fleet.desired_state).
    type: dict
    required: true
  run_id:
    description: This run's id (from M(edgeml.fleet.fleet_lock)).
    type: str
    required: true
  pattern:
    description: The host pattern of the devices' play.
    type: str
    default: edge_devices
  limit:
    description: The run's C(--limit), i.e. C(ansible_limit); omit when there is none.
    type: str
attributes:
  check_mode:
    description: Reads only.
    support: full
"""

EXAMPLES = r"""
- name: Plan each device of this run
  edgeml.fleet.device_plan:
    plan: "{{ edge_plan }}"
    run_id: "{{ edge_run_id }}"
    limit: "{{ ansible_limit | default(omit) }}"
  register: edge_run
"""

RETURN = r"""
plan:
  description:
    - The fleet plan restricted to this run, with C(run_id), C(run_hosts) (every device of the play) and C(excluded).
  returned: success
  type: dict
devices:
  description: Per planned device of this run, its C(edge_device_plan).
  returned: success
  type: dict
  sample: {"dev-a1": {"rollout_group": "line_a", "wave": 1, "run_id": "20261202T172400Z-3f9a1c2b",
           "runtime_install": "preinstalled", "allowed_models": ["defect-classifier"], "transfer": "pull",
           "push_dir": null,
           "models": {"defect-classifier": {"version": "1.1.0", "digest": "sha256:...", "source": "/srv/registry/x",
                                            "registry_source": "/srv/registry/x", "push_src": null}}}}
venv_hosts:
  description:
    - The devices of this run whose runtime the C(edge_runtime) role installs into a venv
      (C(edge_runtime_install_method=venv)); C(deploy.yml) runs that install play on these devices only.
  returned: success
  type: list
  elements: str
"""

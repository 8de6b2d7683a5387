#!/usr/bin/python
# Copyright (c) edgeml maintainers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Documentation of the ``edgeml.fleet.role_arguments`` action plugin (the work is done on the controller).

Documentation only, as for ansible.builtin.debug: the action plugin
``plugins/action/role_arguments.py`` runs every task.
"""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: role_arguments
short_description: Check roles' argument specs for every host of a fleet in one controller-side task
version_added: 0.1.0
description:
  - Validates, for each host in O(hosts), the values that its inventory, extra vars and facts give the
    options of a role's C(meta/argument_specs.yml) entry point - the same check Ansible makes when the role
    starts with role argument validation on, which costs one task execution per host.
  - Meant for plays over large fleets that import the role with C(rolespec_validate=false) and run this
    once (C(run_once=true)); every problem is reported at once with the hosts that have it. The role's own
    defaults are not re-checked (they are the role's, and C(scripts/check_argument_specs.py) keeps them in
    line with the spec).
  - This is an action plugin; it runs on the controller only.
extends_documentation_fragment:
  - edgeml.fleet.controller
options:
  role:
    description:
      - Role name, or a list of role names checked in the same task. A collection role
        (C(namespace.collection.role), e.g. C(edgeml.fleet.edge_runtime)) is found where the collection loader
        finds it; a plain name is looked up in C(<playbook dir>/roles), C(<playbook dir>/../roles) and the roles
        path.
      - Every role is checked and every problem of every role reported before the task fails.
    type: list
    elements: str
    required: true
  entry_point:
    description: Entry point of the role's argument spec.
    type: str
    default: main
  hosts:
    description: Hosts to check, for example C({{ ansible_play_hosts_all }}).
    type: list
    elements: str
    required: true
attributes:
  check_mode:
    description: Reads only.
    support: full
"""

EXAMPLES = r"""
- name: Check the settings of both roles for every device of the run, once
  edgeml.fleet.role_arguments:
    role: [edgeml.fleet.edge_runtime, edgeml.fleet.edge_model]
    hosts: "{{ ansible_play_hosts_all }}"
  run_once: true

- name: Check the runtime role's settings of every device, once
  edgeml.fleet.role_arguments:
    role: edge_runtime
    hosts: "{{ ansible_play_hosts_all }}"
  run_once: true
"""

RETURN = r"""
spec_file:
  description: The argument spec file used, when O(role) names one role.
  returned: when one role is checked
  type: str
spec_files:
  description: Each role checked to its argument spec file (null when none was found).
  returned: always
  type: dict
hosts_checked:
  description: Number of hosts checked.
  returned: success
  type: int
errors:
  description:
    - Each validation error message to the hosts that have it; with several roles, per role.
  returned: success
  type: dict
"""

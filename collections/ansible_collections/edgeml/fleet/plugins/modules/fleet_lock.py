#!/usr/bin/python
# Copyright (c) edgeml maintainers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Documentation of the ``edgeml.fleet.fleet_lock`` action plugin (the work is done on the controller).

Documentation only, as for ansible.builtin.debug: the action plugin
``plugins/action/fleet_lock.py`` runs every task.
"""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: fleet_lock
short_description: One rollout at a time per fleet - take or release the controller's fleet lock
version_added: 0.2.0
description:
  - Takes the fleet lock for the running C(ansible-playbook) process and returns a new run id, or releases
    the lock of a run. C(deploy.yml) and C(rollback.yml) take it before any device is touched.
  - The lock is a record C(<dir>/<fleet>.lock) (user, host, pid and start time of the C(ansible-playbook)
    process, playbook, start time, run id), read and written under an exclusive C(flock) of
    C(<fleet>.lock.guard). It is held while that process lives; when the holder ends in any way (also
    C(kill -9)) the next run takes the stale record over and says so. Clear a record by hand only with
    C(scripts/fleet_lock.py clear), which refuses a live holder.
  - A second run waits up to O(wait) seconds for the holder to finish, then fails naming the holder.
  - In check mode no lock is taken (a check run changes nothing); a warning names a running holder.
  - This is an action plugin; it runs on the controller only.
extends_documentation_fragment:
  - edgeml.fleet.controller
options:
  state:
    description: V(locked) takes the lock and returns a run id; V(released) removes this run's record.
    type: str
    choices: [locked, released]
    default: locked
  dir:
    description: Directory of the lock records on the controller, e.g. C(<project>/.state/locks).
    type: path
    required: true
  fleet:
    description:
      - Name of the fleet the lock is for. Default, a name derived from the inventory sources of the run
        (the same inventory is the same fleet). Set it (C(edge_fleet_name)) when several inventories describe one fleet.
    type: str
  wait:
    description: Seconds to wait for a running holder before failing. V(0) fails at once.
    type: float
    default: 0
  playbook:
    description: What this run is, recorded for the message another run shows.
    type: str
    default: deploy
  run_id:
    description: With O(state=released), the run id the lock was taken with. With O(state=locked), use this id.
    type: str
attributes:
  check_mode:
    description: Takes no lock; reports a running holder as a warning.
    support: full
"""

EXAMPLES = r"""
- name: Take the fleet lock before any device is touched
  edgeml.fleet.fleet_lock:
    dir: "{{ playbook_dir }}/../.state/locks"
    wait: 600
    playbook: deploy
  register: edge_lock

- name: Release it at the end
  edgeml.fleet.fleet_lock:
    state: released
    dir: "{{ playbook_dir }}/../.state/locks"
    run_id: "{{ edge_lock.run_id }}"
"""

RETURN = r"""
run_id:
  description: The id of this run; devices echo it in their twin and the controller acts only on those.
  returned: with O(state=locked)
  type: str
  sample: 20261202T172400Z-3f9a1c2b
fleet:
  description: The fleet name of the lock.
  returned: always
  type: str
path:
  description: The lock record.
  returned: always
  type: str
locked:
  description: Whether this run now holds the lock (false in check mode).
  returned: with O(state=locked)
  type: bool
holder:
  description: The record written (on success) or the record of the run that holds the lock (on failure).
  returned: when known
  type: dict
stale:
  description: The record of a holder that had ended without releasing, taken over by this run.
  returned: when a stale lock was taken over
  type: dict
released:
  description: Whether this run's record was removed.
  returned: with O(state=released)
  type: bool
"""

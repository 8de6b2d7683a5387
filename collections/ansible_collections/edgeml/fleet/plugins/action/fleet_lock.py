"""Action plugin ``edgeml.fleet.fleet_lock``: take or release the fleet lock and name this run.

Runs on the controller only. See the documentation in ``plugins/modules/fleet_lock.py`` and the lock's
design in ``plugin_utils/fleet_lock.py``.
"""

from __future__ import annotations

from typing import Any

from ansible_collections.edgeml.fleet.plugins.plugin_utils import fleet_lock
from ansible_collections.edgeml.fleet.plugins.plugin_utils.controller_action import ControllerAction

ARGUMENT_SPEC: dict[str, Any] = {
    "state": {"type": "str", "choices": ["locked", "released"], "default": "locked"},
    "dir": {"type": "path", "required": True},
    "fleet": {"type": "str"},
    "wait": {"type": "float", "default": 0.0},
    "playbook": {"type": "str", "default": "deploy"},
    "run_id": {"type": "str"},
}


class ActionModule(ControllerAction):
    """Take the fleet lock for this ansible-playbook process (or release it) and return the run id."""

    ARGUMENT_SPEC = ARGUMENT_SPEC
    _VALID_ARGS = frozenset(ARGUMENT_SPEC)

    def act(self, args: dict[str, Any], task_vars: dict[str, Any], result: dict[str, Any]) -> None:
        sources = [str(s) for s in task_vars.get("ansible_inventory_sources") or []]
        fleet = args["fleet"] or fleet_lock.fleet_name(sources)
        try:
            path = fleet_lock.lock_path(args["dir"], fleet)
            if args["state"] == "released":
                if not args["run_id"]:
                    result.update(failed=True, msg="state=released needs the run_id the lock was taken with")
                    return
                result.update(fleet=fleet, path=str(path), released=fleet_lock.release(path, args["run_id"]))
                return
            run_id = args["run_id"] or fleet_lock.new_run_id()
            result.update(fleet=fleet, path=str(path), run_id=run_id)
            if self._task.check_mode:
                # A check run changes nothing anywhere: it takes no lock, but says when a rollout is running.
                st = fleet_lock.status(path)
                if st["held"]:
                    holder = st.get("holder") or {}
                    result["warnings"] = [
                        f"fleet {fleet} is locked by {holder.get('user')}@{holder.get('host')} pid {holder.get('pid')} "
                        f"({holder.get('playbook')}, run {holder.get('run_id')}): a rollout is running, this check "
                        "shows the fleet mid-way"
                    ]
                result.update(locked=False)
                return
            me = fleet_lock.holder_for(fleet, run_id, args["playbook"])
            stale = fleet_lock.acquire(path, me, args["wait"])
        except fleet_lock.FleetLockError as exc:
            holder = exc.holder.__dict__ if exc.holder else None
            result.update(failed=True, msg=str(exc), holder=holder)
            return
        except OSError as exc:
            result.update(failed=True, msg=f"cannot take the fleet lock in {args['dir']}: {exc} "
                          "(hint: set edge_lock_dir to a writable directory on the controller)")
            return
        result.update(locked=True, holder=me.__dict__)
        if stale is not None:
            result["stale"] = stale.__dict__
            result["warnings"] = [f"took over the stale fleet lock of {stale.describe()}: that process is gone"]

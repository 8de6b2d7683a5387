"""Action plugin ``edgeml.fleet.device_plan``: the plan of this run, per device, decided once.

Runs on the controller only. See ``plugins/modules/device_plan.py`` and ``plugin_utils/device_plan.py``.
"""

from __future__ import annotations

from typing import Any

from ansible_collections.edgeml.fleet.plugins.plugin_utils.controller_action import ControllerAction
from ansible_collections.edgeml.fleet.plugins.plugin_utils.device_plan import PlanError, plan_run

ARGUMENT_SPEC: dict[str, Any] = {
    "plan": {"type": "dict", "required": True},
    "run_id": {"type": "str", "required": True},
    "pattern": {"type": "str", "default": "edge_devices"},
    "limit": {"type": "str"},
}


class ActionModule(ControllerAction):
    """Restrict the fleet plan to this run's devices (Ansible's --limit resolution) and plan each device."""

    ARGUMENT_SPEC = ARGUMENT_SPEC
    _VALID_ARGS = frozenset(ARGUMENT_SPEC)

    def act(self, args: dict[str, Any], task_vars: dict[str, Any], result: dict[str, Any]) -> None:
        # hostvars templates each host's variables on access (edge_runtime_root may name inventory_hostname)
        hostvars = task_vars.get("hostvars") or {}
        try:
            out = plan_run(args["plan"], args["run_id"], task_vars.get("groups") or {}, hostvars,
                           pattern=args["pattern"], limit=args["limit"],
                           check_mode=bool(self._task.check_mode))
        except PlanError as exc:
            result.update(failed=True, msg=str(exc))
            return
        result.update(out)

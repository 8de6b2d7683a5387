"""Action plugin ``edgeml.fleet.desired_state``: validate ``models.yaml`` and return the rollout plan.

Runs entirely on the controller (no module is transferred). See the documentation in
``plugins/modules/desired_state.py`` and the plan contract in ``module_utils/desired_state.py``.
"""

from __future__ import annotations

from typing import Any

from ansible.plugins.action import ActionBase
from ansible_collections.edgeml.fleet.plugins.module_utils.desired_state import DesiredStateError, build_plan

ARGUMENT_SPEC: dict[str, Any] = {
    "path": {"type": "path", "required": True},
    "groups": {"type": "dict", "required": True},
    "check_registry": {"type": "bool", "default": True},
}


class ActionModule(ActionBase):
    """Validate the desired state against the inventory (and registry) and return the plan."""

    TRANSFERS_FILES = False
    _requires_connection = False
    _supports_check_mode = True
    _VALID_ARGS = frozenset(ARGUMENT_SPEC)

    def run(self, tmp: str | None = None, task_vars: dict[str, Any] | None = None) -> dict[str, Any]:
        result = super().run(tmp, task_vars)
        del tmp  # unused since Ansible 2.5
        _, args = self.validate_argument_spec(argument_spec=ARGUMENT_SPEC)

        # Relative paths are relative to the playbook directory, like other controller-side files.
        path = self._loader.path_dwim(args["path"])
        groups: dict[str, list[str]] = {}
        for name, hosts in args["groups"].items():
            if not isinstance(hosts, (list, tuple)):
                msg = f"groups[{name!r}] must be a list of host names; pass '{{{{ groups }}}}'"
                result.update(failed=True, msg=msg)
                return result
            groups[str(name)] = [str(h) for h in hosts]

        try:
            plan = build_plan(path, groups, check_registry=args["check_registry"])
        except DesiredStateError as exc:
            result.update(failed=True, changed=False, msg=str(exc), error=exc.to_dict())
            return result
        result.update(changed=False, plan=plan)
        return result

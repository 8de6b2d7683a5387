# Copyright (c) edgeml maintainers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Action plugin ``edgeml.fleet.desired_state``: validate ``models.yaml`` and return the rollout plan.

Runs entirely on the controller (no module is transferred). See the documentation in
``plugins/modules/desired_state.py``; the checks are :func:`plugin_utils.desired_state.validate`, the same
function ``scripts/validate_models.py`` (``make validate``) calls. This plugin only gathers its inputs:
the inventory groups and, per device, the trusted keys and threshold it will get from the
``edge_runtime`` role (``edge_runtime_trusted_keys`` / ``edge_runtime_threshold`` of that host, else
this task's ``trusted_keys`` / ``threshold``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from ansible_collections.edgeml.fleet.plugins.plugin_utils.controller_action import ControllerAction
from ansible_collections.edgeml.fleet.plugins.plugin_utils.desired_state import (
    DEVICE_GROUP,
    MAX_WAVES,
    DesiredStateError,
    Trust,
    validate,
)
from ansible_collections.edgeml.fleet.plugins.plugin_utils.registry import (
    KEYS_VAR,
    ROOT_VAR,
    THRESHOLD_VAR,
    device_trust,
)

ARGUMENT_SPEC: dict[str, Any] = {
    "path": {"type": "path", "required": True},
    "groups": {"type": "dict", "required": True},
    "check_registry": {"type": "bool", "default": True},
    "verify_bundles": {"type": "bool", "default": False},
    "trusted_keys": {"type": "list", "elements": "path", "default": []},
    "threshold": {"type": "int", "default": 1},
    "trust_root": {"type": "list", "elements": "path", "default": []},
    "max_waves": {"type": "int", "default": MAX_WAVES},
}


class ActionModule(ControllerAction):
    """Validate the desired state against the inventory (and registry) and return the plan."""

    ARGUMENT_SPEC = ARGUMENT_SPEC
    _VALID_ARGS = frozenset(ARGUMENT_SPEC)

    def _key_path(self, path: str) -> str:
        return path if os.path.isabs(path) else str(self._loader.path_dwim(path))

    def _trust(self, host: str, args: Mapping[str, Any], task_vars: Mapping[str, Any]) -> Trust:
        """The key files and threshold the edge_runtime role will give ``host`` (asked only for devices)."""
        hv: Mapping[str, Any] = (task_vars.get("hostvars") or {}).get(host, {})
        keys, threshold, roots = hv.get(KEYS_VAR), hv.get(THRESHOLD_VAR), hv.get(ROOT_VAR)
        return device_trust(host, args["trusted_keys"] if keys is None else keys,
                            args["threshold"] if threshold is None else threshold, self._key_path,
                            args["trust_root"] if roots is None else roots)

    def act(self, args: dict[str, Any], task_vars: dict[str, Any], result: dict[str, Any]) -> None:
        # Relative paths are relative to the playbook directory, like other controller-side files.
        path = self._loader.path_dwim(args["path"])
        groups: dict[str, list[str]] = {}
        for name, hosts in args["groups"].items():
            if not isinstance(hosts, (list, tuple)):
                msg = f"groups[{name!r}] must be a list of host names; pass '{{{{ groups }}}}'"
                result.update(failed=True, msg=msg)
                return
            groups[str(name)] = [str(h) for h in hosts]

        def trust(host: str) -> Trust:
            return self._trust(host, args, task_vars)

        try:
            plan = validate(path, groups, check_registry=args["check_registry"],
                            trust=trust if args["verify_bundles"] else None, devices=groups.get(DEVICE_GROUP, ()),
                            max_waves=args["max_waves"] or None)  # 0: no limit (a rollback has no waves)
        except DesiredStateError as exc:
            result.update(failed=True, changed=False, msg=str(exc), error=exc.to_dict())
            return
        result.update(plan=plan, verified=plan.pop("verified", []))

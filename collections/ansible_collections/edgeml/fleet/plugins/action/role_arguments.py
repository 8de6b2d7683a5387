"""Action plugin ``edgeml.fleet.role_arguments``: check a role's argument spec for a whole fleet at once.

Runs on the controller only. See the documentation in ``plugins/modules/role_arguments.py``.
"""

from __future__ import annotations

import os
from typing import Any

from ansible import constants as C
from ansible.module_utils.common.arg_spec import ArgumentSpecValidator
from ansible.utils.collection_loader._collection_finder import _get_collection_role_path
from ansible_collections.edgeml.fleet.plugins.plugin_utils.controller_action import ControllerAction

ARGUMENT_SPEC: dict[str, Any] = {
    "role": {"type": "list", "elements": "str", "required": True},
    "entry_point": {"type": "str", "default": "main"},
    "hosts": {"type": "list", "elements": "str", "required": True},
}


def _without_defaults(options: dict[str, Any]) -> dict[str, Any]:
    """An argument spec's options without their ``default`` (also in suboptions)."""
    out = {}
    for name, spec in options.items():
        spec = {k: v for k, v in (spec or {}).items() if k != "default"}
        if isinstance(spec.get("options"), dict):
            spec["options"] = _without_defaults(spec["options"])
        out[name] = spec
    return out


class ActionModule(ControllerAction):
    """Validate every host's values of a role's options against its meta/argument_specs.yml."""

    ARGUMENT_SPEC = ARGUMENT_SPEC
    _VALID_ARGS = frozenset(ARGUMENT_SPEC)

    def _spec_file(self, role: str, task_vars: dict[str, Any]) -> str | None:
        if role.count(".") == 2:
            # a collection role (namespace.collection.role): where the collection loader finds it
            found = _get_collection_role_path(role)
            role_dirs = [found[1]] if found else []
        else:
            base = task_vars.get("playbook_dir") or os.getcwd()
            dirs = [os.path.join(base, "roles"), os.path.join(base, "..", "roles"), *C.DEFAULT_ROLES_PATH]
            role_dirs = [os.path.join(d, role) for d in dirs]
        for role_dir in role_dirs:
            for name in ("argument_specs.yml", "argument_specs.yaml", "main.yml"):
                path = os.path.join(role_dir, "meta", name)
                if os.path.isfile(path):
                    return path
        return None

    def act(self, args: dict[str, Any], task_vars: dict[str, Any], result: dict[str, Any]) -> None:
        entry = args["entry_point"]
        hostvars = task_vars.get("hostvars", {})
        spec_files: dict[str, str | None] = {}
        failures: list[str] = []
        errors_by_role: dict[str, dict[str, list[str]]] = {}
        for role in args["role"]:
            path = self._spec_file(role, task_vars)
            spec_files[role] = path
            specs = (self._loader.load_from_file(path) or {}).get("argument_specs", {}) if path else {}
            if entry not in specs:
                failures.append(f"role {role} has no argument spec for entry point {entry!r} "
                                "(hint: check the role name and roles_path)")
                continue
            options: dict[str, Any] = specs[entry].get("options") or {}
            # the role's defaults are its own (often templates such as "{{ edge_device_plan | default({}) }}",
            # which only the role's play can resolve): only what the inventory, extra vars or facts provide is
            # checked
            validator = ArgumentSpecValidator(_without_defaults(options))
            errors: dict[str, list[str]] = {}
            for host in args["hosts"]:
                hv = hostvars[host]
                provided = {name: hv[name] for name in options if name in hv}
                res = validator.validate(provided, validate_role_argument_spec=True)
                for message in res.error_messages:
                    errors.setdefault(message, []).append(host)
            errors_by_role[role] = errors
            if errors:
                lines = [f"- {message} (hosts: {', '.join(sorted(hosts))})"
                         for message, hosts in sorted(errors.items())]
                failures.append(f"role {role}: invalid settings in the inventory or extra vars; fix them there:\n"
                                + "\n".join(lines))
        one = len(args["role"]) == 1
        result.update(spec_files=spec_files, hosts_checked=len(args["hosts"]),
                      errors=next(iter(errors_by_role.values()), {}) if one else errors_by_role)
        if one:
            result["spec_file"] = next(iter(spec_files.values()))
        if failures:
            result.update(failed=True, msg="\n".join(failures))

# Copyright (c) edgeml maintainers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Base of the action plugins of the device-side modules: validate on the controller, run a JSON-args module.

The device modules (``edge_runtime_setup``, ``edge_model``, ``edge_model_info``, ``edge_health_info``) do not
use ``AnsibleModule``: the AnsiballZ zip it needs recompiles ``ansible.module_utils.basic`` on the device in every
run (~0.13 CPU-s here, several times that on a small ARM board), more than these modules' own work. They are
JSON-args modules that import the device's installed ``edge_runtime`` (``edge_runtime/ansible_module.py`` says
what the device side does). Their arguments are validated here, once, by Ansible's ``ArgumentSpecValidator``
against the module's own ``ARGUMENT_SPEC`` (types, defaults, choices, required options, unknown options): a bad
argument fails the task on the controller and nothing is sent. ``type: path`` options are passed as given and
expanded on the device (``~`` is the device user's home, as with ``AnsibleModule``).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any, ClassVar

from ansible.plugins.action import ActionBase


def controller_spec(spec: Mapping[str, Any]) -> dict[str, Any]:
    """``spec`` for validation on the controller: ``type: path`` becomes ``str`` (the device expands paths)."""
    out = copy.deepcopy(dict(spec))
    for option in out.values():
        if option.get("type") == "path":
            option["type"] = "str"
        if option.get("elements") == "path":
            option["elements"] = "str"
        if isinstance(option.get("options"), Mapping):
            option["options"] = controller_spec(option["options"])
    return out


def missing_runtime_message(result: Mapping[str, Any]) -> str:
    """What a device module that could not import ``edge_runtime`` reported, and the fix (said here, once)."""
    return (f"the Python interpreter {result.get('python') or '(unknown)'} on this device cannot import the edge "
            f"runtime ({result.get('import_error') or 'no detail'}); install or update it with the edgeml "
            "edge_runtime role (deploy.yml), or point ansible_python_interpreter at a Python that has it")


class DeviceModuleAction(ActionBase):  # type: ignore[misc]  # ansible-core ships no types: ActionBase is Any
    """Validate the task's arguments against the module's spec, then :meth:`act` (by default: run the module)."""

    MODULE: ClassVar[str] = ""
    ARGUMENT_SPEC: ClassVar[Mapping[str, Any]] = {}
    REQUIRED_IF: ClassVar[list[Any] | None] = None
    TRANSFERS_FILES = False
    _supports_check_mode = True

    def run(self, tmp: str | None = None, task_vars: dict[str, Any] | None = None) -> dict[str, Any]:
        result: dict[str, Any] = super().run(tmp, task_vars)
        del tmp  # unused since Ansible 2.5
        # raises AnsibleActionFail, which fails the task with the validator's message (nothing is sent)
        args = self.validate_argument_spec(argument_spec=controller_spec(self.ARGUMENT_SPEC),
                                           required_if=self.REQUIRED_IF)[1]
        result.update(self.act(args, task_vars or {}))
        return result

    def execute(self, args: dict[str, Any], task_vars: dict[str, Any]) -> dict[str, Any]:
        """Run the module on the device with these (validated) arguments."""
        out: dict[str, Any] = self._execute_module(module_name=self.MODULE, module_args=args, task_vars=task_vars)
        if out.get("error") == "missing_runtime":
            out["msg"] = missing_runtime_message(out)
        return out

    def act(self, args: dict[str, Any], task_vars: dict[str, Any]) -> dict[str, Any]:
        return self.execute(args, task_vars)

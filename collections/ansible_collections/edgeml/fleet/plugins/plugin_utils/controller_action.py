# Copyright (c) edgeml maintainers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Base of the collection's controller-only action plugins (no module is sent to any host)."""

from __future__ import annotations

from typing import Any, ClassVar

from ansible.plugins.action import ActionBase


class ControllerAction(ActionBase):  # type: ignore[misc]  # ansible-core ships no types: ActionBase is Any
    """Validates the task's arguments against ``ARGUMENT_SPEC`` and hands them to :meth:`act`."""

    ARGUMENT_SPEC: ClassVar[dict[str, Any]] = {}
    TRANSFERS_FILES = False
    _requires_connection = False
    _supports_check_mode = True

    def run(self, tmp: str | None = None, task_vars: dict[str, Any] | None = None) -> dict[str, Any]:
        result: dict[str, Any] = super().run(tmp, task_vars)
        del tmp  # unused since Ansible 2.5
        args = self.validate_argument_spec(argument_spec=self.ARGUMENT_SPEC)[1]
        result.update(changed=False)  # these actions never change a host
        self.act(args, task_vars or {}, result)
        return result

    def act(self, args: dict[str, Any], task_vars: dict[str, Any], result: dict[str, Any]) -> None:
        """Fill ``result`` (set ``failed``/``msg`` on a problem)."""
        raise NotImplementedError

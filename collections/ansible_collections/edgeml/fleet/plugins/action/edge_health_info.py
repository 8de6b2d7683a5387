# Copyright (c) edgeml maintainers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Action plugin for ``edgeml.fleet.edge_health_info``: the controller's clock beside the device's.

Runs the module unchanged and adds ``controller_received_s`` to its snapshot (``health``): the controller's
clock (seconds since the epoch) when the device's answer arrived. The device stamps its snapshot
(``collected_at_s``) and its telemetry minutes with its own clock, so a clock that stopped or jumped makes
telemetry look fresh or stale whatever it is; the health decision (``plugin_utils/health.py``,
``health.max_clock_skew_s``) compares the two stamps. The key is set here, after the module returned, so a
device cannot choose its value.
"""

from __future__ import annotations

import time
from typing import Any

from ansible.plugins.action import ActionBase


class ActionModule(ActionBase):  # type: ignore[misc]  # ansible-core ships no types: ActionBase is Any
    """Run ``edge_health_info`` and stamp the answer with the controller's clock."""

    TRANSFERS_FILES = False
    _supports_check_mode = True

    def run(self, tmp: str | None = None, task_vars: dict[str, Any] | None = None) -> dict[str, Any]:
        result: dict[str, Any] = super().run(tmp, task_vars)
        del tmp  # unused since Ansible 2.5
        result.update(self._execute_module(module_name="edgeml.fleet.edge_health_info",
                                           module_args=dict(self._task.args), task_vars=task_vars))
        received = round(time.time(), 3)
        if isinstance(result.get("health"), dict):  # the snapshot; set after the device answered, never its own
            result["health"]["controller_received_s"] = received
        return result

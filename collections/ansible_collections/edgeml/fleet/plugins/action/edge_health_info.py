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

from ansible_collections.edgeml.fleet.plugins.modules.edge_health_info import ARGUMENT_SPEC
from ansible_collections.edgeml.fleet.plugins.plugin_utils.device_module import DeviceModuleAction


class ActionModule(DeviceModuleAction):
    """Run ``edge_health_info`` and stamp the answer with the controller's clock."""

    MODULE = "edgeml.fleet.edge_health_info"
    ARGUMENT_SPEC = ARGUMENT_SPEC

    def act(self, args: dict[str, Any], task_vars: dict[str, Any]) -> dict[str, Any]:
        result = self.execute(args, task_vars)
        received = round(time.time(), 3)
        if isinstance(result.get("health"), dict):  # the snapshot; set after the device answered, never its own
            result["health"]["controller_received_s"] = received
        return result

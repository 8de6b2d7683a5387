# Copyright (c) edgeml maintainers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Action plugin for ``edgeml.fleet.edge_model_info``: its arguments are validated on the controller.

The module is a JSON-args module (``plugin_utils/device_module.py`` says why); this plugin validates the task's
arguments against the module's ``ARGUMENT_SPEC`` and runs it.
"""

from __future__ import annotations

from ansible_collections.edgeml.fleet.plugins.modules.edge_model_info import ARGUMENT_SPEC
from ansible_collections.edgeml.fleet.plugins.plugin_utils.device_module import DeviceModuleAction


class ActionModule(DeviceModuleAction):
    """Validate, then run ``edgeml.fleet.edge_model_info`` on the device."""

    MODULE = "edgeml.fleet.edge_model_info"
    ARGUMENT_SPEC = ARGUMENT_SPEC

# Copyright (c) edgeml maintainers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""The module side of the collection's controller-only action plugins.

Those plugins keep their documentation in ``plugins/modules/<name>.py`` (where ``ansible-doc`` reads it).
If that file ever runs as a module on a host, the action plugin was not used: say so and fail, whatever
the task's arguments are.
"""

from __future__ import annotations

import json
import sys


def fail_not_on_controller(name: str) -> None:
    print(json.dumps({
        "failed": True,
        "msg": f"edgeml.fleet.{name} is an action plugin that runs on the controller; make sure the edgeml.fleet "
        "collection is installed so its action plugin is used",
    }))
    sys.exit(1)

# Copyright (c) edgeml maintainers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Documentation shared by the collection's controller-only action plugins."""

from __future__ import annotations


class ModuleDocFragment:
    DOCUMENTATION = r"""
author:
  - edgeml maintainers (@edgeml)
attributes:
  diff_mode:
    description: Not applicable.
    support: none
  action:
    description: Runs on the controller; no module is sent to any host.
    support: full
"""

# Copyright (c) edgeml maintainers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Documentation shared by the modules that act on a device root of the edge runtime."""

from __future__ import annotations


class ModuleDocFragment:
    DOCUMENTATION = r"""
options:
  root:
    description: Device state directory of the runtime (the C(--root) of C(edge-runtime)).
    type: path
    required: true
author:
  - edgeml maintainers (@edgeml)
requirements:
  - The C(edge_runtime) Python package importable by the device's Python interpreter.
"""

    # Read-only modules (the *_info ones): extends_documentation_fragment edgeml.fleet.device.info
    INFO = r"""
attributes:
  check_mode:
    support: full
    description: The module never changes anything, so it runs normally in check mode.
  diff_mode:
    support: none
    description: Read-only; there is nothing to show a diff of.
"""

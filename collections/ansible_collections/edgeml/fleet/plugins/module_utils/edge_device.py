# Copyright (c) edgeml maintainers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Shared glue of the device-side modules: import ``edge_runtime`` or explain how to get it.

The modules are thin adapters; every decision about bundles, trust and state lives in ``edge_runtime``.
"""

from __future__ import annotations

import traceback
from typing import Any

try:
    from edge_runtime import Device
    from edge_runtime import __version__ as RUNTIME_VERSION
    from edge_runtime.errors import EdgeRuntimeError
    from edge_runtime.facts import collect_facts

    HAS_EDGE_RUNTIME = True
    IMPORT_ERROR = None
except ImportError:  # pragma: no cover - depends on the device's interpreter
    HAS_EDGE_RUNTIME = False
    IMPORT_ERROR = traceback.format_exc()
    RUNTIME_VERSION = None
    Device = None
    collect_facts = None

    class EdgeRuntimeError(Exception):  # type: ignore[no-redef]
        """Placeholder so ``except EdgeRuntimeError`` stays valid without the library."""

        code = "error"

        def diagnostics(self) -> str:
            return str(self)


def require_runtime(module: Any) -> None:
    """Fail with a readable message when this interpreter cannot import ``edge_runtime``."""
    if not HAS_EDGE_RUNTIME:
        import sys

        module.fail_json(
            msg=(
                f"the Python interpreter {sys.executable} on this device cannot import edge_runtime; "
                "install it with the edgeml edge_runtime role (edge_runtime_install_method=venv) "
                "or point ansible_python_interpreter at a Python that has it"
            ),
            error="missing_runtime",
            exception=IMPORT_ERROR,
        )


def fail_runtime_error(module: Any, exc: Exception, **extra: Any) -> None:
    """Every ``EdgeRuntimeError`` becomes one readable failure: what went wrong and the fix."""
    module.fail_json(msg=exc.diagnostics(), error=getattr(exc, "code", "error"), **extra)


def device_facts(device: Any) -> dict[str, Any]:
    """The device twin as the runtime reports it (read-only: the facts file is not rewritten)."""
    return collect_facts(device)

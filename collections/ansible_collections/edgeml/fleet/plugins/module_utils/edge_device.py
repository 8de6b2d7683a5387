# Copyright (c) edgeml maintainers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Shared glue of the device-side modules: import ``edge_runtime`` or explain how to get it.

The modules are thin adapters; every decision about bundles, trust and state lives in ``edge_runtime``.
"""

from __future__ import annotations

import traceback
from typing import Any

__all__ = [
    "HAS_EDGE_RUNTIME",
    "RUNTIME_VERSION",
    "RUN_ID_OPTION",
    "Device",
    "EdgeRuntimeError",
    "Pin",
    "decide",
    "device_facts",
    "fail_runtime_error",
    "healthy",
    "require_runtime",
    "twin_facts",
]

try:
    from edge_runtime import Device
    from edge_runtime import __version__ as RUNTIME_VERSION
    from edge_runtime.decision import Pin, decide, healthy
    from edge_runtime.errors import EdgeRuntimeError
    from edge_runtime.facts import collect_facts

    HAS_EDGE_RUNTIME = True
    IMPORT_ERROR = None
except ImportError:  # pragma: no cover - depends on the device's interpreter
    HAS_EDGE_RUNTIME = False
    IMPORT_ERROR = traceback.format_exc()
    RUNTIME_VERSION = None  # type: ignore[assignment]
    Device = None  # type: ignore[assignment,misc]
    collect_facts = None  # type: ignore[assignment]
    Pin = decide = healthy = None  # type: ignore[assignment,misc]

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


def fail_runtime_error(module: Any, exc: Any, **extra: Any) -> None:
    """Every ``EdgeRuntimeError`` becomes one readable failure: what went wrong and the fix."""
    module.fail_json(msg=exc.diagnostics(), error=getattr(exc, "code", "error"), **extra)


def device_facts(device: Any) -> dict[str, Any]:
    """The device twin as the runtime reports it (read-only: the facts file is not rewritten)."""
    return collect_facts(device)


#: the module option every device-side module of the collection takes to echo the controller's run id
RUN_ID_OPTION = {"type": "str"}


def twin_facts(module: Any, facts: dict[str, Any]) -> dict[str, Any]:
    """``ansible_facts`` carrying the device twin, stamped with the run id the controller sent.

    The controller acts only on twins that carry its own run's id (fresh answers of this run); a twin
    from a fact cache or an earlier run carries another id, or none, and is treated as unknown.
    """
    return {"edge_runtime": {**facts, "run_id": module.params.get("run_id")}}

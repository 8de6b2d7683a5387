"""edge_runtime: install signed TFLite model bundles on edge devices, safely.

The public surface is small: :class:`Device` (install, rollback, recover, status, facts),
the bundle tools in :mod:`edge_runtime.bundle`, the trust rules in :mod:`edge_runtime.trust`
and the errors in :mod:`edge_runtime.errors`.
"""

from __future__ import annotations

__version__ = "0.1.0"

from typing import TYPE_CHECKING, Any

from .device import DEFAULT_ROOT, Device, DeviceConfig, InstallResult
from .errors import EdgeRuntimeError

if TYPE_CHECKING:
    from ._fetch import FetchConfig


def __getattr__(name: str) -> Any:
    # FetchConfig lives with the HTTP code; importing it lazily keeps `requests` off the no-op paths.
    if name == "FetchConfig":
        from ._fetch import FetchConfig

        return FetchConfig
    raise AttributeError(f"module 'edge_runtime' has no attribute {name!r}")

__all__ = [
    "DEFAULT_ROOT",
    "Device",
    "DeviceConfig",
    "EdgeRuntimeError",
    "FetchConfig",
    "InstallResult",
    "__version__",
]

"""edge_runtime: install signed TFLite model bundles on edge devices, safely.

The public surface is small: :class:`Device` (install, rollback, recover, status, facts),
the bundle tools in :mod:`edge_runtime.bundle`, the trust rules in :mod:`edge_runtime.trust`
and the errors in :mod:`edge_runtime.errors`.
"""

from __future__ import annotations

# FetchConfig (the download policy) lives apart from the HTTP code: importing it costs no `requests`.
from ._fetch_config import FetchConfig
from ._version import __version__
from .device import DEFAULT_ROOT, Device, DeviceConfig, InstallResult
from .errors import EdgeRuntimeError

__all__ = [
    "DEFAULT_ROOT",
    "Device",
    "DeviceConfig",
    "EdgeRuntimeError",
    "FetchConfig",
    "InstallResult",
    "__version__",
]

"""The runtime's version, in a module that imports nothing (``facts`` and the CLIs read it without
importing the package's public surface, so no module depends on :mod:`edge_runtime.device` for it)."""

__version__ = "0.2.0"

"""Benchmarks run Python the way a device and a controller run it: with compiled bytecode.

A device gets the runtime from ``pip install`` (which compiles every module) or from an image built with
``compileall`` (scripts/ssh_fleet.py); the controller's collection plugins are compiled on their first import.
With ``PYTHONDONTWRITEBYTECODE`` set (it is on this project's CI machines) and no ``__pycache__`` in the
checkout, every module run of a local-fleet device and every Ansible worker would compile ``edge_runtime``
and the collection from source instead: ~0.7 CPU-s more per run measured on this machine
(``from edge_runtime.health import health_snapshot``: 1.06 s without bytecode, 0.35 s with it). That cost
is no device's, so each benchmark calls :func:`device_like_bytecode` first: it compiles the repository's
Python once and clears the variable for everything the benchmark starts.
"""

from __future__ import annotations

import compileall
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def device_like_bytecode() -> None:
    """Compile ``edge_runtime`` and the collection (quietly; unchanged files are skipped) and unset
    ``PYTHONDONTWRITEBYTECODE`` for this process's children; says so on stderr when it was set."""
    if os.environ.pop("PYTHONDONTWRITEBYTECODE", None) is not None:
        print("bench: PYTHONDONTWRITEBYTECODE was set; unset for the benchmark (devices run compiled bytecode)",
              file=sys.stderr)
    sys.dont_write_bytecode = False
    for part in ("edge_runtime", "collections/ansible_collections/edgeml/fleet/plugins", "scripts"):
        compileall.compile_dir(REPO / part, quiet=1, workers=1)

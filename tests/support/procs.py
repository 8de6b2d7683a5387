"""Processes of the runtime seen from outside: the smoke test children working on a device root."""

from __future__ import annotations

import time
from pathlib import Path


def smoke_children(root: Path) -> list[int]:
    """Pids of live smoke test child processes (``edge_runtime._smoke_child``) testing a model under ``root``."""
    pids = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            cmd = (d / "cmdline").read_bytes()
            zombie = "State:\tZ" in (d / "status").read_text()
        except OSError:
            continue
        if b"edge_runtime._smoke_child" in cmd and str(root).encode() in cmd and not zombie:
            pids.append(int(d.name))
    return pids


def wait_until_no_smoke_children(root: Path, timeout: float = 5.0) -> list[int]:
    """Wait up to ``timeout`` s for every smoke child under ``root`` to end; return the survivors."""
    end = time.monotonic() + timeout
    while (alive := smoke_children(root)) and time.monotonic() < end:
        time.sleep(0.02)
    return alive

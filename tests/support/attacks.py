"""Helpers for the attack and rollback-verification tests: damage a device, run the real CLI, check invariants.

``run_cli`` runs the installed ``edge-runtime`` console script as a subprocess with a deadline and a
memory limit (``RLIMIT_AS``), so a test fails instead of hanging or swapping when the runtime
misbehaves; ``tree_digest`` hashes a whole device root for "nothing changed" assertions.
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
import shutil
import stat
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_runtime.device import Device

from .factory import MODEL, Release

EXE = Path(sys.executable).with_name("edge-runtime")
#: exit codes the CLI documents (README "Exit codes" and ``edge-runtime --help``)
DOCUMENTED_EXIT_CODES = frozenset({0, 1, 2, 3, 4, 5, 6, 7, 8, 75})
#: address-space cap of one CLI run: LiteRT maps ~1 GiB of virtual memory at import; a parser that
#: reads a hostile header whole blows through this long before the machine notices
MEMORY_LIMIT = 3 << 30
#: the mode the runtime gives version directories (edge_runtime._fsutil.make_tree_readonly)
READ_ONLY_DIR = 0o555


@dataclass
class CliRun:
    rc: int
    out: dict[str, Any]
    stdout: str
    stderr: str

    def assert_clean(self) -> None:
        """No traceback, an exit code from the documented set, machine-readable output."""
        assert "Traceback" not in self.stderr, self.stderr
        assert self.rc in DOCUMENTED_EXIT_CODES, (self.rc, self.stdout, self.stderr)


def _limit_memory() -> None:  # runs in the child between fork and exec
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))


def run_cli(root: Path, *args: str, timeout: float = 60.0, env: dict[str, str] | None = None) -> CliRun:
    """The real ``edge-runtime --root ROOT <args> --json`` in a child process, bounded in time and memory."""
    proc = subprocess.run(
        [str(EXE), "--root", str(root), "--json", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        preexec_fn=_limit_memory,
        env={**os.environ, **(env or {})},
    )
    try:
        out = json.loads(proc.stdout) if proc.stdout.strip() else {}
    except ValueError:
        out = {"unparsed": proc.stdout}
    return CliRun(proc.returncode, out, proc.stdout, proc.stderr)


def tree_digest(root: Path, *, skip: tuple[str, ...] = ("lock", "facts/")) -> str:
    """One hash over every path, type, mode, link target and file content under ``root``."""
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        if rel in skip or rel.startswith(tuple(s for s in skip if s.endswith("/"))):
            continue
        st = p.lstat()
        h.update(f"{rel}\0{stat.S_IFMT(st.st_mode)}\0{stat.S_IMODE(st.st_mode):o}\0".encode())
        if p.is_symlink():
            h.update(os.readlink(p).encode())
        elif p.is_file():
            h.update(p.read_bytes())
    return h.hexdigest()


def corrupt_file(dev: Device, version: str, name: str = "model.tflite", *, model: str = MODEL) -> Path:
    """Flip the last byte of an installed file (same length, different content), as a failing disk would."""
    path = dev.version_dir(model, version) / name
    data = path.read_bytes()
    os.chmod(path, 0o644)
    path.write_bytes(data[:-1] + bytes([data[-1] ^ 0xFF]))
    os.chmod(path, 0o444)
    return path


def add_stray_file(dev: Device, version: str, name: str = "extra.bin", *, model: str = MODEL) -> Path:
    """Drop a file the manifest does not list into an installed version."""
    vdir = dev.version_dir(model, version)
    os.chmod(vdir, stat.S_IRWXU)
    (vdir / name).write_bytes(b"not signed\n")
    os.chmod(vdir, READ_ONLY_DIR)
    return vdir / name


def model_state(root: Path, model: str = MODEL) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((root / "models" / model / "state.json").read_text())
    return data


def active_version(dev: Device, model: str = MODEL) -> str | None:
    link = dev.active_link(model)
    return os.readlink(link).split("/")[-1] if link.is_symlink() else None


def installed_device(release: Release, root: Path, bundles: list[Path], **config: object) -> Device:
    """A device root with ``bundles`` installed (and committed) in order, through the runtime's API."""
    dev = release.device(root, **config)
    for b in bundles:
        r = dev.install(str(b))
        assert r.ok, r
    return dev


def clone_device(template: Path, dest: Path) -> Device:
    """A copy of a prepared device root (links, modes and state as they are): cheaper than installing again."""
    shutil.copytree(template, dest, symlinks=True)
    return Device(dest)

"""Real small and full file systems for tests: a tmpfs of a given size (root only), filled to the last byte."""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

__all__ = ["fill", "free_bytes", "small_tmpfs"]


@contextlib.contextmanager
def small_tmpfs(mnt: Path, size: str = "4m") -> Iterator[Path]:
    """Mount a real tmpfs of ``size`` at ``mnt`` for the block, or skip the test saying why it cannot."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs (a real full disk) needs root")
    mnt.mkdir(parents=True, exist_ok=True)
    try:
        proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mnt)],
                              capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError) as exc:
        pytest.skip(f"cannot mount a {size} tmpfs to simulate a full disk: {exc}")
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a {size} tmpfs to simulate a full disk: {proc.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True, timeout=10, check=False)


def free_bytes(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def fill(directory: Path) -> Path:
    """Fill the file system of ``directory`` to the last byte (unbuffered writes, smaller and smaller)."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        size = 1 << 20
        while size:
            try:
                os.write(fd, b"\0" * size)
            except OSError:
                size //= 2
    finally:
        os.close(fd)
    assert free_bytes(directory) == 0
    return filler

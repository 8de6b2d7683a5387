"""Crash-safe file operations: write to a temp file, fsync, rename, fsync the directory.

A device may lose power between any two system calls. Every durable change therefore goes through
``atomic_write_bytes`` or ``swap_symlink``; both leave either the old or the new content, never a
mix, and both fsync the parent directory so the rename itself survives a power cut.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
from collections.abc import Iterator
from pathlib import Path

from . import _faults

TMP_PREFIX = ".tmp-"


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def tmp_name(target: Path) -> Path:
    return target.with_name(f"{TMP_PREFIX}{target.name}.{secrets.token_hex(4)}")


def atomic_write_bytes(target: Path, data: bytes, *, mode: int = 0o644) -> None:
    """Replace ``target`` with ``data`` atomically and durably."""
    tmp = tmp_name(target)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            _faults.checkpoint("write")
            os.fsync(fh.fileno())
        _faults.checkpoint("fsync")
        os.replace(tmp, target)
        _faults.checkpoint("rename")
        fsync_dir(target.parent)
        _faults.checkpoint("fsync_dir")
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def swap_symlink(link: Path, target: str) -> None:
    """Point ``link`` at ``target`` (a relative path) atomically: new symlink, rename, fsync dir."""
    tmp = tmp_name(link)
    os.symlink(target, tmp)
    try:
        _faults.checkpoint("symlink")
        os.replace(tmp, link)
        _faults.checkpoint("rename")
        fsync_dir(link.parent)
        _faults.checkpoint("fsync_dir")
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def make_tree_writable(path: Path) -> None:
    """Undo the read-only protection of a staged version so it can be removed."""
    if not path.exists() or path.is_symlink():
        return
    for root, dirs, _files in os.walk(path):
        os.chmod(root, 0o755)  # noqa: S103 - directories must be traversable to be removed
        for d in dirs:
            p = Path(root, d)
            if not p.is_symlink():
                os.chmod(p, 0o755)  # noqa: S103 - as above


def remove_tree(path: Path) -> None:
    """Remove a (possibly read-only) directory tree; missing is fine."""
    import shutil

    if path.is_symlink() or path.is_file():
        path.unlink()
        return
    if not path.exists():
        return
    make_tree_writable(path)
    shutil.rmtree(path)


def make_tree_readonly(path: Path) -> None:
    """Files 0444, directories 0555, deepest first; fsync every directory."""
    for root, dirs, files in os.walk(path, topdown=False):
        for f in files:
            os.chmod(Path(root, f), 0o444)
        for d in dirs:
            os.chmod(Path(root, d), 0o555)  # noqa: S103 - read-only, world-readable model files
        fsync_dir(Path(root))
    os.chmod(path, 0o555)  # noqa: S103 - as above


def is_readonly_tree(path: Path) -> bool:
    for root, _dirs, files in os.walk(path):
        if os.stat(root).st_mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH):
            return False
        for f in files:
            if os.stat(Path(root, f)).st_mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH):
                return False
    return True


def iter_tmp_files(directory: Path) -> Iterator[Path]:
    if not directory.is_dir():
        return
    for p in directory.iterdir():
        if p.name.startswith(TMP_PREFIX):
            yield p

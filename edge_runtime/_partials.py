"""Partial files in a device's ``downloads`` directory: names and expiry.

A download (:mod:`edge_runtime._fetch`) streams into ``<dest>.part`` with a ``<dest>.part.json`` sidecar; a
bundle pushed by the controller (``edgeml.fleet.edge_model`` with transfer push) arrives as ``<dest>.part``
too. Both expire the same way here. Kept apart from ``_fetch`` (which imports requests) so that a pushed
install cleans up without paying for that import.
"""

from __future__ import annotations

import contextlib
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._fetch_config import FetchConfig

_log = logging.getLogger("edge_runtime._fetch")

_PART_SUFFIX = ".part"
_SIDECAR_SUFFIX = ".part.json"


def part_path(dest: Path) -> Path:
    """The partial file :func:`fetch` streams into for ``dest``."""
    return dest.with_name(dest.name + _PART_SUFFIX)


def sidecar_path(dest: Path) -> Path:
    """The JSON file recording how to resume ``part_path(dest)``."""
    return dest.with_name(dest.name + _SIDECAR_SUFFIX)


def expire_partials(directory: Path, config: FetchConfig, *, keep: Path | None = None) -> list[Path]:
    """Delete partial downloads in ``directory`` older than ``partial_max_age_s`` or beyond the newest
    ``partial_max_count``; return the files deleted. ``keep`` (a destination) counts first and is only
    deleted when it is too old. Orphan sidecars go too. Errors are logged, never raised: cleaning up
    must not stop the download that follows.
    """
    try:
        entries = list(directory.iterdir())
    except OSError:
        return []
    now = time.time()
    parts: list[tuple[float, Path]] = []
    removed: list[Path] = []

    def drop(p: Path) -> None:
        with contextlib.suppress(FileNotFoundError):
            try:
                p.unlink()
            except OSError as exc:
                _log.warning("cannot delete stale partial download %s: %s", p, exc)
                return
            removed.append(p)

    for p in entries:
        name = p.name
        if name.endswith(_SIDECAR_SUFFIX):
            if not p.with_name(name[: -len(".json")]).exists():
                drop(p)  # a sidecar without its partial file
        elif name.endswith(_PART_SUFFIX):
            try:
                parts.append((p.stat().st_mtime, p))
            except OSError:
                continue
    keep_part = part_path(keep) if keep is not None else None
    # the current destination first, then newest first
    parts.sort(key=lambda mp: (mp[1] != keep_part, -mp[0]))
    for i, (mtime, p) in enumerate(parts):
        if now - mtime > config.partial_max_age_s or i >= config.partial_max_count:
            drop(p)
            drop(p.with_name(p.name + ".json"))
    return removed

"""Device facts: what runs here and how healthy the device is. Never invented values.

A value the device cannot measure is ``null``. The same JSON is written to
``<root>/facts/edge_runtime.fact`` (and optionally ``/etc/ansible/facts.d``) for Ansible's
``ansible_local`` facts.
"""

from __future__ import annotations

import os
import shutil
import socket
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import __version__
from .errors import EdgeRuntimeError

if TYPE_CHECKING:
    from .device import Device

__all__ = ["FACTS_SCHEMA", "collect_facts", "system_facts"]

FACTS_SCHEMA = 1
THERMAL = Path("/sys/class/thermal")


def _uptime_s() -> float | None:
    try:
        return float(Path("/proc/uptime").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _meminfo() -> dict[str, int | None]:
    out: dict[str, int | None] = {"total_bytes": None, "available_bytes": None}
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            key, _, rest = line.partition(":")
            if key == "MemTotal":
                out["total_bytes"] = int(rest.split()[0]) * 1024
            elif key == "MemAvailable":
                out["available_bytes"] = int(rest.split()[0]) * 1024
    except (OSError, ValueError):
        pass
    return out


def _temperature_c() -> float | None:
    """The hottest thermal zone in degrees Celsius, or None when the device exposes none."""
    temps = []
    for zone in sorted(THERMAL.glob("thermal_zone*")):
        try:
            temps.append(int((zone / "temp").read_text().strip()) / 1000.0)
        except (OSError, ValueError):
            continue
    return max(temps) if temps else None


def _cpu_percent(interval: float = 0.0) -> float | None:
    """CPU busy percentage since boot (no sampling delay); None without /proc/stat."""
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    except (OSError, ValueError, IndexError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    total = sum(fields)
    return round(100.0 * (total - idle) / total, 2) if total else None


def system_facts(root: Path) -> dict[str, Any]:
    try:
        load = os.getloadavg()
    except OSError:
        load = None
    try:
        du = shutil.disk_usage(root)
        disk: dict[str, Any] = {
            "path": str(root),
            "total_bytes": du.total,
            "free_bytes": du.free,
            "used_percent": round(100.0 * (du.total - du.free) / du.total, 2),
        }
    except OSError:
        disk = {"path": str(root), "total_bytes": None, "free_bytes": None, "used_percent": None}
    return {
        "hostname": socket.gethostname(),
        "uptime_s": _uptime_s(),
        "load_avg": list(load) if load else None,
        "cpu_count": os.cpu_count(),
        "cpu_busy_percent_since_boot": _cpu_percent(),
        "memory": _meminfo(),
        "disk": disk,
        "temperature_c": _temperature_c(),
    }


def collect_facts(device: Device) -> dict[str, Any]:
    from ._state import state_label

    busy = device.lock.busy_elsewhere()  # R1: a pending operation is "busy" or "recovery pending"
    models: dict[str, Any] = {}
    for name in device.store.names():
        try:
            s = device.store.load(name)
        except EdgeRuntimeError as exc:
            models[name] = {"state": "corrupt", "error": exc.message}
            continue
        info = s.versions.get(s.active or "", {})
        smoke = info.get("smoke") or {}
        last = s.last or {}
        models[name] = {
            "active_version": s.active,
            "previous_version": s.previous_committed(),
            "digest": info.get("digest"),
            "release_counter": info.get("counter"),
            "state": state_label(s, busy),
            "degraded_reason": (s.degraded or {}).get("reason"),
            "corrupt_versions": sorted(s.corrupt),
            "pending_version": s.pending.version if s.pending else None,
            "bad_versions": sorted(s.bad),
            "last_op": last.get("op"),
            "last_version": last.get("version"),
            "last_result": last.get("result"),
            "last_reason": last.get("reason"),
            "last_time": last.get("at"),
            "smoke_p50_ms": smoke.get("p50_ms"),
            "smoke_p95_ms": smoke.get("p95_ms"),
            "smoke_label_agreement": smoke.get("label_agreement"),
            "smoke_mean_confidence": smoke.get("mean_confidence"),
            "smoke_backend": smoke.get("backend"),
        }
    return {
        "schema": FACTS_SCHEMA,
        "runtime_version": __version__,
        "collected_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "root": str(device.root),
        "models": models,
        "system": system_facts(device.root),
    }

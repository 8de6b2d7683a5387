"""Device facts: what runs here and how healthy the device is. Never invented values.

A value the device cannot measure is ``null``. The same JSON is written to
``<root>/facts/edge_runtime.fact`` (and optionally ``/etc/ansible/facts.d``) for Ansible's
``ansible_local`` facts.

This module depends on the state store only, never on :mod:`edge_runtime.device` (which imports it):
:func:`collect_facts` takes anything with a ``root``, a ``store`` and a ``lock`` (:class:`FactsSource`), such as a
:class:`~edge_runtime.device.Device`.
"""

from __future__ import annotations

import os
import shutil
import socket
import time
from pathlib import Path
from typing import Any, Protocol

from ._state import DeviceLock, StateStore
from ._version import __version__
from .errors import EdgeRuntimeError
from .telemetry._status import telemetry_facts

__all__ = [
    "BOOT_UNIT", "FACTS_SCHEMA", "FactsSource", "boot_recovery_facts", "collect_facts", "platform_facts",
    "system_facts",
]


class FactsSource(Protocol):
    """What facts are collected from: a device root, its per-model state store and its lock."""

    @property
    def root(self) -> Path: ...

    @property
    def store(self) -> StateStore: ...

    @property
    def lock(self) -> DeviceLock: ...

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


#: the systemd unit the edge_runtime role installs to run ``edge-runtime recover`` at boot
BOOT_UNIT = "edge-runtime-recover.service"
#: where to look for it: ``$EDGE_RUNTIME_SYSTEMD_UNIT_DIR`` (the role sets it to its unit directory)
DEFAULT_UNIT_DIR = "/etc/systemd/system"


def boot_recovery_facts() -> dict[str, Any]:
    """Whether the boot recovery unit is installed (its SHA-256) and enabled (multi-user.target wants it).

    The role compares the digest with the unit it would render and skips its tasks when they agree, so a
    device that needs nothing still costs one module run.
    """
    import hashlib

    unit_dir = Path(os.environ.get("EDGE_RUNTIME_SYSTEMD_UNIT_DIR") or DEFAULT_UNIT_DIR)
    unit = unit_dir / BOOT_UNIT
    try:
        with unit.open("rb") as fh:
            digest: str | None = hashlib.sha256(fh.read(1 << 16)).hexdigest()
    except OSError:
        digest = None
    wants = unit_dir / "multi-user.target.wants" / BOOT_UNIT
    return {"unit": str(unit), "sha256": digest, "enabled": wants.is_symlink() or wants.is_file()}


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


def collect_facts(device: FactsSource) -> dict[str, Any]:
    """The facts of ``device``: per-model state (``corrupt`` for an unreadable state file) and system."""
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
            # what edge_runtime.decision reads (the controller decides from this twin exactly as the device would)
            "highest_counter": s.highest_counter,
            "kept_digests": {v: (s.versions.get(v) or {}).get("digest") for v in s.order if v in s.versions},
            # the post-install health check recorded for the active version (Device.check)
            "check_passed": (info.get("check") or {}).get("passed") is True,
            "checked_at": (info.get("check") or {}).get("at"),
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
        "boot_recovery": boot_recovery_facts(),
        # what the inference API recorded (edge_runtime.telemetry.store): size, cap, dropped records and
        # each kind of error once; "none" before the first record
        "telemetry": telemetry_facts(device.root),
        "trust": trust_facts(device.root / "trust"),
        # the device-side monitor's last evaluation (edge-runtime monitor); None when it never ran
        "monitor": _monitor_facts(device.root),
        # what compatibility is decided on (edge_runtime.compat): the controller's plan asks the same function
        "platform": platform_facts(device),
    }


def platform_facts(device: Any) -> dict[str, Any]:
    """What the runtime decides compatibility on at install (:mod:`edge_runtime.compat`), as it would see it now.

    ``architecture`` and ``inputs`` come from the device's config (None / {} before ``edge-runtime init``: the
    setup module then reports the architecture it configures), ``backends`` are the TFLite backends this
    interpreter can import (``EDGE_RUNTIME_BACKEND`` honoured, nothing imported), plus the machine and Python for
    people. A backend setting the runtime refuses leaves ``backends`` empty and says why (``backends_error``).
    """
    import platform
    import sys

    from ._smoke_result import available_backends

    architecture: str | None = None
    inputs: dict[str, Any] = {}
    if isinstance(getattr(type(device), "config", None), property):
        try:
            cfg = device.config  # config.json, read as untrusted input
        except EdgeRuntimeError:
            cfg = None
        if cfg is not None:
            architecture = cfg.architecture
            inputs = dict(cfg.inputs or {})
    backends_error = None
    try:
        backends = list(available_backends())
    except EdgeRuntimeError as exc:
        backends, backends_error = [], exc.message
    return {
        "architecture": architecture,
        "machine": platform.machine(),
        "python": platform.python_version(),
        "python_executable": sys.executable,
        "backends": backends,
        "backends_error": backends_error,
        "inputs": inputs,
    }


def _monitor_facts(root: Path) -> dict[str, Any] | None:
    from ._monitor_record import read_last

    return read_last(root)


def trust_facts(trust_dir: Path) -> dict[str, Any]:
    """The trust root this device holds (version 0: the legacy key list), read as information only.

    Not a trust decision (the runtime verifies ``root.json`` whenever it uses it), so no cryptography is
    imported here; an unreadable document is reported as such.
    """
    import json

    path = trust_dir / "root.json"
    if not path.exists():
        return {"root_version": 0, "root_expires": None}
    try:
        with path.open("rb") as fh:
            signed = json.loads(fh.read(64 * 1024 + 1))["signed"]
        return {"root_version": int(signed["version"]), "root_expires": str(signed["expires"])}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return {"root_version": None, "root_expires": None, "error": f"unreadable trust root: {type(exc).__name__}"}

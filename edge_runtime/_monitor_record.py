"""The monitor's record: ``<root>/monitor/last.json``, its last evaluation, written by ``edge-runtime monitor``
and read (as untrusted input) by ``status`` and the facts (``ansible_facts.edge_runtime.monitor``).

Apart from :mod:`edge_runtime._monitor_run` so that ``device`` and ``facts`` can read it without importing
the monitor (no import cycle).
"""

from __future__ import annotations

import contextlib
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .errors import EdgeRuntimeError

__all__ = [
    "LAST_NAME", "LAST_SCHEMA", "MONITOR_DIR", "MONITOR_SERVICE", "MONITOR_TIMER", "format_time", "parse_time",
    "read_last", "write_last",
]

#: the systemd units the edge_runtime role installs to run ``edge-runtime monitor`` periodically
MONITOR_SERVICE = "edge-runtime-monitor.service"
MONITOR_TIMER = "edge-runtime-monitor.timer"
MONITOR_DIR = "monitor"
LAST_NAME = "last.json"
LAST_SCHEMA = 1



def format_time(t: float) -> str:
    """Seconds since the epoch as the runtime's timestamps: ``2026-12-03T05:00:00Z``."""
    return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(iso: Any) -> float | None:
    """``2026-12-03T05:00:00Z`` (the runtime's timestamps) as seconds since the epoch; None if not one."""
    if not isinstance(iso, str):
        return None
    try:
        return datetime.strptime(iso, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc).timestamp()
    except ValueError:
        return None

def write_last(root: Path, report: dict[str, Any]) -> str | None:
    """Replace ``<root>/monitor/last.json`` with ``report`` atomically; a problem is returned, never raised
    (a full disk must not stop the monitor from acting nor hide what it did)."""
    from ._fsutil import atomic_write_bytes
    from ._json import dumps_strict_bytes

    path = Path(root) / MONITOR_DIR / LAST_NAME
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, dumps_strict_bytes(report, "monitor findings", indent=1, sort_keys=True) + b"\n")
    except (OSError, EdgeRuntimeError) as exc:
        return f"monitor findings not written to {path}: {getattr(exc, 'strerror', None) or exc}"
    return None


def read_last(root: Path, *, full: bool = False) -> dict[str, Any] | None:
    """The last evaluation recorded under ``root`` (untrusted: bounded, strict), compact unless ``full``:
    per model its state, version and the findings that are not ``ok`` (rule, status, action, message).

    None when the monitor never ran; ``{"error": ...}`` when the file cannot be read.
    """
    from ._json import loads_untrusted, read_untrusted_file
    from ._limits import DEFAULT_LIMITS as lim
    from .errors import StateCorruptError

    path = Path(root) / MONITOR_DIR / LAST_NAME
    try:
        data = read_untrusted_file(path, lim.local_json_max_bytes)
        doc = loads_untrusted(data, lim, str(path), error=StateCorruptError, max_bytes=lim.local_json_max_bytes)
    except FileNotFoundError:
        return None
    except (OSError, EdgeRuntimeError) as exc:
        return {"error": f"{path} is unreadable: {getattr(exc, 'message', None) or exc}"}
    if not isinstance(doc, dict) or doc.get("schema") != LAST_SCHEMA or not isinstance(doc.get("models"), dict):
        return {"error": f"{path} is not a monitor report of schema {LAST_SCHEMA}"}
    if full:
        return doc
    models: dict[str, Any] = {}
    for name, m in doc["models"].items():
        if not isinstance(m, dict):
            continue
        raw = m.get("findings")
        findings: list[Any] = raw if isinstance(raw, list) else []
        models[str(name)] = {
            "state": m.get("state"),
            "version": m.get("version"),
            "findings": [
                {k: f.get(k) for k in ("rule", "status", "action", "message")}
                for f in findings
                if isinstance(f, dict) and f.get("status") not in ("ok", "off")
            ],
            "numbers": _numbers(findings),
        }
    with contextlib.suppress(TypeError, ValueError):
        return {"evaluated_at": doc.get("evaluated_at"), "rolled_back": int(doc.get("rolled_back") or 0),
                "models": models}
    return {"error": f"{path} is not a monitor report of schema {LAST_SCHEMA}"}  # pragma: no cover


def _number(v: Any) -> float | int | None:
    """A finite number from the untrusted report, else None (unknown)."""
    import math

    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    return v if math.isfinite(v) else None


def _numbers(findings: list[Any]) -> dict[str, Any]:
    """The last run's numbers (the metrics' gauges, :mod:`edge_runtime.metrics`): the newest complete minute's
    mean confidence (None with fewer than the minimum inferences), the rule thresholds, the error and
    wrong-answer rates over their windows (None with too few), the drift verdict and each feature's PSI/KS."""
    ev: dict[str, dict[str, Any]] = {}
    for f in findings:
        if isinstance(f, dict) and isinstance(f.get("rule"), str) and isinstance(f.get("evidence"), dict):
            ev.setdefault(f["rule"], {**f["evidence"], "_status": f.get("status")})
    conf, err, wrong, drift = (ev.get(k, {}) for k in ("confidence", "errors", "wrong", "drift"))
    features: dict[str, Any] = {}
    raw = drift.get("features")
    for feat in raw if isinstance(raw, list) else []:
        if isinstance(feat, dict) and isinstance(feat.get("feature"), str):
            features[feat["feature"][:64]] = {"psi": _number(feat.get("psi")),
                                              "ks_statistic": _number(feat.get("ks_statistic"))}
        if len(features) >= 64:
            break
    verdict = drift.get("_status")
    return {
        "confidence_mean": _number(conf.get("last_mean")),
        "confidence_n": _number(conf.get("last_n")),
        "confidence_threshold": _number(conf.get("threshold")),
        "confidence_low_minutes": _number(conf.get("current_run")),
        "error_rate": _number(err.get("rate")),
        "error_n": _number(err.get("n")),
        "error_rate_max": _number(err.get("max_rate")),
        "wrong_rate": _number(wrong.get("rate")),
        "wrong_n": _number(wrong.get("n")),
        "wrong_rate_max": _number(wrong.get("max_rate")),
        "drift": verdict if isinstance(verdict, str) else None,
        "drift_features": features,
    }

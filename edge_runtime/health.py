"""The device's health snapshot: everything ``playbooks/health.yml`` needs from one device, in one read.

Read-only (like ``edge-runtime status``): the twin (:func:`edge_runtime.facts.collect_facts`: per-model state,
host facts, the telemetry store's status, the monitor's last findings, self-rollbacks with their reasons) and a
summary of the telemetry store over a window: per model and version the inferences, errors, error rate
(against ground truth where feedback exists), p95 latency, mean top-1 confidence and a bounded per-minute
series, and the newest minute any model recorded. The fleet side (``plugin_utils/health.py``) judges it.

Time is the device's own (``collected_at_s`` and the minutes come from one clock), so the age of the newest
telemetry does not depend on the controller's clock.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from .facts import FactsSource, collect_facts

__all__ = ["SNAPSHOT_SCHEMA", "health_snapshot", "telemetry_summary"]

SNAPSHOT_SCHEMA = 1
#: the per-minute series kept per model and version (the newest minutes): bounded whatever the window
MAX_SERIES_POINTS = 60


def _round(x: float | None, nd: int = 4) -> float | None:
    return None if x is None else round(float(x), nd)


def telemetry_summary(root: Any, models: list[str], now: float, window_s: int, lookback_s: int) -> dict[str, Any]:
    """Per model and version the summary of the minutes in ``[now - window_s, now)``; ``newest_minute``: the
    newest minute of any model in ``[now - lookback_s, ...)`` (None: nothing that recent). Errors are reported,
    never raised (an unreadable store is a finding, not a failed health run)."""
    from .errors import EdgeRuntimeError
    from .telemetry._status import db_path
    from .telemetry.aggregate import MinuteAggregate, latency_quantile_ms
    from .telemetry.store import TelemetryStore

    out: dict[str, Any] = {"window_s": window_s, "models": {}, "newest_minute": None, "error": None}
    db = db_path(root)
    if not db.exists():
        return out
    store = TelemetryStore(db)
    try:
        newest: int | None = None
        for name in models:
            rows = store.minutes(name, since=now - max(window_s, lookback_s))
            if rows:
                newest = max(newest or rows[-1].minute, max(r.minute for r in rows))
            by_version: dict[str, list[MinuteAggregate]] = {}
            for r in rows:
                if r.minute >= now - window_s:
                    by_version.setdefault(r.version, []).append(r)
            versions: dict[str, Any] = {}
            for version, vrows in by_version.items():
                count = sum(r.count for r in vrows)
                errors = sum(r.errors for r in vrows)
                conf_n = sum(r.conf_n for r in vrows)
                fb_n = sum(r.feedback_n for r in vrows)
                fb_wrong = sum(r.feedback_wrong for r in vrows)
                p95 = latency_quantile_ms(vrows, 0.95)
                versions[version] = {
                    "minutes": len(vrows),
                    "inferences": count,
                    "errors": errors,
                    "error_rate": _round(errors / count) if count else None,
                    "feedback": fb_n,
                    "truth_error_rate": _round(fb_wrong / fb_n) if fb_n else None,
                    "mean_confidence": _round(sum(r.conf_sum for r in vrows) / conf_n) if conf_n else None,
                    # the upper bound of the latency bucket of the 95th percentile; None if it is the open bucket
                    "p95_latency_ms": p95 if p95 is not None and p95 != float("inf") else None,
                    "first_minute": vrows[0].minute,
                    "last_minute": vrows[-1].minute,
                    "series": [[r.minute, r.count, _round(r.mean_confidence),
                                _finite(latency_quantile_ms([r], 0.95))] for r in vrows[-MAX_SERIES_POINTS:]],
                }
            out["models"][name] = versions
        out["newest_minute"] = newest
    except EdgeRuntimeError as exc:
        out["error"] = exc.message
    finally:
        store.close()
    return out


def _finite(x: float | None) -> float | None:
    return None if x is None or x == float("inf") else x


def _quarantine(device: FactsSource, models: list[str]) -> dict[str, dict[str, str]]:
    from .errors import EdgeRuntimeError

    out: dict[str, dict[str, str]] = {}
    for name in models:
        try:
            bad = device.store.load(name).bad
        except EdgeRuntimeError:
            continue  # a corrupt state file is reported by the facts
        if bad:
            out[name] = {str(v): str(b.get("reason") or "") if isinstance(b, dict) else "" for v, b in bad.items()}
    return out


def _drift(device: FactsSource) -> dict[str, Any]:
    from ._monitor_record import read_last

    doc = read_last(device.root, full=True)
    out: dict[str, Any] = {}
    if not isinstance(doc, dict) or not isinstance(doc.get("models"), dict):
        return out
    for name, m in doc["models"].items():
        findings = m.get("findings") if isinstance(m, dict) else None
        for f in findings if isinstance(findings, list) else ():
            if not (isinstance(f, dict) and f.get("rule") == "drift" and isinstance(f.get("evidence"), dict)):
                continue
            feats = f["evidence"].get("features")
            out[str(name)] = {
                "version": f.get("version"), "verdict": f.get("status"),
                "features": [{k: x.get(k) for k in ("feature", "verdict", "psi", "ks_statistic", "p_value")}
                             for x in (feats if isinstance(feats, list) else ()) if isinstance(x, dict)][:64],
            }
    return out


def health_snapshot(device: FactsSource, *, window_s: int = 3600, lookback_s: int = 86400,
                    clock: Callable[[], float] = time.time) -> dict[str, Any]:
    """The twin plus the telemetry summary of ``device``, stamped with the device's clock."""
    facts = collect_facts(device)
    now = clock()
    models = sorted(n for n, m in facts["models"].items() if isinstance(m, dict))
    return {
        "schema": SNAPSHOT_SCHEMA,
        "collected_at_s": round(now, 3),
        "facts": facts,
        # why each quarantined version is quarantined (the facts list the versions only)
        "quarantine": _quarantine(device, models),
        # the monitor's last drift verdict per model with its per-feature numbers (the facts keep the message)
        "drift": _drift(device),
        "telemetry": telemetry_summary(device.root, models, now, window_s, lookback_s),
    }

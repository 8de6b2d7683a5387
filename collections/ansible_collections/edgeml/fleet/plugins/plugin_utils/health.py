# Copyright (c) edgeml maintainers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""The fleet's health: each device's status, decided once here, and whether the fleet is within its limits.

Status of a device, the first rule that applies decides (every finding is kept in ``reasons`` anyway):

1. ``unknown``      no snapshot of THIS run (unreachable, failed, a fact cache or an earlier run's answer); or
                    telemetry required (``health.require_telemetry``, default true) and none within the look-back,
                    or its newest minute older than ``health.telemetry_ttl_s`` (default 900 s; exactly the TTL
                    old is fresh, one second more is stale), or dated more than 60 s after the device's clock,
                    or the store could not be read; or the device's clock differs from the controller's by more
                    than ``health.max_clock_skew_s`` (default 300 s; exactly that much is within; its telemetry
                    age cannot be judged: a stopped clock makes old telemetry look fresh); or a snapshot of the
                    wrong shape (a field the decision reads has the wrong type: see :func:`shape_problem`).
                    Never healthy: what a device did not say is not known, and what it said malformed was not
                    said.
2. ``rolled_back``  a pinned version was rolled back on the device (its last operation rolled it back, e.g. the
                    monitor's self-rollback, with the reason and numbers) or is quarantined there.
3. ``degraded``     a model's state is corrupt or degraded; the monitor's last evaluation of the active version
                    has a breach, a drift or a ``cannot_roll_back`` finding; the monitor record or the telemetry
                    store reports an error.
4. ``out_of_sync``  the runtime's own install decision (``edge_runtime.decision.decide``) on the twin is not a
                    no-op, or the version has no passed post-install check (``decision.healthy``): exactly the
                    deploy's notion (``rollout.twin_in_sync``), the one owner of "in sync".
5. ``in_sync``      otherwise.

Limits (``models.yaml`` ``health``): the run fails when more devices than ``max_unknown`` / ``max_degraded`` /
``max_rolled_back`` / ``max_out_of_sync`` have that status (a count, or a percentage of the devices checked,
rounded down); defaults 0, 0, 0 and ``100%``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, TypeGuard

from ansible_collections.edgeml.fleet.plugins.plugin_utils.rollout import plan_pin

__all__ = ["DEFAULTS", "STATUSES", "device_status", "exceeded", "fleet_health", "policy", "shape_problem"]

STATUSES = ("in_sync", "out_of_sync", "degraded", "rolled_back", "unknown")
DEFAULTS: dict[str, Any] = {
    "telemetry_ttl_s": 900,
    "require_telemetry": True,
    "telemetry_window_s": 3600,
    "max_clock_skew_s": 300,
    "max_unknown": 0,
    "max_degraded": 0,
    "max_rolled_back": 0,
    "max_out_of_sync": "100%",
}
#: telemetry dated further than this after the device's own clock is not believed (a clock that jumped back)
FUTURE_SLACK_S = 60
#: monitor finding statuses that make a device degraded (``rolled_back`` is its own status)
DEGRADING = frozenset({"breach", "drift", "cannot_roll_back"})


def policy(plan: Mapping[str, Any]) -> dict[str, Any]:
    """The health settings of ``models.yaml`` (the plan's ``health``, schema-validated) over the defaults."""
    out = dict(DEFAULTS)
    out.update({k: v for k, v in (plan.get("health") or {}).items() if k in DEFAULTS})
    return out


def limit_count(limit: int | str, total: int) -> int:
    """A limit as a device count: ``5`` or ``"10%"`` of ``total`` (rounded down)."""
    if isinstance(limit, str) and limit.endswith("%"):
        return math.floor(int(limit[:-1]) * total / 100)
    return int(limit)


def _num(x: Any) -> float | None:
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) else None


def _m(x: Any) -> Mapping[str, Any]:
    """``x`` when it is a mapping, else an empty one (snapshots are untrusted input)."""
    return x if isinstance(x, Mapping) else {}


def _list(x: Any) -> list[Any]:
    """``x`` when it is a list, else an empty one."""
    return x if isinstance(x, list) else []


def _str(x: Any, limit: int = 1000) -> str | None:
    """``x`` when it is a string (cut at ``limit`` characters), else None (snapshots are untrusted input)."""
    return x[:limit] if isinstance(x, str) else None


def _clean(x: Any, depth: int = 3) -> Any:
    """Device-reported JSON made safe to report: finite numbers, bounded strings, lists and objects (NaN,
    infinities, deep or huge structures become None or are cut), so that no value of a hostile or broken device
    can break the JSON (``allow_nan=False``), the history or the charts."""
    if x is None or isinstance(x, bool):
        return x
    if isinstance(x, (int, float)):
        return x if math.isfinite(x) and abs(x) < 1e18 else None
    if isinstance(x, str):
        return x[:1000]
    if depth <= 0:
        return None
    if isinstance(x, (list, tuple)):
        return [_clean(v, depth - 1) for v in x[:100]]
    if isinstance(x, Mapping):
        return {str(k)[:200]: _clean(v, depth - 1) for k, v in list(x.items())[:100]}
    return None


_OPT_STR = (str, type(None))


def _optional(x: Any, types: tuple[type, ...]) -> bool:
    return x is None or isinstance(x, types)


def shape_problem(snap: Mapping[str, Any]) -> str | None:
    """What is malformed in a snapshot (a device is hostile input too), or None.

    Checks the type of every field the status decision and the report read (a wrong type there would either
    crash the whole fleet's report or be misread: ``"1.1.0" in "1.1.0-rc"`` is true). Absent and null fields are
    allowed: they say nothing, and the rules treat them as such.
    """
    from edge_runtime.decision import entry_problem

    facts = snap["facts"]
    models = facts.get("models")
    if not _optional(models, (Mapping,)):
        return "facts.models is not an object"
    for name, m in (models or {}).items():
        where = f"facts.models[{str(name)[:80]!r}]"
        if not _optional(m, (Mapping,)):
            return f"{where} is not an object"
        m = m or {}
        problem = entry_problem(m)  # what the install decision reads: its owner says
        if problem:
            return f"{where}.{problem}"
        for k in ("previous_version", "last_op", "last_result", "last_version", "degraded_reason"):
            if not _optional(m.get(k), _OPT_STR):
                return f"{where}.{k} is not a string"
    monitor = facts.get("monitor")
    if not _optional(monitor, (Mapping,)):
        return "facts.monitor is not an object"
    mm = (monitor or {}).get("models")
    if not _optional(mm, (Mapping,)):
        return "facts.monitor.models is not an object"
    for name, m in (mm or {}).items():
        if not _optional(m, (Mapping,)) or not _optional((m or {}).get("findings"), (list,)):
            return f"facts.monitor.models[{str(name)[:80]!r}] is not an object with a list of findings"
    for key in ("telemetry", "system"):
        if not _optional(facts.get(key), (Mapping,)):
            return f"facts.{key} is not an object"
    for key in ("telemetry", "quarantine", "drift"):
        if not _optional(snap.get(key), (Mapping,)):
            return f"{key} is not an object"
    for name, q in (snap.get("quarantine") or {}).items():
        if not _optional(q, (Mapping,)):
            return f"quarantine[{str(name)[:80]!r}] is not an object"
    tm = (snap.get("telemetry") or {}).get("models")
    if not _optional(tm, (Mapping,)) or not all(_optional(v, (Mapping,)) for v in (tm or {}).values()):
        return "telemetry.models is not an object of objects"
    return None


def _clock_problem(snap: Mapping[str, Any], pol: Mapping[str, Any]) -> str | None:
    """The device's clock against the controller's: ``collected_at_s`` (device) vs ``controller_received_s``
    (set by the controller's action plugin when the answer arrived). The answer travels after it was stamped,
    so a device clock is behind by its module run's duration at most; a skew beyond the limit either way makes
    every time the device reports unjudgeable. A snapshot without the controller's stamp (not collected by
    health.yml's action plugin) is not checked."""
    received = _num(snap.get("controller_received_s"))
    stamped = _num(snap.get("collected_at_s"))
    if received is None or stamped is None:
        return None
    skew = stamped - received
    if abs(skew) > pol["max_clock_skew_s"]:
        side = "ahead of" if skew > 0 else "behind"
        return (f"the device's clock is {abs(skew):.0f} s {side} the controller's (limit "
                f"{pol['max_clock_skew_s']} s): its telemetry's age cannot be judged; fix the device's time (NTP)")
    return None


def _telemetry_problem(snap: Mapping[str, Any], pol: Mapping[str, Any]) -> str | None:
    clock = _clock_problem(snap, pol)
    if clock:
        return clock
    tel = _m(snap.get("telemetry"))
    now = _num(snap.get("collected_at_s"))
    if tel.get("error"):
        return f"telemetry unreadable: {str(tel['error'])[:300]}"
    newest = _num(tel.get("newest_minute"))
    if newest is None:
        return "no telemetry recorded (no inference seen)" if pol["require_telemetry"] else None
    if now is None:
        return "the snapshot carries no collection time"
    age = now - newest
    if age < -FUTURE_SLACK_S:
        return f"newest telemetry is dated {-age:.0f} s after the device's clock (clock went back?)"
    if age > pol["telemetry_ttl_s"]:
        return f"newest telemetry is {age:.0f} s old (TTL {pol['telemetry_ttl_s']} s)"
    return None


def _answered(snap: Any) -> TypeGuard[Mapping[str, Any]]:
    """A snapshot that answered (a mapping with the device's facts); anything else is no answer."""
    return isinstance(snap, Mapping) and isinstance(snap.get("facts"), Mapping)


def device_status(entry: Mapping[str, Any], snap: Mapping[str, Any] | None, pol: Mapping[str, Any]) -> dict[str, Any]:
    """``{status, reasons: [...]}`` of one planned device from its snapshot of this run (None: no answer)."""
    return _status(entry, snap, pol, shape_problem(snap) if _answered(snap) else None)


def _status(entry: Mapping[str, Any], snap: Mapping[str, Any] | None, pol: Mapping[str, Any],
            malformed: str | None) -> dict[str, Any]:
    """:func:`device_status` with the snapshot's :func:`shape_problem` already known (checked once per device)."""
    # imported here, where the decision is made: loading the plugins needs no edge_runtime package
    from edge_runtime.decision import decide, healthy

    if not _answered(snap):
        return {"status": "unknown", "reasons": ["no answer from this device in this run"]}
    if malformed:
        return {"status": "unknown", "reasons": [f"malformed answer: {malformed}; what it says is not known"]}
    facts = snap["facts"]
    models = facts.get("models") or {}
    found: dict[str, list[str]] = {s: [] for s in STATUSES}
    problem = _telemetry_problem(snap, pol)
    if problem:
        found["unknown"].append(problem)
    for name, want in (entry.get("models") or {}).items():
        pin = str(want.get("version"))
        got = models.get(name)
        got = got if isinstance(got, Mapping) else None
        if got is not None:
            if got.get("last_result") == "rolled_back" and got.get("last_version") == pin:
                found["rolled_back"].append(f"{name} {pin} rolled back ({got.get('last_op')}): "
                                            f"{str(got.get('last_reason') or 'no reason recorded')[:300]}")
            elif pin in (got.get("bad_versions") or ()):
                why = ((snap.get("quarantine") or {}).get(name) or {}).get(pin) or "no reason recorded"
                found["rolled_back"].append(f"{name} {pin} is quarantined on the device: {str(why)[:300]}")
            if got.get("state") in ("corrupt", "degraded"):
                found["degraded"].append(f"{name}: state {got.get('state')}: "
                                         f"{str(got.get('degraded_reason') or got.get('error') or '')[:300]}")
        decision = decide(got, plan_pin(name, want, entry))
        if decision.action != "noop":
            found["out_of_sync"].append(f"{name}: {decision.reason}")
        elif not healthy(got, pin):
            found["out_of_sync"].append(f"{name} {pin}: no passed post-install check recorded")
    monitor = facts.get("monitor")
    if isinstance(monitor, Mapping):
        if monitor.get("error"):
            found["degraded"].append(f"monitor: {str(monitor['error'])[:300]}")
        for name, m in (monitor.get("models") or {}).items():
            active = (models.get(name) or {}).get("active_version") if isinstance(models.get(name), Mapping) else None
            if not isinstance(m, Mapping) or m.get("version") != active:
                continue  # a finding about a version no longer active is history, not health
            for f in m.get("findings") or ():
                if isinstance(f, Mapping) and f.get("status") in DEGRADING:
                    what = f.get("rule") if f.get("rule") == f.get("status") else f"{f.get('rule')} {f.get('status')}"
                    found["degraded"].append(f"{name} {active}: {what}: "
                                             f"{str(f.get('message') or '')[:300]}")
    tstat = facts.get("telemetry")
    if isinstance(tstat, Mapping) and tstat.get("state") == "error":
        err = tstat.get("last_error")
        msg = err.get("message") if isinstance(err, Mapping) else err
        found["degraded"].append(f"telemetry store: {str(msg or 'error')[:300]}")
    status = next((s for s in ("unknown", "rolled_back", "degraded", "out_of_sync") if found[s]), "in_sync")
    return {"status": status, "reasons": [r for s in ("unknown", "rolled_back", "degraded", "out_of_sync")
                                          for r in found[s]]}


def _device_row(host: str, entry: Mapping[str, Any], snap: Mapping[str, Any] | None,
                pol: Mapping[str, Any]) -> dict[str, Any]:
    malformed = shape_problem(snap) if _answered(snap) else None
    verdict = _status(entry, snap, pol, malformed)
    sm = _m(snap)
    if malformed:
        sm = {"collected_at_s": sm.get("collected_at_s")}  # report none of what a malformed answer says
    facts = _m(sm.get("facts"))
    twin_models = _m(facts.get("models"))
    tel = _m(sm.get("telemetry"))
    models = []
    for name, want in sorted((entry.get("models") or {}).items()):
        got = _m(twin_models.get(name))
        reported = _str(got.get("active_version"), 200)
        summary = _m(_m(tel.get("models")).get(name)).get(reported) if reported else None
        models.append({
            "model": name, "desired": want.get("version"), "reported": reported,
            "previous": _str(got.get("previous_version"), 200), "state": _str(got.get("state"), 200),
            "last_op": _str(got.get("last_op"), 200), "last_result": _str(got.get("last_result"), 200),
            "last_version": _str(got.get("last_version"), 200), "last_reason": _str(got.get("last_reason")),
            "telemetry": _summary(summary),
        })
    system = _m(facts.get("system"))
    drift = [{"model": str(name)[:200], "version": _str(d.get("version"), 200), "verdict": _str(d.get("verdict"), 200),
              "features": [_clean(f) for f in _list(d.get("features"))[:100]
                           if isinstance(f, Mapping)]}
             for name, d in sorted(_m(sm.get("drift")).items())[:100] if isinstance(d, Mapping)]
    now = _num(sm.get("collected_at_s"))
    newest = _num(tel.get("newest_minute"))
    age = None if now is None or newest is None else _num(round(now - newest, 1))
    received = _num(_m(snap).get("controller_received_s"))
    skew = None if now is None or received is None else _num(round(now - received, 1))
    return {
        "device": host, "group": entry.get("rollout_group"), "status": verdict["status"],
        "reasons": verdict["reasons"], "answered": isinstance(snap, Mapping),
        "collected_at_s": now,
        "telemetry_age_s": age,
        "clock_skew_s": skew,
        "models": models,
        "host": {k: _clean(system.get(k)) for k in (
            "uptime_s", "load_avg", "cpu_count", "cpu_busy_percent_since_boot", "memory", "disk", "temperature_c")},
        "drift": drift,
    }


def _count(x: Any) -> int | None:
    return x if isinstance(x, int) and not isinstance(x, bool) and 0 <= x < 1 << 62 else None


def _summary(s: Any) -> dict[str, Any] | None:
    """A model's telemetry summary as the report shows it: counts, finite numbers, at most 60 minutes of
    ``[minute, inferences, mean confidence, p95 ms]`` (a malformed value is null, a malformed minute dropped)."""
    if not isinstance(s, Mapping):
        return None
    out: dict[str, Any] = {k: v for k in ("inferences", "errors") if (v := _count(s.get(k))) is not None}
    out.update({k: _num(s.get(k)) for k in ("error_rate", "truth_error_rate", "mean_confidence", "p95_latency_ms")})
    out["last_minute"] = _count(s.get("last_minute"))
    out["series"] = [[p[0], _count(p[1]), _num(p[2]), _num(p[3])] for p in _list(s.get("series"))[-60:]
                     if isinstance(p, list) and len(p) == 4 and _count(p[0]) is not None and p[0] < 1 << 36]
    return out


def exceeded(counts: Mapping[str, int], total: int, pol: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The limits this fleet breaks: ``[{status, count, limit, allowed, message}]`` (empty: within limits)."""
    out = []
    for status in ("unknown", "rolled_back", "degraded", "out_of_sync"):
        limit = pol[f"max_{status}"]
        allowed = limit_count(limit, total)
        n = int(counts.get(status, 0))
        if n > allowed:
            out.append({"status": status, "count": n, "limit": limit, "allowed": allowed,
                        "message": f"{n} of {total} devices {status.replace('_', ' ')}, more than "
                                   f"max_{status} {limit!s} allows ({allowed})"})
    return out


def fleet_health(plan: Mapping[str, Any], snaps: Mapping[str, Any], run_id: str,
                 no_answer: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The health report of the planned devices from their snapshots of this run (``snaps``: host -> snapshot,
    already filtered to this run's id by the caller; ``no_answer``: host -> why it gave none, when known)."""
    pol = policy(plan)
    hosts = plan.get("hosts") or {}
    rows = [_device_row(h, hosts[h], snaps.get(h), pol) for h in sorted(hosts)]
    for r in rows:
        if not r["answered"] and (no_answer or {}).get(r["device"]):
            r["reasons"] = [f"{r['reasons'][0]} ({(no_answer or {})[r['device']]})"]
    counts = dict.fromkeys(STATUSES, 0)
    for r in rows:
        counts[r["status"]] += 1
    breaches = exceeded(counts, len(rows), pol)
    versions: dict[str, dict[str, dict[str, int]]] = {}
    for r in rows:
        for m in r["models"]:
            g = versions.setdefault(str(r["group"]), {}).setdefault(m["model"], {})
            key = m["reported"] or ("none" if r["answered"] else "unknown")
            g[key] = g.get(key, 0) + 1
    return {
        "schema": 1, "kind": "health", "run_id": run_id, "policy": pol, "total": len(rows), "counts": counts,
        "failed": bool(breaches), "breaches": breaches,
        "unreachable": [r["device"] for r in rows if not r["answered"]],
        "versions": versions, "devices": rows,
    }

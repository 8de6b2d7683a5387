"""A synthetic fleet's plan and health snapshots, shaped like the real ones (``edge_runtime.health.health_snapshot``
of a device, ``desired_state`` plan), for unit tests of the status decision and the reports and for
``bench/reports.py`` (10,000 devices). Deterministic per seed. The playbook test uses real devices instead.
"""

from __future__ import annotations

import random
from typing import Any

DIGEST = {"1.0.0": "sha256:" + "a" * 64, "1.1.0": "sha256:" + "b" * 64}
COUNTER = {"1.0.0": 1, "1.1.0": 2}
RUN_ID = "20261203T060000Z-0123abcd"
NOW = 1_796_277_600.0
GROUPS = ("line_a", "line_b", "lab")


def plan_entry(group: str, version: str, model: str = "defect-classifier") -> dict[str, Any]:
    return {"groups": [group], "rollout_group": group, "wave": 1,
            "models": {model: {"version": version, "digest": DIGEST[version], "release_counter": COUNTER[version]}}}


def twin_model(version: str | None, *, checked: bool = True, **extra: Any) -> dict[str, Any]:
    if version is None:
        return {"active_version": None, "state": "none", "kept_digests": {}, "bad_versions": []}
    return {"active_version": version, "previous_version": "1.0.0" if version != "1.0.0" else None,
            "digest": DIGEST[version], "release_counter": COUNTER[version], "highest_counter": COUNTER[version],
            "kept_digests": {v: DIGEST[v] for v in DIGEST if COUNTER[v] <= COUNTER[version]},
            "check_passed": checked, "state": "committed", "bad_versions": [], "corrupt_versions": [],
            "pending_version": None, "last_op": "install", "last_version": version, "last_result": "committed",
            "last_reason": None, **extra}


def summary(version: str, minute: float, *, conf: float = 0.9, p95: float = 5.0, n: int = 600,
            points: int = 10) -> dict[str, dict[str, Any]]:
    m0 = int(minute // 60) * 60
    return {version: {"minutes": points, "inferences": n, "errors": 1, "error_rate": round(1 / n, 4),
                      "feedback": 0, "truth_error_rate": None, "mean_confidence": conf, "p95_latency_ms": p95,
                      "first_minute": m0 - 60 * (points - 1), "last_minute": m0,
                      "series": [[m0 - 60 * (points - 1 - i), n // points, conf, p95] for i in range(points)]}}


def snapshot(models: dict[str, Any], *, newest: float | None = NOW - 30, tel: dict[str, Any] | None = None,
             monitor: dict[str, Any] | None = None, drift: dict[str, Any] | None = None,
             quarantine: dict[str, Any] | None = None, telemetry_state: str = "ok") -> dict[str, Any]:
    return {"schema": 1, "run_id": RUN_ID, "collected_at_s": NOW,
            "facts": {"schema": 1, "models": models, "monitor": monitor,
                      "telemetry": {"state": telemetry_state, "last_error": None},
                      "system": {"uptime_s": 1000.0, "load_avg": [0.1, 0.2, 0.3], "cpu_count": 4,
                                 "cpu_busy_percent_since_boot": 3.5,
                                 "memory": {"total_bytes": 1 << 30, "available_bytes": 1 << 29},
                                 "disk": {"path": "/", "total_bytes": 1 << 34, "free_bytes": 1 << 33,
                                          "used_percent": 50.0},
                                 "temperature_c": 41.0}},
            "telemetry": {"window_s": 3600, "models": tel or {}, "newest_minute": newest, "error": None},
            "quarantine": quarantine or {}, "drift": drift or {}}


def synthetic_fleet(n: int, seed: int = 1) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(plan, snapshots)`` of ``n`` devices: mostly in sync, with every other status mixed in."""
    rng = random.Random(seed)
    hosts: dict[str, Any] = {}
    snaps: dict[str, Any] = {}
    for i in range(n):
        group = GROUPS[i % 3]
        host = f"dev-{group}-{i:05d}"
        pin = "1.1.0" if group == "line_a" else "1.0.0"
        hosts[host] = plan_entry(group, pin)
        roll = rng.random()
        conf, p95 = round(rng.uniform(0.8, 0.97), 4), float(rng.choice([2, 3, 5, 10]))
        tel = {"defect-classifier": summary(pin, NOW - 60, conf=conf, p95=p95)}
        if roll < 0.02:
            continue  # unreachable
        if roll < 0.04:
            snaps[host] = snapshot({"defect-classifier": twin_model(pin)}, newest=NOW - 7200, tel={})
        elif roll < 0.06 and pin == "1.1.0":
            snaps[host] = snapshot({"defect-classifier": twin_model(
                "1.0.0", bad_versions=["1.1.0"], last_op="self_rollback", last_version="1.1.0",
                last_result="rolled_back", last_reason="mean confidence 0.52 < 0.75 for 5 minutes")},
                tel={"defect-classifier": summary("1.0.0", NOW - 60, conf=0.9)})
        elif roll < 0.09:
            feats = [{"feature": "pixel_mean", "verdict": "drift", "psi": round(rng.uniform(0.25, 0.6), 3),
                      "ks_statistic": 0.3, "p_value": 1e-9},
                     {"feature": "pixel_std", "verdict": "ok", "psi": 0.02, "ks_statistic": 0.02, "p_value": 0.5}]
            mon = {"evaluated_at": "2026-12-03T05:59:00Z", "rolled_back": 0, "models": {"defect-classifier": {
                "state": "committed", "version": pin, "findings": [
                    {"rule": "drift", "status": "drift", "action": "report",
                     "message": "data drift over the last 60 minutes: pixel_mean PSI > 0.25"}]}}}
            snaps[host] = snapshot({"defect-classifier": twin_model(pin)}, tel=tel, monitor=mon,
                                   drift={"defect-classifier": {"version": pin, "verdict": "drift", "features": feats}})
        elif roll < 0.12:
            snaps[host] = snapshot({"defect-classifier": twin_model("1.0.0")},
                                   tel={"defect-classifier": summary("1.0.0", NOW - 60, conf=conf, p95=p95)})
        else:
            snaps[host] = snapshot({"defect-classifier": twin_model(pin)}, tel=tel)
    groups = {g: {"hosts": sorted(h for h, e in hosts.items() if e["rollout_group"] == g)} for g in GROUPS}
    return {"hosts": hosts, "groups": groups, "health": {}}, snaps

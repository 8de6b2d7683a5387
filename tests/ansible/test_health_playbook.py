"""playbooks/health.yml end to end: real ansible-playbook runs against a simulated fleet.

A deployed fleet (line_a upgraded to 1.1.0) with real telemetry recorded through the runtime's store: dev-a1
rolled itself back (the monitor's self-rollback path, with its reason), dev-l1 reports data drift, dev-a3's
newest telemetry is two hours old, dev-b2 is unreachable. health.yml must report exactly that, list the
unreachable device, change nothing on any device, write the report set and history, and fail while the
limits of models.yaml are exceeded.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from tests.ansible.test_fleet_playbooks import DEVICES, Fleet, changed_hosts, new_fleet

pytest.importorskip("ansible_runner")
pytestmark = pytest.mark.slow

UNREACHABLE = Path(__file__).resolve().parent / "inventory" / "unreachable.yml"


def record(fleet: Fleet, host: str, model: str, version: str, ts: float, n: int = 20) -> None:
    from edge_runtime.telemetry._status import db_path
    from edge_runtime.telemetry.store import TelemetryStore

    with TelemetryStore(db_path(fleet.root / host), clock=lambda: ts) as store:
        for i in range(n):
            store.record(model, version, ts + i * 0.1, 2.0 + i % 3, True, "ok", 0.9)


def drift_finding(fleet: Fleet, host: str, model: str, version: str) -> None:
    from edge_runtime._monitor_record import write_last

    finding = {"rule": "drift", "model": model, "version": version, "status": "drift", "action": "report",
               "message": "data drift over the last 60 minutes: pixel_mean PSI 0.41 > 0.25",
               "evidence": {"features": [{"feature": "pixel_mean", "verdict": "drift", "psi": 0.41,
                                          "ks_statistic": 0.3, "p_value": 1e-9},
                                         {"feature": "pixel_std", "verdict": "ok", "psi": 0.02,
                                          "ks_statistic": 0.02, "p_value": 0.6}]}}
    assert write_last(fleet.root / host, {"schema": 1, "evaluated_at": "2026-12-03T06:00:00Z", "rolled_back": 0,
                                          "models": {model: {"state": "committed", "version": version,
                                                             "findings": [finding]}}}) is None


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Fleet:
    f = new_fleet(tmp_path_factory.mktemp("health"))
    assert f.run("deploy.yml").rc == 0
    f.write_models({"line_a": "1.1.0"})
    r = f.run("deploy.yml")
    assert r.rc == 0, r.stdout.read()
    from edge_runtime import Device

    res = Device(f.root / "dev-a1").self_rollback(
        "defect-classifier", "1.1.0", "mean confidence 0.52 < 0.75 for 5 consecutive minutes")
    assert res.active_version == "1.0.0" if hasattr(res, "active_version") else True
    now = time.time()
    for h in DEVICES:
        model = "defect-classifier-int8" if h.startswith("dev-l") else "defect-classifier"
        version = f.active(h, model)
        assert version
        record(f, h, model, version, now - 7200 if h == "dev-a3" else now - 30)
    drift_finding(f, "dev-l1", "defect-classifier-int8", "1.0.0")
    return f


def unchanged_view(fleet: Fleet) -> dict[str, Any]:
    """Every device file, except the -wal/-shm companions SQLite creates when it opens a WAL database to read it
    (the telemetry database itself is compared; a running recorder keeps those files anyway)."""
    return {k: v for k, v in fleet.snapshot().items() if not k.endswith(("telemetry.db-wal", "telemetry.db-shm"))}


def statuses(report: dict[str, Any]) -> dict[str, str]:
    return {d["device"]: d["status"] for d in report["devices"]}


def test_health_reports_each_device_and_fails_beyond_the_limits(fleet: Fleet) -> None:
    before = unchanged_view(fleet)
    r = fleet.run("health.yml", inventory=UNREACHABLE)
    out = r.stdout.read()
    assert r.rc != 0, out
    assert unchanged_view(fleet) == before, "health.yml changed a device"
    assert not changed_hosts(r)
    report = json.loads((fleet.reports / "health-latest.json").read_text())
    assert statuses(report) == {"dev-a1": "rolled_back", "dev-a2": "in_sync", "dev-a3": "unknown",
                                "dev-b1": "in_sync", "dev-b2": "unknown", "dev-l1": "degraded", "dev-l2": "in_sync"}
    assert report["unreachable"] == ["dev-b2"]
    rows = {d["device"]: d for d in report["devices"]}
    assert "mean confidence 0.52 < 0.75" in rows["dev-a1"]["reasons"][0]
    assert "TTL 900 s" in rows["dev-a3"]["reasons"][0]
    [why] = rows["dev-b2"]["reasons"]
    # every answer carries the controller's clock beside the device's (action plugin): local devices share it
    assert all(abs(r["clock_skew_s"]) < 60 for r in rows.values() if r["answered"]), rows
    assert rows["dev-b2"]["clock_skew_s"] is None
    assert why.startswith("no answer from this device in this run (unreachable: "), why
    assert [b["status"] for b in report["breaches"]] == ["unknown", "rolled_back", "degraded"]
    assert "2 of 7 devices unknown, more than max_unknown 0 allows (0)" in out
    md = (fleet.reports / "health-latest.md").read_text()
    assert md.startswith(f"# Fleet health {report['run_id']}: FAILED")
    assert md.index("dev-b2") < md.index("## Versions per group")
    run_files = sorted(p.name for p in fleet.reports.glob(f"health-{report['run_id']}.*"))
    assert run_files == [f"health-{report['run_id']}.{e}" for e in ("html", "json", "md")]
    # the history: one journal event per run, and the run's device rows in the database
    import sqlite3

    events = [json.loads(line) for line in (fleet.reports / "history" / "events.jsonl").read_text().splitlines()]
    assert [e["kind"] for e in events].count("health") == 1
    with sqlite3.connect(fleet.reports / "history" / "history.db") as db:
        got = dict(db.execute("SELECT device, status FROM device_health"))
        kinds = [k for (k,) in db.execute("SELECT kind FROM events ORDER BY line")]
    assert got == statuses(report)
    assert kinds[:2] == ["deploy", "deploy"]
    assert kinds[-1] == "health"


def test_limits_from_models_yaml_let_it_pass_and_check_mode_writes_nothing(fleet: Fleet) -> None:
    text = fleet.models.read_text()
    fleet.models.write_text(text + "health:\n  max_unknown: 2\n  max_rolled_back: \"15%\"\n  max_degraded: 1\n")
    try:
        n = len(list(fleet.reports.glob("health-*.json")))
        r = fleet.run("health.yml", inventory=UNREACHABLE, check=True)
        assert r.rc == 0, r.stdout.read()
        assert len(list(fleet.reports.glob("health-*.json"))) == n, "check mode wrote a report"
        r = fleet.run("health.yml", inventory=UNREACHABLE)
        assert r.rc == 0, r.stdout.read()
        report = json.loads((fleet.reports / "health-latest.json").read_text())
        assert report["breaches"] == []
        assert not report["failed"]
        # 15% of 7 devices is 1.05, rounded down: 1 rolled back device is allowed
        assert report["policy"]["max_rolled_back"] == "15%"
        fleet.models.write_text(text + "health:\n  max_unknown: -1\n")
        r = fleet.run("health.yml", inventory=UNREACHABLE)
        out = r.stdout.read()
        assert r.rc != 0
        assert "models.yaml:" in out, out[-2000:]
        assert "health.max_unknown" in out, out[-2000:]
    finally:
        fleet.models.write_text(text)

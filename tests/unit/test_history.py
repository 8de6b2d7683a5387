"""The history database (edge_runtime.history): migrations, the journal mirrored, concurrent writers, bad files."""

from __future__ import annotations

import json
import multiprocessing
import sqlite3
import sys
from pathlib import Path
from typing import Any

import pytest

from edge_runtime import history
from edge_runtime.audit import append_event, history_path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "collections"))

from ansible_collections.edgeml.fleet.plugins.plugin_utils.health import fleet_health

from tests.support.health_fleet import RUN_ID, synthetic_fleet


def report(n: int = 30, run_id: str = RUN_ID, seed: int = 1) -> dict[str, Any]:
    plan, snaps = synthetic_fleet(n, seed=seed)
    return fleet_health(plan, snaps, run_id)


def test_a_new_database_is_at_the_newest_schema_in_wal_mode(tmp_path: Path) -> None:
    with history.connect(tmp_path) as c:
        assert c.execute("PRAGMA user_version").fetchone()[0] == len(history.MIGRATIONS)
        assert c.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_migration_from_version_1_keeps_the_rows_and_adds_the_new_columns(tmp_path: Path) -> None:
    c = history.connect(tmp_path, upto=1)
    c.execute("INSERT INTO health_runs VALUES (1, 'r1', '2026-12-01T00:00:00Z', 0, 1, 1, 0, 0, 0, 0, 'ok')")
    c.execute("INSERT INTO device_health VALUES (1, 'dev-a1', 'line_a', 'in_sync', '[]')")
    assert c.execute("PRAGMA user_version").fetchone()[0] == 1
    c.close()
    history.record_health(tmp_path, report(), "2026-12-03T06:00:00Z", "health")
    with sqlite3.connect(history.db_path(tmp_path)) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == 2
        old = db.execute("SELECT status, versions, p95_latency_ms FROM device_health WHERE run=1").fetchall()
        assert old == [("in_sync", None, None)]
        assert db.execute("SELECT count(*) FROM device_health WHERE run=2").fetchone()[0] == 30
        assert db.execute("SELECT count(*) FROM health_runs").fetchone()[0] == 2


def test_a_database_of_a_newer_version_is_refused_untouched(tmp_path: Path) -> None:
    history.connect(tmp_path).close()
    path = history.db_path(tmp_path)
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA user_version=99")
    before = path.read_bytes()
    with pytest.raises(history.HistoryError, match=r"schema version 99, newer than this tool's 2: update"):
        history.connect(tmp_path)
    assert path.read_bytes() == before


def test_a_file_that_is_not_a_database_gets_a_clear_error(tmp_path: Path) -> None:
    path = history.db_path(tmp_path)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not a database at all" * 100)
    with pytest.raises(history.HistoryError, match=r"cannot be used: .*move it away"):
        history.connect(tmp_path)


def test_the_journal_is_mirrored_incrementally_and_a_torn_line_waits(tmp_path: Path) -> None:
    append_event(tmp_path, "deploy", "deploy 1", "deploy ok: 7 installed", {"counts": {"installed": 7}})
    append_event(tmp_path, "release", "dc 1.1.0", "published", {})
    assert history.sync_events(tmp_path) == 2
    assert history.sync_events(tmp_path) == 0
    with history_path(tmp_path).open("ab") as fh:
        fh.write(b'{"schema": 1, "kind": "deploy", "at": "x", "summ')  # a writer mid-append
    assert history.sync_events(tmp_path) == 0
    with history_path(tmp_path).open("ab") as fh:
        fh.write(b'ary": "torn"}\n')
    assert history.sync_events(tmp_path) == 1
    [last] = history.deploy_events(tmp_path)
    assert (last["line"], last["summary"]) == (3, "torn")
    # the database is an index: removed, it is rebuilt from the journal
    history.db_path(tmp_path).unlink()
    assert history.sync_events(tmp_path) == 3


def _writer(base: str, who: int, runs: int) -> None:
    for i in range(runs):
        rep = report(20, run_id=f"20261203T0600{who:02d}Z-{i:08x}", seed=who * 1000 + i)
        history.record_health(Path(base), rep, "2026-12-03T06:00:00Z", f"writer {who} run {i}")
        append_event(Path(base), "deploy", f"w{who} {i}", "deploy ok", {"i": i})


def test_two_processes_writing_at_once_lose_nothing_and_corrupt_nothing(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(str(tmp_path), w, 15)) for w in (1, 2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    history.sync_events(tmp_path)
    with sqlite3.connect(history.db_path(tmp_path)) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert db.execute("SELECT count(*) FROM health_runs").fetchone()[0] == 30
        assert db.execute("SELECT count(*) FROM device_health").fetchone()[0] == 30 * 20
        assert db.execute("SELECT count(*) FROM events").fetchone()[0] == 30
        lines = [json.loads(x) for x in history_path(tmp_path).read_text().splitlines()]
    assert sorted(e["subject"] for e in lines) == sorted(f"w{w} {i}" for w in (1, 2) for i in range(15))


def test_trend_returns_runs_oldest_first_with_device_numbers(tmp_path: Path) -> None:
    for i in range(3):
        history.record_health(tmp_path, report(12, run_id=f"20261203T06000{i}Z-0000000{i}", seed=i),
                              f"2026-12-03T06:0{i}:00Z", "health")
    t = history.health_trend(tmp_path, devices=["dev-line_a-00000"])
    assert [r["at"] for r in t["runs"]] == [f"2026-12-03T06:0{i}:00Z" for i in range(3)]
    assert len(t["devices"]["dev-line_a-00000"]) == 3

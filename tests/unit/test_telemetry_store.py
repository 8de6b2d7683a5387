"""The telemetry store: round trip, bounds (cap, retention), and the failing-disk rules (issue 9, section 2)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from edge_runtime.device import DeviceConfig
from edge_runtime.errors import ConfigError
from edge_runtime.telemetry._status import db_path, file_bytes, telemetry_facts
from edge_runtime.telemetry.config import MIN_MAX_BYTES, TelemetryConfig
from edge_runtime.telemetry.store import TelemetryError, TelemetryStore

T0 = 1_800_000_000.0  # a multiple of 60
EDGES = [-1e9, 0.2, 0.4, 0.6, 0.8, 1e9]


class Clock:
    def __init__(self, t: float = T0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def make(tmp_path: Path, clock: Clock | None = None, **cfg: object) -> TelemetryStore:
    settings: dict[str, object] = {"flush_interval_s": 3600.0}
    settings.update(cfg)
    store = TelemetryStore(db_path(tmp_path), TelemetryConfig.from_mapping(settings), clock=clock or Clock())
    store.register_features("m", "1.0.0", {"pixel_mean": EDGES})
    return store


def test_round_trip_counts_every_inference_once_per_minute(tmp_path: Path) -> None:
    clock = Clock()
    with make(tmp_path, clock) as store:
        for i in range(150):  # 2.5 minutes at 1 per second
            clock.t = T0 + i
            ok = i % 10 != 0
            store.record("m", "1.0.0", clock.t, 0.3, ok, "good" if i % 2 else "defect", 0.9, {"pixel_mean": i / 150})
        store.feedback("m", "1.0.0", T0 + 149, wrong=True)
        assert store.flush()
        rows = store.minutes("m")
        assert [r.minute for r in rows] == [T0, T0 + 60, T0 + 120]
        assert [r.count for r in rows] == [60, 60, 30]
        assert sum(r.errors for r in rows) == 15
        assert sum(r.conf_n for r in rows) == 135
        assert rows[-1].feedback_n == 1
        assert rows[-1].feedback_wrong == 1
        assert sum(sum(r.features["pixel_mean"]) for r in rows) == 150
        assert rows[0].features["pixel_mean"] == [30, 30, 0, 0, 0]  # i / 150 for i < 60
        assert store.minutes("m", since=T0 + 60, until=T0 + 120)[0].minute == T0 + 60
        assert store.minutes("m", version="9.9.9") == []
        assert store.minutes("other") == []
        xs = store.samples("m", "1.0.0", "pixel_mean")
        assert len(xs) == 3 * 32 - 2
        assert xs.dtype == np.float64
        assert len(store.samples("m", "1.0.0", "pixel_mean", since=T0 + 120)) == 30
        status = store.status()
        assert status["recorded"] == 150
        assert status["flushed"] == 151
        assert status["dropped"] == 0


def test_flushes_of_one_minute_merge_and_a_second_process_adds_to_it(tmp_path: Path) -> None:
    clock = Clock(T0 + 5)
    with make(tmp_path, clock) as store:
        for _ in range(3):
            for _ in range(10):
                store.record("m", "1.0.0", clock.t, 1.0, True, "good", 0.5, {"pixel_mean": 0.5})
            store.flush()
    with make(tmp_path, clock) as again:  # a restarted application, same minute
        again.record("m", "1.0.0", clock.t, 1.0, True, "good", 0.5, {"pixel_mean": 0.1})
        again.flush()
        (row,) = again.minutes("m")
        assert row.count == 31
        assert row.conf_sum == pytest.approx(15.5)
        assert row.features["pixel_mean"] == [1, 0, 30, 0, 0]
        xs = again.samples("m", "1.0.0", "pixel_mean")
        assert len(xs) == 31
        assert np.count_nonzero(np.isclose(xs, 0.1)) == 1


def test_non_finite_values_are_errors_and_counted_apart_never_confidences(tmp_path: Path) -> None:
    with make(tmp_path) as store:
        store.record("m", "1.0.0", T0, 1.0, True, "good", float("nan"), {"pixel_mean": float("inf")})
        store.record("m", "1.0.0", T0, 1.0, True, "good", 0.8, {"pixel_mean": float("nan")})
        store.flush()
        (row,) = store.minutes("m")
        assert row.errors == 1
        assert row.conf_n == 1
        assert row.conf_sum == 0.8
        assert row.features_nonfinite == {"pixel_mean": 2}
        assert sum(row.features["pixel_mean"]) == 0
        assert len(store.samples("m", "1.0.0", "pixel_mean")) == 0


def test_values_outside_the_edges_land_in_the_end_bins(tmp_path: Path) -> None:
    with make(tmp_path) as store:
        for v in (-5e9, 0.2, 0.19999, 0.8, 5e9):
            store.record("m", "1.0.0", T0, 1.0, True, "good", 0.8, {"pixel_mean": v, "unknown_feature": 1.0})
        store.flush()
        assert store.minutes("m")[0].features == {"pixel_mean": [2, 1, 0, 0, 2]}


def test_the_reservoir_of_a_minute_is_bounded_and_uniform(tmp_path: Path) -> None:
    with make(tmp_path, samples_per_minute=100) as store:
        for i in range(10_000):
            store.record("m", "1.0.0", T0, 1.0, True, "good", 0.8, {"pixel_mean": i / 10_000})
            if i % 2500 == 0:
                store.flush()
        store.flush()
        xs = store.samples("m", "1.0.0", "pixel_mean")
        assert len(xs) == 100
        assert 0.35 < float(np.mean(xs)) < 0.65  # a sample of the whole minute, not of its start


def test_samples_returns_at_most_max_samples(tmp_path: Path) -> None:
    with make(tmp_path, samples_per_minute=50, max_samples=120) as store:
        for minute in range(5):
            for i in range(50):
                store.record("m", "1.0.0", T0 + 60 * minute, 1.0, True, "good", 0.8, {"pixel_mean": i / 50})
        store.flush()
        a, b = store.samples("m", "1.0.0", "pixel_mean"), store.samples("m", "1.0.0", "pixel_mean")
        assert len(a) == 120
        assert np.array_equal(a, b)


def test_retention_deletes_old_minutes(tmp_path: Path) -> None:
    clock = Clock()
    with make(tmp_path, clock, retention_days=1 / 24) as store:  # one hour
        for minute in range(0, 180, 10):
            clock.t = T0 + 60 * minute
            store.record("m", "1.0.0", clock.t, 1.0, True, "good", 0.8, {"pixel_mean": 0.5})
            store.flush()
        minutes = [r.minute for r in store.minutes("m")]
        assert minutes[0] >= clock.t - 3600
        assert minutes[-1] == clock.t
        assert len(store.samples("m", "1.0.0", "pixel_mean")) == len(minutes)


def test_a_tiny_cap_is_never_exceeded_after_a_flush(tmp_path: Path) -> None:
    cap = MIN_MAX_BYTES
    with make(tmp_path, max_bytes=cap, samples_per_minute=64) as store:
        rng = np.random.default_rng(1)
        for minute in range(150):
            for v in rng.random(70):
                store.record("m", "1.0.0", T0 + 60 * minute, 1.0, True, f"l{minute % 7}", 0.8, {"pixel_mean": v})
            store.flush()
            assert file_bytes(store.path) <= cap, minute
        rows = store.minutes("m")
        assert rows
        assert rows[-1].minute == T0 + 60 * 149
        assert len(rows) < 150
        assert store.status()["dropped"] == 0


def test_a_corrupt_database_is_moved_aside_and_a_fresh_one_takes_the_batch(tmp_path: Path) -> None:
    path = db_path(tmp_path)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"this is not a database" * 500)
    with make(tmp_path) as store:
        store.record("m", "1.0.0", T0, 1.0, True, "good", 0.8, {"pixel_mean": 0.5})
        assert store.flush()
        assert store.minutes("m")[0].count == 1
        aside = list(path.parent.glob("telemetry.db.corrupt-*"))
        assert len(aside) == 1
        assert aside[0].read_bytes().startswith(b"this is not")
        status = store.status()
        assert status["errors"]["corrupt"]["count"] == 1
        assert status["dropped"] == 0
        assert "moved aside" in status["errors"]["corrupt"]["message"]
        assert status["moved_aside"][0].startswith(aside[0].name)
        assert status["last_error"] is None  # the fresh database took the batch
    facts = telemetry_facts(tmp_path)
    assert facts["state"] == "ok"
    assert facts["errors"]["corrupt"]["count"] == 1


def test_a_database_corrupted_while_open_is_replaced_at_the_next_flush(tmp_path: Path) -> None:
    with make(tmp_path) as store:
        store.record("m", "1.0.0", T0, 1.0, True, "good", 0.8, {"pixel_mean": 0.5})
        store.flush()
        store._close_writer()  # the next flush reopens (as after a restart); the file is now garbage
        data = bytearray(store.path.read_bytes())
        data[0:100] = b"\xff" * 100
        store.path.write_bytes(bytes(data))
        store.path.with_name("telemetry.db-wal").unlink(missing_ok=True)
        with pytest.raises(TelemetryError, match="cannot be read"):
            TelemetryStore(store.path).minutes("m")
        store.record("m", "1.0.0", T0 + 60, 1.0, True, "good", 0.8, {"pixel_mean": 0.5})
        assert store.flush()
        assert [r.minute for r in store.minutes("m")] == [T0 + 60]


def test_a_locked_database_drops_the_batch_counts_it_and_recovers(tmp_path: Path) -> None:
    with make(tmp_path, busy_timeout_ms=50) as store:
        store.record("m", "1.0.0", T0, 1.0, True, "good", 0.8, {"pixel_mean": 0.5})
        store.flush()
        other = sqlite3.connect(store.path, isolation_level=None)
        other.execute("BEGIN EXCLUSIVE")
        for _ in range(3):
            store.record("m", "1.0.0", T0, 1.0, True, "good", 0.8, {"pixel_mean": 0.5})
        assert not store.flush()
        status = store.status()
        assert status["dropped"] == 3
        assert status["errors"]["locked"]["count"] == 1
        store.record("m", "1.0.0", T0, 1.0, True, "good", 0.8, {"pixel_mean": 0.5})  # inference goes on
        other.execute("ROLLBACK")
        other.close()
        assert store.flush()
        assert store.minutes("m")[0].count == 2
        assert json.loads((store.path.parent / "status.json").read_text())["dropped"] == 3


def test_a_writer_that_cannot_keep_up_drops_records_instead_of_growing(tmp_path: Path) -> None:
    with make(tmp_path, max_pending_minutes=3) as store:
        for minute in range(5):
            store.record("m", "1.0.0", T0 + 60 * minute, 1.0, True, "good", 0.8, {"pixel_mean": 0.5})
        status = store.status()
        assert status["recorded"] == 3
        assert status["dropped"] == 2
        assert status["pending_minutes"] == 3
        assert "backlog" in status["errors"]


def test_findings_are_listed_once_with_their_count(tmp_path: Path) -> None:
    with make(tmp_path) as store:
        for _ in range(3):
            store.note("feedback_unknown", "feedback for an unknown prediction id")
        (finding,) = store.status()["findings"]
        assert finding["count"] == 3
        assert finding["kind"] == "feedback_unknown"


def test_reading_a_store_that_does_not_exist_is_empty_and_creates_nothing(tmp_path: Path) -> None:
    store = TelemetryStore(db_path(tmp_path))
    assert store.minutes("m") == []
    assert len(store.samples("m", "1", "f")) == 0
    store.close()
    assert not (tmp_path / "telemetry").exists()
    assert telemetry_facts(tmp_path)["state"] == "none"


@pytest.mark.parametrize(
    ("settings", "problem"),
    [
        ({"max_bytes": MIN_MAX_BYTES - 1}, "max_bytes"),
        ({"max_bytes": True}, "max_bytes"),
        ({"retention_days": 0}, "retention_days"),
        ({"flush_interval_s": float("nan")}, "flush_interval_s"),
        ({"samples_per_minute": -1}, "samples_per_minute"),
        ({"max_samples": 0}, "max_samples"),
        ({"enabled": "yes"}, "enabled"),
        ({"colour": 1}, "unknown"),
    ],
)
def test_bad_telemetry_settings_are_refused_when_the_config_loads(settings: dict[str, object], problem: str) -> None:
    with pytest.raises(ConfigError, match=problem):
        DeviceConfig(architecture="x86_64", telemetry=settings).validate()


def test_settings_at_their_limits_are_accepted() -> None:
    cfg = DeviceConfig(architecture="x86_64", telemetry={"max_bytes": MIN_MAX_BYTES, "samples_per_minute": 0})
    cfg.validate()
    assert cfg.telemetry_config().max_bytes == MIN_MAX_BYTES
    assert DeviceConfig(architecture="x86_64").telemetry_config() == TelemetryConfig()


def test_a_clock_that_goes_backwards_files_records_under_earlier_minutes_and_loses_none(tmp_path: Path) -> None:
    clock = Clock(T0 + 600)
    with make(tmp_path, clock) as store:
        for _ in range(5):
            store.record("m", "1.0.0", clock.t, 1.0, True, "good", 0.8, {"pixel_mean": 0.5})
        store.flush()
        clock.t = T0 - 7200  # an NTP correction back by two hours
        for _ in range(3):
            store.record("m", "1.0.0", clock.t, 1.0, True, "good", 0.8, {"pixel_mean": 0.5})
        store.flush()
        clock.t = T0 + 601  # and forward again, into the minute already stored
        store.record("m", "1.0.0", clock.t, 1.0, True, "good", 0.8, {"pixel_mean": 0.5})
        store.flush()
        rows = store.minutes("m")
        assert [(r.minute, r.count) for r in rows] == [(T0 - 7200, 3), (T0 + 600, 6)]
        assert store.status()["dropped"] == 0


def test_init_stores_telemetry_settings_keeps_them_on_reinit_and_refuses_bad_ones(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from edge_runtime.cli import main as cli
    from tests.support.keys import make_keypair

    key = make_keypair(tmp_path / "keys", "k").public_path
    root = tmp_path / "dev"
    base = ["--root", str(root), "init", "--trusted-key", str(key)]
    assert cli([*base, "--telemetry-setting", "max_bytes=65536", "--telemetry-setting", "retention_days=2"]) == 0
    config = json.loads((root / "config.json").read_text())
    assert config["telemetry"] == {"max_bytes": 65536, "retention_days": 2}
    assert cli(base) == 0  # a re-init without the option keeps them
    assert json.loads((root / "config.json").read_text())["telemetry"] == config["telemetry"]
    before = (root / "config.json").read_bytes()
    capsys.readouterr()
    assert cli([*base, "--telemetry-setting", f"max_bytes={MIN_MAX_BYTES - 1}"]) == 2
    assert "max_bytes" in capsys.readouterr().err
    assert cli([*base, "--telemetry-setting", "colour=blue"]) == 2
    assert "unknown --telemetry-setting: 'colour'" in capsys.readouterr().err
    assert (root / "config.json").read_bytes() == before


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("extra", '{"f":{"pixel_mean":[1,2.5]},"n":{},"l":{}}'),  # a count that is not an integer
        ("extra", '{"f":{},"n":{},"l":{"good":-1}}'),  # a negative count
        ("extra", '{"f":{},"n":{},"l":{}}},{"f":{}'),  # JSON that would shift the rows of a joined parse
        ("extra", '{"f":{"pixel_mean":NaN},"n":{},"l":{}}'),
        ("latency", b"\x00" * 7),
        ("conf_sum", "inf"),
        ("conf_sum", "not a number"),
        ("count", -3),
    ],
)
def test_a_stored_row_that_is_not_a_minute_is_a_clear_error_for_readers_and_replaced_by_the_writer(
    tmp_path: Path, column: str, value: object
) -> None:
    with make(tmp_path) as store:
        for minute in range(3):
            store.record("m", "1.0.0", T0 + 60 * minute, 1.0, True, "good", 0.8, {"pixel_mean": 0.5})
        store.flush()
        conn = sqlite3.connect(store.path, isolation_level=None)
        value = float("inf") if value == "inf" else value
        conn.execute(f"UPDATE minutes SET {column}=? WHERE minute=?", (value, T0 + 60))  # noqa: S608 - test
        conn.close()
        with pytest.raises(TelemetryError, match="unreadable"):
            store.minutes("m")
        store.record("m", "1.0.0", T0 + 60, 1.0, True, "good", 0.8, {"pixel_mean": 0.5})
        assert store.flush()  # the writer replaces the row it cannot merge into, and says so
        assert [r.count for r in store.minutes("m")] == [1, 1, 1]
        assert any(f["kind"] == "bad_row" for f in store.status()["findings"])


def test_a_database_of_another_schema_is_refused_by_readers_and_moved_aside_by_the_writer(tmp_path: Path) -> None:
    path = db_path(tmp_path)
    path.parent.mkdir(parents=True)
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE minutes (x)")
    conn.execute("PRAGMA user_version=99")
    conn.close()
    with pytest.raises(TelemetryError, match="unknown schema version 99"):
        TelemetryStore(path).minutes("m")
    with make(tmp_path) as store:
        store.record("m", "1.0.0", T0, 1.0, True, "good", 0.8, {"pixel_mean": 0.5})
        assert store.flush()
        assert store.minutes("m")[0].count == 1
        assert "unknown schema version 99" in store.status()["moved_aside"][0]


@pytest.mark.parametrize("content", [b"{not json", b"[1, 2]", b"{" + b'"a":' * 40_000 + b"1}", b"\xff\xfe"])
def test_a_damaged_status_file_is_unknown_in_the_facts_never_healthy(tmp_path: Path, content: bytes) -> None:
    with make(tmp_path) as store:
        store.record("m", "1.0.0", T0, 1.0, True, "good", 0.8, {"pixel_mean": 0.5})
    status = tmp_path / "telemetry" / "status.json"
    status.write_bytes(content)
    facts = telemetry_facts(tmp_path)
    assert facts["state"] == "unknown"
    assert facts["size_bytes"] > 0
    status.unlink()
    assert telemetry_facts(tmp_path)["state"] == "unknown"  # a database without its status is not "none"

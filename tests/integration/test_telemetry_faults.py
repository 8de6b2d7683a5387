"""The telemetry store under a failing process and a failing disk (issue 9, sections 2 and 6): a SIGKILL
mid-run loses at most the last flush interval and never corrupts the store; a full disk drops and counts
records while inference goes on."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from edge_runtime.serve import Predictor
from edge_runtime.telemetry._status import db_path, telemetry_facts
from edge_runtime.telemetry.store import TelemetryStore
from tests.support.disks import fill, small_tmpfs
from tests.support.factory import DEMO_MODELS, MODEL, REPO, Release

X = np.asarray(np.load(DEMO_MODELS / MODEL / "1.0.0" / "golden.npz")["inputs"][0], dtype=np.float32)

#: predicts in a loop; after every flush it prints "<predictions so far> <records committed>"
CHILD = """
import sys
import threading
import numpy as np
from edge_runtime.serve import Predictor
x = np.load(sys.argv[2])["inputs"][0]
p = Predictor(sys.argv[1], "defect-classifier")
n, last = 0, -1
while True:
    p.predict(x)
    n += 1
    if n % 20 == 0:
        flushed = p.store.status()["flushed"]
        if flushed != last:
            last = flushed
            print(n, flushed, flush=True)
"""


def run_and_kill(root: Path, flushes: int) -> tuple[int, int]:
    """Start the child, SIGKILL it after ``flushes`` committed flushes; the last line it printed."""
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(root), str(DEMO_MODELS / MODEL / "1.0.0" / "golden.npz")],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=REPO,
    )
    try:
        assert proc.stdout is not None
        seen = 0
        last = (0, 0)
        deadline = time.monotonic() + 60
        while seen < flushes and time.monotonic() < deadline:
            line = proc.stdout.readline()
            assert line, "the child died before it was killed"
            n, flushed = (int(v) for v in line.split())
            if flushed:
                seen += 1
                last = (n, flushed)
        assert seen == flushes, "the child did not flush in time"
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    assert proc.returncode == -signal.SIGKILL
    return last


def stored_count(root: Path) -> int:
    with TelemetryStore(db_path(root)) as store:
        return sum(r.count for r in store.minutes(MODEL))


def test_sigkill_mid_run_loses_at_most_the_last_interval_and_never_corrupts_the_store(
    release: Release, tmp_path: Path
) -> None:
    dev = release.device(tmp_path / "dev", telemetry={"flush_interval_s": 0.05})
    dev.install(str(release.bundle("1.0.0")))
    before = 0
    for flushes in (3, 5, 8):  # killed at different points of its flush cycle
        _, committed = run_and_kill(dev.root, flushes)
        conn = sqlite3.connect(db_path(dev.root))
        try:
            assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        finally:
            conn.close()
        now = stored_count(dev.root)
        # everything the child saw committed is there; only what it recorded after that may be lost
        assert now >= before + committed
        before = now
    with Predictor(dev.root, MODEL) as p:  # the store goes on after the kills
        assert p.predict(X).ok
        assert p.store is not None
        assert p.store.flush()
    assert stored_count(dev.root) == before + 1


def test_a_full_disk_drops_and_counts_records_and_inference_goes_on(release: Release, tmp_path: Path) -> None:
    with small_tmpfs(tmp_path / "mnt", "8m") as mnt:
        dev = release.device(mnt / "dev", telemetry={"flush_interval_s": 3600})
        dev.install(str(release.bundle("1.0.0")))
        with Predictor(dev.root, MODEL) as p:
            store = p.store
            assert store is not None
            assert p.predict(X).ok
            assert store.flush()
            filler = fill(mnt)
            results = [p.predict(X) for _ in range(100)]
            assert all(r.ok for r in results)
            assert not store.flush()
            status = store.status()
            assert status["dropped"] == 100
            assert status["errors"]["full"]["count"] == 1
            assert status["last_error"]["kind"] == "full"
            filler.unlink()
            assert p.predict(X).ok
            assert store.flush()
            assert sum(r.count for r in store.minutes(MODEL)) == 2
            status = store.status()
            assert status["errors"]["full"]["count"] == 1
            assert status["last_error"] is None
        facts = dev.write_facts()["telemetry"]  # what Ansible reads (ansible_local / edge_runtime facts)
        assert facts == telemetry_facts(dev.root)
        assert facts["dropped"] == 100
        assert facts["errors"]["full"]["count"] == 1
        assert facts["state"] == "ok"  # healthy again; the error stays listed once with its count


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_a_damaged_database_is_moved_aside_and_predictions_go_on(
    release: Release, tmp_path: Path, damage: str
) -> None:
    dev = release.device(tmp_path / "dev", telemetry={"flush_interval_s": 3600})
    dev.install(str(release.bundle("1.0.0")))
    with Predictor(dev.root, MODEL) as p:
        assert p.predict(X).ok
        assert p.store is not None
        assert p.store.flush()
    db = db_path(dev.root)
    data = db.read_bytes()
    db.write_bytes(os.urandom(len(data)) if damage == "garbage" else data[: len(data) // 3])
    db.with_name(db.name + "-wal").unlink(missing_ok=True)
    with Predictor(dev.root, MODEL) as p:
        assert all(p.predict(X).ok for _ in range(5))
        assert p.store is not None
        assert p.store.flush()
        assert sum(r.count for r in p.store.minutes(MODEL)) == 5
        assert p.store.status()["errors"]["corrupt"]["count"] == 1
    assert len(list(db.parent.glob("telemetry.db.corrupt-*"))) == 1


def test_a_writer_blocked_on_a_lock_never_stalls_inference(release: Release, tmp_path: Path) -> None:
    dev = release.device(tmp_path / "dev", telemetry={"flush_interval_s": 3600, "busy_timeout_ms": 20_000})
    dev.install(str(release.bundle("1.0.0")))
    with Predictor(dev.root, MODEL) as p:
        store = p.store
        assert store is not None
        assert p.predict(X).ok
        assert store.flush()
        other = sqlite3.connect(db_path(dev.root), isolation_level=None)
        other.execute("BEGIN EXCLUSIVE")
        assert p.predict(X).ok
        flusher = threading.Thread(target=store.flush)
        flusher.start()  # waits up to 20 s for the lock
        try:
            time.sleep(0.2)
            assert flusher.is_alive()
            results = [p.predict(X) for _ in range(50)]  # while the writer waits
            assert flusher.is_alive()  # none of them waited for it
            assert all(r.ok for r in results)
        finally:
            other.execute("ROLLBACK")
            other.close()
            flusher.join(timeout=30)
        assert store.flush()
        assert sum(r.count for r in store.minutes(MODEL)) == 52

"""The device-side monitor on real device roots: real signed demo bundles installed, the rules evaluated at an
injected time (no test sleeps through real minutes), the self-rollback through the device's persisted rollback
path, the findings in ``status`` and the facts file, one monitor per root, and a bounded wait for the lock.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from edge_runtime._monitor_run import monitor_lock, run_once
from edge_runtime.cli import main as cli
from edge_runtime.device import Device
from edge_runtime.errors import LockedError, RollbackError
from edge_runtime.monitor import minute_floor
from edge_runtime.telemetry._status import db_path
from edge_runtime.telemetry.store import TelemetryStore
from tests.support.attacks import active_version, clone_device, corrupt_file, installed_device, model_state
from tests.support.factory import MODEL, Release

REASON = "self-rollback: mean confidence 0.61 < 0.75 for 5 consecutive minutes (min 20 inferences/min)"


def activated_at(dev: Device, version: str) -> float:
    from edge_runtime._monitor_record import parse_time as _epoch

    t = _epoch(model_state(dev.root)["versions"][version]["activated_at"])
    assert t is not None
    return t


def write_minutes(dev: Device, version: str, start: int, means: list[float], n: int = 20) -> float:
    """Record ``n`` inferences per minute from ``start`` through the real telemetry store, with the given mean
    confidences, at injected times; returns a ``now`` at which those minutes are all complete."""
    store = TelemetryStore(db_path(dev.root), dev.config.telemetry_config())
    for i, mean in enumerate(means):
        for j in range(n):
            store.record(MODEL, version, start + 60 * i + 1 + j * 0.5, 0.4, True, "ok", mean)
    store.close()  # commits what is pending
    return start + 60 * len(means) + 1


@pytest.fixture(scope="module")
def template(release: Release, tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("monitor-templates")
    return installed_device(release, base / "two", [release.bundle("1.0.0"), release.bundle("1.1.0")]).root


@pytest.fixture
def device(template: Path, tmp_path: Path) -> Device:
    """1.0.0 then 1.1.0 committed: 1.1.0 active, 1.0.0 previous."""
    return clone_device(template, tmp_path / "dev")


def json_cli(root: Path, *args: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, dict[str, Any]]:
    capsys.readouterr()
    rc = cli(["--root", str(root), "--json", *args])
    return rc, json.loads(capsys.readouterr().out)


def test_five_low_minutes_roll_the_device_back_by_itself(device: Device, capsys: pytest.CaptureFixture[str]) -> None:
    t110 = activated_at(device, "1.1.0")
    start = minute_floor(t110) + 60
    now = write_minutes(device, "1.1.0", start, [0.61] * 5)

    report = run_once(device, now=now)

    assert report["rolled_back"] == 1
    assert report["models"][MODEL]["state"] == "rolled_back"
    assert active_version(device) == "1.0.0"
    st = model_state(device.root)
    assert st["active"] == "1.0.0"
    assert st["pending"] is None
    assert st["bad"]["1.1.0"]["reason"] == REASON  # quarantined like a failed install, with the numbers
    assert "1.1.0" not in st["versions"]
    assert not device.version_dir(MODEL, "1.1.0").exists()
    assert st["last"]["op"] == "self_rollback"
    assert st["last"]["result"] == "rolled_back"
    assert st["last"]["evidence"]["rule"] == "confidence"
    assert st["last"]["evidence"]["mean_confidence"] == pytest.approx(0.61)
    # the version rolled back to counts its minutes from its re-activation on
    assert activated_at(device, "1.0.0") >= t110 > activated_at(device, "1.0.0") - 600

    rc, status = json_cli(device.root, "status", capsys=capsys)
    assert rc == 0
    m = status["models"][MODEL]
    assert (m["active"], m["last"]["op"], m["last"]["reason"]) == ("1.0.0", "self_rollback", REASON)
    assert status["monitor"]["models"][MODEL]["state"] == "rolled_back"
    capsys.readouterr()
    assert cli(["--root", str(device.root), "status"]) == 0
    human = capsys.readouterr().out
    assert REASON in human
    assert "monitor: last evaluation" in human

    facts = json.loads(device.facts_file.read_text())
    assert facts["models"][MODEL]["active_version"] == "1.0.0"
    assert facts["models"][MODEL]["last_op"] == "self_rollback"
    assert facts["models"][MODEL]["last_reason"] == REASON
    assert "1.1.0" in facts["models"][MODEL]["bad_versions"]
    mon = facts["monitor"]["models"][MODEL]
    assert mon["state"] == "rolled_back"
    assert any(f["rule"] == "rollback" and f["status"] == "rolled_back" and REASON in f["message"]
               for f in mon["findings"])

    # the next evaluation judges 1.0.0 from its re-activation on: 1.1.0's low minutes are not its own
    report = run_once(device, now=now + 60)
    assert report["rolled_back"] == 0
    assert report["models"][MODEL]["version"] == "1.0.0"
    assert active_version(device) == "1.0.0"


def test_four_low_minutes_and_a_quiet_one_change_nothing(device: Device) -> None:
    start = minute_floor(activated_at(device, "1.1.0")) + 60
    write_minutes(device, "1.1.0", start, [0.5] * 4)
    write_minutes(device, "1.1.0", start + 240, [0.5], n=19)
    now = write_minutes(device, "1.1.0", start + 300, [0.5] * 4)
    report = run_once(device, now=now)
    assert report["rolled_back"] == 0
    assert report["models"][MODEL]["state"] == "ok"
    assert active_version(device) == "1.1.0"
    assert model_state(device.root)["bad"] == {}


def test_minutes_before_the_activation_never_count(device: Device) -> None:
    """1.1.0 had low minutes, was replaced by an operator rollback and re-activated... here: 1.0.0's minutes
    from before 1.1.0 was installed, then the operator rolls back to 1.0.0: those minutes do not count."""
    old = minute_floor(activated_at(device, "1.1.0")) - 600
    write_minutes(device, "1.0.0", old, [0.3] * 5)
    assert device.rollback(MODEL).active == "1.0.0"
    now = write_minutes(device, "1.0.0", minute_floor(activated_at(device, "1.0.0")) + 60, [0.3] * 2)
    report = run_once(device, now=now)
    conf = next(f for f in report["models"][MODEL]["findings"] if f["rule"] == "confidence")
    assert conf["evidence"]["minutes_low"] == 2
    assert active_version(device) == "1.0.0"


def test_no_previous_version_is_a_cannot_roll_back_finding_and_the_active_model_stays(
    release: Release, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dev = installed_device(release, tmp_path / "one", [release.bundle("1.0.0")])
    now = write_minutes(dev, "1.0.0", minute_floor(activated_at(dev, "1.0.0")) + 60, [0.4] * 5)
    before = model_state(dev.root)

    report = run_once(dev, now=now)

    assert report["rolled_back"] == 0
    m = report["models"][MODEL]
    assert m["state"] == "cannot_roll_back"
    f = next(f for f in m["findings"] if f["rule"] == "rollback")
    assert "cannot roll back" in f["message"]
    assert "no previous committed version is kept" in f["message"]
    assert "1.0.0 stays active" in f["message"]
    assert active_version(dev) == "1.0.0"
    after = model_state(dev.root)
    assert (after["active"], after["bad"], after["last"]) == ("1.0.0", {}, before["last"])
    facts = json.loads(dev.facts_file.read_text())
    assert facts["monitor"]["models"][MODEL]["state"] == "cannot_roll_back"
    assert facts["models"][MODEL]["state"] == "committed"


def test_a_previous_version_that_no_longer_verifies_is_not_rolled_back_to(device: Device) -> None:
    corrupt_file(device, "1.0.0")
    now = write_minutes(device, "1.1.0", minute_floor(activated_at(device, "1.1.0")) + 60, [0.4] * 5)
    report = run_once(device, now=now)
    assert report["models"][MODEL]["state"] == "cannot_roll_back"
    assert active_version(device) == "1.1.0"
    st = model_state(device.root)
    assert "1.0.0" in st["corrupt"]  # recorded: not offered again
    assert st["bad"] == {}


def test_self_rollback_of_a_version_that_is_no_longer_active_does_nothing(device: Device) -> None:
    r = device.self_rollback(MODEL, "1.0.0", "self-rollback: test", {})
    assert (r.result, r.changed, r.active) == ("unchanged", False, "1.1.0")
    assert model_state(device.root)["bad"] == {}


def test_self_rollback_without_a_previous_version_raises_and_changes_nothing(
    release: Release, tmp_path: Path
) -> None:
    dev = installed_device(release, tmp_path / "one", [release.bundle("1.0.0")])
    before = (dev.root / "models" / MODEL / "state.json").read_bytes()
    with pytest.raises(RollbackError, match="cannot roll back"):
        dev.self_rollback(MODEL, "1.0.0", "self-rollback: test", {})
    assert (dev.root / "models" / MODEL / "state.json").read_bytes() == before
    assert active_version(dev) == "1.0.0"


def test_a_busy_device_lock_is_waited_for_a_bounded_time_then_reported_and_retried(device: Device) -> None:
    now = write_minutes(device, "1.1.0", minute_floor(activated_at(device, "1.1.0")) + 60, [0.5] * 5)
    fake = {"t": 0.0}
    slept: list[float] = []

    def sleep(s: float) -> None:
        slept.append(s)
        fake["t"] += s

    with device.lock.hold("install"):  # an install holds the device lock
        report = run_once(Device(device.root), now=now, clock=lambda: fake["t"], sleep=sleep)
    assert report["models"][MODEL]["state"] == "busy"
    f = next(f for f in report["models"][MODEL]["findings"] if f["rule"] == "rollback")
    assert "install, pid" in f["message"]
    assert "the next run tries again" in f["message"]
    assert sum(slept) == pytest.approx(20.0)  # lock_wait_s, on the injected clock
    assert active_version(device) == "1.1.0"
    # the next run, lock free: the breach since the activation is still there and is acted on
    report = run_once(device, now=now + 60)
    assert report["models"][MODEL]["state"] == "rolled_back"
    assert active_version(device) == "1.0.0"


def test_a_second_monitor_on_the_same_root_is_refused(device: Device, capsys: pytest.CaptureFixture[str]) -> None:
    with monitor_lock(device.root):
        with pytest.raises(LockedError, match="another edge-runtime monitor is running"), monitor_lock(device.root):
            pass
        rc, out = json_cli(device.root, "monitor", capsys=capsys)
        assert rc == 75
        assert out["ok"] is False
        assert "another edge-runtime monitor is running on" in out["message"]
    rc, out = json_cli(device.root, "monitor", capsys=capsys)  # released: runs
    assert rc == 0, out


def test_monitor_cli_once_and_in_a_loop(device: Device, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out = json_cli(device.root, "monitor", capsys=capsys)
    assert rc == 0, out
    assert out["models"][MODEL]["version"] == "1.1.0"
    assert out["models"][MODEL]["state"] == "insufficient_data"  # nothing recorded: never "ok"
    capsys.readouterr()
    assert cli(["--root", str(device.root), "monitor", "--json", "--every", "1", "--count", "2"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2
    assert all(json.loads(line)["models"][MODEL]["version"] == "1.1.0" for line in lines)
    facts = json.loads(device.facts_file.read_text())
    assert facts["monitor"]["evaluated_at"] == json.loads(lines[-1])["evaluated_at"]


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--every", "0.5"], "--every must be"),
        (["--every", "nan"], "--every must be"),
        (["--count", "2"], "--count N needs --every"),
        (["--every", "5", "--count", "0"], "--count N needs --every"),
    ],
)
def test_monitor_cli_refuses_bad_options(
    device: Device, args: list[str], words: str, capsys: pytest.CaptureFixture[str]
) -> None:
    rc, out = json_cli(device.root, "monitor", *args, capsys=capsys)
    assert rc == 2
    assert words in out["message"]


def test_monitor_settings_are_stored_by_init_and_bad_ones_refused(
    release: Release, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "dev"
    key = str(release.keys[0].public_path)
    rc, out = json_cli(root, "init", "--trusted-key", key, "--monitor-setting", "confidence_threshold=0.7",
                       "--monitor-setting", "min_inferences=10", capsys=capsys)
    assert rc == 0, out
    cfg = Device(root).config.monitor_config()
    assert (cfg.confidence_threshold, cfg.min_inferences, cfg.confidence_minutes) == (0.7, 10, 5)
    # init again without the option keeps them
    assert json_cli(root, "init", "--trusted-key", key, capsys=capsys)[0] == 0
    assert Device(root).config.monitor_config().min_inferences == 10
    before = (root / "config.json").read_bytes()
    rc, out = json_cli(root, "init", "--trusted-key", key, "--monitor-setting", "min_inferences=0", capsys=capsys)
    assert rc == 2
    assert "min_inferences must be an integer >= 1" in out["message"]
    assert (root / "config.json").read_bytes() == before
    # a config edited by hand with a bad monitor section is refused by every command, with the fix
    doc = json.loads(before)
    doc["monitor"] = {"confidence_threshold": 2}
    (root / "config.json").write_text(json.dumps(doc))
    rc, out = json_cli(root, "status", capsys=capsys)
    assert rc == 2
    assert "confidence_threshold must be a number in [0, 1]" in out["message"]


def test_a_corrupt_findings_file_is_reported_not_trusted(device: Device, capsys: pytest.CaptureFixture[str]) -> None:
    (device.root / "monitor").mkdir()
    (device.root / "monitor" / "last.json").write_bytes(b'{"schema": 1, "models": [')
    rc, status = json_cli(device.root, "status", capsys=capsys)
    assert rc == 0
    assert "unreadable" in status["monitor"]["error"]
    rc, facts = json_cli(device.root, "facts", capsys=capsys)
    assert "unreadable" in facts["monitor"]["error"]


def test_an_unreadable_telemetry_database_is_a_finding_and_changes_nothing(device: Device) -> None:
    db = db_path(device.root)
    db.parent.mkdir(parents=True, exist_ok=True)
    db.write_bytes(b"this is not an SQLite database" * 100)
    report = run_once(device, now=activated_at(device, "1.1.0") + 3600)
    m = report["models"][MODEL]
    assert m["state"] == "error"
    assert "telemetry unreadable" in m["findings"][0]["message"]
    assert str(db) in m["findings"][0]["message"]
    assert active_version(device) == "1.1.0"
    assert db.read_bytes().startswith(b"this is not")  # the monitor only reads; the writer moves it aside


def test_drifted_inputs_are_reported_in_the_facts_and_nothing_rolls_back(device: Device) -> None:
    import numpy as np

    baseline = json.loads((device.version_dir(MODEL, "1.1.0") / "baseline.json").read_text())["features"]
    store = TelemetryStore(db_path(device.root), device.config.telemetry_config())
    store.register_features(MODEL, "1.1.0", {k: v["bin_edges"] for k, v in baseline.items()})
    start = minute_floor(activated_at(device, "1.1.0")) + 60
    rng = np.random.default_rng(3)
    for i in range(10):
        for j in range(40):  # a "winter" brightness shift: pixel_mean + 0.2, pixel_std unchanged
            feats = {"pixel_mean": float(rng.choice(baseline["pixel_mean"]["sample"]) + 0.2),
                     "pixel_std": float(rng.choice(baseline["pixel_std"]["sample"]))}
            store.record(MODEL, "1.1.0", start + 60 * i + 1 + j, 0.4, True, "ok", 0.9, feats)
    store.close()
    report = run_once(device, now=start + 600 + 1)
    m = report["models"][MODEL]
    assert m["state"] == "drift"
    f = next(f for f in m["findings"] if f["rule"] == "drift")
    assert f["evidence"]["drifted"] == ["pixel_mean"]
    assert active_version(device) == "1.1.0"
    facts = json.loads(device.facts_file.read_text())
    assert facts["monitor"]["models"][MODEL]["state"] == "drift"
    assert any(x["rule"] == "drift" and "pixel_mean" in x["message"]
               for x in facts["monitor"]["models"][MODEL]["findings"])


def test_a_monitor_loop_holds_the_lock_refuses_a_second_one_and_stops_on_sigterm(device: Device) -> None:
    import signal
    import subprocess
    import sys
    import time

    loop = subprocess.Popen(
        [sys.executable, "-m", "edge_runtime.cli", "--root", str(device.root), "monitor", "--every", "1", "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert loop.stdout is not None
        first = json.loads(loop.stdout.readline())  # one JSON document per line and evaluation
        assert first["models"][MODEL]["version"] == "1.1.0"
        second = subprocess.run(
            [sys.executable, "-m", "edge_runtime.cli", "--root", str(device.root), "monitor", "--json"],
            capture_output=True, text=True, timeout=60, check=False,
        )
        assert second.returncode == 75, second.stdout + second.stderr
        out = json.loads(second.stdout)
        assert "another edge-runtime monitor is running on" in out["message"]
        assert "monitor, pid" in out["message"]
        t0 = time.monotonic()
        loop.send_signal(signal.SIGTERM)
        assert loop.wait(timeout=30) == 0
        assert time.monotonic() - t0 < 10  # the sleep between evaluations is interrupted
    finally:
        if loop.poll() is None:
            loop.kill()
            loop.wait()


def test_a_clock_stepped_back_neither_rolls_back_on_future_minutes_nor_loses_them(device: Device) -> None:
    """Five low minutes were recorded while the clock ran an hour ahead; NTP stepped it back. At the corrected
    time they are in the future: ignored and reported, nothing rolls back. Once the clock reaches them they
    count (once), and the rule acts."""
    ahead = minute_floor(activated_at(device, "1.1.0")) + 3600
    end = write_minutes(device, "1.1.0", ahead, [0.5] * 5)
    report = run_once(device, now=ahead - 3000)  # the corrected clock: 50 minutes before those rows
    m = report["models"][MODEL]
    clock = [f for f in m["findings"] if f["rule"] == "clock"]
    assert len(clock) == 1
    assert clock[0]["evidence"]["future_rows"] == 5
    assert m["state"] == "insufficient_data"
    assert active_version(device) == "1.1.0"
    facts = json.loads(device.facts_file.read_text())
    assert any(f["rule"] == "clock" for f in facts["monitor"]["models"][MODEL]["findings"])
    report = run_once(device, now=end)
    assert report["models"][MODEL]["state"] == "rolled_back"
    conf = next(f for f in report["models"][MODEL]["findings"] if f["rule"] == "confidence")
    assert conf["evidence"]["minutes_low"] == 5

"""The edge-runtime CLI on temporary device roots: the happy path, rollback and facts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from edge_runtime.cli import main as cli
from edge_runtime.device import Device
from tests.support.factory import MODEL, Release, state

pytestmark = pytest.mark.tflite_runtime  # also run with the tflite-runtime backend


def run(root: Path, *args: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, dict[str, Any]]:
    rc = cli(["--root", str(root), "--json", *args])
    out = capsys.readouterr().out
    return rc, json.loads(out)


@pytest.fixture
def device(release: Release, tmp_path: Path) -> Device:
    return release.device(tmp_path / "dev")


def test_install_then_upgrade_keeps_previous_and_reports_it(
    device: Device, release: Release, capsys: pytest.CaptureFixture[str]
) -> None:
    rc, r = run(device.root, "install", str(release.bundle("1.0.0")), "--model", MODEL, capsys=capsys)
    assert rc == 0, r
    assert r["result"] == "installed"
    assert r["smoke"]["passed"] is True
    rc, r = run(device.root, "install", str(release.bundle("1.1.0")), capsys=capsys)
    assert rc == 0, r
    assert (r["active"], r["previous"]) == ("1.1.0", "1.0.0")
    link = device.active_link(MODEL)
    assert os.readlink(link) == "versions/1.1.0"
    assert (link / "model.tflite").read_bytes() == (
        Path(__file__).resolve().parents[2] / "demo/models/defect-classifier/1.1.0/model.tflite"
    ).read_bytes()
    rc, st = run(device.root, "status", capsys=capsys)
    assert st["models"][MODEL]["active"] == "1.1.0"
    assert st["models"][MODEL]["previous"] == "1.0.0"


def test_reinstall_of_active_version_changes_nothing(
    device: Device, release: Release, capsys: pytest.CaptureFixture[str]
) -> None:
    run(device.root, "install", str(release.bundle("1.0.0")), capsys=capsys)
    before = (device.root / "models" / MODEL / "state.json").read_bytes()
    rc, r = run(device.root, "install", str(release.bundle("1.0.0")), capsys=capsys)
    assert rc == 0
    assert (r["changed"], r["result"]) == (False, "unchanged")
    assert (device.root / "models" / MODEL / "state.json").read_bytes() == before


def test_bad_model_is_rolled_back_and_quarantined(
    device: Device, release: Release, capsys: pytest.CaptureFixture[str]
) -> None:
    run(device.root, "install", str(release.bundle("1.1.0")), capsys=capsys)
    rc, r = run(device.root, "install", str(release.bundle("1.2.0")), capsys=capsys)
    assert rc == 8
    assert r["result"] == "rolled_back"
    assert "label agreement" in r["reason"] or "outputs differ" in r["reason"]
    assert os.readlink(device.active_link(MODEL)) == "versions/1.1.0"
    assert not (device.root / "models" / MODEL / "versions" / "1.2.0").exists()
    s = state(device.root)
    assert "1.2.0" in s["bad"]
    rc, r = run(device.root, "install", str(release.bundle("1.2.0")), capsys=capsys)
    assert rc == 4
    assert r["error"] == "quarantined"


def test_slow_model_fails_latency_budget_and_rolls_back(
    device: Device, release: Release, capsys: pytest.CaptureFixture[str]
) -> None:
    run(device.root, "install", str(release.bundle("1.1.0")), capsys=capsys)
    rc, r = run(device.root, "install", str(release.bundle("1.3.0")), capsys=capsys)
    assert rc == 8
    assert "latency" in r["reason"]
    assert state(device.root)["active"] == "1.1.0"


def test_first_install_that_fails_leaves_no_active_model(
    device: Device, release: Release, capsys: pytest.CaptureFixture[str]
) -> None:
    rc, r = run(device.root, "install", str(release.bundle("1.2.0")), capsys=capsys)
    assert rc == 8
    assert r["active"] is None
    assert not device.active_link(MODEL).exists()


def test_int8_model_installs_with_quantized_smoke_test(
    device: Device, release: Release, capsys: pytest.CaptureFixture[str]
) -> None:
    rc, r = run(device.root, "install", str(release.bundle("1.1.0", "defect-classifier-int8")), capsys=capsys)
    assert rc == 0, r
    assert r["smoke"]["label_agreement"] >= 0.9


def test_operator_rollback_returns_to_previous_and_can_roll_forward(
    device: Device, release: Release, capsys: pytest.CaptureFixture[str]
) -> None:
    run(device.root, "install", str(release.bundle("1.0.0")), capsys=capsys)
    run(device.root, "install", str(release.bundle("1.1.0")), capsys=capsys)
    rc, r = run(device.root, "rollback", MODEL, capsys=capsys)
    assert rc == 0, r
    assert (r["active"], r["previous"]) == ("1.0.0", "1.1.0")
    assert os.readlink(device.active_link(MODEL)) == "versions/1.0.0"
    # 1.1.0 is still kept, so installing it again is a cheap re-activation, not a downgrade problem
    rc, r = run(device.root, "install", str(release.bundle("1.1.0")), capsys=capsys)
    assert rc == 0
    assert r["result"] == "activated_kept"


def test_rollback_without_previous_version_is_a_clear_error(
    device: Device, release: Release, capsys: pytest.CaptureFixture[str]
) -> None:
    run(device.root, "install", str(release.bundle("1.0.0")), capsys=capsys)
    rc, r = run(device.root, "rollback", MODEL, capsys=capsys)
    assert rc != 0
    assert r["error"] == "rollback"
    assert "no previous committed version" in r["message"]


def test_old_versions_are_garbage_collected(
    release: Release, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dev = release.device(tmp_path / "dev", keep_versions=1)
    run(dev.root, "install", str(release.bundle("1.0.0")), capsys=capsys)
    run(dev.root, "install", str(release.bundle("1.1.0")), capsys=capsys)
    assert sorted(p.name for p in (dev.root / "models" / MODEL / "versions").iterdir()) == ["1.1.0"]


def test_staged_version_is_read_only(device: Device, release: Release, capsys: pytest.CaptureFixture[str]) -> None:
    run(device.root, "install", str(release.bundle("1.0.0")), capsys=capsys)
    vdir = device.version_dir(MODEL, "1.0.0")
    assert not os.stat(vdir).st_mode & 0o222
    assert all(not os.stat(p).st_mode & 0o222 for p in vdir.iterdir())


def test_facts_report_versions_and_never_invent_values(
    device: Device, release: Release, capsys: pytest.CaptureFixture[str]
) -> None:
    run(device.root, "install", str(release.bundle("1.0.0")), capsys=capsys)
    run(device.root, "install", str(release.bundle("1.1.0")), capsys=capsys)
    rc = cli(["--root", str(device.root), "--json", "facts"])
    facts = json.loads(capsys.readouterr().out)
    assert rc == 0
    m = facts["models"][MODEL]
    assert (m["active_version"], m["previous_version"], m["state"]) == ("1.1.0", "1.0.0", "committed")
    assert m["digest"].startswith("sha256:")
    assert m["smoke_p95_ms"] > 0
    sysf = facts["system"]
    assert sysf["disk"]["free_bytes"] > 0
    assert sysf["memory"]["total_bytes"] > 0
    has_thermal = any(Path("/sys/class/thermal").glob("thermal_zone*/temp"))
    assert (sysf["temperature_c"] is None) == (not has_thermal)
    on_disk = json.loads((device.root / "facts" / "edge_runtime.fact").read_text())
    assert on_disk["models"] == facts["models"]


def test_verify_detects_tampering_on_disk(device: Device, release: Release, capsys: pytest.CaptureFixture[str]) -> None:
    run(device.root, "install", str(release.bundle("1.0.0")), capsys=capsys)
    rc, r = run(device.root, "verify", MODEL, capsys=capsys)
    assert rc == 0, r
    model = device.version_dir(MODEL, "1.0.0") / "labels.txt"
    os.chmod(model, 0o644)
    model.write_text("evil\n")
    rc, r = run(device.root, "verify", MODEL, capsys=capsys)
    assert rc == 3
    assert r["error"] == "integrity"


def test_post_install_check_passes_and_changes_nothing(
    device: Device, release: Release, capsys: pytest.CaptureFixture[str]
) -> None:
    run(device.root, "install", str(release.bundle("1.0.0")), capsys=capsys)
    before = state(device.root)
    rc, r = run(device.root, "check", MODEL, capsys=capsys)
    assert rc == 0, r
    assert (r["result"], r["changed"], r["active"]) == ("unchanged", False, "1.0.0")
    assert r["smoke"]["passed"] is True
    assert r["smoke"]["process_ms"] > 0  # it ran in its own child process
    # nothing changes but the record of the passed check (read by edge_runtime.decision)
    after = state(device.root)
    check = after["versions"]["1.0.0"].pop("check")  # type: ignore[index]
    assert check["passed"] is True
    assert "how" not in check
    # the install recorded its own check (staged smoke test, active files verified after the swap)
    assert before["versions"]["1.0.0"].pop("check")["passed"] is True  # type: ignore[index]
    assert after == before
    rc, r = run(device.root, "check", MODEL, "--model-version", "9.9.9", capsys=capsys)
    assert rc == 0
    assert r["smoke"] is None
    assert "not active" in r["reason"]


def test_post_install_check_rolls_back_and_quarantines_a_version_whose_files_rotted(
    device: Device, release: Release, capsys: pytest.CaptureFixture[str]
) -> None:
    run(device.root, "install", str(release.bundle("1.0.0")), capsys=capsys)
    run(device.root, "install", str(release.bundle("1.1.0")), capsys=capsys)
    model = device.version_dir(MODEL, "1.1.0") / "model.tflite"
    os.chmod(model, 0o644)
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0x01
    model.write_bytes(bytes(data))
    rc, r = run(device.root, "check", MODEL, capsys=capsys)
    assert rc == 8, r
    assert (r["result"], r["active"], r["previous"]) == ("rolled_back", "1.0.0", "1.0.0")
    assert "no longer verify" in r["reason"]
    assert os.readlink(device.active_link(MODEL)) == "versions/1.0.0"
    st = state(device.root)
    assert "1.1.0" in st["bad"]  # type: ignore[operator]
    assert not device.version_dir(MODEL, "1.1.0").exists()
    # the quarantine holds: the same version is refused by the next install
    rc, r = run(device.root, "install", str(release.bundle("1.1.0")), capsys=capsys)
    assert rc != 0
    assert r["error"] == "quarantined"


def test_post_install_check_of_a_first_install_that_fails_leaves_no_active_model(
    device: Device, release: Release, capsys: pytest.CaptureFixture[str]
) -> None:
    run(device.root, "install", str(release.bundle("1.0.0")), capsys=capsys)
    labels = device.version_dir(MODEL, "1.0.0") / "labels.txt"
    os.chmod(labels, 0o644)
    labels.write_text("evil\n")
    rc, r = run(device.root, "check", MODEL, capsys=capsys)
    assert rc == 8
    assert r["active"] is None
    assert not device.active_link(MODEL).is_symlink()


def test_console_script_prints_human_output_and_exit_codes(device: Device, release: Release) -> None:
    exe = Path(sys.executable).with_name("edge-runtime")
    ok = subprocess.run(
        [exe, "--root", device.root, "install", release.bundle("1.0.0")], capture_output=True, text=True, check=False
    )
    assert ok.returncode == 0, ok.stderr
    assert "defect-classifier 1.0.0 is active" in ok.stdout
    bad = subprocess.run(
        [exe, "--root", device.root, "install", release.bundle("1.2.0")], capture_output=True, text=True, check=False
    )
    assert bad.returncode == 8
    assert "ROLLED BACK" in bad.stdout
    st = subprocess.run([exe, "--root", device.root, "status"], capture_output=True, text=True, check=False)
    assert "quarantined: 1.2.0" in st.stdout

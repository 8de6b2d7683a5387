"""Every bad input is refused with a message naming the problem, a non-zero exit, and nothing changed.

Each test installs 1.0.0 first, snapshots the whole device root, feeds the bad input, and compares.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edge_runtime import _faults
from edge_runtime.cli import main as cli
from edge_runtime.device import Device
from tests.support.factory import MODEL, Release, rewrite_bundle, snapshot
from tests.support.http_server import BundleServer, Route


@pytest.fixture
def device(release: Release, tmp_path: Path) -> Device:
    dev = release.device(tmp_path / "dev")
    assert cli(["--root", str(dev.root), "install", str(release.bundle("1.0.0"))]) == 0
    return dev


def refused(dev: Device, source: str | Path, *extra: str, capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    """Run install, assert it failed and that the device is unchanged; return the JSON error."""
    capsys.readouterr()
    before = snapshot(dev.root)
    rc = cli(["--root", str(dev.root), "--json", "install", str(source), *extra])
    out = json.loads(capsys.readouterr().out)
    assert rc != 0, out
    assert out["ok"] is False
    assert out["message"], out
    assert out.get("hint"), out
    assert snapshot(dev.root) == before, "the device changed although the install was refused"
    assert os.readlink(dev.active_link(MODEL)) == "versions/1.0.0"
    assert not list((dev.root / "models" / MODEL / "versions").glob(".tmp-*"))
    return out


def edit_member(release: Release, tmp_path: Path, version: str, name: str, fn: Any) -> Path:
    return rewrite_bundle(release.bundle(version), tmp_path / "bad.edgebundle",
                          lambda n, d: fn(d) if n == name else d)


def test_unknown_key_is_refused(device: Device, release: Release, tmp_path: Path, capsys: Any) -> None:
    b = release.custom("stranger.edgebundle", "1.1.0", keys=[release.stranger])
    out = refused(device, b, capsys=capsys)
    assert out["error"] == "signature"
    assert "unknown key" in out["message"]


def test_missing_signature_is_refused(device: Device, release: Release, tmp_path: Path, capsys: Any) -> None:
    def strip(data: bytes) -> bytes:
        doc = json.loads(data)
        doc["signatures"] = []
        return json.dumps(doc).encode()

    out = refused(device, edit_member(release, tmp_path, "1.1.0", "manifest.json", strip), capsys=capsys)
    assert "no signature" in out["message"]


def test_signature_over_another_manifest_is_refused(
    device: Device, release: Release, tmp_path: Path, capsys: Any
) -> None:
    with tarfile.open(release.bundle("1.2.0")) as t:
        other = json.loads(t.extractfile("manifest.json").read())  # type: ignore[union-attr]

    def swap(data: bytes) -> bytes:
        doc = json.loads(data)
        doc["signatures"] = other["signatures"]
        return json.dumps(doc).encode()

    out = refused(device, edit_member(release, tmp_path, "1.1.0", "manifest.json", swap), capsys=capsys)
    assert "do not match this manifest" in out["message"]


def test_changed_manifest_field_breaks_the_signature(
    device: Device, release: Release, tmp_path: Path, capsys: Any
) -> None:
    def bump(data: bytes) -> bytes:
        doc = json.loads(data)
        doc["signed"]["smoke_test"]["atol"] = 1.0
        return json.dumps(doc).encode()

    out = refused(device, edit_member(release, tmp_path, "1.1.0", "manifest.json", bump), capsys=capsys)
    assert out["error"] == "signature"


@pytest.mark.parametrize("member", ["model.tflite", "golden.npz", "baseline.json", "labels.txt"])
@pytest.mark.parametrize("where", [0, -1])
def test_one_byte_changed_in_any_file_is_refused(
    device: Device, release: Release, tmp_path: Path, capsys: Any, member: str, where: int
) -> None:
    def flip(data: bytes) -> bytes:
        b = bytearray(data)
        b[where] ^= 0x01
        return bytes(b)

    out = refused(device, edit_member(release, tmp_path, "1.1.0", member, flip), capsys=capsys)
    assert out["error"] == "integrity"
    assert member in out["message"]
    assert "expected" in out["message"]


def test_missing_file_is_refused(device: Device, release: Release, tmp_path: Path, capsys: Any) -> None:
    b = rewrite_bundle(release.bundle("1.1.0"), tmp_path / "b", lambda n, d: None if n == "golden.npz" else d)
    out = refused(device, b, capsys=capsys)
    assert "missing" in out["message"]
    assert "golden.npz" in out["message"]


def test_extra_file_is_refused(device: Device, release: Release, tmp_path: Path, capsys: Any) -> None:
    info = tarfile.TarInfo("payload.sh")
    info.size = 3
    b = rewrite_bundle(release.bundle("1.1.0"), tmp_path / "b", lambda n, d: d, extra=[(info, b"hi\n")])
    out = refused(device, b, capsys=capsys)
    assert "extra file 'payload.sh'" in out["message"]


@pytest.mark.parametrize(("change", "word"), [(-7, "truncated"), (+7, "longer than declared")])
def test_truncated_or_longer_file_is_refused(
    device: Device, release: Release, tmp_path: Path, capsys: Any, change: int, word: str
) -> None:
    fn = (lambda d: d[:change]) if change < 0 else (lambda d: d + b"\0" * change)
    out = refused(device, edit_member(release, tmp_path, "1.1.0", "model.tflite", fn), capsys=capsys)
    assert word in out["message"]


def test_truncated_bundle_file_is_refused(device: Device, release: Release, tmp_path: Path, capsys: Any) -> None:
    data = release.bundle("1.1.0").read_bytes()
    b = tmp_path / "cut.edgebundle"
    b.write_bytes(data[: len(data) // 2])
    out = refused(device, b, capsys=capsys)
    assert out["error"] in ("integrity", "bundle_format")


def test_manifest_for_another_model_name_is_refused(device: Device, release: Release, capsys: Any) -> None:
    b = release.custom("other.edgebundle", "1.1.0", "--name", "other-model")
    out = refused(device, b, "--model", MODEL, capsys=capsys)
    assert out["error"] == "model_name"
    assert "'other-model'" in out["message"]


def test_incompatible_architecture_is_refused(device: Device, release: Release, capsys: Any) -> None:
    b = release.custom("armv7.edgebundle", "1.1.0", "--arch", "armv7l")
    out = refused(device, b, capsys=capsys)
    assert out["error"] == "incompatible"
    assert "armv7l" in out["message"]


def test_expired_manifest_is_refused(device: Device, release: Release, capsys: Any) -> None:
    b = release.custom("expired.edgebundle", "1.1.0", "--created", "2020-01-01T00:00:00Z", "--expires-in-days", "1")
    out = refused(device, b, capsys=capsys)
    assert out["error"] == "expired"


def test_downgrade_is_refused(release: Release, tmp_path: Path, capsys: Any) -> None:
    dev = release.device(tmp_path / "dev", keep_versions=1)
    assert cli(["--root", str(dev.root), "install", str(release.bundle("1.0.0"))]) == 0
    assert cli(["--root", str(dev.root), "install", str(release.bundle("1.1.0"))]) == 0
    capsys.readouterr()
    before = snapshot(dev.root)
    rc = cli(["--root", str(dev.root), "--json", "install", str(release.bundle("1.0.0"))])
    out = json.loads(capsys.readouterr().out)
    assert rc == 3
    assert out["error"] == "downgrade"
    assert snapshot(dev.root) == before


@pytest.mark.parametrize("name", ["../escape.txt", "/etc/escape.txt", "sub/../../escape.txt"])
def test_unsafe_member_paths_are_refused(
    device: Device, release: Release, tmp_path: Path, capsys: Any, name: str
) -> None:
    info = tarfile.TarInfo(name)
    info.size = 4
    b = rewrite_bundle(release.bundle("1.1.0"), tmp_path / "b", lambda n, d: d, extra=[(info, b"bad\n")])
    out = refused(device, b, capsys=capsys)
    assert out["error"] == "unsafe_bundle"
    assert not (tmp_path / "escape.txt").exists()


@pytest.mark.parametrize("kind", [tarfile.SYMTYPE, tarfile.LNKTYPE])
def test_links_inside_a_bundle_are_refused(
    device: Device, release: Release, tmp_path: Path, capsys: Any, kind: bytes
) -> None:
    info = tarfile.TarInfo("model-link.tflite")
    info.type = kind
    info.linkname = "/etc/passwd" if kind == tarfile.SYMTYPE else "model.tflite"
    b = rewrite_bundle(release.bundle("1.1.0"), tmp_path / "b", lambda n, d: d, extra=[(info, b"")])
    out = refused(device, b, capsys=capsys)
    assert out["error"] == "unsafe_bundle"
    assert "link" in out["message"]


def test_server_sending_more_than_declared_is_refused(
    device: Device, release: Release, http_server: BundleServer, capsys: Any
) -> None:
    body = release.bundle("1.1.0").read_bytes()
    http_server.add("/b", Route(body, extra_bytes=4096))
    out = refused(device, http_server.url("/b"), "--expect-size", str(len(body)), "--retries", "0", capsys=capsys)
    assert out["error"] == "download_too_large"
    assert not list((device.root / "downloads").glob("*.part"))


def test_stalled_server_is_refused_and_partial_kept(
    device: Device, release: Release, http_server: BundleServer, capsys: Any
) -> None:
    body = release.bundle("1.1.0").read_bytes()
    http_server.add("/b", Route(body, stall_after=1000, stall_seconds=3.0))
    out = refused(device, http_server.url("/b"), "--read-timeout", "0.5", "--retries", "0", capsys=capsys)
    assert out["error"] == "download_stalled"


def test_dropped_connection_is_refused_when_retries_run_out(
    device: Device, release: Release, http_server: BundleServer, capsys: Any
) -> None:
    body = release.bundle("1.1.0").read_bytes()
    http_server.add("/b", Route(body, drop_after=2000))
    out = refused(device, http_server.url("/b"), "--retries", "1", capsys=capsys)
    assert out["error"] == "download_interrupted"


def test_dropped_connection_resumes_and_installs(
    device: Device, release: Release, http_server: BundleServer, capsys: Any
) -> None:
    body = release.bundle("1.1.0").read_bytes()
    http_server.add("/b", Route(body, drop_after=len(body) // 2, fault_requests=1))
    rc = cli(["--root", str(device.root), "--json", "install", http_server.url("/b"), "--retries", "2"])
    out = json.loads(capsys.readouterr().out)
    assert rc == 0, out
    assert out["active"] == "1.1.0"
    ranges = [r.range for r in http_server.requests_for("/b")]
    assert ranges[0] is None
    assert ranges[1] is not None
    assert ranges[1].startswith("bytes=")
    assert not list((device.root / "downloads").iterdir())


def test_disk_full_is_refused_before_staging(release: Release, tmp_path: Path, capsys: Any) -> None:
    mnt = tmp_path / "small"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1200k", "tmpfs", str(mnt)], check=False).returncode:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        dev = release.device(mnt / "dev")
        assert cli(["--root", str(dev.root), "install", str(release.bundle("1.0.0"))]) == 0
        out = refused(dev, release.bundle("1.3.0"), capsys=capsys)
        assert out["error"] == "disk_full"
        assert "need" in out["message"]
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_disk_full_while_writing_is_refused_and_cleaned_up(
    device: Device, release: Release, capsys: Any
) -> None:
    import errno

    def enospc(name: str) -> None:
        if name == "stage.write":
            raise OSError(errno.ENOSPC, "No space left on device")

    _faults.unsafe_arm(enospc)
    try:
        out = refused(device, release.bundle("1.1.0"), capsys=capsys)
    finally:
        _faults.unsafe_arm(None)
    assert out["error"] == "disk_full"


def test_corrupted_state_file_is_refused_then_repaired(
    device: Device, release: Release, capsys: Any
) -> None:
    sf = device.root / "models" / MODEL / "state.json"
    sf.write_text('{"schema": 1, "active": ')
    out = refused(device, release.bundle("1.1.0"), capsys=capsys)
    assert out["error"] == "state_corrupt"
    assert "repair" in out["hint"]
    assert cli(["--root", str(device.root), "repair", MODEL]) == 0
    capsys.readouterr()
    assert cli(["--root", str(device.root), "install", str(release.bundle("1.1.0"))]) == 0
    assert list(sf.parent.glob("state.json.corrupt-*")), "the corrupt file must be kept for inspection"


@pytest.fixture
def lock_holder(device: Device) -> Iterator[subprocess.Popen[str]]:
    code = textwrap.dedent(f"""
        import sys, time
        from edge_runtime.device import Device
        with Device({str(device.root)!r}).lock.hold("install"):
            print("held", flush=True)
            time.sleep(30)
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "held"
    yield proc
    proc.kill()
    proc.wait(timeout=10)


def test_second_install_while_one_runs_is_refused(
    device: Device, release: Release, lock_holder: subprocess.Popen[str], capsys: Any
) -> None:
    out = refused(device, release.bundle("1.1.0"), capsys=capsys)
    assert out["error"] == "locked"
    assert f"pid {lock_holder.pid}" in out["message"]


def test_lock_of_a_killed_process_is_released(device: Device, release: Release, lock_holder: Any) -> None:
    lock_holder.kill()
    lock_holder.wait(timeout=10)
    deadline = time.monotonic() + 5
    while device.lock.is_held() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert cli(["--root", str(device.root), "install", str(release.bundle("1.1.0"))]) == 0


def test_uninitialised_root_is_a_clear_error(tmp_path: Path, release: Release, capsys: Any) -> None:
    rc = cli(["--root", str(tmp_path / "nothing"), "--json", "install", str(release.bundle("1.0.0"))])
    out = json.loads(capsys.readouterr().out)
    assert rc == 2
    assert "init" in out["hint"]


def test_tampered_bundle_of_the_active_version_is_refused_not_unchanged(
    device: Device, release: Release, tmp_path: Path, capsys: Any
) -> None:
    def flip(data: bytes) -> bytes:
        return data[:-1] + bytes([data[-1] ^ 1])

    out = refused(device, edit_member(release, tmp_path, "1.0.0", "model.tflite", flip), capsys=capsys)
    assert out["error"] == "integrity"

"""The release side: keys stay private, bundles carry thresholds of signatures, devices enforce them."""

from __future__ import annotations

import json
import os
import stat
import tarfile
from pathlib import Path

import pytest

from edge_runtime.cli import main as runtime
from edge_runtime.release_cli import main as release_cli
from tests.support.factory import MODEL, Release, build


def test_keygen_writes_private_key_0600_and_never_prints_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert release_cli(["keygen", str(tmp_path / "k")]) == 0
    out = capsys.readouterr()
    key = (tmp_path / "k.key").read_bytes()
    assert stat.S_IMODE(os.stat(tmp_path / "k.key").st_mode) == 0o600
    assert b"PRIVATE KEY" in key
    assert "PRIVATE KEY" not in out.out + out.err
    assert release_cli(["keygen", str(tmp_path / "k")]) == 2, "an existing key must never be overwritten"


def test_private_key_readable_by_others_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    release_cli(["keygen", str(tmp_path / "k")])
    os.chmod(tmp_path / "k.key", 0o644)
    rc = release_cli(["--json", "build", "--release-dir", "demo/models/defect-classifier/1.0.0",
                  "--key", str(tmp_path / "k.key"), "-o", str(tmp_path / "b.edgebundle")])
    capsys.readouterr()
    assert rc == 2
    assert not (tmp_path / "b.edgebundle").exists()


def test_bundle_never_contains_the_private_key(release: Release) -> None:
    bundle = release.bundle("1.0.0").read_bytes()
    key = release.keys[0].private_path.read_bytes()
    body = b"".join(line for line in key.splitlines() if b"PRIVATE" not in line)
    assert body[:40] not in bundle
    with tarfile.open(release.bundle("1.0.0")) as t:
        assert sorted(t.getnames()) == ["baseline.json", "golden.npz", "labels.txt", "manifest.json", "model.tflite"]


def test_device_threshold_two_of_three_needs_two_signatures(
    release: Release, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dev = release.device(tmp_path / "dev", trusted=3, threshold=2)
    one = build("1.0.0", tmp_path / "one.edgebundle", release.keys[:1])
    rc = runtime(["--root", str(dev.root), "--json", "install", str(one)])
    out = json.loads(capsys.readouterr().out)
    assert rc == 3
    assert "2 required" in out["message"]
    assert release_sign(one, release.keys[1].private_path) == 0
    capsys.readouterr()
    assert runtime(["--root", str(dev.root), "install", str(one), "--model", MODEL]) == 0


def release_sign(bundle: Path, key: Path) -> int:
    return release_cli(["sign", str(bundle), "--key", str(key)])


def test_verify_command_checks_signature_and_files(release: Release, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    b = release.bundle("1.1.0")
    assert release_cli(["--json", "verify", str(b), "--trusted-key", str(release.keys[0].public_path)]) == 0
    ok = json.loads(capsys.readouterr().out)
    assert ok["digest"].startswith("sha256:")
    assert release_cli(["verify", str(b), "--trusted-key", str(release.keys[1].public_path)]) == 3


def test_encrypted_key_signs_with_the_passphrase_from_a_file_and_a_wrong_one_is_named_not_shown(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Keys encrypted at rest: the passphrase from EDGE_RELEASE_KEY_PASSPHRASE at keygen, then from a file
    (a CI secret file or `ansible-vault view` output) when signing; the PEM is encrypted on disk."""
    from edge_runtime.keys import PASSPHRASE_ENV, PASSPHRASE_FILE_ENV, load_private_key

    monkeypatch.setenv(PASSPHRASE_ENV, "correct horse")
    assert release_cli(["keygen", str(tmp_path / "enc")]) == 0
    assert b"ENCRYPTED PRIVATE KEY" in (tmp_path / "enc.key").read_bytes()
    monkeypatch.delenv(PASSPHRASE_ENV)
    secret = tmp_path / "passphrase"
    secret.write_text("correct horse\n")
    monkeypatch.setenv(PASSPHRASE_FILE_ENV, str(secret))
    assert load_private_key(tmp_path / "enc.key").curve.name == "secp256r1"
    secret.write_text("wrong\n")
    capsys.readouterr()
    assert release_cli(["--json", "root", "new", "-o", str(tmp_path / "1.root.json"),
                        "--root-key", str(tmp_path / "enc.pub"), "--release-key", str(tmp_path / "enc.pub")]) == 0
    capsys.readouterr()
    rc = release_cli(["--json", "root", "sign", str(tmp_path / "1.root.json"), "--key", str(tmp_path / "enc.key")])
    out = capsys.readouterr().out
    assert rc == 2
    assert "cannot load private key" in out
    assert PASSPHRASE_FILE_ENV in out
    assert "wrong" not in out

"""Key rotation and revocation on a real device root: root documents from the CLI, the role's path (init)
and inside bundles; real bundles, real signatures, real smoke tests."""

from __future__ import annotations

import contextlib
import io
import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from edge_runtime import errors
from edge_runtime.cli import main as runtime_cli
from edge_runtime.device import Device
from edge_runtime.manifest import Envelope
from edge_runtime.release_cli import main as release_cli
from edge_runtime.root import make_root_signed, sign_root
from tests.support.factory import MODEL, Release, release_json, snapshot
from tests.support.keys import KeyPair, make_keypair


def new_root(path: Path, *, root: list[KeyPair], release: list[KeyPair], signers: list[KeyPair],
             previous: Path | None = None, root_threshold: int = 1, release_threshold: int = 1) -> Path:
    """A root document made and signed with the real `edge-release root new` / `root sign` commands."""
    args = ["root", "new", "-o", str(path), "--root-threshold", str(root_threshold),
            "--release-threshold", str(release_threshold)]
    args += [a for k in root for a in ("--root-key", str(k.public_path))]
    args += [a for k in release for a in ("--release-key", str(k.public_path))]
    if previous is not None:
        args += ["--previous", str(previous)]
    release_json(*args)
    release_json("root", "sign", str(path), *[a for k in signers for a in ("--key", str(k.private_path))])
    return path


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory, release: Release) -> dict[str, KeyPair]:
    d = tmp_path_factory.mktemp("rotation-keys")
    return {"old": release.keys[0], "ci": make_keypair(d, "ci"), "rm": make_keypair(d, "rm"),
            "offline": make_keypair(d, "offline")}


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory, keys: dict[str, KeyPair]) -> list[Path]:
    """v1: everything is today's release key (signed by it, so legacy devices accept it).
    v2: the offline key holds the root role; bundles need 2 of 2 (CI key + release manager); the old key is gone."""
    d = tmp_path_factory.mktemp("roots")
    v1 = new_root(d / "1.root.json", root=[keys["old"]], release=[keys["old"]], signers=[keys["old"]])
    v2 = new_root(d / "2.root.json", root=[keys["offline"]], release=[keys["ci"], keys["rm"]],
                  signers=[keys["old"], keys["offline"]], previous=v1, release_threshold=2)
    return [v1, v2]


def test_root_chain_verifies_with_the_release_cli(chain: list[Path]) -> None:
    out = release_json("root", "verify", *map(str, chain))
    assert out["versions"] == [1, 2]
    assert out["current"]["roles"]["release"]["threshold"] == 2


def test_offline_device_catches_up_two_versions_through_a_bundle_and_revoked_key_is_refused(
    release: Release, keys: dict[str, KeyPair], chain: list[Path], tmp_path: Path
) -> None:
    dev = release.device(tmp_path / "dev")  # today's device: a legacy key list (the old key)
    assert dev.install(str(release.bundle("1.0.0"))).result == "installed"
    # 1.1.0 signed 2-of-2 by the new keys, carrying roots 1 and 2: the device goes 0 -> 2 and installs it
    b = release.custom("rot-1.1.0.edgebundle", "1.1.0", *[a for p in chain for a in ("--trust-root", str(p))],
                       keys=[keys["ci"], keys["rm"]])
    r = dev.install(str(b))
    assert (r.result, r.active) == ("installed", "1.1.0")
    assert dev.current_root().version == 2
    assert json.loads(dev.facts_file.read_text())["trust"]["root_version"] == 2
    assert dev.status()["trust"]["root_version"] == 2
    # the release side checks a bundle against the chain as a device would
    assert release_json("verify", str(b), *[a for p in chain for a in ("--trust-root", str(p))])["version"] == "1.1.0"
    # a bundle signed by the revoked (removed) key: refused, nothing on the device changes
    before = snapshot(dev.root)
    revoked = release.custom("revoked-1.2.0.edgebundle", "1.2.0", keys=[keys["old"]])
    with pytest.raises(errors.SignatureError, match="signed by unknown key"):
        dev.install(str(revoked))
    with contextlib.redirect_stdout(io.StringIO()):
        assert release_cli(["verify", str(revoked), *[a for p in chain for a in ("--trust-root", str(p))]]) == 3
    assert snapshot(dev.root) == before
    # only one of the two required keys: refused too (threshold), the same key twice counts once
    half = release.custom("half-1.2.0.edgebundle", "1.2.0", keys=[keys["ci"], keys["ci"]])
    with pytest.raises(errors.SignatureError, match=r"1 valid signature.*2 required"):
        dev.install(str(half))
    assert snapshot(dev.root) == before
    # the version installed under the old key stays usable for rollback (verified when it was committed)
    assert dev.rollback(MODEL).active == "1.0.0"


def test_role_path_moves_a_legacy_device_to_roots_and_refuses_a_key_list_afterwards(
    release: Release, chain: list[Path], tmp_path: Path
) -> None:
    dev = release.device(tmp_path / "dev")
    dev.init([], roots=[p.read_bytes() for p in chain])
    assert dev.current_root().version == 2
    with pytest.raises(errors.ConfigError, match="trust comes from root documents"):
        dev.init([release.keys[0].public_path])
    # the same chain again: no change (idempotent, what the role does on every run)
    assert dev.update_root([p.read_bytes() for p in chain])["changed"] is False


def test_going_backwards_and_a_gap_are_refused_by_the_cli(
    release: Release, chain: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dev = release.device(tmp_path / "dev")
    root = str(dev.root)
    assert runtime_cli(["--root", root, "--json", "update-root", str(chain[1])]) == 3  # gap: 0 -> 2
    assert "versions 1..1 are missing" in json.loads(capsys.readouterr().out)["message"]
    assert dev.current_root().version == 0
    assert runtime_cli(["--root", root, "--json", "update-root", *map(str, chain)]) == 0
    assert json.loads(capsys.readouterr().out)["applied"] == [1, 2]
    assert runtime_cli(["--root", root, "--json", "update-root", str(chain[0])]) == 3
    assert "a device never goes back" in json.loads(capsys.readouterr().out)["message"]
    assert dev.current_root().version == 2


def test_expired_root_keeps_the_active_model_but_refuses_new_installs(
    release: Release, keys: dict[str, KeyPair], tmp_path: Path
) -> None:
    old = keys["old"]
    past = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(days=1)
    signed = make_root_signed(1, past, {"root": ([old.public], 1), "release": ([old.public], 1)})
    expired = sign_root(Envelope(signed, ()).to_bytes(), [old.private])
    dev = release.device(tmp_path / "dev")
    dev.install(str(release.bundle("1.0.0")))
    dev.update_root([expired])
    before = snapshot(dev.root)
    with pytest.raises(errors.ExpiredError, match=r"trust root version 1 expired at .* keeps serving its active model"):
        dev.install(str(release.bundle("1.1.0")))
    assert snapshot(dev.root) == before
    assert dev.verify_installed(MODEL).version.text == "1.0.0"  # the active model still verifies
    # a newer root (signed by the expired one's root key: expiry never blocks the chain) unblocks installs
    signed2 = make_root_signed(2, past + timedelta(days=400), {"root": ([old.public], 1), "release": ([old.public], 1)})
    dev.update_root([sign_root(Envelope(signed2, ()).to_bytes(), [old.private])])
    assert dev.install(str(release.bundle("1.1.0"))).active == "1.1.0"


def test_a_bundle_signed_for_another_model_is_refused_under_a_root(
    release: Release, chain: list[Path], keys: dict[str, KeyPair], tmp_path: Path
) -> None:
    dev = Device(tmp_path / "dev")
    dev.init([], roots=[p.read_bytes() for p in chain], allowed_models=(MODEL,))
    other = release.custom("int8-2of2.edgebundle", "1.0.0", keys=[keys["ci"], keys["rm"]],
                           model="defect-classifier-int8")
    with pytest.raises(errors.ModelNameError, match="not one this device runs"):
        dev.install(str(other))
    with pytest.raises(errors.ModelNameError, match="was requested"):
        dev.install(str(other), expected_name=MODEL)
    assert not (dev.models_dir / "defect-classifier-int8").exists()


def test_a_bundle_carrying_too_many_root_documents_is_refused_before_reading_them(
    release: Release, chain: list[Path], tmp_path: Path
) -> None:
    from edge_runtime.bundle import BundleSpec, build_bundle
    from tests.support.factory import release_dir

    src = release_dir("1.0.0")
    files = {"model.tflite": src / "model.tflite", "golden.npz": src / "golden.npz"}
    files.update({f"trust/{n}.root.json": chain[0] for n in range(1, 66)})
    spec = BundleSpec(name=MODEL, version="1.0.0", release_counter=1, files=files,
                      entrypoints={"model": "model.tflite", "golden": "golden.npz"}, input_shape=(1, 32, 32, 1),
                      input_dtype="float32",
                      smoke_test={"atol": 0.02, "min_label_agreement": 0.9, "p95_latency_ms": 20.0, "repeats": 3})
    out = tmp_path / "many-roots.edgebundle"
    build_bundle(spec, out, [release.keys[0].private])
    dev = release.device(tmp_path / "dev")
    before = snapshot(dev.root)
    with pytest.raises(errors.RootError, match="carries 65 root documents, more than 64"):
        dev.install(str(out))
    assert snapshot(dev.root) == before

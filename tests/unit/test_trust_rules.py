"""Trust rules without I/O: signatures, thresholds, policy, integrity messages."""

from __future__ import annotations

import base64
import copy
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_runtime import errors
from edge_runtime.keys import sign
from edge_runtime.manifest import Envelope, Manifest, Signature, canonical_bytes, parse_envelope
from edge_runtime.trust import DeviceContext, TrustPolicy, check_file, check_install_policy, key_id, verify_envelope

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=timezone.utc)
KEYS = [ec.generate_private_key(ec.SECP256R1()) for _ in range(3)]


def signed_doc(**model: Any) -> dict[str, Any]:
    m = {"name": "defect-classifier", "version": "1.1.0", "release_counter": 2}
    m.update(model)
    return {
        "_type": "edge-bundle/v1",
        "model": m,
        "created": "2026-11-01T00:00:00Z",
        "expires": "2027-11-01T00:00:00Z",
        "compatibility": {
            "backends": ["litert", "tflite-runtime"],
            "architectures": ["x86_64", "aarch64"],
            "input": {"shape": [1, 32, 32, 1], "dtype": "float32"},
        },
        "entrypoints": {"model": "model.tflite", "golden": "golden.npz"},
        "smoke_test": {"atol": 0.02, "min_label_agreement": 0.9, "p95_latency_ms": 20.0, "repeats": 3},
        "files": [
            {"path": "model.tflite", "sha256": "a" * 64, "length": 10},
            {"path": "golden.npz", "sha256": "b" * 64, "length": 20},
        ],
    }


def envelope(signed: dict[str, Any], *keys: ec.EllipticCurvePrivateKey) -> Envelope:
    payload = canonical_bytes(signed)
    return Envelope(signed, tuple(Signature(key_id(k.public_key()), sign(k, payload)) for k in keys))


def policy(n: int = 1, threshold: int = 1) -> TrustPolicy:
    return TrustPolicy({key_id(k.public_key()): k.public_key() for k in KEYS[:n]}, threshold)


def ctx(**kw: Any) -> DeviceContext:
    base: dict[str, Any] = {"now": NOW, "architecture": "x86_64", "backends": ("litert",)}
    base.update(kw)
    return DeviceContext(**base)


def test_valid_signature_verifies_and_parses() -> None:
    m = verify_envelope(envelope(signed_doc(), KEYS[0]), policy())
    assert m.name == "defect-classifier"
    assert str(m.version) == "1.1.0"
    assert m.digest.startswith("sha256:")


def test_missing_signature_is_refused() -> None:
    with pytest.raises(errors.SignatureError, match="no signature"):
        verify_envelope(Envelope(signed_doc(), ()), policy())


def test_unknown_key_is_refused_and_named() -> None:
    stranger = ec.generate_private_key(ec.SECP256R1())
    with pytest.raises(errors.SignatureError, match="unknown key") as exc:
        verify_envelope(envelope(signed_doc(), stranger), policy())
    assert exc.value.details["unknown"] == [key_id(stranger.public_key())]


def test_signature_over_another_manifest_is_refused() -> None:
    other = envelope(signed_doc(version="1.0.0", release_counter=1), KEYS[0])
    forged = Envelope(signed_doc(), other.signatures)
    with pytest.raises(errors.SignatureError, match="do not match this manifest"):
        verify_envelope(forged, policy())


def test_threshold_counts_each_trusted_key_once() -> None:
    doubled = envelope(signed_doc(), KEYS[0], KEYS[0])
    with pytest.raises(errors.SignatureError, match="1 valid signature"):
        verify_envelope(doubled, policy(3, threshold=2))
    assert verify_envelope(envelope(signed_doc(), KEYS[0], KEYS[2]), policy(3, threshold=2)).name


def test_threshold_larger_than_trusted_keys_is_a_config_error() -> None:
    with pytest.raises(errors.SignatureError, match="larger than"):
        policy(1, threshold=2)


def _flip(data: bytes, index: int, bit: int) -> bytes:
    b = bytearray(data)
    b[index % len(b)] ^= 1 << bit
    return bytes(b)


@settings(max_examples=150, deadline=None)
@given(index=st.integers(min_value=0), bit=st.integers(min_value=0, max_value=7))
def test_sign_mutate_one_bit_verify_must_fail(index: int, bit: int) -> None:
    """Any single-bit change of the serialized manifest is either unparseable or fails verification."""
    env = envelope(signed_doc(), KEYS[0])
    raw = env.to_bytes()
    mutated = _flip(raw, index, bit)
    try:
        parsed = parse_envelope(mutated)
        if parsed == env:  # the flip hit insignificant whitespace: same document, still valid
            verify_envelope(parsed, policy())
            return
        verify_envelope(parsed, policy())
    except errors.TrustError:
        return
    # reaching here means a changed document verified
    sig_changed = parse_envelope(mutated).signatures != env.signatures
    signed_changed = parse_envelope(mutated).signed != env.signed
    pytest.fail(f"mutation at {index % len(raw)} bit {bit} verified (sig {sig_changed}, signed {signed_changed})")


def test_signature_bytes_mutation_fails() -> None:
    env = envelope(signed_doc(), KEYS[0])
    bad = Signature(env.signatures[0].keyid, _flip(env.signatures[0].sig, 10, 0))
    with pytest.raises(errors.SignatureError):
        verify_envelope(Envelope(env.signed, (bad,)), policy())


def test_duplicate_json_keys_are_refused() -> None:
    raw = b'{"signed": {}, "signed": {}, "signatures": []}'
    with pytest.raises(errors.BundleFormatError, match="duplicate"):
        parse_envelope(raw)


@pytest.mark.parametrize("path", ["../evil", "/etc/passwd", "a/../../b", "a//b", "./x", "a\\b"])
def test_unsafe_paths_in_manifest_are_refused(path: str) -> None:
    doc = signed_doc()
    doc["files"][0]["path"] = path
    doc["entrypoints"]["model"] = "golden.npz"
    with pytest.raises(errors.UnsafeBundleError):
        Manifest.from_signed(doc)


def test_unknown_manifest_keys_are_refused() -> None:
    doc = signed_doc()
    doc["surprise"] = 1
    with pytest.raises(errors.BundleFormatError, match="unknown keys"):
        Manifest.from_signed(doc)


@pytest.mark.parametrize("version", ["latest", "1.2", "^1.2.0", "1.2.x", "01.2.3"])
def test_non_exact_versions_are_refused(version: str) -> None:
    with pytest.raises(errors.BundleFormatError, match="semantic version"):
        Manifest.from_signed(signed_doc(version=version))


def manifest(**model: Any) -> Manifest:
    return Manifest.from_signed(signed_doc(**model))


def test_policy_refuses_other_model_name() -> None:
    with pytest.raises(errors.ModelNameError, match="'other'"):
        check_install_policy(manifest(), ctx(expected_name="other"))


def test_policy_refuses_expired_manifest() -> None:
    with pytest.raises(errors.ExpiredError, match="expired"):
        check_install_policy(manifest(), ctx(now=NOW + timedelta(days=400)))


def test_policy_refuses_incompatible_architecture() -> None:
    with pytest.raises(errors.IncompatibleError, match="armv7l"):
        check_install_policy(manifest(), ctx(architecture="armv7l"))


def test_policy_refuses_missing_backend() -> None:
    with pytest.raises(errors.IncompatibleError, match="backend"):
        check_install_policy(manifest(), ctx(backends=()))


def test_policy_refuses_input_contract_mismatch() -> None:
    with pytest.raises(errors.IncompatibleError, match="provides"):
        check_install_policy(manifest(), ctx(input_contract=((1, 64, 64, 3), "float32")))


def test_policy_refuses_downgrade_but_allows_kept_version() -> None:
    m = manifest(version="1.0.0", release_counter=1)
    with pytest.raises(errors.DowngradeError, match="lower than 2"):
        check_install_policy(m, ctx(highest_counter=2))
    check_install_policy(m, ctx(highest_counter=2, installed={"1.0.0": m.digest}))


def test_policy_refuses_same_version_with_other_content() -> None:
    with pytest.raises(errors.ImmutableVersionError):
        check_install_policy(manifest(), ctx(installed={"1.1.0": "sha256:" + "0" * 64}))


def test_policy_refuses_quarantined_unless_allowed() -> None:
    with pytest.raises(errors.QuarantinedError, match="smoke failed"):
        check_install_policy(manifest(), ctx(bad_versions={"1.1.0": "smoke failed"}))
    check_install_policy(manifest(), ctx(bad_versions={"1.1.0": "smoke failed"}), allow_quarantined=True)


def test_integrity_messages_say_what_differs() -> None:
    entry = manifest().files[0]
    with pytest.raises(errors.IntegrityError, match="truncated: 9 bytes, manifest says 10"):
        check_file(entry, entry.sha256, 9)
    with pytest.raises(errors.IntegrityError, match="longer than declared"):
        check_file(entry, entry.sha256, 11)
    with pytest.raises(errors.IntegrityError, match="expected " + "a" * 64):
        check_file(entry, "f" * 64, 10)


def test_canonical_bytes_ignore_key_order() -> None:
    doc = signed_doc()
    shuffled = dict(reversed(list(copy.deepcopy(doc).items())))
    assert canonical_bytes(doc) == canonical_bytes(shuffled)


def test_base64_garbage_signature_is_a_format_error() -> None:
    raw = envelope(signed_doc(), KEYS[0]).to_bytes().replace(base64.b64encode(b"x")[:0] + b'"sig": "', b'"sig": "!!')
    with pytest.raises(errors.BundleFormatError, match="base64"):
        parse_envelope(raw)


def test_semver_ordering_puts_prereleases_first_and_ignores_build_metadata() -> None:
    from edge_runtime.manifest import Version

    v = Version.parse
    assert v("1.0.0-rc.1") < v("1.0.0") < v("1.0.1") < v("1.1.0") < v("2.0.0")
    assert v("1.0.0-alpha") < v("1.0.0-alpha.1") < v("1.0.0-beta")
    assert v("1.0.0+a") == v("1.0.0+b")

"""Trust root rules without I/O: rotation chains, thresholds, versions, expiry, key types (edge_runtime.root)."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timedelta, timezone

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from edge_runtime import errors
from edge_runtime.manifest import Envelope
from edge_runtime.root import (
    Root,
    check_root_fresh,
    make_root_signed,
    parse_root,
    sign_root,
    update_chain,
    verify_chain,
)
from edge_runtime.trust import key_id, verify_envelope
from tests.unit.test_trust_rules import envelope, signed_doc

NOW = datetime(2026, 12, 1, tzinfo=timezone.utc)
K = [ec.generate_private_key(ec.SECP256R1()) for _ in range(5)]


def root_doc(
    version: int,
    root_keys: list[int],
    release_keys: list[int],
    *,
    signers: list[int],
    root_threshold: int = 1,
    release_threshold: int = 1,
    expires: datetime = NOW + timedelta(days=365),
) -> bytes:
    signed = make_root_signed(
        version,
        expires,
        {
            "root": ([K[i].public_key() for i in root_keys], root_threshold),
            "release": ([K[i].public_key() for i in release_keys], release_threshold),
        },
    )
    return sign_root(Envelope(signed, ()).to_bytes(), [K[i] for i in signers])


@pytest.fixture(scope="module")
def chain() -> list[bytes]:
    """v1: root k0, release k1. v2: root k2, release k3 (k1 removed). v3: root k2+k4 (2 of 2), release k3."""
    return [
        root_doc(1, [0], [1], signers=[0]),
        root_doc(2, [2], [3], signers=[0, 2]),
        root_doc(3, [2, 4], [3], signers=[2, 4], root_threshold=2),
    ]


def test_rotation_from_previous_version_is_accepted(chain: list[bytes]) -> None:
    v1 = verify_chain(chain[:1])[0]
    [v2] = update_chain(v1, chain[1:2])
    assert v2.version == 2
    assert v2.roles["release"].keyids == (key_id(K[3].public_key()),)


def test_rotation_from_two_versions_back_goes_through_the_chain(chain: list[bytes]) -> None:
    v1 = verify_chain(chain[:1])[0]
    got = update_chain(v1, list(reversed(chain)))  # any order; older and equal versions are skipped
    assert [r.version for r in got] == [2, 3]


def test_a_gap_in_the_chain_is_refused(chain: list[bytes]) -> None:
    v1 = verify_chain(chain[:1])[0]
    with pytest.raises(errors.RootError, match=r"versions 2\.\.2 are missing"):
        update_chain(v1, [chain[2]])


def test_root_version_going_backwards_is_refused(chain: list[bytes]) -> None:
    v3 = verify_chain(chain)[-1]
    with pytest.raises(errors.RootError, match="not newer than trust root version 3; a device never goes back"):
        update_chain(v3, chain[:2])


def test_same_version_identical_is_a_no_op_and_different_is_refused(chain: list[bytes]) -> None:
    v2 = verify_chain(chain[:2])[-1]
    assert update_chain(v2, chain[:2]) == []
    other = root_doc(2, [2], [1], signers=[0, 2])
    with pytest.raises(errors.RootError, match="differs from the one this device trusts"):
        update_chain(v2, [other])


def test_new_root_must_be_signed_by_the_previous_root_keys(chain: list[bytes]) -> None:
    v1 = verify_chain(chain[:1])[0]
    only_own = root_doc(2, [2], [3], signers=[2])  # k0 (v1's root key) did not sign
    with pytest.raises(errors.RootError, match="checked against the root keys of trust root version 1: 0 valid"):
        update_chain(v1, [only_own])


def test_new_root_must_be_signed_by_its_own_root_keys(chain: list[bytes]) -> None:
    v1 = verify_chain(chain[:1])[0]
    only_old = root_doc(2, [2], [3], signers=[0])  # k2 (its own root key) did not sign
    with pytest.raises(errors.RootError, match="root keys of itself: 0 valid signature"):
        update_chain(v1, [only_old])


def test_root_signed_by_too_few_keys_is_refused_and_one_key_counts_once(chain: list[bytes]) -> None:
    v3 = verify_chain(chain)[-1]  # root role: 2 of k2, k4
    doc = root_doc(4, [2, 4], [3], signers=[2], root_threshold=2)
    with pytest.raises(errors.RootError, match="1 valid signature"):
        update_chain(v3, [doc])
    # the same key signing twice still counts once
    env = json.loads(doc)
    env["signatures"] = env["signatures"] * 2
    with pytest.raises(errors.RootError, match="1 valid signature"):
        update_chain(v3, [json.dumps(env).encode()])
    # threshold met exactly (2 of 2): accepted
    assert [r.version for r in update_chain(v3, [sign_root(doc, [K[4]])])] == [4]


def test_removed_release_key_no_longer_verifies_bundles(chain: list[bytes]) -> None:
    v1, v2 = verify_chain(chain[:2])
    old_bundle = envelope(signed_doc(), K[1])
    assert verify_envelope(old_bundle, v1.policy()).name == "defect-classifier"
    with pytest.raises(errors.SignatureError, match="signed by unknown key"):
        verify_envelope(old_bundle, v2.policy())
    # a copy already on a device may still be vouched for by the root it was installed under
    assert verify_envelope(old_bundle, v2.policy("release", (v1.policy(),))).version.text == "1.1.0"


def test_root_expiry_refuses_new_installs_at_the_exact_time() -> None:
    r = verify_chain([root_doc(1, [0], [1], signers=[0], expires=NOW)])[0]
    check_root_fresh(r, NOW - timedelta(seconds=1))
    with pytest.raises(errors.ExpiredError, match="expired at 2026-12-01T00:00:00Z; the device keeps serving"):
        check_root_fresh(r, NOW)


def test_legacy_key_list_is_root_version_zero() -> None:
    legacy = Root.legacy({key_id(K[0].public_key()): K[0].public_key()}, 1)
    assert legacy.version == 0
    assert legacy.expires is None
    [v1] = update_chain(legacy, [root_doc(1, [2], [2], signers=[0, 2])])
    assert v1.version == 1
    with pytest.raises(errors.RootError, match="root keys of the legacy trusted-key list"):
        update_chain(legacy, [root_doc(1, [2], [2], signers=[2])])


def _with_key(doc: bytes, pem: bytes) -> bytes:
    """``doc`` with its only release key replaced by ``pem`` (under that key's id), unsigned."""
    env = json.loads(doc)
    signed = env["signed"]
    key = serialization.load_pem_public_key(pem)
    der = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    kid = hashlib.sha256(der).hexdigest()
    old = signed["roles"]["release"]["keyids"][0]
    del signed["keys"][old]
    signed["keys"][kid] = {"keytype": "ecdsa-p256", "public": pem.decode()}
    signed["roles"]["release"]["keyids"] = [kid]
    return json.dumps({"signed": signed, "signatures": []}).encode()


@pytest.mark.parametrize(
    ("key", "what"),
    [
        (ec.generate_private_key(ec.SECP384R1()).public_key(), "an EC key on curve secp384r1"),
        (ed25519.Ed25519PrivateKey.generate().public_key(), "Ed25519PublicKey"),
    ],
)
def test_wrong_key_type_or_curve_is_refused_by_name(key: object, what: str) -> None:
    pem = key.public_bytes(  # type: ignore[attr-defined]
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    doc = _with_key(root_doc(1, [0], [1], signers=[]), pem)
    with pytest.raises(errors.RootError, match=f"is {what}, not ECDSA P-256"):
        parse_root(doc)


def test_root_document_is_strict() -> None:
    doc = json.loads(root_doc(1, [0], [1], signers=[0]))
    doc["signed"]["extra"] = 1
    with pytest.raises(errors.RootError, match="exactly _type, version"):
        parse_root(json.dumps(doc).encode())
    doc = json.loads(root_doc(1, [0], [1], signers=[0]))
    doc["signed"]["roles"]["release"]["threshold"] = 2
    with pytest.raises(errors.RootError, match="threshold must be an integer from 1 to its 1 key"):
        parse_root(json.dumps(doc).encode())
    with pytest.raises(errors.RootError, match="more than the limit"):
        parse_root(b" " * (64 * 1024 + 1))


def test_a_tampered_root_fails_its_signatures() -> None:
    doc = json.loads(root_doc(1, [0], [1], signers=[0]))
    doc["signed"]["expires"] = "2099-01-01T00:00:00Z"
    with pytest.raises(errors.RootError, match="do not match this root document"):
        verify_chain([json.dumps(doc).encode()])

"""The controller's trusted-key gate: its cryptography-free P-256 path agrees with cryptography exactly.

``plugin_utils/trusted_keys.check_public_pem`` accepts a canonical ECDSA P-256 public key without importing
cryptography (the setup action plugin runs once per device); anything it does not recognise goes to
cryptography. These tests hold the two paths to the same answers: accepted keys give byte-identical
canonical PEMs and the same key, and a point that is not on the curve is refused on both.
"""

from __future__ import annotations

import base64
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from hypothesis import given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "collections"))

from ansible_collections.edgeml.fleet.plugins.plugin_utils import trusted_keys as tk

HEADER = tk._P256_SPKI_HEADER


def pem_of(der: bytes, width: int = 64) -> bytes:
    b64 = base64.b64encode(der).decode()
    return ("-----BEGIN PUBLIC KEY-----\n" + "\n".join(b64[i : i + width] for i in range(0, len(b64), width))
            + "\n-----END PUBLIC KEY-----\n").encode()


def crypto_accepts(pem: bytes) -> bool:
    try:
        key = serialization.load_pem_public_key(pem)
    except ValueError:
        return False
    return isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1)


@pytest.mark.parametrize("width", [64, 76, 32], ids=["canonical", "wide-lines", "narrow-lines"])
def test_a_real_key_takes_the_fast_path_and_gives_cryptographys_canonical_pem(width: int) -> None:
    key = ec.generate_private_key(ec.SECP256R1()).public_key()
    der = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    canonical = key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    assert tk._canonical_p256(pem_of(der, width).strip()) == canonical.decode()
    got = tk.check_public_pem(pem_of(der, width), "k.pub")
    assert got.pem == canonical.decode()
    assert got.key.public_numbers() == key.public_numbers()  # parsed on demand, the same key


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=64, max_size=64))
def test_any_64_byte_point_is_accepted_exactly_when_cryptography_accepts_it(point: bytes) -> None:
    pem = pem_of(HEADER + point)
    fast = tk._canonical_p256(pem.strip())
    assert (fast is not None) == crypto_accepts(pem)
    if fast is None:
        with pytest.raises(tk.TrustedKeyError, match="does not parse"):
            tk.check_public_pem(pem, "k.pub")


def test_off_curve_and_out_of_range_points_are_refused() -> None:
    key = ec.generate_private_key(ec.SECP256R1()).public_key().public_numbers()
    y_plus_one = HEADER + key.x.to_bytes(32, "big") + ((key.y + 1) % tk._P256_P).to_bytes(32, "big")
    y_plus_p = HEADER + key.x.to_bytes(32, "big") + (key.y + tk._P256_P).to_bytes(33, "big")[-32:]
    for der in (y_plus_one, y_plus_p, HEADER + bytes(64)):
        pem = pem_of(der)
        assert tk._canonical_p256(pem.strip()) is None
        assert not crypto_accepts(pem)
        with pytest.raises(tk.TrustedKeyError):
            tk.check_public_pem(pem, "k.pub")


def test_other_key_types_still_go_to_cryptography_and_are_named() -> None:
    ed = ed25519.Ed25519PrivateKey.generate().public_key()
    pem = ed.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    with pytest.raises(tk.TrustedKeyError, match="not an ECDSA P-256 public key"):
        tk.check_public_pem(pem, "ed.pub")
    p384 = ec.generate_private_key(ec.SECP384R1()).public_key()
    pem = p384.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    with pytest.raises(tk.TrustedKeyError, match="not an ECDSA P-256 public key"):
        tk.check_public_pem(pem, "p384.pub")


def test_a_compressed_point_is_accepted_by_cryptography_and_re_encoded_uncompressed() -> None:
    key = ec.generate_private_key(ec.SECP256R1()).public_key()
    compressed = key.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.CompressedPoint)
    der = bytes.fromhex("3039301306072a8648ce3d020106082a8648ce3d030107032200") + compressed
    got = tk.check_public_pem(pem_of(der), "c.pub")
    canonical = key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    assert got.pem == canonical.decode()

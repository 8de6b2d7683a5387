"""Key helpers for tests: real ECDSA P-256 keys, generated per test session."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ec

from edge_runtime.keys import generate_keypair, load_private_key, load_public_key
from edge_runtime.trust import key_id


@dataclass(frozen=True)
class KeyPair:
    private_path: Path
    public_path: Path

    @property
    def private(self) -> ec.EllipticCurvePrivateKey:
        return load_private_key(self.private_path)

    @property
    def public(self) -> ec.EllipticCurvePublicKey:
        return load_public_key(self.public_path)

    @property
    def keyid(self) -> str:
        return key_id(self.public)


def make_keypair(directory: Path, name: str) -> KeyPair:
    directory.mkdir(parents=True, exist_ok=True)
    priv, pub = directory / f"{name}.key", directory / f"{name}.pub"
    generate_keypair(priv, pub)
    return KeyPair(priv, pub)

# Copyright (c) edgeml maintainers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Trusted-key files on the controller: only PUBLIC keys pass, and nothing of a refused file is ever shown.

Controller-only (imports cryptography). :func:`read_public_key` is the one gate every trusted-key input
crosses before it is used for verification or sent to a device (the ``desired_state`` validation and the
``edge_runtime_setup`` action both call it). A file is accepted only when, apart from whitespace, it
is exactly one PEM ``PUBLIC KEY`` block holding an ECDSA P-256 key (what the runtime trusts); what is
passed on is the key re-encoded from its parsed form, never the file's other bytes.

Every refusal is a :class:`TrustedKeyError` that names the file and what kind of thing it holds
(a private key, an encrypted private key, an OpenSSH private key, not PEM...), and never quotes the
file's content: a private key in the wrong list must not end up in a log or a terminal either.
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ansible_collections.edgeml.fleet.plugins.plugin_utils.models_yaml import DesiredStateError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePublicKey

__all__ = [
    "MAX_KEY_FILE_BYTES",
    "MAX_ROOT_FILE_BYTES",
    "PublicKey",
    "TrustedKeyError",
    "check_public_pem",
    "read_public_key",
    "read_root_document",
]

#: the runtime's limit for a root document (edge_runtime._limits.Limits.root_max_bytes)
MAX_ROOT_FILE_BYTES = 64 * 1024

#: a P-256 public key PEM is 178 bytes; anything far larger is not one
MAX_KEY_FILE_BYTES = 16 * 1024

_BEGIN = re.compile(rb"-----BEGIN ([A-Z0-9 ]{1,64})-----")
_PUBLIC_BLOCK = re.compile(
    rb"\A\s*(-----BEGIN PUBLIC KEY-----\r?\n[A-Za-z0-9+/=\r\n]{1,8192}-----END PUBLIC KEY-----)\s*\Z"
)
_PRIVATE_MARKERS = (b"PRIVATE KEY", b"PuTTY-User-Key-File", b'"d":')

_ROTATE = (
    "list the public key (edge-release keygen writes NAME.pub next to NAME.key); nothing was sent to any "
    "device. If this private key was ever committed, copied or shared, treat it as leaked and rotate it"
)


class TrustedKeyError(DesiredStateError):
    """A trusted-key input that is not a usable public key. Its message never contains the input."""

    def __init__(self, source: str, problem: str, hint: str | None = None) -> None:
        super().__init__(source, 0, 0, problem, hint)


@dataclass(frozen=True)
class PublicKey:
    """An accepted trusted key: where it came from, its canonical PEM (what devices get), the key."""

    source: str
    pem: str

    @functools.cached_property
    def key(self) -> EllipticCurvePublicKey:
        """The parsed key (cryptography is imported only when asked: the setup action plugin does not need it)."""
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ec

        key = serialization.load_pem_public_key(self.pem.encode("ascii"))
        if not isinstance(key, ec.EllipticCurvePublicKey):  # checked when this PublicKey was made
            raise AssertionError("not an EC public key")
        return key

    @property
    def key_id(self) -> str:
        """The runtime's key id (imported only when asked: the setup action plugin does not need it)."""
        from edge_runtime.trust import key_id

        return key_id(self.key)


def _kind_of_refused(data: bytes) -> tuple[str, str]:
    """(problem, hint) for bytes that are not exactly one PEM public key; never quotes ``data``."""
    labels = [m.group(1).decode("ascii") for m in _BEGIN.finditer(data)]
    private = [label for label in labels if "PRIVATE KEY" in label]
    if private:
        label = private[0]
        what = {
            "ENCRYPTED PRIVATE KEY": "an encrypted private key",
            "OPENSSH PRIVATE KEY": "an OpenSSH private key",
        }.get(label, "a private key")
        return f"holds {what} (PEM '{label}'), not a public key; a private key is never trusted or sent", _ROTATE
    if any(marker in data for marker in _PRIVATE_MARKERS):
        return "looks like a private key, not a public key; a private key is never trusted or sent", _ROTATE
    if data.lstrip().startswith((b"ssh-", b"ecdsa-sha2-")):
        return "is an OpenSSH public key, not a PEM public key", (
            "export it as PEM: ssh-keygen -f KEY.pub -e -m PKCS8 > KEY.pem"
        )
    if labels == ["PUBLIC KEY"]:
        return "holds other text besides its PEM public key block", "keep only the -----BEGIN/END PUBLIC KEY----- block"
    if "PUBLIC KEY" in labels and len(labels) > 1:
        return f"holds {len(labels)} PEM blocks; a trusted-key file holds exactly one public key", (
            "put each public key in its own file"
        )
    if labels:
        return f"holds a PEM '{labels[0]}' block, not a 'PUBLIC KEY'", "list the PEM public key file"
    return "is not a PEM public key", "list the PEM public key file (-----BEGIN PUBLIC KEY-----)"


#: DER SubjectPublicKeyInfo of an ECDSA P-256 key, uncompressed point: this fixed header, then X and Y (32 bytes
#: each). RFC 5480: SEQUENCE { SEQUENCE { id-ecPublicKey, prime256v1 }, BIT STRING 04 || X || Y }
_P256_SPKI_HEADER = bytes.fromhex("3059301306072a8648ce3d020106082a8648ce3d03010703420004")
# the curve (SEC 2, secp256r1): y^2 = x^3 - 3x + b (mod p)
_P256_P = 0xFFFFFFFF00000001000000000000000000000000FFFFFFFFFFFFFFFFFFFFFFFF
_P256_B = 0x5AC635D8AA3A93E7B3EBBD55769886BC651D06B0CC53B0F63BCE3C3E27D2604B


def _canonical_p256(block: bytes) -> str | None:
    """The canonical PEM of ``block`` if it is an ECDSA P-256 public key with its point on the curve, else None.

    The fast path: exactly the check cryptography makes for this one key type (structure, curve, point on
    the curve; the point at infinity and coordinates >= p are refused), in pure Python, so the setup action
    plugin, which runs once per device, does not import cryptography. Anything else (other key types,
    compressed points, odd encodings) goes to cryptography, which accepts or names it.
    """
    body = b"".join(block.splitlines()[1:-1])
    try:
        der = base64.b64decode(body, validate=True)
    except (binascii.Error, ValueError):
        return None
    if len(der) != len(_P256_SPKI_HEADER) + 64 or not der.startswith(_P256_SPKI_HEADER):
        return None
    x = int.from_bytes(der[-64:-32], "big")
    y = int.from_bytes(der[-32:], "big")
    if x >= _P256_P or y >= _P256_P or (y * y - (x * x * x - 3 * x + _P256_B)) % _P256_P != 0:
        return None
    b64 = base64.b64encode(der).decode("ascii")
    lines = [b64[i : i + 64] for i in range(0, len(b64), 64)]
    return "-----BEGIN PUBLIC KEY-----\n" + "\n".join(lines) + "\n-----END PUBLIC KEY-----\n"


def check_public_pem(data: bytes, source: str) -> PublicKey:
    """Accept ``data`` only if it is exactly one PEM ECDSA P-256 public key; ``source`` names it in errors."""
    if len(data) > MAX_KEY_FILE_BYTES:
        raise TrustedKeyError(
            source, f"is larger than {MAX_KEY_FILE_BYTES} bytes: not a public key file", "list the PEM public key"
        )
    m = _PUBLIC_BLOCK.match(data)
    if m is None:
        raise TrustedKeyError(source, *_kind_of_refused(data))
    fast = _canonical_p256(m.group(1).strip())
    if fast is not None:
        return PublicKey(source=source, pem=fast)

    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    try:
        key = serialization.load_pem_public_key(m.group(1))
    except (ValueError, TypeError):
        # cryptography's message is not shown: it could be about the bytes
        raise TrustedKeyError(
            source, "holds a PEM public key block that does not parse", "regenerate or re-export it"
        ) from None
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        raise TrustedKeyError(
            source, f"holds a {type(key).__name__.lstrip('_')}, not an ECDSA P-256 public key",
            "edge devices trust ECDSA P-256 keys; generate them with edge-release keygen",
        )
    pem = key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    public = PublicKey(source=source, pem=pem.decode("ascii"))
    public.__dict__["key"] = key  # already parsed (functools.cached_property reads it from here)
    return public


def read_public_key(path: str | Path) -> PublicKey:
    """Read and check one trusted-key file on the controller (see the module docstring)."""
    source = str(path)
    try:
        with open(path, "rb") as fh:
            data = fh.read(MAX_KEY_FILE_BYTES + 1)
    except FileNotFoundError:
        raise TrustedKeyError(
            source, "trusted key file not found", "fix the path in edge_runtime_trusted_keys"
        ) from None
    except IsADirectoryError:
        raise TrustedKeyError(source, "is a directory, not a key file", "list the PEM public key files") from None
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise TrustedKeyError(source, f"cannot read the trusted key file: {reason}") from None
    return check_public_pem(data, source)


def read_root_document(path: str) -> str:
    """Read a trust root document (``N.root.json``) on the controller: bounded, JSON text holding public keys
    only. Its signatures and chain are verified by the device (``edge_runtime.root``), which trusts nothing
    else; this gate only keeps a wrong file (a private key, something huge) from being sent at all."""
    try:
        with open(path, "rb") as fh:
            data = fh.read(MAX_ROOT_FILE_BYTES + 1)
    except OSError as exc:
        raise TrustedKeyError(path, f"cannot read the trust root file: {exc.strerror or type(exc).__name__}") from None
    if len(data) > MAX_ROOT_FILE_BYTES:
        raise TrustedKeyError(path, f"is larger than {MAX_ROOT_FILE_BYTES} bytes: not a root document")
    if any(marker in data for marker in _PRIVATE_MARKERS):
        raise TrustedKeyError(path, "holds private key material; a root document lists public keys only", _ROTATE)
    try:
        text = data.decode("utf-8")
        doc = json.loads(text)
        ok = doc["signed"]["_type"] == "edge-root/v1"
    except (UnicodeDecodeError, ValueError, KeyError, TypeError):
        ok = False
    if not ok:
        raise TrustedKeyError(path, "is not a trust root document (edge-root/v1)",
                              "list the N.root.json files made by `edge-release root new` / `root sign`")
    return text

"""Key files: generate, load and sign. Private keys are written 0600 and never printed."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from ._json import open_regular_file
from ._limits import DEFAULT_LIMITS
from .errors import KeyFileError, quote_untrusted
from .trust import key_id

__all__ = ["generate_keypair", "load_private_key", "load_public_key", "sign"]

PASSPHRASE_ENV = "EDGE_RELEASE_KEY_PASSPHRASE"  # noqa: S105 - the name of a variable, not a secret


PASSPHRASE_FILE_ENV = "EDGE_RELEASE_KEY_PASSPHRASE_FILE"  # noqa: S105 - the name of a variable, not a secret


def _passphrase() -> bytes | None:
    """The passphrase of encrypted private keys: ``$EDGE_RELEASE_KEY_PASSPHRASE`` (a CI secret), else the
    first line of the file named by ``$EDGE_RELEASE_KEY_PASSPHRASE_FILE`` (e.g. written by
    ``ansible-vault view``, or a CI secret file; process substitution ``<(...)`` works too)."""
    value = os.environ.get(PASSPHRASE_ENV)
    if value:
        return value.encode("utf-8")
    path = os.environ.get(PASSPHRASE_FILE_ENV)
    if not path:
        return None
    try:
        with open(path, "rb") as fh:
            line = fh.read(4096).splitlines()
    except OSError as exc:
        raise KeyFileError(
            f"{PASSPHRASE_FILE_ENV} names a file that cannot be read: {exc.strerror}",
            hint="point it at the file holding the key passphrase (its first line)",
        ) from None
    return line[0] if line and line[0] else None


def generate_keypair(private_path: Path, public_path: Path, *, overwrite: bool = False) -> str:
    """Create an ECDSA P-256 key pair; return its key id.

    The private key is PKCS#8 PEM, encrypted when ``EDGE_RELEASE_KEY_PASSPHRASE`` is set, and is
    created with mode 0600 (``O_EXCL`` unless ``overwrite``) so it is never briefly world-readable.
    """
    key = ec.generate_private_key(ec.SECP256R1())
    passphrase = _passphrase()
    enc: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase) if passphrase else serialization.NoEncryption()
    )
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, enc)
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if overwrite else os.O_EXCL)
    try:
        fd = os.open(private_path, flags, 0o600)
    except FileExistsError:
        raise KeyFileError(
            f"{private_path} already exists", hint="choose another name; existing keys are never overwritten"
        ) from None
    with os.fdopen(fd, "wb") as fh:
        os.fchmod(fh.fileno(), 0o600)
        fh.write(pem)
    pub = key.public_key()
    public_path.write_bytes(
        pub.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return key_id(pub)


def _read_key_file(path: Path, what: str) -> bytes:
    """The bytes of a key file, bounded; a missing, unreadable or oversized file is a :class:`KeyFileError`."""
    limit = DEFAULT_LIMITS.key_file_max_bytes
    try:
        with open_regular_file(path) as fh:  # a FIFO would block forever
            data = fh.read(limit + 1)
    except FileNotFoundError:
        raise KeyFileError(
            f"{what} {quote_untrusted(str(path))} does not exist", hint="create keys with `edge-release keygen`"
        ) from None
    except OSError as exc:
        raise KeyFileError(f"{what} {quote_untrusted(str(path))} cannot be read: {exc.strerror}") from None
    if len(data) > limit:
        raise KeyFileError(f"{what} {quote_untrusted(str(path))} is larger than {limit} bytes; it is not a PEM key")
    return data


def load_private_key(path: Path) -> ec.EllipticCurvePrivateKey:
    """Load a P-256 private key, refusing files readable by group or others."""
    try:
        st = path.stat()
    except FileNotFoundError:
        raise KeyFileError(
            f"private key {quote_untrusted(str(path))} does not exist", hint="create one with `edge-release keygen`"
        ) from None
    except OSError as exc:
        raise KeyFileError(f"private key {quote_untrusted(str(path))} cannot be read: {exc.strerror}") from None
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeyFileError(
            f"private key {path} is accessible by group or others (mode {stat.S_IMODE(st.st_mode):04o})",
            hint=f"run `chmod 600 {path}`",
        )
    try:
        key = serialization.load_pem_private_key(_read_key_file(path, "private key"), password=_passphrase())
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        # The exception text never includes key material.
        raise KeyFileError(
            f"cannot load private key {path}: {type(exc).__name__}",
            hint=f"check the file and {PASSPHRASE_ENV} (or {PASSPHRASE_FILE_ENV}) for encrypted keys",
        ) from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
        raise KeyFileError(f"{path} is not an ECDSA P-256 private key")
    return key


def load_public_key(path: Path) -> ec.EllipticCurvePublicKey:
    """Load a P-256 public key (PEM SubjectPublicKeyInfo); anything else is a :class:`KeyFileError`."""
    data = _read_key_file(path, "public key")
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise KeyFileError(
            f"cannot load public key {quote_untrusted(str(path))}: {type(exc).__name__}",
            hint="pass a PEM public key made by `edge-release keygen`",
        ) from None
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        raise KeyFileError(f"{path} is not an ECDSA P-256 public key", hint="generate keys with `edge-release keygen`")
    return key


def sign(key: ec.EllipticCurvePrivateKey, payload: bytes) -> bytes:
    return key.sign(payload, ec.ECDSA(hashes.SHA256()))

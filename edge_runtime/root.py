"""Trust roots: the small signed, versioned document that says which keys a device trusts. No I/O here.

A root document (``N.root.json``) has the envelope shape of a manifest (``signed`` + ``signatures``, the
same canonical bytes and ECDSA P-256 signatures) and this ``signed`` part::

    {"_type": "edge-root/v1", "version": 3, "expires": "2027-12-01T00:00:00Z",
     "keys": {"<key id>": {"keytype": "ecdsa-p256", "public": "-----BEGIN PUBLIC KEY-----..."}},
     "roles": {"root":    {"keyids": ["<key id>", ...], "threshold": 2},
               "release": {"keyids": ["<key id>", ...], "threshold": 2}}}

``release`` keys sign bundles; ``root`` keys sign the next root document. The rules follow TUF's root
rotation (the TUF specification's client workflow, step "update the root role"; python-tuf's
``TrustedMetadataSet.update_root``), implemented here over the runtime's own envelope:

- root N+1 is accepted only when signed by a threshold of root N's ``root`` keys AND by a threshold of its
  own ``root`` keys, and its version is exactly N+1 (a gap is refused: the chain must be complete);
- an older or equal version never replaces the current one (equal and identical is a no-op);
- expiry is checked only on the root a device ends up with, and only for new installs (see
  :func:`check_root_fresh`): an expired root still verifies the copies already on the device;
- a key counts once however often it signs; a key that is not ECDSA P-256 is refused by name.

A device without a root document trusts its legacy key list (``trust/*.pub.pem`` and ``threshold`` in
``config.json``); :meth:`Root.legacy` turns that list into the implicit root version 0, whose keys fill
both roles, so the first real root (version 1) must be signed by a threshold of the keys devices trust today.
"""

from __future__ import annotations

import hashlib
import itertools
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from ._limits import DEFAULT_LIMITS, Limits
from .errors import BundleFormatError, ExpiredError, RootError, SignatureError, quote_untrusted
from .manifest import Envelope, canonical_bytes, format_time, parse_envelope, parse_time
from .trust import TrustPolicy, count_signatures, key_id, threshold_error

__all__ = [
    "KEYTYPE",
    "ROLES",
    "ROOT_MEMBER",
    "ROOT_TYPE",
    "Role",
    "Root",
    "check_next",
    "check_root_fresh",
    "check_self_signed",
    "make_root_signed",
    "parse_root",
    "root_member_version",
    "sign_root",
    "update_chain",
    "verify_chain",
]

ROOT_TYPE = "edge-root/v1"
KEYTYPE = "ecdsa-p256"
ROLES = ("root", "release")
#: where a bundle carries root documents: ``trust/<version>.root.json`` (listed in its manifest like any file,
#: so runtimes that predate roots install such bundles unchanged)
ROOT_MEMBER = re.compile(r"^trust/([1-9][0-9]{0,8})\.root\.json$", re.ASCII)
_HEX64 = re.compile(r"^[0-9a-f]{64}$", re.ASCII)


def root_member_version(path: str) -> int | None:
    """The root version a bundle member carries, or None if the member is not a root document."""
    m = ROOT_MEMBER.fullmatch(path)
    return int(m.group(1)) if m else None


@dataclass(frozen=True)
class Role:
    keyids: tuple[str, ...]
    threshold: int


@dataclass(frozen=True)
class Root:
    """A parsed root document (or the implicit version 0 of a legacy key list)."""

    version: int
    expires: datetime | None
    keys: Mapping[str, ec.EllipticCurvePublicKey]
    roles: Mapping[str, Role]
    envelope: Envelope | None = None
    #: the document's bytes as received (what a device stores); None for the legacy root
    data: bytes | None = field(default=None, repr=False)

    @classmethod
    def legacy(cls, keys: Mapping[str, ec.EllipticCurvePublicKey], threshold: int) -> Root:
        """The implicit root version 0 of a device that trusts a key list (both roles: all keys, ``threshold``)."""
        ids = tuple(sorted(keys))
        TrustPolicy(keys, threshold)  # the same checks as before roots existed
        return cls(0, None, dict(keys), {r: Role(ids, threshold) for r in ROLES})

    @property
    def digest(self) -> str | None:
        if self.envelope is None:
            return None
        return "sha256:" + hashlib.sha256(canonical_bytes(self.envelope.signed)).hexdigest()

    def describe(self) -> str:
        if self.version == 0:
            return "the legacy trusted-key list (root version 0)"
        return f"trust root version {self.version}"

    def role_keys(self, role: str) -> dict[str, ec.EllipticCurvePublicKey]:
        return {k: self.keys[k] for k in self.roles[role].keyids}

    def policy(self, role: str = "release", fallbacks: tuple[TrustPolicy, ...] = ()) -> TrustPolicy:
        """The signature policy of ``role`` (``release``: bundles; ``root``: the next root)."""
        return TrustPolicy(self.role_keys(role), self.roles[role].threshold, fallbacks, self.describe())

    def summary(self) -> dict[str, Any]:
        """What a person or a fact consumer needs: version, expiry, and each role's key ids and threshold."""
        return {
            "version": self.version,
            "expires": format_time(self.expires) if self.expires else None,
            "digest": self.digest,
            "roles": {r: {"keyids": list(role.keyids), "threshold": role.threshold} for r, role in self.roles.items()},
        }


def _bad(message: str, hint: str | None = None) -> RootError:
    return RootError(f"root document: {message}", hint=hint)


def _public_key(kid: str, entry: Any) -> ec.EllipticCurvePublicKey:
    if not isinstance(entry, dict) or set(entry) != {"keytype", "public"}:
        raise _bad(f"key {kid[:16]} must be an object with exactly keytype and public")
    if entry["keytype"] != KEYTYPE:
        raise _bad(
            f"key {kid[:16]} has keytype {quote_untrusted(entry['keytype'], 40)}; devices trust {KEYTYPE} only",
            hint="generate release keys with `edge-release keygen` (ECDSA P-256)",
        )
    pem = entry["public"]
    if not isinstance(pem, str) or len(pem) > 4096:
        raise _bad(f"key {kid[:16]}: public must be a PEM public key of at most 4096 characters")
    try:
        key = serialization.load_pem_public_key(pem.encode("ascii", "strict"))
    except (ValueError, TypeError, UnsupportedAlgorithm, UnicodeEncodeError):
        raise _bad(f"key {kid[:16]}: public is not a PEM public key") from None
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        what = (
            f"an EC key on curve {key.curve.name}"
            if isinstance(key, ec.EllipticCurvePublicKey)
            else type(key).__name__.lstrip("_")
        )
        raise _bad(
            f"key {kid[:16]} is {what}, not ECDSA P-256 (keytype says {KEYTYPE})",
            hint="generate release keys with `edge-release keygen` (ECDSA P-256)",
        )
    if key_id(key) != kid:
        raise _bad(f"key id {kid[:16]} is not the SHA-256 of its public key ({key_id(key)[:16]})")
    return key


def _role(name: str, value: Any, keys: Mapping[str, Any]) -> Role:
    if not isinstance(value, dict) or set(value) != {"keyids", "threshold"}:
        raise _bad(f"role {name} must be an object with exactly keyids and threshold")
    ids, threshold = value["keyids"], value["threshold"]
    if not isinstance(ids, list) or not ids or not all(isinstance(k, str) for k in ids) or len(set(ids)) != len(ids):
        raise _bad(f"role {name}: keyids must be a non-empty list of distinct key ids")
    missing = [k for k in ids if k not in keys]
    if missing:
        raise _bad(f"role {name} names key(s) {', '.join(quote_untrusted(k[:16]) for k in missing)} not in keys")
    if isinstance(threshold, bool) or not isinstance(threshold, int) or not 1 <= threshold <= len(ids):
        raise _bad(
            f"role {name}: threshold must be an integer from 1 to its {len(ids)} key(s), "
            f"got {quote_untrusted(threshold, 20)}"
        )
    return Role(tuple(ids), threshold)


def parse_root(data: bytes, limits: Limits = DEFAULT_LIMITS) -> Root:
    """Parse a root document strictly (structure and keys; no signature decision) within ``limits``."""
    if len(data) > limits.root_max_bytes:
        raise _bad(f"{len(data)} bytes, more than the limit of {limits.root_max_bytes}")
    try:
        env = parse_envelope(data, limits)
    except BundleFormatError as exc:
        raise _bad(exc.message.replace("manifest field", "field")) from None
    s = env.signed
    if set(s) != {"_type", "version", "expires", "keys", "roles"}:
        raise _bad("signed must hold exactly _type, version, expires, keys and roles")
    if s["_type"] != ROOT_TYPE:
        raise _bad(f"unsupported type {quote_untrusted(s['_type'], 40)}", hint=f"this runtime reads {ROOT_TYPE}")
    version = s["version"]
    if isinstance(version, bool) or not isinstance(version, int) or not 1 <= version < 10**9:
        raise _bad(f"version must be an integer from 1, got {quote_untrusted(version, 20)}")
    try:
        expires = parse_time(s["expires"], "expires")
    except BundleFormatError as exc:
        raise _bad(exc.message.replace("manifest field ", "")) from None
    raw_keys = s["keys"]
    if not isinstance(raw_keys, dict) or not 0 < len(raw_keys) <= limits.root_max_keys:
        raise _bad(f"keys must map 1..{limits.root_max_keys} key ids to keys")
    for kid in raw_keys:
        if not _HEX64.fullmatch(kid):
            raise _bad(f"key id {quote_untrusted(kid, 20)} is not 64 lowercase hex digits")
    raw_roles = s["roles"]
    if not isinstance(raw_roles, dict) or set(raw_roles) != set(ROLES):
        raise _bad(f"roles must hold exactly {' and '.join(ROLES)}")
    roles = {name: _role(name, raw_roles[name], raw_keys) for name in ROLES}
    used = {k for r in roles.values() for k in r.keyids}
    keys = {kid: _public_key(kid, raw_keys[kid]) for kid in sorted(used)}
    if set(raw_keys) - used:
        raise _bad("keys lists key(s) no role uses: " + ", ".join(k[:16] for k in sorted(set(raw_keys) - used)))
    return Root(version, expires, keys, roles, env, bytes(data))


def _check_signed_by(new: Root, signer: Root, what: str) -> None:
    assert new.envelope is not None
    policy = signer.policy("root")
    payload = canonical_bytes(new.envelope.signed)
    valid, invalid, unknown = count_signatures(payload, new.envelope.signatures, policy.keys)
    if len(valid) < policy.threshold:
        err = threshold_error(
            "root document",
            valid,
            invalid,
            unknown,
            policy.threshold,
            f"root version {new.version} must be signed by {signer.roles['root'].threshold} of the root keys of "
            f"{what} (`edge-release root sign`); nothing on the device changed",
            prefix=f"root version {new.version}, checked against the root keys of {what}: ",
        )
        raise RootError(err.message, hint=err.hint, **err.details)


def check_self_signed(root: Root) -> Root:
    """Raise unless ``root`` is signed by a threshold of its own root keys (the anchor a device starts from)."""
    _check_signed_by(root, root, "itself")
    return root


def check_next(trusted: Root, new: Root) -> Root:
    """Accept ``new`` as the successor of ``trusted`` (TUF root rotation), or raise :class:`RootError`."""
    if new.version != trusted.version + 1:
        if new.version <= trusted.version:
            raise RootError(
                f"root version {new.version} is not newer than {trusted.describe()}; a device never goes back",
                hint="nothing on the device changed; publish a root with the next version number",
                device_version=trusted.version,
                offered=new.version,
            )
        raise RootError(
            f"root version {new.version} does not follow {trusted.describe()}: versions "
            f"{trusted.version + 1}..{new.version - 1} are missing from the chain",
            hint="nothing on the device changed; pass every root document after the device's version",
            device_version=trusted.version,
            offered=new.version,
        )
    _check_signed_by(new, trusted, trusted.describe())
    _check_signed_by(new, new, "itself")
    return new


def update_chain(trusted: Root, documents: Sequence[bytes], limits: Limits = DEFAULT_LIMITS) -> list[Root]:
    """The roots after ``trusted`` that ``documents`` carry, each checked against its predecessor.

    Documents at or below ``trusted``'s version are skipped (a chain usually starts at 1), except that a
    document with ``trusted``'s own version but other content is refused (two roots with one version mean a
    compromised or broken release process). The rest must continue ``trusted`` without a gap. An empty
    result means the device is already current. A chain whose newest version is below ``trusted``'s is
    refused as going backwards.
    """
    if len(documents) > limits.root_max_chain:
        raise RootError(f"{len(documents)} root documents, more than the limit of {limits.root_max_chain}")
    roots = sorted((parse_root(d, limits) for d in documents), key=lambda r: r.version)
    for a, b in itertools.pairwise(roots):
        if a.version == b.version and a.digest != b.digest:
            raise RootError(f"two different root documents claim version {a.version}")
    if roots and roots[-1].version < trusted.version:
        check_next(trusted, roots[-1])  # raises: older than the device's
    accepted: list[Root] = []
    current = trusted
    for new in roots:
        if new.version < trusted.version or (accepted and new.version == current.version):
            continue
        if new.version == trusted.version:
            if trusted.digest is not None and new.digest != trusted.digest:
                raise RootError(
                    f"root version {new.version} differs from the one this device trusts ({trusted.digest})",
                    hint="two roots with one version: check the release repository's trust/ directory",
                )
            continue
        current = check_next(current, new)
        accepted.append(current)
    return accepted


def check_root_fresh(root: Root, now: datetime) -> None:
    """Raise :class:`ExpiredError` if ``root`` has expired: a device installs nothing new under it."""
    if root.expires is not None and now >= root.expires:
        raise ExpiredError(
            f"{root.describe()} expired at {format_time(root.expires)}; the device keeps serving its active "
            "model but installs nothing new until it receives a newer root",
            hint="publish the next root (`edge-release root new` + `root sign`) and give it to the device "
            "(edge_runtime_trust_root, or a bundle built by `edge-release publish`)",
        )


def make_root_signed(
    version: int, expires: datetime, roles: Mapping[str, tuple[Sequence[ec.EllipticCurvePublicKey], int]]
) -> dict[str, Any]:
    """The ``signed`` part of a root document (release side); refuses what a device would refuse."""
    keys: dict[str, Any] = {}
    out_roles: dict[str, Any] = {}
    for name in ROLES:
        pubs, threshold = roles[name]
        ids = []
        for k in pubs:
            if not isinstance(k, ec.EllipticCurvePublicKey) or not isinstance(k.curve, ec.SECP256R1):
                raise SignatureError(f"a {name} key is not an ECDSA P-256 key")
            kid = key_id(k)
            pem = k.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
            keys[kid] = {"keytype": KEYTYPE, "public": pem.decode("ascii")}
            if kid not in ids:
                ids.append(kid)
        out_roles[name] = {"keyids": sorted(ids), "threshold": threshold}
    signed = {"_type": ROOT_TYPE, "version": version, "expires": format_time(expires), "keys": keys, "roles": out_roles}
    parse_root(Envelope(signed, ()).to_bytes())  # the release side refuses what a device would refuse
    return signed


def sign_root(data: bytes, signing_keys: Sequence[ec.EllipticCurvePrivateKey]) -> bytes:
    """``data`` (a root document) with a signature by each of ``signing_keys`` added or replaced (release side)."""
    from . import keys as _keys
    from .manifest import Signature

    root = parse_root(data)
    assert root.envelope is not None
    payload = canonical_bytes(root.envelope.signed)
    sigs = {s.keyid: s for s in root.envelope.signatures}
    for k in signing_keys:
        kid = key_id(k.public_key())
        sigs[kid] = Signature(kid, _keys.sign(k, payload))
    return Envelope(root.envelope.signed, tuple(sigs[k] for k in sorted(sigs))).to_bytes()


def verify_chain(documents: Sequence[bytes], trusted: Root | None = None) -> list[Root]:
    """Every root of ``documents`` checked as a device would: from ``trusted`` (or the oldest document, which
    must then be signed by its own root keys) through each rotation. Returns the chain, oldest first."""
    if trusted is None:
        if not documents:
            raise RootError("no root documents given")
        trusted = check_self_signed(min((parse_root(d) for d in documents), key=lambda r: r.version))
        return [trusted, *update_chain(trusted, documents)]
    return update_chain(trusted, documents)

"""Trust rules: signatures, thresholds, install policy and file integrity. No file or network I/O.

Everything that decides whether a bundle may be installed lives here, as pure functions over parsed
data, so it can be unit-tested exhaustively. The installer feeds it bytes and facts; it answers with a
verified :class:`~edge_runtime.manifest.Manifest` or raises a :class:`~edge_runtime.errors.TrustError`
or :class:`~edge_runtime.errors.PolicyError` that says exactly what differs.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from .compat import incompatibility
from .errors import (
    DowngradeError,
    ExpiredError,
    ImmutableVersionError,
    IncompatibleError,
    IntegrityError,
    ModelNameError,
    QuarantinedError,
    SignatureError,
    quote_untrusted,
)
from .manifest import Envelope, FileEntry, Manifest, Signature, canonical_bytes

__all__ = [
    "DeviceContext",
    "TrustPolicy",
    "check_file",
    "check_install_policy",
    "count_signatures",
    "key_id",
    "threshold_error",
    "verify_envelope",
]


def key_id(public_key: ec.EllipticCurvePublicKey) -> str:
    """SHA-256 hex of the DER SubjectPublicKeyInfo."""
    der = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).hexdigest()


@dataclass(frozen=True)
class TrustPolicy:
    """The keys a device trusts and how many distinct ones must sign a manifest.

    ``fallbacks`` are older policies (the release roles of trust roots this device accepted before) that
    may still vouch for copies *already on the device*: a version verified and committed under an earlier
    root stays usable for rollback and recovery after its key was rotated out. A bundle being installed is
    always checked against a policy without fallbacks (see :meth:`edge_runtime.device.Device.install`).
    """

    keys: Mapping[str, ec.EllipticCurvePublicKey]
    threshold: int = 1
    fallbacks: tuple[TrustPolicy, ...] = ()
    #: what this policy is, for messages ("trust root version 3", "the trusted keys")
    source: str = "the trusted keys"

    def __post_init__(self) -> None:
        if self.threshold < 1:
            raise SignatureError("signature threshold must be at least 1", hint="fix the device trust policy")
        if self.threshold > len(self.keys):
            raise SignatureError(
                f"signature threshold {self.threshold} is larger than the {len(self.keys)} trusted key(s)",
                hint="install more trusted keys or lower the threshold",
            )
        for kid, key in self.keys.items():
            if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
                raise SignatureError(f"trusted key {kid[:16]} is not an ECDSA P-256 key")
            if key_id(key) != kid:
                raise SignatureError(f"trusted key id {kid[:16]} does not match its key")


def count_signatures(
    payload: bytes, signatures: Sequence[Signature], keys: Mapping[str, ec.EllipticCurvePublicKey]
) -> tuple[set[str], list[str], list[str]]:
    """(distinct keys whose signature over ``payload`` is valid, keys whose signature is not, unknown keys).

    A key counts once however many signatures it made; signatures by keys outside ``keys`` never count.
    """
    valid: set[str] = set()
    unknown: list[str] = []
    invalid: list[str] = []
    for sig in signatures:
        key = keys.get(sig.keyid)
        if key is None:
            unknown.append(sig.keyid)
            continue
        try:
            key.verify(sig.sig, payload, ec.ECDSA(hashes.SHA256()))
        except InvalidSignature:
            invalid.append(sig.keyid)
            continue
        valid.add(sig.keyid)
    return valid, invalid, unknown


def threshold_error(
    noun: str, valid: set[str], invalid: list[str], unknown: list[str], threshold: int, hint: str, prefix: str = ""
) -> SignatureError:
    """The one message for "not enough valid signatures": counts, and which keys did not match or are unknown."""
    parts = [f"{prefix}{len(valid)} valid signature(s) from trusted keys, {threshold} required"]
    if invalid:
        parts.append("signature(s) by " + ", ".join(k[:16] for k in invalid) + f" do not match this {noun}")
    if unknown:
        parts.append("signed by unknown key(s) " + ", ".join(k[:16] for k in unknown))
    return SignatureError("; ".join(parts), hint=hint, valid=sorted(valid), invalid=invalid, unknown=unknown)


def verify_envelope(envelope: Envelope, policy: TrustPolicy) -> Manifest:
    """Check the signatures against ``policy`` (or, failing that, one of its fallbacks), then parse strictly.

    Each trusted key counts once, however many signatures it made. Unknown keys are ignored for the
    count but named in the error when the threshold is not met.
    """
    if not envelope.signatures:
        raise SignatureError(
            "the manifest carries no signature",
            hint="sign the bundle with `edge-release sign` using a key this device trusts",
        )
    payload = canonical_bytes(envelope.signed)
    valid, invalid, unknown = count_signatures(payload, envelope.signatures, policy.keys)
    if len(valid) < policy.threshold:
        for older in policy.fallbacks:
            if len(count_signatures(payload, envelope.signatures, older.keys)[0]) >= older.threshold:
                return Manifest.from_signed(envelope.signed)
        raise threshold_error(
            "manifest",
            valid,
            invalid,
            unknown,
            policy.threshold,
            "the manifest was altered after signing, or signed by a key this device does not trust "
            f"({policy.source})",
        )
    return Manifest.from_signed(envelope.signed)


@dataclass(frozen=True)
class DeviceContext:
    """What the device knows when it decides whether to accept a manifest."""

    now: datetime
    architecture: str
    backends: tuple[str, ...]
    expected_name: str | None = None
    allowed_names: tuple[str, ...] = ()
    highest_counter: int = -1
    #: versions present on the device (committed, kept) -> manifest digest
    installed: Mapping[str, str] = field(default_factory=dict)
    #: versions that failed here -> reason
    bad_versions: Mapping[str, str] = field(default_factory=dict)
    #: the input the device feeds this model, when configured: (shape, dtype)
    input_contract: tuple[tuple[int, ...], str] | None = None


def check_install_policy(m: Manifest, ctx: DeviceContext, *, allow_quarantined: bool = False) -> None:
    """Raise if this authentic manifest must not be installed on this device."""
    if ctx.expected_name is not None and m.name != ctx.expected_name:
        raise ModelNameError(
            f"bundle is for model {m.name!r}, but {quote_untrusted(ctx.expected_name)} was requested",
            hint="check the bundle location for this model",
        )
    if ctx.allowed_names and m.name not in ctx.allowed_names:
        raise ModelNameError(
            f"model {m.name!r} is not one this device runs ({', '.join(ctx.allowed_names)})",
            hint="add it with `edge-runtime init --model` or fix the bundle location",
        )
    if ctx.now >= m.expires:
        raise ExpiredError(
            f"manifest of {m.name} {m.version} expired at {m.expires.isoformat()}",
            hint="re-sign the release with a later expiry (`edge-release build --expires-in`)",
        )
    why = incompatibility(m.name, str(m.version), m.architectures, m.backends, m.input_shape, m.input_dtype,
                          architecture=ctx.architecture, device_backends=ctx.backends,
                          input_contract=ctx.input_contract)
    if why is not None:
        raise IncompatibleError(why.reason, hint=why.hint)
    version = str(m.version)
    if version in ctx.installed and ctx.installed[version] != m.digest:
        raise ImmutableVersionError(
            f"{m.name} {version} is already on this device with manifest {ctx.installed[version]}, "
            f"but this bundle's manifest is {m.digest}",
            hint="versions are immutable: publish the change under a new version",
        )
    if version in ctx.bad_versions and not allow_quarantined:
        raise QuarantinedError(
            f"{m.name} {version} failed on this device before ({ctx.bad_versions[version]}) and is quarantined",
            hint="publish a fixed version, or retry deliberately with --allow-quarantined",
        )
    if m.release_counter < ctx.highest_counter and version not in ctx.installed:
        raise DowngradeError(
            f"{m.name} {version} has release counter {m.release_counter}, lower than {ctx.highest_counter} "
            "already installed on this device",
            hint="to go back, use `edge-runtime rollback` to a version still kept on the device",
        )


def check_file(entry: FileEntry, actual_sha256: str, actual_length: int) -> None:
    """Raise :class:`IntegrityError` naming expected and actual length or digest."""
    if actual_length != entry.length:
        kind = "truncated" if actual_length < entry.length else "longer than declared"
        raise IntegrityError(
            f"{entry.path} is {kind}: {actual_length} bytes, manifest says {entry.length}",
            hint="the bundle is damaged or was altered; rebuild or re-download it",
            path=entry.path,
        )
    if actual_sha256 != entry.sha256:
        raise IntegrityError(
            f"{entry.path} content differs from the manifest: sha256 {actual_sha256}, expected {entry.sha256}",
            hint="the bundle is damaged or was altered; rebuild or re-download it",
            path=entry.path,
        )

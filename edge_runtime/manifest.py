"""The signed bundle manifest: parsing, strict validation and canonical bytes. No I/O here.

See ``docs/DESIGN.md`` for the format. Parsing is strict and fails closed: unknown keys, wrong types,
unsafe paths or duplicate JSON keys make the whole manifest invalid. The JSON itself is read by the
bounded reader :func:`edge_runtime._json.loads_untrusted`; every size and count comes from
:class:`edge_runtime._limits.Limits`, and every untrusted value quoted in a message is escaped and cut
(:func:`edge_runtime.errors.quote_untrusted`).
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import PurePosixPath
from typing import Any

from ._json import loads_untrusted
from ._limits import DEFAULT_LIMITS, Limits
from .errors import BundleFormatError, ConfigError, UnsafeBundleError, quote_untrusted

__all__ = [
    "MANIFEST_NAME",
    "MANIFEST_TYPE",
    "SEMVER_PATTERN",
    "Envelope",
    "FileEntry",
    "Manifest",
    "SmokePolicy",
    "Version",
    "canonical_bytes",
    "check_member_path",
    "format_time",
    "parse_envelope",
    "parse_time",
    "path_part",
]

MANIFEST_NAME = "manifest.json"
MANIFEST_TYPE = "edge-bundle/v1"
#: kept for callers outside the runtime; the bound itself lives in :class:`Limits`
MAX_MANIFEST_BYTES = DEFAULT_LIMITS.manifest_max_bytes
MAX_FILES = DEFAULT_LIMITS.manifest_max_files

_SEMVER = re.compile(
    r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?"
    r"(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?$",
    re.ASCII,  # \d is 0-9 only: "\u0661.0.0" (an Arabic-Indic one) must not parse as 1.0.0
)
#: the one version pattern (SemVer 2.0.0); the control plane's schema check imports it (edgeml.fleet)
SEMVER_PATTERN: str = _SEMVER.pattern
_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
#: backend and architecture names: printable ASCII without spaces or quotes
_TAG = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")
#: characters never allowed in a bundle path (they would reach file names and terminals)
_PATH_FORBIDDEN = re.compile("[\x00-\x1f\x7f\\\\\ud800-\udfff]")


@functools.total_ordering
@dataclass(frozen=True, eq=False)
class Version:
    """A semantic version. Ordering ignores build metadata; pre-releases sort before releases."""

    major: int
    minor: int
    patch: int
    pre: tuple[tuple[int, int | str], ...] = ()
    text: str = ""

    @classmethod
    def parse(cls, text: str, limits: Limits = DEFAULT_LIMITS) -> Version:
        ok = isinstance(text, str) and len(text) <= limits.max_version_chars
        m = _SEMVER.fullmatch(text) if ok else None
        if not m:
            raise BundleFormatError(
                f"{quote_untrusted(text)} is not a semantic version of at most {limits.max_version_chars} characters",
                hint="use MAJOR.MINOR.PATCH, e.g. 1.2.0 (no 'latest', no ranges)",
            )
        pre: tuple[tuple[int, int | str], ...] = ()
        if m.group(4):
            pre = tuple((0, int(p)) if p.isdigit() else (1, p) for p in m.group(4).split("."))
        return cls(int(m.group(1)), int(m.group(2)), int(m.group(3)), pre, text)

    def __str__(self) -> str:
        return self.text

    @property
    def _key(self) -> tuple[int, int, int, int, tuple[tuple[int, int | str], ...]]:
        return (self.major, self.minor, self.patch, 0 if self.pre else 1, self.pre)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Version) and self._key == other._key

    def __lt__(self, other: Version) -> bool:
        return self._key < other._key

    def __hash__(self) -> int:
        return hash(self._key)


def validate_version(text: str) -> str:
    Version.parse(text)
    return text


def validate_model_name(name: Any) -> str:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise BundleFormatError(
            f"model name {quote_untrusted(name)} is invalid",
            hint="use 1-64 characters of a-z, 0-9, '.', '_', '-', starting with a letter or digit",
        )
    return name


_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$", re.ASCII)


def path_part(value: Any, kind: str) -> str:
    """``value`` if it is a valid model name (``kind="model name"``) or version (``kind="version"``).

    Both become path components on a device (``models/<name>/versions/<version>``), so a value from
    the command line or a state file is checked here before any path is built from it; anything else
    (``../x``, ``a/b``, an empty or overlong string) is a :class:`ConfigError`.
    """
    try:
        Version.parse(value) if kind == "version" else validate_model_name(value)
    except BundleFormatError:
        raise ConfigError(
            f"{quote_untrusted(value)} is not a valid {kind}",
            hint="model names are 1-64 characters of a-z, 0-9, '.', '_', '-'; versions are MAJOR.MINOR.PATCH",
        ) from None
    return str(value)


def parse_time(text: Any, field: str) -> datetime:
    if not isinstance(text, str) or not _TIME.fullmatch(text):
        raise BundleFormatError(
            f"manifest field {field} must be an RFC 3339 UTC time like 2026-01-31T12:00:00Z, "
            f"got {quote_untrusted(text)}"
        )
    try:
        return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
    except ValueError:
        raise BundleFormatError(
            f"manifest field {field}: {quote_untrusted(text)} is not a valid date and time"
        ) from None


def format_time(t: datetime) -> str:
    return t.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def check_member_path(path: Any, limits: Limits = DEFAULT_LIMITS) -> str:
    """Return ``path`` if it is a safe relative POSIX path inside a bundle, else raise.

    Safe means: a non-empty string of at most ``limits.max_path_chars`` characters and as many UTF-8
    bytes, no control character, backslash or lone surrogate (an undecodable byte in a tar name
    arrives as one), not absolute, no ``.``/``..``/empty component, and not the reserved ``.tmp-``
    prefix.
    """
    q = quote_untrusted(path)
    if not isinstance(path, str) or not path:
        raise UnsafeBundleError(f"bundle path {q} is empty or not a string")
    if len(path) > limits.max_path_chars or len(path.encode("utf-8", "surrogatepass")) > limits.max_path_chars:
        raise UnsafeBundleError(f"bundle path {q} is longer than {limits.max_path_chars} bytes")
    if _PATH_FORBIDDEN.search(path):
        raise UnsafeBundleError(
            f"bundle path {q} contains a control character, a backslash or bytes that are not UTF-8 text"
        )
    if path.startswith("/"):
        raise UnsafeBundleError(f"bundle path {q} is absolute")
    parts = path.split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise UnsafeBundleError(f"bundle path {q} contains '.', '..' or an empty component")
    if PurePosixPath(path).name.startswith(".tmp-"):
        raise UnsafeBundleError(f"bundle path {q} uses the reserved prefix .tmp-")
    return path


def canonical_bytes(obj: Any) -> bytes:
    """The byte form that signatures cover: sorted keys, no whitespace, UTF-8.

    Raises :class:`BundleFormatError` for what has no canonical form (NaN, Infinity, lone surrogates).
    """
    try:
        return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode(
            "utf-8"
        )
    except (ValueError, TypeError, UnicodeEncodeError) as exc:
        raise BundleFormatError(f"manifest has no canonical JSON form: {quote_untrusted(str(exc))}") from None


def _names(keys: set[str], shown: int = 5) -> str:
    """A bounded, escaped list of untrusted key names for a message."""
    listed = ", ".join(quote_untrusted(k, 40) for k in sorted(keys)[:shown])
    return listed + (f" and {len(keys) - shown} more" if len(keys) > shown else "")


def _obj(value: Any, field: str, keys: set[str], required: set[str]) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise BundleFormatError(f"manifest field {field} must be an object")
    unknown = set(value) - keys
    if unknown:
        raise BundleFormatError(f"manifest field {field} has unknown keys: {_names(unknown)}")
    missing = required - set(value)
    if missing:
        raise BundleFormatError(f"manifest field {field} is missing: {', '.join(sorted(missing))}")
    return value


def _num(value: Any, field: str, lo: float, hi: float) -> float:
    ok = not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)
    if not ok or not lo <= value <= hi:
        raise BundleFormatError(
            f"manifest field {field} must be a finite number in [{lo}, {hi}], got {quote_untrusted(value, 40)}"
        )
    return float(value)


def _int(value: Any, field: str, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise BundleFormatError(
            f"manifest field {field} must be an integer in [{lo}, {hi}], got {quote_untrusted(value, 40)}"
        )
    return value


def _strlist(value: Any, field: str, limits: Limits) -> tuple[str, ...]:
    if (
        not isinstance(value, list)
        or not 0 < len(value) <= limits.max_tags
        or not all(isinstance(v, str) and len(v) <= limits.max_tag_chars and _TAG.fullmatch(v) for v in value)
    ):
        raise BundleFormatError(
            f"manifest field {field} must list 1..{limits.max_tags} names of at most {limits.max_tag_chars} "
            "characters (letters, digits, '.', '_', '+', '-')"
        )
    return tuple(value)


@dataclass(frozen=True)
class FileEntry:
    path: str
    sha256: str
    length: int


@dataclass(frozen=True)
class SmokePolicy:
    atol: float
    min_label_agreement: float
    p95_latency_ms: float
    repeats: int


@dataclass(frozen=True)
class Manifest:
    """A structurally valid ``signed`` object. Authenticity is checked by :mod:`edge_runtime.trust`."""

    raw: dict[str, Any]
    name: str
    version: Version
    release_counter: int
    created: datetime
    expires: datetime
    backends: tuple[str, ...]
    architectures: tuple[str, ...]
    input_shape: tuple[int, ...]
    input_dtype: str
    entrypoints: dict[str, str]
    smoke: SmokePolicy
    files: tuple[FileEntry, ...]

    @property
    def digest(self) -> str:
        """``sha256:<hex>`` of the canonical bytes; the pin used in ``models.yaml``."""
        return "sha256:" + hashlib.sha256(canonical_bytes(self.raw)).hexdigest()

    def file(self, path: str) -> FileEntry:
        for f in self.files:
            if f.path == path:
                return f
        raise KeyError(path)

    @property
    def total_length(self) -> int:
        return sum(f.length for f in self.files)

    @classmethod
    def from_signed(cls, signed: Any, limits: Limits = DEFAULT_LIMITS) -> Manifest:
        """Validate every field of the ``signed`` object (types, ranges, sizes) and build the manifest."""
        s = _obj(
            signed,
            "signed",
            {"_type", "model", "created", "expires", "compatibility", "entrypoints", "smoke_test", "files"},
            {"_type", "model", "created", "expires", "compatibility", "entrypoints", "smoke_test", "files"},
        )
        if s["_type"] != MANIFEST_TYPE:
            raise BundleFormatError(
                f"unsupported manifest type {quote_untrusted(s['_type'])}", hint=f"this runtime reads {MANIFEST_TYPE}"
            )
        model = _obj(
            s["model"], "model", {"name", "version", "release_counter"}, {"name", "version", "release_counter"}
        )
        compat = _obj(
            s["compatibility"],
            "compatibility",
            {"backends", "architectures", "input"},
            {"backends", "architectures", "input"},
        )
        inp = _obj(compat["input"], "compatibility.input", {"shape", "dtype"}, {"shape", "dtype"})
        shape = inp["shape"]
        if (
            not isinstance(shape, list)
            or not 0 < len(shape) <= limits.max_shape_dims
            or not all(isinstance(d, int) and not isinstance(d, bool) and 0 < d <= limits.max_shape_dim for d in shape)
        ):
            raise BundleFormatError(
                f"manifest field compatibility.input.shape must list 1..{limits.max_shape_dims} integers "
                f"in [1, {limits.max_shape_dim}]"
            )
        if inp["dtype"] not in ("float32", "int8", "uint8"):
            raise BundleFormatError("manifest field compatibility.input.dtype must be float32, int8 or uint8")
        ep = _obj(
            s["entrypoints"],
            "entrypoints",
            {"model", "golden", "baseline", "labels", "preprocess"},
            {"model", "golden"},
        )
        for v in ep.values():
            check_member_path(v, limits)
        smoke = _obj(
            s["smoke_test"],
            "smoke_test",
            {"atol", "min_label_agreement", "p95_latency_ms", "repeats"},
            {"atol", "min_label_agreement", "p95_latency_ms", "repeats"},
        )
        files_raw = s["files"]
        if not isinstance(files_raw, list) or not 0 < len(files_raw) <= limits.manifest_max_files:
            raise BundleFormatError(f"manifest field files must list 1..{limits.manifest_max_files} files")
        files: list[FileEntry] = []
        seen: set[str] = set()
        for i, f in enumerate(files_raw):
            fo = _obj(f, f"files[{i}]", {"path", "sha256", "length"}, {"path", "sha256", "length"})
            path = check_member_path(fo["path"], limits)
            if path == MANIFEST_NAME or path in seen:
                raise BundleFormatError(f"manifest lists {quote_untrusted(path)} twice or lists the manifest itself")
            seen.add(path)
            if not isinstance(fo["sha256"], str) or not _HEX64.fullmatch(fo["sha256"]):
                raise BundleFormatError(f"files[{i}].sha256 must be 64 lowercase hex digits")
            files.append(FileEntry(path, fo["sha256"], _int(fo["length"], f"files[{i}].length", 0, 1 << 40)))
        for k, v in ep.items():
            if v not in seen:
                raise BundleFormatError(f"entrypoint {k}={quote_untrusted(v)} is not listed in files")
        taken = seen | {MANIFEST_NAME}
        for path in seen:  # "a" and "a/b" cannot both be files; neither can "manifest.json/x"
            parts = path.split("/")
            clash = next(("/".join(parts[:n]) for n in range(1, len(parts)) if "/".join(parts[:n]) in taken), None)
            if clash is not None:
                raise UnsafeBundleError(
                    f"manifest lists {quote_untrusted(path)} inside {quote_untrusted(clash)}, which is a file"
                )
        created = parse_time(s["created"], "created")
        expires = parse_time(s["expires"], "expires")
        if expires <= created:
            raise BundleFormatError("manifest expires before it was created")
        return cls(
            raw=s,
            name=validate_model_name(model["name"]),
            version=Version.parse(model["version"], limits),
            release_counter=_int(model["release_counter"], "model.release_counter", 0, 2**53),
            created=created,
            expires=expires,
            backends=_strlist(compat["backends"], "compatibility.backends", limits),
            architectures=_strlist(compat["architectures"], "compatibility.architectures", limits),
            input_shape=tuple(shape),
            input_dtype=inp["dtype"],
            entrypoints=dict(ep),
            smoke=SmokePolicy(
                atol=_num(smoke["atol"], "smoke_test.atol", 0.0, 1e6),
                min_label_agreement=_num(smoke["min_label_agreement"], "smoke_test.min_label_agreement", 0.0, 1.0),
                p95_latency_ms=_num(smoke["p95_latency_ms"], "smoke_test.p95_latency_ms", 0.001, 3.6e6),
                repeats=_int(smoke["repeats"], "smoke_test.repeats", 1, 1000),
            ),
            files=tuple(files),
        )


@dataclass(frozen=True)
class Signature:
    keyid: str
    sig: bytes


@dataclass(frozen=True)
class Envelope:
    """The parsed content of ``manifest.json``: the signed object and its signatures."""

    signed: dict[str, Any]
    signatures: tuple[Signature, ...]

    def to_bytes(self) -> bytes:
        import base64

        return (
            json.dumps(
                {
                    "signed": self.signed,
                    "signatures": [
                        {"keyid": s.keyid, "sig": base64.b64encode(s.sig).decode("ascii")} for s in self.signatures
                    ],
                },
                indent=1,
                sort_keys=True,
                ensure_ascii=False,
                allow_nan=False,
            ).encode("utf-8")
            + b"\n"
        )


def parse_envelope(data: bytes, limits: Limits = DEFAULT_LIMITS) -> Envelope:
    """Parse ``manifest.json`` bytes into an :class:`Envelope` (structure only, no trust).

    The JSON is read with :func:`loads_untrusted` under ``limits`` (size, depth, number and string
    sizes, no NaN/Infinity, no duplicate keys, no lone surrogates).
    """
    import base64
    import binascii

    obj = loads_untrusted(data, limits, MANIFEST_NAME, max_bytes=limits.manifest_max_bytes)
    env = _obj(obj, "manifest.json", {"signed", "signatures"}, {"signed"})
    sigs_raw = env.get("signatures", [])
    if not isinstance(sigs_raw, list) or len(sigs_raw) > limits.max_signatures:
        raise BundleFormatError(f"manifest field signatures must be a list of at most {limits.max_signatures}")
    sigs: list[Signature] = []
    for i, s in enumerate(sigs_raw):
        so = _obj(s, f"signatures[{i}]", {"keyid", "sig"}, {"keyid", "sig"})
        if not isinstance(so["keyid"], str) or not _HEX64.fullmatch(so["keyid"]):
            raise BundleFormatError(f"signatures[{i}].keyid must be 64 lowercase hex digits")
        if not isinstance(so["sig"], str) or len(so["sig"]) > limits.max_signature_chars:
            raise BundleFormatError(
                f"signatures[{i}].sig must be base64 text of at most {limits.max_signature_chars} characters"
            )
        try:
            raw = base64.b64decode(so["sig"], validate=True)
        except (binascii.Error, TypeError, ValueError):
            raise BundleFormatError(f"signatures[{i}].sig is not base64") from None
        sigs.append(Signature(so["keyid"], raw))
    if not isinstance(env["signed"], dict):
        raise BundleFormatError("manifest field signed must be an object")
    return Envelope(env["signed"], tuple(sigs))

"""Bundle files: build and sign (release side), stream and verify (device side).

A bundle is an uncompressed tar whose first member is ``manifest.json``. Readers never extract with
``tarfile``'s helpers: :func:`iter_members` yields one regular file at a time, after checking its
name, type and declared size against the verified manifest, and the caller hashes the bytes as it
copies them. Before ``tarfile`` parses any header, :class:`~edge_runtime._tarheaders.TarHeaderWalker`
checks the raw 512-byte blocks against :class:`~edge_runtime._limits.Limits` (extension header sizes
and counts, member types, member count, sizes inside the file), so a hostile header costs one block
of memory. See ``docs/DESIGN.md``.
"""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import IO, Any, BinaryIO

from cryptography.hazmat.primitives.asymmetric import ec

from . import keys as _keys
from ._json import open_regular_file
from ._limits import DEFAULT_LIMITS, Limits
from ._tarheaders import RawMember, TarHeaderWalker
from .errors import BundleFormatError, ConfigError, IntegrityError, UnsafeBundleError, quote_untrusted
from .manifest import (
    MANIFEST_NAME,
    MANIFEST_TYPE,
    Envelope,
    FileEntry,
    Manifest,
    Signature,
    canonical_bytes,
    check_member_path,
    format_time,
    parse_envelope,
)
from .trust import TrustPolicy, check_file, key_id, verify_envelope

__all__ = [
    "BundleSpec",
    "add_signature",
    "build_bundle",
    "copy_verified",
    "envelope_from_prefix",
    "iter_members",
    "open_bundle",
    "read_envelope",
    "verify_bundle",
]

CHUNK = 1 << 20


@dataclass(frozen=True)
class BundleSpec:
    """Everything the release side declares about a bundle, apart from the files' digests."""

    name: str
    version: str
    release_counter: int
    files: Mapping[str, Path]  # bundle path -> source file
    entrypoints: Mapping[str, str]
    input_shape: tuple[int, ...]
    input_dtype: str
    smoke_test: Mapping[str, Any]
    backends: tuple[str, ...] = ("litert", "tflite-runtime")
    architectures: tuple[str, ...] = ("x86_64", "aarch64", "armv7l")
    expires_in: timedelta = timedelta(days=365)
    created: datetime | None = None


def _sha256_file(path: Path) -> tuple[str, int]:
    h = hashlib.sha256()
    n = 0
    with path.open("rb") as fh:
        while chunk := fh.read(CHUNK):
            h.update(chunk)
            n += len(chunk)
    return h.hexdigest(), n


def make_signed(spec: BundleSpec) -> dict[str, Any]:
    created = (spec.created or datetime.now(timezone.utc)).replace(microsecond=0)
    files = []
    for path in sorted(spec.files):
        check_member_path(path)
        digest, length = _sha256_file(spec.files[path])
        files.append({"path": path, "sha256": digest, "length": length})
    signed: dict[str, Any] = {
        "_type": MANIFEST_TYPE,
        "model": {"name": spec.name, "version": spec.version, "release_counter": spec.release_counter},
        "created": format_time(created),
        "expires": format_time(created + spec.expires_in),
        "compatibility": {
            "backends": list(spec.backends),
            "architectures": list(spec.architectures),
            "input": {"shape": list(spec.input_shape), "dtype": spec.input_dtype},
        },
        "entrypoints": dict(spec.entrypoints),
        "smoke_test": dict(spec.smoke_test),
        "files": files,
    }
    Manifest.from_signed(signed)  # the release side refuses what a device would refuse
    return signed


def _tarinfo(name: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mode = 0o644
    info.mtime = 0
    info.uname = info.gname = ""
    return info


def _write_tar(out: Path, envelope: Envelope, sources: Mapping[str, Path] | Callable[[str], IO[bytes]]) -> None:
    tmp = out.with_name(f".tmp-{out.name}")
    manifest_bytes = envelope.to_bytes()
    try:
        with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
            tar.addfile(_tarinfo(MANIFEST_NAME, len(manifest_bytes)), io.BytesIO(manifest_bytes))
            for f in envelope.signed["files"]:
                fh = sources(f["path"]) if callable(sources) else sources[f["path"]].open("rb")
                with fh:
                    tar.addfile(_tarinfo(f["path"], f["length"]), fh)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)


def build_bundle(spec: BundleSpec, out: Path, signing_keys: list[ec.EllipticCurvePrivateKey]) -> Manifest:
    """Write a signed bundle to ``out`` and return its manifest."""
    signed = make_signed(spec)
    payload = canonical_bytes(signed)
    sigs = tuple(Signature(key_id(k.public_key()), _keys.sign(k, payload)) for k in signing_keys)
    _write_tar(out, Envelope(signed, sigs), spec.files)
    return Manifest.from_signed(signed)


def add_signature(bundle: Path, key: ec.EllipticCurvePrivateKey) -> str:
    """Add (or replace) the signature of ``key`` in an existing bundle; return the key id.

    The bundle is read with the same guarded reader as on a device: its manifest must be structurally
    valid and every listed file present, or nothing is written.
    """
    kid = key_id(key.public_key())
    with open_bundle(bundle) as fh:
        stream = BundleStream(fh)
        env = stream.envelope
        manifest = Manifest.from_signed(env.signed)
        infos = {entry.path: info for entry, info in stream.checked_members(manifest)}
        sig = Signature(kid, _keys.sign(key, canonical_bytes(env.signed)))
        new_env = Envelope(env.signed, (*(s for s in env.signatures if s.keyid != kid), sig))

        def source(path: str) -> IO[bytes]:
            member = stream.tar.extractfile(infos[path])
            if member is None:  # pragma: no cover - checked_members() accepts regular files only
                raise BundleFormatError(f"{path} is not a regular file")
            return member

        _write_tar(bundle, new_env, source)
    return kid


_NOT_A_BUNDLE = "pass a .edgebundle file built by edge-release"


class BundleStream:
    """A bundle opened for reading: the envelope first, then the members one by one.

    ``fileobj`` must be seekable (a regular file). Every member's raw headers are checked by
    :class:`TarHeaderWalker` before ``tarfile`` parses them, and both parsers must agree on each
    member's name, size and data offset.
    """

    def __init__(self, fileobj: BinaryIO, limits: Limits = DEFAULT_LIMITS) -> None:
        if not fileobj.seekable():
            raise BundleFormatError("a bundle must be read from a regular file", hint=_NOT_A_BUNDLE)
        self.limits = limits
        self._walker = TarHeaderWalker(fileobj, limits)
        first = self._walker.next()
        if first is None:
            raise BundleFormatError("not a bundle: the file holds no tar member", hint=_NOT_A_BUNDLE)
        if first.name != MANIFEST_NAME:
            raise BundleFormatError(
                f"the first bundle member must be {MANIFEST_NAME}, found {quote_untrusted(first.name)}",
                hint=_NOT_A_BUNDLE,
            )
        if first.size > limits.manifest_max_bytes:
            raise BundleFormatError(
                f"{MANIFEST_NAME} is {first.size} bytes, more than the limit of {limits.manifest_max_bytes}"
            )
        fileobj.seek(0)
        try:
            # Random-access mode: member data is read straight from the file in large chunks. The TarFile
            # lives as long as the stream; the caller closes ``fileobj``.
            self.tar = tarfile.open(  # noqa: SIM115
                fileobj=fileobj, mode="r:", encoding="utf-8", errors="surrogateescape"
            )
        except (tarfile.TarError, EOFError, OSError) as exc:
            raise BundleFormatError(
                f"not a bundle (tar) file: {quote_untrusted(str(exc))}", hint=_NOT_A_BUNDLE
            ) from None
        info = self._parsed(first)
        fh = self.tar.extractfile(info)
        if fh is None:  # pragma: no cover - _parsed() accepts regular files only
            raise BundleFormatError(f"cannot read {MANIFEST_NAME}")
        self.manifest_bytes = fh.read(limits.manifest_max_bytes + 1)
        self.envelope = parse_envelope(self.manifest_bytes, limits)

    def _parsed(self, raw: RawMember) -> tarfile.TarInfo:
        """Let tarfile parse the (already checked) headers of ``raw`` and insist it reads them the same."""
        try:
            info = self.tar.next()
        except (tarfile.TarError, EOFError, OSError) as exc:
            raise IntegrityError(
                f"bundle is damaged: {quote_untrusted(str(exc))}", hint="re-download or rebuild the bundle"
            ) from None
        if (
            info is None
            or info.name != raw.name
            or info.size != raw.size
            or info.offset_data != raw.data_offset
            or not info.isreg()
            or info.issparse()
        ):
            raise BundleFormatError(
                f"the tar headers of bundle member {quote_untrusted(raw.name)} are ambiguous "
                "(tar readers would disagree on its name, size or type)",
                hint="rebuild the bundle with edge-release",
            )
        return info

    def checked_members(self, manifest: Manifest) -> Iterator[tuple[FileEntry, tarfile.TarInfo]]:
        """Yield each listed file's entry and tar header, refusing unsafe, unlisted, duplicate or missized ones.

        After the last member, raises :class:`IntegrityError` if a listed file was missing.
        """
        expected = {f.path: f for f in manifest.files}
        seen: set[str] = set()
        while (raw := self._walker.next()) is not None:
            check_member_path(raw.name, self.limits)
            member = self._parsed(raw)
            entry = expected.get(member.name)
            if entry is None:
                raise IntegrityError(
                    f"bundle holds an extra file {quote_untrusted(member.name)} that the manifest does not list",
                    hint="rebuild the bundle with edge-release; nothing outside the manifest is accepted",
                    path=member.name,
                )
            if member.name in seen:
                raise IntegrityError(f"bundle holds {quote_untrusted(member.name)} twice")
            seen.add(member.name)
            if member.size != entry.length:
                kind = "truncated" if member.size < entry.length else "longer than declared"
                raise IntegrityError(
                    f"{member.name} is {kind}: {member.size} bytes, manifest says {entry.length}",
                    hint="the bundle is damaged or was altered; rebuild or re-download it",
                    path=member.name,
                )
            yield entry, member
        missing = sorted(set(expected) - seen)
        if missing:
            raise IntegrityError(
                f"bundle is missing file(s) listed in the manifest: {', '.join(missing)}",
                hint="rebuild or re-download the bundle",
                missing=missing,
            )

    def members(self, manifest: Manifest) -> Iterator[tuple[FileEntry, IO[bytes]]]:
        """Like :meth:`checked_members`, yielding a reader of each member's bytes."""
        for entry, member in self.checked_members(manifest):
            fh = self.tar.extractfile(member)
            if fh is None:  # pragma: no cover - checked_members() accepts regular files only
                raise UnsafeBundleError(f"cannot read bundle member {quote_untrusted(member.name)}")
            yield entry, fh


@contextmanager
def open_bundle(path: Path) -> Iterator[BinaryIO]:
    """Open a bundle file given by an operator; a name that cannot be opened is a :class:`ConfigError`."""
    try:
        fh = open_regular_file(path)  # a FIFO would block forever
    except OSError as exc:
        raise ConfigError(
            f"bundle {quote_untrusted(str(path))} cannot be opened: {exc.strerror}",
            hint="pass the path of a .edgebundle file",
        ) from None
    with fh:
        yield fh


def envelope_from_prefix(data: bytes, limits: Limits = DEFAULT_LIMITS) -> Envelope:
    """Parse the manifest from the first bytes of a bundle (e.g. an HTTP range), with the same checks.

    ``data`` must hold the whole first member; a prefix that cuts it is a :class:`BundleFormatError`.
    """
    return BundleStream(io.BytesIO(data), limits).envelope


def read_envelope(path: Path, limits: Limits = DEFAULT_LIMITS) -> Envelope:
    """Read and parse only the manifest of a bundle (no trust decisions)."""
    with open_bundle(path) as fh:
        return BundleStream(fh, limits).envelope


def copy_verified(entry: FileEntry, src: IO[bytes], dst: BinaryIO | None) -> None:
    """Copy ``src`` to ``dst`` (or just read it) while hashing; raise if it differs from ``entry``."""
    h = hashlib.sha256()
    n = 0
    try:
        while chunk := src.read(CHUNK):
            n += len(chunk)
            if n > entry.length:
                break
            h.update(chunk)
            if dst is not None:
                dst.write(chunk)
    except (tarfile.TarError, EOFError) as exc:
        raise IntegrityError(f"{entry.path}: bundle ends early: {exc}", hint="re-download the bundle") from None
    check_file(entry, h.hexdigest(), n)


def verify_bundle(path: Path, policy: TrustPolicy) -> Manifest:
    """Verify signatures and every file of a bundle without writing anything."""
    with open_bundle(path) as fh:
        stream = BundleStream(fh)
        manifest = verify_envelope(stream.envelope, policy)
        for entry, member in stream.members(manifest):
            copy_verified(entry, member, None)
    return manifest


def iter_members(path: Path, manifest: Manifest) -> Iterator[tuple[FileEntry, IO[bytes]]]:
    with open_bundle(path) as fh:
        yield from BundleStream(fh).members(manifest)

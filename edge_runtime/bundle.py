"""Bundle files: build and sign (release side), stream and verify (device side).

A bundle is an uncompressed tar whose first member is ``manifest.json``. Readers never extract with
``tarfile``'s helpers: :func:`iter_members` yields one regular file at a time, after checking its
name, type and declared size against the verified manifest, and the caller hashes the bytes as it
copies them. See ``docs/DESIGN.md``.
"""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import IO, Any, BinaryIO

from cryptography.hazmat.primitives.asymmetric import ec

from . import keys as _keys
from .errors import BundleFormatError, IntegrityError, UnsafeBundleError
from .manifest import (
    MANIFEST_NAME,
    MANIFEST_TYPE,
    MAX_MANIFEST_BYTES,
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
    "iter_members",
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
    """Add (or replace) the signature of ``key`` in an existing bundle; return the key id."""
    env = read_envelope(bundle)
    kid = key_id(key.public_key())
    sig = Signature(kid, _keys.sign(key, canonical_bytes(env.signed)))
    new_env = Envelope(env.signed, (*(s for s in env.signatures if s.keyid != kid), sig))
    with tarfile.open(bundle, "r:") as tar:
        members = {m.name: m for m in tar.getmembers()}

        def source(path: str) -> IO[bytes]:
            fh = tar.extractfile(members[path])
            if fh is None:
                raise BundleFormatError(f"{path} is not a regular file")
            return fh

        _write_tar(bundle, new_env, source)
    return kid


def _open_stream(src: BinaryIO) -> tarfile.TarFile:
    try:
        # Random-access mode on regular files: member data is then read straight from the file in
        # large chunks (the streaming mode re-assembles 10 KiB blocks and halves hashing throughput).
        return tarfile.open(fileobj=src, mode="r:" if src.seekable() else "r|")
    except tarfile.TarError as exc:
        raise BundleFormatError(
            f"not a bundle (tar) file: {exc}", hint="pass a .edgebundle built by edge-release"
        ) from None


def _read_manifest_member(tar: tarfile.TarFile) -> bytes:
    try:
        first = tar.next()
    except tarfile.TarError as exc:
        raise BundleFormatError(f"bundle is damaged: {exc}") from None
    if first is None or first.name != MANIFEST_NAME:
        raise BundleFormatError(
            f"the first bundle member must be {MANIFEST_NAME}, found {first.name if first else 'nothing'}"
        )
    if not first.isreg():
        raise UnsafeBundleError(f"{MANIFEST_NAME} in the bundle is not a regular file")
    if first.size > MAX_MANIFEST_BYTES:
        raise BundleFormatError(f"{MANIFEST_NAME} is larger than {MAX_MANIFEST_BYTES} bytes")
    fh = tar.extractfile(first)
    if fh is None:  # pragma: no cover - isreg() was checked
        raise BundleFormatError(f"cannot read {MANIFEST_NAME}")
    return fh.read()


def read_envelope(path: Path) -> Envelope:
    """Read and parse only the manifest of a bundle (no trust decisions)."""
    with path.open("rb") as fh:
        tar = _open_stream(fh)
        return parse_envelope(_read_manifest_member(tar))


class BundleStream:
    """A bundle opened for streaming: the envelope first, then the members one by one."""

    def __init__(self, fileobj: BinaryIO) -> None:
        self._tar = _open_stream(fileobj)
        self.manifest_bytes = _read_manifest_member(self._tar)
        self.envelope = parse_envelope(self.manifest_bytes)

    def members(self, manifest: Manifest) -> Iterator[tuple[FileEntry, IO[bytes]]]:
        """Yield each listed file, refusing unsafe, unlisted, duplicate or missized members.

        After the last member, raises :class:`IntegrityError` if a listed file was missing.
        """
        expected = {f.path: f for f in manifest.files}
        seen: set[str] = set()
        while True:
            try:
                member = self._tar.next()
            except (tarfile.TarError, EOFError, OSError) as exc:
                raise IntegrityError(
                    f"bundle ends early or is damaged: {exc}", hint="re-download or rebuild the bundle"
                ) from None
            if member is None:
                break
            check_member_path(member.name)
            if member.issym() or member.islnk():
                raise UnsafeBundleError(f"bundle member {member.name!r} is a link; bundles may hold regular files only")
            if not member.isreg() or member.issparse():
                raise UnsafeBundleError(f"bundle member {member.name!r} is not a regular file")
            entry = expected.get(member.name)
            if entry is None:
                raise IntegrityError(
                    f"bundle holds an extra file {member.name!r} that the manifest does not list",
                    hint="rebuild the bundle with edge-release; nothing outside the manifest is accepted",
                    path=member.name,
                )
            if member.name in seen:
                raise IntegrityError(f"bundle holds {member.name!r} twice")
            seen.add(member.name)
            if member.size != entry.length:
                kind = "truncated" if member.size < entry.length else "longer than declared"
                raise IntegrityError(
                    f"{member.name} is {kind}: {member.size} bytes, manifest says {entry.length}",
                    hint="the bundle is damaged or was altered; rebuild or re-download it",
                    path=member.name,
                )
            fh = self._tar.extractfile(member)
            if fh is None:  # pragma: no cover
                raise UnsafeBundleError(f"cannot read bundle member {member.name!r}")
            yield entry, fh
        missing = sorted(set(expected) - seen)
        if missing:
            raise IntegrityError(
                f"bundle is missing file(s) listed in the manifest: {', '.join(missing)}",
                hint="rebuild or re-download the bundle",
                missing=missing,
            )


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
    with path.open("rb") as fh:
        stream = BundleStream(fh)
        manifest = verify_envelope(stream.envelope, policy)
        for entry, member in stream.members(manifest):
            copy_verified(entry, member, None)
    return manifest


def iter_members(path: Path, manifest: Manifest) -> Iterator[tuple[FileEntry, IO[bytes]]]:
    with path.open("rb") as fh:
        yield from BundleStream(fh).members(manifest)

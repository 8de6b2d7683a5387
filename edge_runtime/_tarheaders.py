"""Raw tar header checks, run on the 512-byte blocks *before* :mod:`tarfile` reads them.

``tarfile`` trusts the sizes in a header: a PAX or GNU long-name header declaring 500 MiB is read into
memory whole, a name of any length is accepted, and links, devices and sparse files are parsed. A
bundle is a plain uncompressed tar of regular files written by ``edge-release``, so the reader walks
the header chain of each member itself first, with every bound taken from
:class:`~edge_runtime._limits.Limits`:

- every header block has a valid checksum, and number fields (octal or base-256) are parsed with
  bounds: a member is at most ``2**40`` bytes and must fit inside the file;
- extension headers -- PAX ``x`` and GNU long name ``L`` -- are at most
  ``tar_max_ext_header_bytes`` each and ``tar_max_ext_headers_per_member`` in a row; their size is
  checked from the 512-byte header before a byte of the body is read, so a 500 MiB header costs one
  block; their padding must be zero;
- PAX global headers ``g``, GNU long link names ``K``, the PAX keys ``linkpath`` and ``GNU.sparse.*``
  and ``hdrcharset=BINARY`` are refused (bundles never need them; each changes how later bytes are
  read);
- the member itself must be a regular file (type ``0`` or NUL): links, devices, FIFOs, directories,
  contiguous and sparse files are refused;
- at most ``tar_max_members`` members.

The caller then lets ``tarfile`` parse the same headers (now known to be small) and compares its
result with :class:`RawMember` -- name, size and data offset must agree, so the two parsers cannot be
played against each other.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import BinaryIO

from ._limits import Limits
from .errors import BundleFormatError, IntegrityError, UnsafeBundleError, quote_untrusted

__all__ = ["RawMember", "TarHeaderWalker"]

BLOCK = 512
#: largest member the runtime accepts (the manifest's per-file length bound)
MAX_MEMBER_SIZE = 1 << 40

_TYPE_NAMES = {
    b"1": "a hard link",
    b"2": "a symbolic link",
    b"3": "a character device",
    b"4": "a block device",
    b"5": "a directory",
    b"6": "a FIFO",
    b"7": "a contiguous file",
    b"S": "a GNU sparse file",
    b"K": "a GNU long link name",
    b"g": "a PAX global header",
    b"D": "a GNU directory dump",
    b"M": "a GNU multi-volume continuation",
    b"V": "a GNU volume label",
    b"N": "an old GNU long name",
}
_REGULAR = (b"0", b"\0")
_EXTENSIONS = (b"x", b"X", b"L")  # X: the old Solaris spelling of x, which tarfile also reads
_PAX_REFUSED_PREFIXES = ("linkpath", "GNU.sparse.")


@dataclass(frozen=True)
class RawMember:
    """A member as the raw headers describe it (after PAX / GNU long-name extensions)."""

    name: str
    size: int
    #: offset of the first header block of the member (its first extension header, if any)
    header_offset: int
    #: offset of the member's data
    data_offset: int

    @property
    def end(self) -> int:
        """Offset of the next member's first header block."""
        return self.data_offset + _padded(self.size)


def _padded(n: int) -> int:
    return (n + BLOCK - 1) // BLOCK * BLOCK


def _number(field: bytes, what: str, at: int) -> int:
    """Parse a tar number field: octal text, or base-256 when the first byte is 0x80 (0xff is negative)."""
    if field[:1] == b"\xff":
        raise BundleFormatError(f"tar header at offset {at}: {what} is negative")
    if field[:1] == b"\x80":
        return int.from_bytes(field[1:], "big")  # at most 11 bytes: bounded
    text = field.split(b"\0", 1)[0].strip(b" ")
    if not text:
        return 0
    if text.strip(b"01234567"):
        raise BundleFormatError(f"tar header at offset {at}: {what} field {quote_untrusted(field)} is not octal")
    return int(text, 8)  # at most 12 digits: bounded


def _checksum_ok(block: bytes) -> bool:
    try:
        stored = _number(block[148:156], "checksum", 0)
    except BundleFormatError:
        return False
    unsigned = 256 + sum(struct.unpack_from("148B8x356B", block))
    signed = 256 + sum(struct.unpack_from("148b8x356b", block))
    return stored in (unsigned, signed)


def _cstr(data: bytes) -> str:
    """A NUL-terminated name decoded as tarfile does (UTF-8, undecodable bytes as lone surrogates)."""
    return data.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")


def _pax_records(body: bytes, at: int) -> dict[str, str]:
    """Parse PAX records ``"<len> <key>=<value>\\n"`` strictly: every byte must belong to a record."""
    out: dict[str, str] = {}
    pos = 0
    while pos < len(body):
        space = body.find(b" ", pos, pos + 12)
        digits = body[pos:space] if space > pos else b""
        if not digits.isdigit():
            raise BundleFormatError(f"PAX header at offset {at} has a malformed record at byte {pos}")
        end = pos + int(digits)
        record = body[space + 1 : end]
        if end > len(body) or end <= space + 1 or not record.endswith(b"\n") or b"=" not in record:
            raise BundleFormatError(f"PAX header at offset {at} has a malformed record at byte {pos}")
        raw_key, value = record[:-1].split(b"=", 1)
        key = raw_key.decode("utf-8", "surrogateescape")
        if key in out:
            raise BundleFormatError(f"PAX header at offset {at} repeats the key {quote_untrusted(key)}")
        if key.startswith(_PAX_REFUSED_PREFIXES):
            raise UnsafeBundleError(f"PAX header at offset {at} uses {quote_untrusted(key)}, which bundles never need")
        out[key] = value.decode("utf-8", "surrogateescape")
        pos = end
    return out


class TarHeaderWalker:
    """Walks the header chain of a seekable tar, one member at a time, within ``limits``.

    :meth:`next` reads only header blocks and extension bodies whose size it has already checked;
    it never reads member data. Offsets are absolute positions in ``fh``.
    """

    def __init__(self, fh: BinaryIO, limits: Limits) -> None:
        self._fh = fh
        self._limits = limits
        fh.seek(0, 2)
        self.file_size = fh.tell()
        fh.seek(0)
        self._pos = 0
        self.members = 0
        self.ended = False

    def _read(self, at: int, n: int) -> bytes:
        self._fh.seek(at)
        return self._fh.read(n)

    def _truncated(self, at: int, what: str) -> Exception:
        msg = f"the bundle ends early: {what} at offset {at} is cut off (the file has {self.file_size} bytes)"
        hint = "the file is truncated; re-download or rebuild the bundle"
        return (BundleFormatError if self.members == 0 else IntegrityError)(msg, hint=hint)

    def next(self) -> RawMember | None:
        """Check the next member's headers; return it, or None at the end of the archive."""
        if self.ended:
            return None
        lim = self._limits
        start = pos = self._pos
        pax: dict[str, str] = {}
        long_name: str | None = None
        extensions = 0
        while True:
            block = self._read(pos, BLOCK)
            if not block or block.count(0) == BLOCK:
                self.ended = True  # end of archive (two zero blocks, or a file without them)
                if pax or long_name is not None:
                    raise self._truncated(pos, "a member announced by an extension header")
                return None
            if len(block) < BLOCK:
                raise self._truncated(pos, "a header block")
            if not _checksum_ok(block):
                if pos == 0:
                    raise BundleFormatError(
                        "not a bundle: the file does not start with a tar header",
                        hint="pass a .edgebundle file built by edge-release",
                    )
                raise BundleFormatError(
                    f"tar header at offset {pos} is damaged (bad checksum)", hint="re-download or rebuild the bundle"
                )
            kind = block[156:157]
            size = _number(block[124:136], "size", pos)
            if kind in _EXTENSIONS:
                extensions += 1
                if extensions > lim.tar_max_ext_headers_per_member:
                    raise BundleFormatError(
                        f"tar member at offset {start} has more than {lim.tar_max_ext_headers_per_member} "
                        "extension headers"
                    )
                if size > lim.tar_max_ext_header_bytes:
                    raise BundleFormatError(
                        f"tar extension header at offset {pos} declares {size} bytes, more than the limit of "
                        f"{lim.tar_max_ext_header_bytes}",
                        hint="bundles built by edge-release have small headers; this file is damaged or hostile",
                    )
                body = self._read(pos + BLOCK, _padded(size))
                if len(body) < _padded(size):
                    raise self._truncated(pos, "an extension header")
                if body.count(0, size) != len(body) - size:
                    raise BundleFormatError(f"tar extension header at offset {pos} has data in its padding")
                if b"hdrcharset=BINARY" in body:  # tarfile looks for it anywhere in the body
                    raise UnsafeBundleError(f"PAX header at offset {pos} switches names to binary (hdrcharset)")
                if kind == b"L":
                    if long_name is not None:
                        raise BundleFormatError(f"tar member at offset {start} has two GNU long names")
                    long_name = _cstr(body[:size])
                else:
                    for key, value in _pax_records(body[:size], pos).items():
                        if key in pax:
                            raise BundleFormatError(f"tar member at offset {start} repeats PAX key {key!r}")
                        pax[key] = value
                pos += BLOCK + _padded(size)
                continue
            if kind not in _REGULAR:
                what = _TYPE_NAMES.get(kind, f"of unknown type {quote_untrusted(kind)}")
                raise UnsafeBundleError(
                    f"bundle member {quote_untrusted(_cstr(block[:100]))} is {what}; bundles hold regular files only"
                )
            raw_name = _cstr(block[:100])
            prefix = _cstr(block[345:500])
            name = prefix + "/" + raw_name if prefix else raw_name
            if long_name is not None and "path" in pax:
                raise BundleFormatError(f"tar member at offset {start} has both a GNU long name and a PAX path")
            if long_name is not None:
                name = long_name
            if "path" in pax:
                name = pax["path"]
            if raw_name.endswith("/") or name.endswith("/"):
                raise UnsafeBundleError(f"bundle member {quote_untrusted(name)} is a directory")
            if "size" in pax:
                text = pax["size"]
                if not (text.isascii() and text.isdigit() and len(text) <= 20):
                    raise BundleFormatError(f"PAX size {quote_untrusted(text)} of member at offset {start} is invalid")
                size = int(text)
            if size > MAX_MEMBER_SIZE:
                raise BundleFormatError(f"bundle member {quote_untrusted(name)} declares {size} bytes, too large")
            data = pos + BLOCK
            if data + size > self.file_size:
                raise self._truncated(
                    data, f"member {quote_untrusted(name)} (declares {size} bytes, {self.file_size - data} remain)"
                )
            self.members += 1
            if self.members > lim.tar_max_members:
                raise BundleFormatError(f"the bundle has more than {lim.tar_max_members} members")
            member = RawMember(name, size, start, data)
            self._pos = member.end
            return member

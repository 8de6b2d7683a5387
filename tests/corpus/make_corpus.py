"""Write the hostile-input corpus: malformed tars and JSON documents, and ``index.json`` describing them.

Run ``python tests/corpus/make_corpus.py`` from the repository root; the output is deterministic (no
randomness, fixed times), so a re-run reproduces the committed files byte for byte. Files larger than
64 KiB are stored gzip-compressed (``.gz``) and the test decompresses them; cases that need a really
large file (a header declaring 500 MiB) carry ``extend_to`` and the test grows the file sparsely, so
the repository stays small while the runtime still faces the real size.

Each case says how ``tests/unit/test_hostile_input.py`` uses it:

- ``kind: "tar"``: passed to ``edge-runtime install``. With ``resign: true`` the first member is an
  *unsigned template* manifest; the test signs it with the device's trusted key and puts the signed
  manifest back in front of the untouched remaining bytes, so the hostile part after the manifest is
  reached (it is only read once the manifest is authentic).
- ``kind: "json"``: for each of ``targets`` -- ``manifest`` (wrapped as the ``manifest.json`` of an
  otherwise plain tar), ``signed-manifest`` (the document's ``signed`` object is signed by the
  trusted key first: hostile fields behind a valid signature), ``config`` (written over the device's
  ``config.json``) and ``state`` (written over a model's ``state.json``).
- ``error``: the error code the runtime must report (``null``: any documented code).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
MiB = 1 << 20
MODEL = "defect-classifier"
FILES = {"model.tflite": b"TFL3 not really a model\n" * 40, "golden.npz": b"PK golden samples\n" * 20}


def template_manifest(files: dict[str, bytes] = FILES, signatures: list[Any] | None = None) -> bytes:
    """An envelope with a valid ``signed`` part and no signature (the test signs it)."""
    signed = {
        "_type": "edge-bundle/v1",
        "model": {"name": MODEL, "version": "9.0.0", "release_counter": 900},
        "created": "2026-01-01T00:00:00Z",
        "expires": "2099-01-01T00:00:00Z",
        "compatibility": {
            "backends": ["litert", "tflite-runtime"],
            "architectures": ["x86_64", "aarch64", "armv7l"],
            "input": {"shape": [1, 4], "dtype": "float32"},
        },
        "entrypoints": {"model": "model.tflite", "golden": "golden.npz"},
        "smoke_test": {"atol": 0.01, "min_label_agreement": 0.9, "p95_latency_ms": 50.0, "repeats": 1},
        "files": [
            {"path": p, "sha256": hashlib.sha256(d).hexdigest(), "length": len(d)} for p, d in sorted(files.items())
        ],
    }
    return json.dumps({"signed": signed, "signatures": signatures or []}, sort_keys=True).encode()


def header(name: str | bytes, size: int, kind: bytes = b"0", **kw: Any) -> bytes:
    """One ustar header block; ``kw`` sets other TarInfo fields (linkname, devmajor, ...)."""
    info = tarfile.TarInfo(name if isinstance(name, str) else name.decode("utf-8", "surrogateescape"))
    info.size, info.type, info.mode, info.mtime = size, kind, 0o644, 0
    for k, v in kw.items():
        setattr(info, k, v)
    return info.tobuf(tarfile.USTAR_FORMAT, "utf-8", "surrogateescape")


def raw_header(name: bytes, size_field: bytes, kind: bytes = b"0") -> bytes:
    """A header block built by hand (for size fields tarfile will not write), with a correct checksum."""
    block = bytearray(512)
    block[0 : len(name)] = name
    block[100:108] = b"0000644\0"
    block[124:136] = size_field
    block[136:148] = b"00000000000\0"
    block[156:157] = kind
    block[257:265] = b"ustar\x0000"
    block[148:156] = b" " * 8
    block[148:156] = b"%06o\0 " % sum(block)
    return bytes(block)


def pad(data: bytes) -> bytes:
    return data + b"\0" * (-len(data) % 512)


def member(name: str | bytes, data: bytes, kind: bytes = b"0", **kw: Any) -> bytes:
    return header(name, len(data), kind, **kw) + pad(data)


def ext(kind: bytes, body: bytes, declared: int | None = None) -> bytes:
    """An extension header (x, g, L, K) carrying ``body``; ``declared`` overrides its size field."""
    return header("././@ext", len(body) if declared is None else declared, kind) + pad(body)


def pax(**records: str) -> bytes:
    out = b""
    for k, v in records.items():
        rec = f" {k.replace('__', '.')}={v}\n".encode()
        n = len(rec) + 1
        while len(str(n).encode()) + len(rec) != n:
            n += 1
        out += str(n).encode() + rec
    return out


END = b"\0" * 1024
MANIFEST = member("manifest.json", template_manifest())
BODY = b"".join(member(p, d) for p, d in sorted(FILES.items()))


def tar_cases() -> list[dict[str, Any]]:
    huge = 500 * MiB
    cases: list[dict[str, Any]] = [
        # --- before the manifest: nothing is trusted yet -----------------------------------------
        {"name": "huge-pax-first", "data": ext(b"x", b"", huge), "extend_to": huge + 4096, "error": "bundle_format"},
        {
            "name": "huge-gnu-longname-first",
            "data": ext(b"L", b"", huge),
            "extend_to": huge + 4096,
            "error": "bundle_format",
        },
        {
            "name": "huge-gnu-longlink-first",
            "data": ext(b"K", b"", huge),
            "extend_to": huge + 4096,
            "error": "unsafe_bundle",
        },
        {
            "name": "pax-just-over-limit",
            "data": ext(b"x", pax(comment="a" * 4090)) + MANIFEST + END,
            "error": "bundle_format",
        },
        {
            "name": "many-ext-headers",
            "data": ext(b"x", pax(comment="a")) * 4 + MANIFEST + END,
            "error": "bundle_format",
        },
        {
            "name": "pax-global-header",
            "data": ext(b"g", pax(path="manifest.json")) + MANIFEST + END,
            "error": "unsafe_bundle",
        },
        {
            "name": "pax-linkpath",
            "data": ext(b"x", pax(linkpath="/etc/passwd")) + MANIFEST + END,
            "error": "unsafe_bundle",
        },
        {
            "name": "pax-sparse",
            "data": ext(b"x", pax(GNU__sparse__size="99999999")) + MANIFEST + END,
            "error": "unsafe_bundle",
        },
        {
            "name": "pax-hdrcharset-binary",
            "data": ext(b"x", pax(hdrcharset="BINARY")) + MANIFEST + END,
            "error": "unsafe_bundle",
        },
        {
            "name": "pax-bad-record",
            "data": ext(b"x", b"99 path=manifest.json\n") + MANIFEST + END,
            "error": "bundle_format",
        },
        {
            "name": "pax-data-in-padding",
            "data": header("././@ext", 6, b"x") + pad(b"6 a=b\n" + b"25 path=manifest.json\n") + MANIFEST + END,
            "error": "bundle_format",
        },
        {
            "name": "pax-path-and-gnu-longname",
            "data": ext(b"L", b"manifest.json\0") + ext(b"x", pax(path="manifest.json")) + MANIFEST + END,
            "error": "bundle_format",
        },
        {
            "name": "manifest-not-first",
            "data": member("model.tflite", FILES["model.tflite"]) + MANIFEST + END,
            "error": "bundle_format",
        },
        {
            "name": "manifest-dot-slash",
            "data": member("./manifest.json", template_manifest()) + END,
            "error": "bundle_format",
        },
        {"name": "manifest-long-name-echo", "data": member("x" * 99, b"{}") + END, "error": "bundle_format"},
        {
            "name": "manifest-pax-long-name-echo",
            "data": ext(b"x", pax(path="\x1b[31m" + "y" * 3000)) + member("a", b"") + END,
            "error": "bundle_format",
        },
        {
            "name": "manifest-too-large",
            "data": header("manifest.json", MiB + 1),
            "extend_to": 2 * MiB,
            "error": "bundle_format",
        },
        {
            "name": "manifest-declares-900mib",
            "data": header("manifest.json", 900 * MiB),
            "extend_to": 901 * MiB,
            "error": "bundle_format",
        },
        {
            "name": "manifest-size-base256-2pow80",
            "data": raw_header(b"manifest.json", b"\x80" + (1 << 80).to_bytes(11, "big")),
            "error": "bundle_format",
        },
        {
            "name": "manifest-size-negative",
            "data": raw_header(b"manifest.json", b"\xff" * 12),
            "error": "bundle_format",
        },
        {
            "name": "manifest-size-not-octal",
            "data": raw_header(b"manifest.json", b"0000000009x\0"),
            "error": "bundle_format",
        },
        {
            "name": "manifest-symlink",
            "data": member("manifest.json", b"", b"2", linkname="/etc/passwd") + END,
            "error": "unsafe_bundle",
        },
        {
            "name": "manifest-hardlink",
            "data": member("manifest.json", b"", b"1", linkname="x") + END,
            "error": "unsafe_bundle",
        },
        {
            "name": "manifest-chardev",
            "data": member("manifest.json", b"", b"3", devmajor=1, devminor=3) + END,
            "error": "unsafe_bundle",
        },
        {
            "name": "manifest-blockdev",
            "data": member("manifest.json", b"", b"4", devmajor=8) + END,
            "error": "unsafe_bundle",
        },
        {"name": "manifest-fifo", "data": member("manifest.json", b"", b"6") + END, "error": "unsafe_bundle"},
        {"name": "manifest-directory", "data": member("manifest.json/", b"", b"5") + END, "error": "unsafe_bundle"},
        {"name": "manifest-sparse", "data": member("manifest.json", b"", b"S") + END, "error": "unsafe_bundle"},
        {"name": "manifest-truncated-data", "data": MANIFEST[:700], "error": "bundle_format"},
        {"name": "truncated-header", "data": MANIFEST[:300], "error": "bundle_format"},
        {
            "name": "bad-checksum",
            "data": MANIFEST[:148] + b"0000000\0" + MANIFEST[156:] + END,
            "error": "bundle_format",
        },
        {"name": "empty-file", "data": b"", "error": "bundle_format"},
        {"name": "zeros-only", "data": b"\0" * 10240, "error": "bundle_format"},
        {"name": "json-not-tar", "data": template_manifest(), "error": "bundle_format"},
        # --- after an authentic manifest (the test signs the template) ------------------------------
        {
            "name": "after-huge-pax",
            "data": MANIFEST + ext(b"x", b"", huge),
            "extend_to": huge + 8192,
            "resign": True,
            "error": "bundle_format",
        },
        {
            "name": "after-huge-gnu-longname",
            "data": MANIFEST + ext(b"L", b"", huge),
            "extend_to": huge + 8192,
            "resign": True,
            "error": "bundle_format",
        },
        {
            "name": "after-symlink",
            "data": MANIFEST + member("model.tflite", b"", b"2", linkname="/etc/passwd") + END,
            "resign": True,
            "error": "unsafe_bundle",
        },
        {
            "name": "after-hardlink",
            "data": MANIFEST + member("model.tflite", b"", b"1", linkname="manifest.json") + END,
            "resign": True,
            "error": "unsafe_bundle",
        },
        {
            "name": "after-chardev",
            "data": MANIFEST + member("golden.npz", b"", b"3", devmajor=1, devminor=5) + END,
            "resign": True,
            "error": "unsafe_bundle",
        },
        {
            "name": "after-fifo-late",
            "data": MANIFEST + member("golden.npz", FILES["golden.npz"]) + member("model.tflite", b"", b"6") + END,
            "resign": True,
            "error": "unsafe_bundle",
        },
        {
            "name": "after-dotdot",
            "data": MANIFEST + member("../escape.txt", b"bad\n") + END,
            "resign": True,
            "error": "unsafe_bundle",
        },
        {
            "name": "after-absolute",
            "data": MANIFEST + member("/tmp/escape.txt", b"bad\n") + END,
            "resign": True,
            "error": "unsafe_bundle",
        },
        {
            "name": "after-pax-path-dotdot",
            "data": MANIFEST + ext(b"x", pax(path="../../escape.txt")) + member("model.tflite", b"bad\n") + END,
            "resign": True,
            "error": "unsafe_bundle",
        },
        {
            "name": "after-gnu-longname-absolute",
            "data": MANIFEST + ext(b"L", b"/etc/cron.d/x\0") + member("model.tflite", b"bad\n") + END,
            "resign": True,
            "error": "unsafe_bundle",
        },
        {
            "name": "after-surrogate-name",
            "data": MANIFEST + member(b"model\xff.tflite", b"bad\n") + END,
            "resign": True,
            "error": "unsafe_bundle",
        },
        {
            "name": "after-control-char-name",
            "data": MANIFEST + member("model\x1b[2J.tflite", b"bad\n") + END,
            "resign": True,
            "error": "unsafe_bundle",
        },
        {
            "name": "after-size-lying-base256",
            "data": MANIFEST
            + raw_header(b"golden.npz", b"\x80" + (1 << 39).to_bytes(11, "big"))
            + pad(FILES["golden.npz"])
            + END,
            "resign": True,
            "error": "integrity",
        },
        {
            "name": "after-size-shorter-than-manifest",
            "data": MANIFEST + member("golden.npz", FILES["golden.npz"][:-5]) + END,
            "resign": True,
            "error": "integrity",
        },
        {
            "name": "after-truncated-mid-member",
            "data": (MANIFEST + BODY)[: len(MANIFEST) + 700],
            "resign": True,
            "error": "integrity",
        },
        {
            "name": "after-extra-member-late",
            "data": MANIFEST + BODY + member("payload.sh", b"#!/bin/sh\n") + END,
            "resign": True,
            "error": "integrity",
        },
        {
            "name": "after-duplicate-member",
            "data": MANIFEST
            + member("golden.npz", FILES["golden.npz"])
            + member("golden.npz", FILES["golden.npz"])
            + END,
            "resign": True,
            "error": "integrity",
        },
        {
            "name": "after-bad-checksum",
            "data": MANIFEST + BODY[:148] + b"0000000\0" + BODY[156:] + END,
            "resign": True,
            "error": "bundle_format",
        },
        {
            "name": "after-global-pax",
            "data": MANIFEST + ext(b"g", pax(path="x")) + BODY + END,
            "resign": True,
            "error": "unsafe_bundle",
        },
        {
            "name": "after-sparse",
            "data": MANIFEST + member("model.tflite", b"", b"S") + END,
            "resign": True,
            "error": "unsafe_bundle",
        },
    ]
    files = {**FILES, **{f"f{i:04d}": b"" for i in range(998)}}  # 1000 files: the most a manifest may list
    cases.append(
        {
            "name": "too-many-members",
            "data": member("manifest.json", template_manifest(files))
            + b"".join(member(p, d) for p, d in sorted(files.items()))
            + member("f-extra", b"")
            + END,
            "resign": True,
            "error": "bundle_format",
        }
    )
    return cases


def _doc(signed: dict[str, Any]) -> bytes:
    return json.dumps({"signed": signed, "signatures": []}).encode()


def _signed_with(**changes: Any) -> bytes:
    """The template's signed part with fields replaced (dotted keys reach into sub-objects)."""
    env = json.loads(template_manifest())
    for dotted, value in changes.items():
        obj = env["signed"]
        *path, last = dotted.split("__")
        for p in path:
            obj = obj[p]
        obj[last] = value
    return json.dumps(env).encode()


def json_cases() -> list[dict[str, Any]]:
    all3 = ["manifest", "config", "state"]
    return [
        {"name": "deep-array", "data": b"[" * 100_000, "targets": all3},
        {"name": "deep-object", "data": b'{"a":' * 30_000 + b"1" + b"}" * 30_000, "targets": ["manifest"]},
        {
            "name": "deep-inside-string-ok-then-bad-type",
            "data": b'{"signed": "' + b"[" * 50_000 + b'"}',
            "targets": ["manifest"],
        },
        {"name": "int-5000-digits", "data": b'{"signed": {"n": ' + b"7" * 5000 + b"}}", "targets": all3},
        {
            "name": "int-negative-4301-digits",
            "data": b'{"signed": {"n": -' + b"9" * 4301 + b"}}",
            "targets": ["manifest"],
        },
        {"name": "float-1e400", "data": b'{"signed": {"smoke_test": {"atol": 1e400}}}', "targets": all3},
        {"name": "float-minus-1e400", "data": b'{"signed": {"x": -1e400}}', "targets": ["manifest"]},
        {"name": "float-long-literal", "data": b'{"signed": {"x": 0.' + b"1" * 20_000 + b"}}", "targets": ["manifest"]},
        {"name": "nan-literal", "data": b'{"signed": {"x": NaN}}', "targets": all3},
        {"name": "infinity-literal", "data": b'{"signed": {"x": Infinity}}', "targets": ["manifest", "config"]},
        {"name": "minus-infinity-literal", "data": b'{"signed": {"x": -Infinity}}', "targets": ["manifest"]},
        {"name": "lone-high-surrogate", "data": b'{"signed": {"x": "\\ud800"}}', "targets": all3},
        {"name": "lone-low-surrogate-key", "data": b'{"signed": {"\\udfff": 1}}', "targets": ["manifest", "state"]},
        {"name": "cesu-encoded-surrogate", "data": b'{"signed": {"x": "\xed\xa0\x80"}}', "targets": ["manifest"]},
        {"name": "invalid-utf8", "data": b'{"signed": {"x": "\xff\xfe"}}', "targets": all3},
        {"name": "overlong-utf8", "data": b'{"signed": {"x": "\xc0\xaf"}}', "targets": ["manifest"]},
        {"name": "utf8-bom", "data": b"\xef\xbb\xbf" + template_manifest(), "targets": ["manifest"]},
        {"name": "duplicate-key", "data": b'{"signed": {}, "signed": {}}', "targets": all3},
        {
            "name": "duplicate-nested-key",
            "data": template_manifest()[:-1] + b', "signatures": []}',
            "targets": ["manifest"],
        },
        {"name": "string-70000-chars", "data": b'{"signed": {"x": "' + b"a" * 70_000 + b'"}}', "targets": ["manifest"]},
        {"name": "unterminated-escaped-quotes", "data": b'"' + b'\\"' * 100_000, "targets": ["manifest", "config"]},
        {"name": "not-an-object", "data": b"[]", "targets": all3},
        {"name": "empty-document", "data": b"", "targets": all3},
        {"name": "null", "data": b"null", "targets": ["manifest", "config"]},
        {
            "name": "over-1mib",
            "data": b'{"signed": {"x": "' + b"a" * (MiB + 10) + b'"}}',
            "targets": ["manifest", "state"],
        },
        # hostile fields behind a valid signature (a compromised or buggy signer)
        {
            "name": "signed-version-5000-digits",
            "data": _signed_with(model__version="1" * 5000 + ".0.0"),
            "targets": ["signed-manifest"],
        },
        {
            "name": "signed-version-surrogate",
            "data": _signed_with(model__version="1.0.0-\udc80"),
            "targets": ["signed-manifest"],
            "error": "bundle_format",
        },
        {
            "name": "signed-name-control-chars",
            "data": _signed_with(model__name="\x1b[31mevil\x07"),
            "targets": ["signed-manifest"],
        },
        {
            "name": "signed-path-dotdot",
            "data": _signed_with(files=[{"path": "../x", "sha256": "0" * 64, "length": 1}]),
            "targets": ["signed-manifest"],
            "error": "unsafe_bundle",
        },
        {
            "name": "signed-path-surrogate",
            "data": _signed_with(files=[{"path": "a\udc80", "sha256": "0" * 64, "length": 1}]),
            "targets": ["signed-manifest"],
            "error": "bundle_format",
        },
        {
            "name": "signed-path-too-long",
            "data": _signed_with(files=[{"path": "p" * 256, "sha256": "0" * 64, "length": 1}]),
            "targets": ["signed-manifest"],
            "error": "unsafe_bundle",
        },
        {
            "name": "signed-counter-2pow64",
            "data": _signed_with(model__release_counter=2**64),
            "targets": ["signed-manifest"],
        },
        {"name": "signed-atol-1e308", "data": _signed_with(smoke_test__atol=1e308), "targets": ["signed-manifest"]},
        {
            "name": "signed-shape-huge",
            "data": _signed_with(compatibility__input__shape=[1 << 40, 1]),
            "targets": ["signed-manifest"],
        },
        {
            "name": "signed-shape-many-dims",
            "data": _signed_with(compatibility__input__shape=[1] * 100),
            "targets": ["signed-manifest"],
        },
        {
            "name": "signed-arch-control",
            "data": _signed_with(compatibility__architectures=["x86_64\n"]),
            "targets": ["signed-manifest"],
        },
        {"name": "signed-time-garbage", "data": _signed_with(expires="\x1b" * 5000), "targets": ["signed-manifest"]},
        {
            "name": "signed-unknown-keys",
            "data": _signed_with(**{f"k{i}": i for i in range(200)}),
            "targets": ["signed-manifest"],
        },
        # device config and state files with the wrong shapes
        {
            "name": "config-wrong-types",
            "data": b'{"architecture": "x86_64", "keep_versions": "2"}',
            "targets": ["config"],
        },
        {
            "name": "config-inputs-not-object",
            "data": b'{"architecture": "x86_64", "inputs": {"m": 5}}',
            "targets": ["config"],
        },
        {
            "name": "config-unknown-field",
            "data": b'{"architecture": "x86_64", "\\u001b[31m": 1}',
            "targets": ["config"],
        },
        {
            "name": "state-version-path",
            "data": json.dumps(
                {
                    "schema": 1,
                    "model": MODEL,
                    "active": "../../../etc",
                    "versions": {"../../../etc": {"digest": "sha256:0"}},
                    "order": ["../../../etc"],
                }
            ).encode(),
            "targets": ["state"],
        },
        {
            "name": "state-wrong-types",
            "data": json.dumps(
                {"schema": 1, "model": MODEL, "highest_counter": "7", "versions": {"1.0.0": 5}}
            ).encode(),
            "targets": ["state"],
        },
        {
            "name": "state-pending-garbage",
            "data": json.dumps({"schema": 1, "model": MODEL, "pending": {"op": 1}}).encode(),
            "targets": ["state"],
        },
    ]


def _write(path: Path, data: bytes) -> str:
    if len(data) > 64 * 1024:
        path = path.with_name(path.name + ".gz")
        buf = io.BytesIO()
        with gzip.GzipFile(fileobj=buf, mode="wb", mtime=0, compresslevel=9) as gz:
            gz.write(data)
        data = buf.getvalue()
    path.write_bytes(data)
    return str(path.relative_to(HERE))


def main() -> None:
    index: list[dict[str, Any]] = []
    for sub in ("tar", "json"):
        d = HERE / sub
        d.mkdir(exist_ok=True)
        for old in d.iterdir():
            old.unlink()
    for c in tar_cases():
        entry = {
            "kind": "tar",
            "name": c["name"],
            "file": _write(HERE / "tar" / f"{c['name']}.tar", c["data"]),
            "resign": c.get("resign", False),
            "extend_to": c.get("extend_to"),
            "error": c.get("error"),
        }
        index.append(entry)
    for c in json_cases():
        default = "bundle_format" if c["targets"] == ["signed-manifest"] else None
        entry = {
            "kind": "json",
            "name": c["name"],
            "file": _write(HERE / "json" / f"{c['name']}.json", c["data"]),
            "targets": c["targets"],
            "error": c.get("error", default),
        }
        index.append(entry)
    (HERE / "index.json").write_text(json.dumps(index, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    total = sum(p.stat().st_size for p in HERE.rglob("*") if p.is_file())
    print(f"{len(index)} cases, {total} bytes under {HERE}")


if __name__ == "__main__":
    main()

"""Parsers of untrusted input fail closed, with a typed error and a bounded cost (issue 7 point 4).

Every limit in :class:`edge_runtime._limits.Limits` is tested at the threshold and one step beyond;
the Hypothesis properties assert that *any* input gives a value or an
:class:`~edge_runtime.errors.EdgeRuntimeError` -- never another exception. The same classes run
through the real CLI in ``tests/integration/test_hostile_corpus.py``.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any, BinaryIO

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge_runtime._json import dumps_strict, loads_untrusted
from edge_runtime._limits import DEFAULT_LIMITS, Limits
from edge_runtime._state import ModelState, StateStore
from edge_runtime._tarheaders import TarHeaderWalker
from edge_runtime.bundle import BundleStream, copy_verified
from edge_runtime.device import DeviceConfig
from edge_runtime.errors import (
    BundleFormatError,
    ConfigError,
    EdgeRuntimeError,
    IntegrityError,
    OutputEncodingError,
    StateCorruptError,
    UnsafeBundleError,
    quote_untrusted,
    safe_text,
)
from edge_runtime.manifest import Manifest, Version, check_member_path, parse_envelope
from tests.corpus.make_corpus import END, FILES, MANIFEST, ext, header, member, pax, raw_header, template_manifest

MiB = 1 << 20
FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def refused(data: bytes, limits: Limits = DEFAULT_LIMITS) -> str:
    with pytest.raises(BundleFormatError) as exc:
        loads_untrusted(data, limits)
    return exc.value.message


# --- the bounded JSON reader ------------------------------------------------------------------------


def test_nesting_at_the_depth_limit_is_read_and_one_deeper_is_refused() -> None:
    d = DEFAULT_LIMITS.json_max_depth
    assert loads_untrusted(b"[" * d + b"]" * d) is not None
    assert f"deeper than {d}" in refused(b"[" * (d + 1) + b"]" * (d + 1))
    assert f"deeper than {d}" in refused(b'{"a":' * (d + 1) + b"1" + b"}" * (d + 1))


def test_deep_nesting_is_refused_before_the_parser_recurses() -> None:
    assert "deeper than" in refused(b"[" * 100_000)
    assert "deeper than" in refused(b'{"a":' * 100_000)


def test_brackets_inside_strings_are_not_nesting() -> None:
    doc = json.dumps({"a": "[{" * 10_000 + '\\"]' * 100}).encode()
    assert loads_untrusted(doc)["a"].startswith("[{[{")


@pytest.mark.parametrize("sign", ["", "-"])
def test_integer_digits_at_the_limit_are_read_and_one_more_is_refused(sign: str) -> None:
    n = DEFAULT_LIMITS.json_max_int_digits
    assert loads_untrusted(f"[{sign}{'9' * n}]".encode()) == [int(sign + "9" * n)]
    assert f"{n + 1} digits" in refused(f"[{sign}{'9' * (n + 1)}]".encode())


@pytest.mark.parametrize("digits", [4300, 4301, 5000, 100_000])
def test_huge_integers_are_refused_with_a_typed_error(digits: int) -> None:
    assert "digits" in refused(b"[" + b"7" * digits + b"]")


@pytest.mark.parametrize("literal", ["1e400", "-1e400", "1E309", "123456789e999"])
def test_numbers_overflowing_to_infinity_are_refused(literal: str) -> None:
    assert "out of range" in refused(f'{{"x": {literal}}}'.encode())


def test_the_largest_finite_float_is_read() -> None:
    assert loads_untrusted(b"[1.7976931348623157e308]") == [1.7976931348623157e308]


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_infinity_literals_are_refused(literal: str) -> None:
    assert literal in refused(f'{{"x": {literal}}}'.encode())


def test_number_literal_length_at_the_limit_is_read_and_one_more_is_refused() -> None:
    n = DEFAULT_LIMITS.json_max_number_chars
    ok = "0." + "1" * (n - 2)
    assert loads_untrusted(f"[{ok}]".encode()) == [float(ok)]
    assert "characters long" in refused(f"[{ok}1]".encode())


def test_string_length_at_the_limit_is_read_and_one_more_is_refused() -> None:
    lim = replace(DEFAULT_LIMITS, json_max_string_chars=10)
    assert loads_untrusted(b'["aaaaaaaaaa"]', lim) == ["a" * 10]
    assert "11 characters" in refused(b'["aaaaaaaaaaa"]', lim)
    assert "11 characters" in refused(b'{"aaaaaaaaaaa": 1}', lim)
    assert loads_untrusted(b'["\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9"]', lim)


def test_document_size_at_the_limit_is_read_and_one_byte_more_is_refused() -> None:
    lim = replace(DEFAULT_LIMITS, manifest_max_bytes=20)
    doc = b'["' + b"a" * 16 + b'"]'
    assert len(doc) == 20
    assert loads_untrusted(doc, lim) == ["a" * 16]
    assert "21 bytes" in refused(doc[:-2] + b'a"]', lim)


@pytest.mark.parametrize("doc", [b'["\\ud800"]', b'["\\udfff"]', b'{"\\udc80": 1}', b'["a\\ud83d"]', b'["\\ude00x"]'])
def test_lone_surrogates_are_refused_in_values_and_keys(doc: bytes) -> None:
    assert "lone surrogate" in refused(doc)


def test_a_surrogate_pair_is_one_character() -> None:
    assert loads_untrusted(b'["\\ud83d\\ude00"]') == ["\U0001f600"]


@pytest.mark.parametrize(
    "doc",
    [b'["\xff"]', b'["\xed\xa0\x80"]', b'["\xc0\xaf"]', b'["\xe2\x82"]', b'"\xf4\x90\x80\x80"'],
    ids=["invalid", "encoded-surrogate", "overlong", "truncated", "beyond-unicode"],
)
def test_invalid_utf8_is_refused(doc: bytes) -> None:
    assert "not valid UTF-8" in refused(doc)


def test_duplicate_keys_are_refused_at_any_depth() -> None:
    assert "duplicate key 'a'" in refused(b'{"a": 1, "a": 1}')
    assert "duplicate key 'b'" in refused(b'{"a": [{"b": 1, "b": 2}]}')


def test_messages_quote_untrusted_text_truncated_and_escaped() -> None:
    key = json.dumps("\x1b[2J" + "k" * 10_000).encode()
    msg = refused(b"{" + key + b": 1, " + key + b": 2}")
    assert len(msg) < 300
    assert "\x1b" not in msg
    assert "\\x1b[2J" in msg


def test_the_callers_error_type_is_raised() -> None:
    with pytest.raises(ConfigError, match="device config"):
        loads_untrusted(b"[NaN]", what="device config", error=ConfigError)


# --- the strict writer and the message helpers ----------------------------------------------------


@pytest.mark.parametrize(
    ("value", "where"),
    [({"a": [1, math.nan]}, "$.a[1] is nan"), ({"p95": math.inf}, "$.p95 is inf"), ({"r": "x\udc80"}, "$.r holds")],
)
def test_strict_writer_refuses_non_json_and_names_the_field(value: Any, where: str) -> None:
    for ensure_ascii in (True, False):
        with pytest.raises(OutputEncodingError, match=where.replace("[", r"\[").replace("$", r"\$")):
            dumps_strict(value, ensure_ascii=ensure_ascii)


def test_strict_writer_writes_what_json_writes() -> None:
    value = {"a": [1, 2.5, None, True, "\U0001f600 é"], "b": {}}
    assert dumps_strict(value, sort_keys=True) == json.dumps(value, sort_keys=True)


@given(st.one_of(st.text(), st.binary(), st.integers()), st.integers(min_value=1, max_value=200))
@FAST
def test_quoted_untrusted_text_is_bounded_printable_and_encodable(value: Any, limit: int) -> None:
    q = quote_untrusted(value, limit)
    q.encode("utf-8")
    assert len(q) <= 10 * limit + 60
    assert q.isprintable()


@given(st.text())
@FAST
def test_safe_text_is_encodable_and_keeps_printable_text(text: str) -> None:
    out = safe_text(text)
    out.encode("utf-8")
    if text.isprintable() and not any("\u202a" <= c <= "\u202e" or "\u2066" <= c <= "\u2069" for c in text):
        assert out == text


# --- manifest fields ----------------------------------------------------------------------------------


def signed(**changes: Any) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(template_manifest())["signed"]
    for dotted, value in changes.items():
        obj = doc
        *path, last = dotted.split("__")
        for p in path:
            obj = obj[p]
        obj[last] = value
    return doc


def test_the_template_manifest_is_valid() -> None:
    assert Manifest.from_signed(signed()).name == "defect-classifier"


@pytest.mark.parametrize(
    "changes",
    [
        {"model__version": "1.0.0\n"},
        {"model__version": "\u0661.0.0"},
        {"model__version": "1" * 5000 + ".0.0"},
        {"model__name": "defect-classifier\n"},
        {"compatibility__architectures": ["x86_64\n"]},
        {"compatibility__backends": ["litert"] * 33},
        {"compatibility__input__shape": [1] * 9},
        {"compatibility__input__shape": [1 << 25]},
        {"smoke_test__atol": math.nan},
        {"smoke_test__p95_latency_ms": math.inf},
        {"smoke_test__min_label_agreement": -math.inf},
        {"model__release_counter": 2**64},
        {"expires": "2099-01-01T00:00:00Z\n"},
        {"created": "\u0662026-01-01T00:00:00Z"},
    ],
    ids=lambda c: "-".join(c),
)
def test_out_of_range_or_malformed_fields_are_refused(changes: dict[str, Any]) -> None:
    with pytest.raises(BundleFormatError) as exc:
        Manifest.from_signed(signed(**changes))
    assert len(exc.value.message) < 400


def test_version_length_at_the_limit_is_read_and_one_more_is_refused() -> None:
    n = DEFAULT_LIMITS.max_version_chars
    ok = "1.0.0-" + "a" * (n - 6)
    assert str(Version.parse(ok)) == ok
    with pytest.raises(BundleFormatError):
        Version.parse(ok + "a")


@pytest.mark.parametrize(
    "path",
    ["a\udc80", "a\x00b", "a\nb", "a\\b", "/abs", "../up", "a/../b", "a//b", ".tmp-x", "p" * 256, "é" * 128],
)
def test_unsafe_member_paths_are_refused(path: str) -> None:
    with pytest.raises(UnsafeBundleError) as exc:
        check_member_path(path)
    assert len(exc.value.message) < 300
    assert "\x00" not in exc.value.diagnostics()


def test_path_length_at_the_limit_is_accepted() -> None:
    assert check_member_path("p" * DEFAULT_LIMITS.max_path_chars)


def test_signature_count_and_size_are_bounded() -> None:
    env = json.loads(template_manifest())
    env["signatures"] = [{"keyid": "a" * 64, "sig": "AAAA"}] * (DEFAULT_LIMITS.max_signatures + 1)
    with pytest.raises(BundleFormatError, match="at most"):
        parse_envelope(json.dumps(env).encode())
    env["signatures"] = [{"keyid": "a" * 64, "sig": "A" * 10_000}]
    with pytest.raises(BundleFormatError, match="at most"):
        parse_envelope(json.dumps(env).encode())


# --- tar headers ----------------------------------------------------------------------------------


class CountingReader(io.RawIOBase):
    """A seekable file wrapper that counts the bytes handed out."""

    def __init__(self, fh: BinaryIO) -> None:
        self.fh, self.read_bytes = fh, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = 0) -> int:
        return self.fh.seek(offset, whence)

    def tell(self) -> int:
        return self.fh.tell()

    def readinto(self, b: Any) -> int:
        data = self.fh.read(len(b))
        self.read_bytes += len(data)
        b[: len(data)] = data
        return len(data)


def open_stream(data: bytes, limits: Limits = DEFAULT_LIMITS) -> BundleStream:
    return BundleStream(io.BytesIO(data), limits)


@pytest.mark.parametrize("kind", [b"x", b"L"])
def test_a_500_mib_extension_header_is_refused_after_reading_one_block(tmp_path: Path, kind: bytes) -> None:
    big = tmp_path / "big.tar"
    big.write_bytes(ext(kind, b"", 500 * MiB))
    os.truncate(big, 520 * MiB)  # sparse: the declared size is really there
    with big.open("rb") as fh:
        counting = CountingReader(fh)
        with pytest.raises(BundleFormatError, match="more than the limit"):
            BundleStream(counting)  # type: ignore[arg-type]
    assert counting.read_bytes <= 4096


@pytest.mark.parametrize("kind", [b"x", b"L"])
def test_extension_header_at_the_limit_is_read_and_one_byte_more_is_refused(kind: bytes) -> None:
    n = DEFAULT_LIMITS.tar_max_ext_header_bytes
    if kind == b"x":
        ok, over = pax(comment="c" * (n - 14)), pax(comment="c" * (n - 13))
    else:
        ok, over = b"manifest.json" + b"\0" * (n - 13), b"manifest.json" + b"\0" * (n - 12)
    assert (len(ok), len(over)) == (n, n + 1)
    assert open_stream(ext(kind, ok) + MANIFEST + END).envelope.signatures == ()
    with pytest.raises(BundleFormatError, match=f"{n + 1} bytes, more than the limit"):
        open_stream(ext(kind, over) + MANIFEST + END)


def test_extension_headers_per_member_at_the_limit_are_read_and_one_more_is_refused() -> None:
    n = DEFAULT_LIMITS.tar_max_ext_headers_per_member
    headers = [ext(b"x", pax(**{f"c{i}": "1"})) for i in range(n + 1)]
    assert open_stream(b"".join(headers[:n]) + MANIFEST + END)
    with pytest.raises(BundleFormatError, match=f"more than {n} extension headers"):
        open_stream(b"".join(headers) + MANIFEST + END)


def test_a_pax_key_repeated_for_one_member_is_refused() -> None:
    with pytest.raises(BundleFormatError, match="repeats PAX key"):
        open_stream(ext(b"x", pax(comment="a")) + ext(b"x", pax(comment="b")) + MANIFEST + END)


def walk_all(data: bytes, limits: Limits) -> int:
    walker = TarHeaderWalker(io.BytesIO(data), limits)
    while walker.next() is not None:
        pass
    return walker.members


def test_member_count_at_the_limit_is_read_and_one_more_is_refused() -> None:
    lim = replace(DEFAULT_LIMITS, tar_max_members=3)
    three = MANIFEST + member("a", b"1") + member("b", b"2")
    assert walk_all(three + END, lim) == 3
    with pytest.raises(BundleFormatError, match="more than 3 members"):
        walk_all(three + member("c", b"3") + END, lim)


@pytest.mark.parametrize(
    ("kind", "word"),
    [
        (b"1", "hard link"),
        (b"2", "symbolic link"),
        (b"3", "character device"),
        (b"4", "block device"),
        (b"5", "directory"),
        (b"6", "FIFO"),
        (b"7", "contiguous"),
        (b"S", "sparse"),
        (b"K", "long link"),
        (b"g", "global"),
        (b"V", "volume"),
        (b"Z", "unknown type"),
    ],
)
def test_only_regular_files_are_accepted(kind: bytes, word: str) -> None:
    with pytest.raises(UnsafeBundleError, match=word):
        open_stream(MANIFEST + member("model.tflite", b"", kind) + END).checked_members(
            Manifest.from_signed(signed())
        ).__next__()


def test_a_member_larger_than_the_file_is_truncation_not_a_big_read() -> None:
    data = MANIFEST + raw_header(b"golden.npz", b"\x80" + (1 << 39).to_bytes(11, "big")) + b"x" * 512
    stream = open_stream(data)
    with pytest.raises(IntegrityError, match="ends early"):
        next(stream.checked_members(Manifest.from_signed(signed())))


def test_a_bundle_built_by_edge_release_with_long_unicode_names_reads_back(tmp_path: Path) -> None:
    from edge_runtime.bundle import _write_tar
    from edge_runtime.manifest import Envelope

    files = {"d/" + "é" * 60 + ".bin": b"x" * 10, "model.tflite": b"m", "golden.npz": b"g"}
    env_doc = json.loads(template_manifest(files))
    out = tmp_path / "b.edgebundle"
    _write_tar(out, Envelope(env_doc["signed"], ()), lambda p: io.BytesIO(files[p]))
    with out.open("rb") as fh:
        stream = BundleStream(fh)
        got = {e.path for e, m in stream.members(Manifest.from_signed(stream.envelope.signed))}
    assert got == set(files)


# --- config and state files ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "doc",
    [
        b"[" * 50_000,
        b'{"architecture": "x86_64", "keep_versions": "2"}',
        b'{"architecture": "x86_64", "keep_versions": true}',
        b'{"architecture": "x86_64", "allowed_models": "abc"}',
        b'{"architecture": "x86_64", "inputs": {"m": [1]}}',
        b'{"architecture": "x86_64", "threshold": 1e400}',
        b'{"architecture": "x86_64", "zzz": 1}',
        b'{"keep_versions": 2}',
        b"\xff",
        b"[]",
    ],
)
def test_a_hostile_config_file_is_a_config_error(tmp_path: Path, doc: bytes) -> None:
    (tmp_path / "config.json").write_bytes(doc)
    with pytest.raises(ConfigError) as exc:
        DeviceConfig.load(tmp_path / "config.json")
    assert exc.value.exit_code == 2
    assert len(exc.value.message) < 600


def state_file(tmp_path: Path, doc: Any) -> StateStore:
    d = tmp_path / "models" / "m"
    d.mkdir(parents=True)
    (d / "state.json").write_bytes(doc if isinstance(doc, bytes) else json.dumps(doc).encode())
    return StateStore(tmp_path / "models")


@pytest.mark.parametrize(
    "doc",
    [
        {
            "schema": 1,
            "model": "m",
            "active": "../../etc",
            "versions": {"../../etc": {"digest": "x"}},
            "order": ["../../etc"],
        },
        {"schema": 1, "model": "m", "versions": {"1.0.0": 5}},
        {"schema": 1, "model": "m", "versions": {"1.0.0": {}}},
        {"schema": 1, "model": "m", "bad": {"1.0.0": {"digest": "x"}}},
        {"schema": 1, "model": "m", "highest_counter": "7"},
        {"schema": 1, "model": "other"},
        {"schema": 1, "model": "m", "pending": {"op": 1}},
        {"schema": 1, "model": "m", "pending": [1]},
        {"schema": 2, "model": "m"},
        b'{"schema": 1, "model": "m", "highest_counter": 1' + b"0" * 5000 + b"}",
        b"\x00" * 100,
    ],
)
def test_a_hostile_state_file_is_reported_corrupt(tmp_path: Path, doc: Any) -> None:
    with pytest.raises(StateCorruptError) as exc:
        state_file(tmp_path, doc).load("m")
    assert "repair" in (exc.value.hint or "")


def test_a_state_written_by_the_runtime_reads_back(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "models")
    st_ = ModelState(
        model="m",
        active="1.0.0",
        versions={"1.0.0": {"digest": "sha256:" + "a" * 64, "counter": 1}},
        order=["1.0.0"],
        highest_counter=1,
        bad={"0.9.0": {"digest": "d", "reason": "r", "at": "t"}},
    )
    store.save(st_)
    assert store.load("m") == st_


# --- properties: any input, a value or a typed error -------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)


@given(st.binary(max_size=300))
@FAST
def test_any_bytes_give_a_value_or_a_typed_error(data: bytes) -> None:
    with contextlib.suppress(EdgeRuntimeError):
        loads_untrusted(data)


@given(st.lists(st.tuples(st.integers(min_value=0), st.integers(0, 255)), min_size=1, max_size=8))
@FAST
def test_any_mutation_of_a_manifest_gives_a_manifest_or_a_typed_error(flips: list[tuple[int, int]]) -> None:
    data = bytearray(template_manifest())
    for pos, byte in flips:
        data[pos % len(data)] = byte
    with contextlib.suppress(EdgeRuntimeError):
        Manifest.from_signed(parse_envelope(bytes(data)).signed)


@given(st.sampled_from(sorted(signed())), json_values)
@FAST
def test_any_value_in_any_manifest_field_gives_a_manifest_or_a_typed_error(field: str, value: Any) -> None:
    doc = signed()
    doc[field] = value
    with contextlib.suppress(EdgeRuntimeError):
        Manifest.from_signed(doc)


BUNDLE = MANIFEST + b"".join(member(p, d) for p, d in sorted(FILES.items())) + END


@given(st.lists(st.tuples(st.integers(0, 3 * 1024), st.integers(0, 255)), min_size=1, max_size=6))
@FAST
def test_any_mutation_of_bundle_headers_gives_files_or_a_typed_error(flips: list[tuple[int, int]]) -> None:
    data = bytearray(BUNDLE)
    for pos, byte in flips:
        data[pos % len(data)] = byte
    try:
        stream = open_stream(bytes(data))
        for entry, fh in stream.members(Manifest.from_signed(stream.envelope.signed)):
            copy_verified(entry, fh, None)
    except EdgeRuntimeError:
        pass


@given(
    st.dictionaries(
        st.sampled_from(
            [
                "architecture",
                "threshold",
                "allowed_models",
                "keep_versions",
                "inputs",
                "facts_path",
                "download",
                "other",
            ]
        ),
        json_values,
    )
)
@FAST
def test_any_config_document_gives_a_config_or_a_config_error(doc: dict[str, Any]) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "config.json"
        path.write_bytes(json.dumps(doc).encode())
        with contextlib.suppress(ConfigError):
            DeviceConfig.load(path)


@given(json_values)
@FAST
def test_strict_json_round_trips_or_refuses_to_write(value: Any) -> None:
    try:
        text = dumps_strict(value)
    except OutputEncodingError:
        return
    lim = replace(DEFAULT_LIMITS, json_max_int_digits=400)
    assert loads_untrusted(text.encode(), lim) == value


@pytest.mark.parametrize("inner", ["model.tflite/x", "manifest.json/x", "golden.npz/a/b"])
def test_a_file_listed_inside_another_file_is_refused(inner: str) -> None:
    files = [{"path": p, "sha256": "0" * 64, "length": 1} for p in ("model.tflite", "golden.npz", inner)]
    with pytest.raises(UnsafeBundleError, match="which is a file"):
        Manifest.from_signed(signed(files=files))


@pytest.mark.parametrize("name", ["../x", "a/b", "..", "", "X" * 65, "m\x00", "\udc80"])
def test_a_model_name_from_the_command_line_cannot_leave_the_device_root(tmp_path: Path, name: str) -> None:
    from edge_runtime.device import Device

    dev = Device(tmp_path)
    for build in (lambda: dev.model_dir(name), lambda: dev.active_link(name), lambda: dev.store.path(name)):
        with pytest.raises(ConfigError, match="not a valid model name"):
            build()


@pytest.mark.parametrize("version", ["../../x", "1.0.0/../..", "latest", "1.0", "\u0661.0.0"])
def test_a_version_from_the_command_line_cannot_leave_the_device_root(tmp_path: Path, version: str) -> None:
    from edge_runtime.device import Device

    with pytest.raises(ConfigError, match="not a valid version"):
        Device(tmp_path).version_dir("m", version)


header_parts = st.tuples(
    st.sampled_from([b"0", b"\0", b"x", b"L", b"K", b"g", b"1", b"2", b"5", b"S", b"7", b"Z"]),
    st.one_of(st.sampled_from(["manifest.json", "model.tflite", "golden.npz", "../x", "/abs", "a" * 120]), st.text()),
    st.one_of(st.integers(0, 5000), st.sampled_from([1 << 20, 500 << 20, (1 << 33) - 1])),
    st.binary(max_size=600),
)


@given(st.lists(header_parts, min_size=1, max_size=6), st.booleans())
@FAST
def test_any_sequence_of_tar_headers_gives_files_or_a_typed_error(
    parts: list[tuple[bytes, str, int, bytes]], manifest_first: bool
) -> None:
    data = MANIFEST if manifest_first else b""
    for kind, name, size, body in parts:
        try:
            data += header(name, size, kind) + body
        except (ValueError, UnicodeEncodeError):  # tarfile cannot write this header; skip it
            continue
    counting = CountingReader(io.BytesIO(data))
    with contextlib.suppress(EdgeRuntimeError):
        stream = BundleStream(counting)  # type: ignore[arg-type]
        for entry, fh in stream.members(Manifest.from_signed(signed())):
            copy_verified(entry, fh, None)
    assert counting.read_bytes <= 4 * len(data) + 8192  # nothing is read that the file does not hold


@pytest.fixture
def fifo(tmp_path: Path) -> Iterator[Path]:
    """A FIFO nobody writes to: opening it for reading would block forever. SIGALRM fails a hang."""
    import signal

    path = tmp_path / "fifo"
    os.mkfifo(path)

    def hung(signum: int, frame: Any) -> None:
        raise AssertionError("blocked on a FIFO")

    old = signal.signal(signal.SIGALRM, hung)
    signal.alarm(10)
    yield path
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


def test_a_fifo_where_a_file_is_expected_is_refused_without_blocking(fifo: Path, tmp_path: Path) -> None:
    from edge_runtime.bundle import read_envelope
    from edge_runtime.keys import load_public_key

    with pytest.raises(ConfigError, match="not a regular file"):
        read_envelope(fifo)
    with pytest.raises(EdgeRuntimeError, match="not a regular file"):
        load_public_key(fifo)
    with pytest.raises(ConfigError, match="not a regular file"):
        DeviceConfig.load(fifo)
    d = tmp_path / "models" / "m"
    d.mkdir(parents=True)
    os.mkfifo(d / "state.json")
    with pytest.raises(StateCorruptError, match="not a regular file"):
        StateStore(tmp_path / "models").load("m")

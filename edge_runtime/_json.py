"""Strict JSON: a bounded reader for untrusted documents and a writer that never emits non-JSON.

:func:`loads_untrusted` reads manifests, envelopes, device config and state files. Its cost is bounded
by :class:`~edge_runtime._limits.Limits` before the standard parser runs:

- the document size is checked first;
- nesting depth is measured by a linear scan of the brackets outside strings, so a document of
  100 000 ``[`` never reaches the recursive parser;
- integer literals longer than ``json_max_int_digits`` and other number literals longer than
  ``json_max_number_chars`` are refused as they are met (Python's own ``int`` parser would otherwise
  spend quadratic time up to its 4300-digit cap, then raise a bare ``ValueError``);
- ``NaN``, ``Infinity``, ``-Infinity`` and numbers that overflow to infinity (``1e400``) are refused;
- invalid UTF-8 (overlong forms and encoded surrogates included), a byte-order mark, duplicate object
  keys, strings longer than ``json_max_string_chars`` and strings holding lone surrogates (``"\\ud800"``)
  are refused.

Every failure raises the caller's error type (a :class:`~edge_runtime.errors.EdgeRuntimeError`; the
default is :class:`~edge_runtime.errors.BundleFormatError`, a trust failure) with a message that names
the document and the problem and quotes untrusted text truncated.

:func:`dumps_strict` is the only JSON writer for state, facts and ``--json`` output: it raises
:class:`~edge_runtime.errors.OutputEncodingError` naming the offending field instead of writing
``NaN``/``Infinity`` or a lone surrogate.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import math
import os
import re
import stat
import sys
import types
import typing
from collections import abc
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO, Literal, Union

from ._limits import DEFAULT_LIMITS, Limits
from .errors import BundleFormatError, EdgeRuntimeError, OutputEncodingError, quote_untrusted

__all__ = [
    "ErrorFactory",
    "check_fields",
    "conforms",
    "dumps_strict",
    "dumps_strict_bytes",
    "loads_untrusted",
    "open_regular_file",
    "read_untrusted_file",
]

#: builds the error to raise from a message; an EdgeRuntimeError subclass itself qualifies
ErrorFactory = Callable[[str], EdgeRuntimeError]

_OUTSIDE = re.compile(r'[\[\]{}"]')
_INSIDE = re.compile(r'["\\]')
_SURROGATE = re.compile("[\ud800-\udfff]")


class _Reject(Exception):
    """Internal: raised from parser hooks, turned into the caller's error type."""


def _check_depth(text: str, max_depth: int) -> None:
    """Measure bracket nesting outside strings in one linear pass; raise past ``max_depth``.

    Malformed input (unbalanced brackets, an unterminated string) is left to the parser, which then
    fails with a position; this scan only has to be exact for documents the parser would accept.
    """
    depth = 0
    pos = 0
    search_out, search_in = _OUTSIDE.search, _INSIDE.search
    while (m := search_out(text, pos)) is not None:
        c = m.group()
        pos = m.end()
        if c == '"':
            while (s := search_in(text, pos)) is not None:
                pos = s.end()
                if s.group() == '"':
                    break
                pos += 1  # skip the escaped character
            else:
                return
        elif c in "[{":
            depth += 1
            if depth > max_depth:
                raise _Reject(f"nesting is deeper than {max_depth} levels (at offset {m.start()})")
        else:
            depth -= 1


def _check_string(s: str, limits: Limits, where: str) -> None:
    if len(s) > limits.json_max_string_chars:
        raise _Reject(f"{where} is {len(s)} characters long, more than {limits.json_max_string_chars}")
    if not s.isascii() and _SURROGATE.search(s):
        raise _Reject(f"{where} {quote_untrusted(s)} holds a lone surrogate (not valid Unicode text)")


def _check_tree(doc: Any, limits: Limits) -> None:
    """Check every string (keys included) in the parsed document; iterative, depth is already bounded."""
    stack = [doc]
    while stack:
        v = stack.pop()
        if isinstance(v, str):
            _check_string(v, limits, "a string")
        elif isinstance(v, list):
            stack.extend(v)
        elif isinstance(v, dict):
            for k, item in v.items():
                _check_string(k, limits, "an object key")
                stack.append(item)


def loads_untrusted(
    data: bytes,
    limits: Limits = DEFAULT_LIMITS,
    what: str = "manifest",
    *,
    error: ErrorFactory = BundleFormatError,
    max_bytes: int | None = None,
) -> Any:
    """Parse an untrusted JSON document within ``limits``; raise ``error(message)`` on any violation.

    ``what`` names the document in messages ("manifest", "device config /x/config.json").
    ``max_bytes`` defaults to ``limits.manifest_max_bytes``.
    """
    cap = limits.manifest_max_bytes if max_bytes is None else max_bytes
    if len(data) > cap:
        raise error(f"{what} is {len(data)} bytes, more than the limit of {cap} bytes")
    try:
        text = bytes(data).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise error(f"{what} is not valid UTF-8 (byte {exc.start}: {exc.reason})") from None
    max_digits = limits.json_max_int_digits
    max_chars = limits.json_max_number_chars

    def parse_int(lit: str) -> int:
        if len(lit) - lit.startswith("-") > max_digits:
            raise _Reject(f"an integer has {len(lit) - lit.startswith('-')} digits, more than {max_digits}")
        return int(lit)

    def parse_float(lit: str) -> float:
        if len(lit) > max_chars:
            raise _Reject(f"a number literal is {len(lit)} characters long, more than {max_chars}")
        value = float(lit)
        if not math.isfinite(value):
            raise _Reject(f"the number {quote_untrusted(lit, 40)} is out of range (it overflows to infinity)")
        return value

    def parse_constant(name: str) -> Any:
        raise _Reject(f"the non-standard JSON constant {name} is not allowed (only finite numbers)")

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in items:
            if k in out:
                raise _Reject(f"duplicate key {quote_untrusted(k)}")
            out[k] = v
        return out

    try:
        _check_depth(text, limits.json_max_depth)
        doc = json.loads(
            text,
            object_pairs_hook=pairs,
            parse_int=parse_int,
            parse_float=parse_float,
            parse_constant=parse_constant,
        )
        _check_tree(doc, limits)
    except _Reject as exc:
        raise error(f"{what} is refused: {exc}") from None
    except json.JSONDecodeError as exc:
        raise error(f"{what} is not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})") from None
    except (ValueError, RecursionError) as exc:  # defence in depth: the checks above should pre-empt these
        raise error(f"{what} is not valid JSON: {quote_untrusted(str(exc))}") from None
    return doc


def open_regular_file(path: Path) -> BinaryIO:
    """Open ``path`` for reading only if it is a regular file (symlinks to one are fine).

    A FIFO would block ``open`` forever and a device would read endlessly, so the file is opened
    non-blocking and checked with ``fstat`` before a byte is read; anything but a regular file raises
    ``OSError(EINVAL, "not a regular file")``.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file", str(path))
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_untrusted_file(path: Path, max_bytes: int) -> bytes:
    """Read at most ``max_bytes + 1`` bytes of the regular file ``path`` (one more, so the size check can
    refuse it).

    ``OSError`` (missing, unreadable, not a regular file) is left to the caller, which knows what it means.
    """
    with open_regular_file(path) as fh:
        return fh.read(max_bytes + 1)


def conforms(value: Any, hint: Any) -> bool:
    """Whether a parsed JSON ``value`` fits the type ``hint``.

    Understands ``Any``, ``None``, ``bool``, ``int`` (not bool), ``float`` (finite; ints accepted),
    ``str``, ``Literal``, unions, ``list[T]``, ``tuple[T, ...]`` (a JSON array) and ``dict[K, V]``.
    The recursion follows the hint, not the value, so its depth is bounded by the hint.
    """
    if hint is Any:
        return True
    if hint is None or hint is type(None):
        return value is None
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Union or origin is types.UnionType:
        return any(conforms(value, a) for a in args)
    if origin is Literal:
        return any(value == a and type(value) is type(a) for a in args)
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if hint is str:
        return isinstance(value, str)
    if origin in (list, tuple, abc.Sequence) or hint in (list, tuple):
        if not isinstance(value, list):
            return False
        if origin is tuple and not (len(args) == 2 and args[1] is Ellipsis):
            return len(value) == len(args) and all(conforms(v, a) for v, a in zip(value, args, strict=True))
        item = args[0] if args else Any
        return all(conforms(v, item) for v in value)
    if origin in (dict, abc.Mapping) or hint is dict:
        if not isinstance(value, dict):
            return False
        key, val = args or (Any, Any)
        return all(conforms(k, key) and conforms(v, val) for k, v in value.items())
    return False


def _field_hints(cls: type) -> dict[str, Any]:
    """The resolved annotations of ``cls``; a field whose annotation cannot be resolved at run time
    (a name imported only for type checkers) is left out, and :func:`check_fields` cannot check it."""
    try:
        return typing.get_type_hints(cls)
    except NameError:
        module = vars(sys.modules[cls.__module__])
        out: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            try:
                out[f.name] = eval(f.type, module) if isinstance(f.type, str) else f.type  # noqa: S307 - annotations of our own code
            except NameError:
                continue
        return out


def check_fields(cls: type, doc: Any, what: str, error: ErrorFactory, *, skip: tuple[str, ...] = ()) -> None:
    """Check a parsed JSON object against the fields of dataclass ``cls`` before ``cls(**doc)`` runs.

    Refuses a non-object, unknown keys, missing required fields and values whose type does not fit
    the field's annotation; every message names the field. Fields in ``skip`` are the caller's job.
    """
    if not isinstance(doc, dict):
        raise error(f"{what} must be a JSON object")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.name not in skip}
    unknown = sorted(set(doc) - set(fields) - set(skip))
    if unknown:
        listed = ", ".join(quote_untrusted(k, 40) for k in unknown[:5])
        raise error(f"{what} has unknown field(s) {listed}")
    hints = _field_hints(cls)
    for name, f in fields.items():
        if name not in doc:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise error(f"{what} is missing the field {name}")
            continue
        if name in hints and not conforms(doc[name], hints[name]):
            shown = str(hints[name]).replace("typing.", "")
            raise error(f"{what}: field {name} must be {shown}, got {quote_untrusted(doc[name], 60)}")


def _find_unencodable(obj: Any, path: str = "$") -> str | None:
    """Path of the first non-finite float or lone-surrogate string in ``obj``, for the error message."""
    stack: list[tuple[Any, str]] = [(obj, path)]
    while stack:
        v, p = stack.pop()
        if isinstance(v, float) and not math.isfinite(v):
            return f"{p} is {v}"
        if isinstance(v, str) and _SURROGATE.search(v):
            return f"{p} holds a lone surrogate"
        if isinstance(v, dict):
            for k, item in v.items():
                if isinstance(k, str) and _SURROGATE.search(k):
                    return f"key {quote_untrusted(k)} in {p} holds a lone surrogate"
                stack.append((item, f"{p}.{k}"))
        elif isinstance(v, (list, tuple)):
            stack.extend((item, f"{p}[{i}]") for i, item in enumerate(v))
    return None


def dumps_strict(obj: Any, what: str = "output", **kw: Any) -> str:
    """``json.dumps`` that refuses NaN, Infinity and lone surrogates with :class:`OutputEncodingError`.

    Keyword arguments go to :func:`json.dumps` (``allow_nan`` is always False). The result is plain
    ASCII unless ``ensure_ascii=False`` is passed, and always encodable as UTF-8.
    """
    kw["allow_nan"] = False
    try:
        text = json.dumps(obj, **kw)
    except ValueError as exc:
        where = _find_unencodable(obj)
        raise OutputEncodingError(f"{what} cannot be written as strict JSON: {where or exc}") from None
    # a lone surrogate is written verbatim (ensure_ascii=False) or as a \udXXX escape; only then walk
    if ("\\ud" in text or _SURROGATE.search(text)) and (where := _find_unencodable(obj)) is not None:
        raise OutputEncodingError(f"{what} cannot be written as strict JSON: {where}")
    return text


def dumps_strict_bytes(obj: Any, what: str = "output", **kw: Any) -> bytes:
    """:func:`dumps_strict` encoded as UTF-8."""
    return dumps_strict(obj, what, **kw).encode("utf-8")

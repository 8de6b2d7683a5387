# Copyright (c) edgeml maintainers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""``models.yaml`` as hostile input: read it within limits and load it with the position of every node.

Controller-only (imports PyYAML). Everything here fails with :class:`DesiredStateError`, located at
``file:line:column`` (1-based), so every problem reads ``models.yaml:LINE:COL: problem (hint: fix)``.

What is refused, and where it is reported:

* a file larger than :attr:`ModelsLimits.max_file_bytes` (before it is read in full: whole file);
* a UTF-8 byte order mark (1:1) or a UTF-16/32 one; bytes that are not UTF-8, at the line and column
  of the first bad byte (the column counts characters, like an editor does);
* characters YAML does not allow (control characters), at their position;
* YAML anchors (``&name``) and aliases (``*name``), at the first one, *while parsing*: the composer
  stops at the event, so nothing is ever expanded (a "billion laughs" file fails in milliseconds);
* nesting deeper than :attr:`ModelsLimits.max_depth`, before the composer recurses further;
* merge keys (``<<``), keys that are not strings, duplicate keys, more than one document.

Every limit is compared with ``>``: a value equal to the limit is accepted, one step beyond is refused.
"""

from __future__ import annotations

import codecs
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml

__all__ = [
    "DEFAULT_MODELS_LIMITS",
    "DesiredStateError",
    "ModelsLimits",
    "SourceMap",
    "YamlPath",
    "dotted",
    "kind",
    "load_yaml",
]

YamlPath = tuple[str | int, ...]

_MERGE_TAG = "tag:yaml.org,2002:merge"


@dataclass(frozen=True)
class ModelsLimits:
    """Bounds for ``models.yaml`` (the controller's untrusted input), in one place."""

    #: largest file accepted, in bytes (the demo's is ~2 KB; a fleet of hundreds of groups stays far below)
    max_file_bytes: int = 1 << 20
    #: deepest nesting of mappings and lists (the schema needs 6: groups.G.rollout.health_gate.KEY)
    max_depth: int = 16
    #: longest number literal, in characters (a release counter is at most 16 digits; Python refuses > 4300)
    max_number_chars: int = 32


DEFAULT_MODELS_LIMITS = ModelsLimits()


class DesiredStateError(Exception):
    """A problem in ``models.yaml`` (or what it points to), located at a YAML node.

    ``line`` and ``column`` are 1-based; ``line == 0`` means the whole file (e.g. it cannot be read).
    """

    def __init__(self, file: str, line: int, column: int, problem: str, hint: str | None = None) -> None:
        super().__init__(problem)
        self.file = file
        self.line = line
        self.column = column
        self.problem = problem
        self.hint = hint

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}:{self.column}" if self.line > 0 else self.file
        text = f"{where}: {self.problem}"
        if self.hint:
            text += f" (hint: {self.hint})"
        return text

    def to_dict(self) -> dict[str, Any]:
        """The error as JSON-serialisable data."""
        return {
            "file": self.file,
            "line": self.line,
            "column": self.column,
            "problem": self.problem,
            "hint": self.hint,
        }


@dataclass
class SourceMap:
    """1-based (line, column) of every node of a loaded document, keyed by its path from the root.

    ``keys[path]`` is where the mapping key that leads to ``path`` starts, ``values[path]`` where the
    value starts.
    """

    file: str
    keys: dict[YamlPath, tuple[int, int]] = field(default_factory=dict)
    values: dict[YamlPath, tuple[int, int]] = field(default_factory=dict)

    def locate(self, path: Sequence[str | int], *, key: bool = False) -> tuple[int, int]:
        """Position of ``path`` (its key if ``key`` and it has one), else of its nearest ancestor."""
        p: YamlPath = tuple(path)
        if key and p in self.keys:
            return self.keys[p]
        while True:
            if p in self.values:
                return self.values[p]
            if p in self.keys:
                return self.keys[p]
            if not p:
                return (1, 1)
            p = p[:-1]

    def line(self, path: Sequence[str | int], *, key: bool = False) -> int:
        """Just the line of :meth:`locate`."""
        return self.locate(path, key=key)[0]

    def error(
        self, path: Sequence[str | int], problem: str, hint: str | None = None, *, key: bool = False
    ) -> DesiredStateError:
        """A :class:`DesiredStateError` located at ``path``."""
        line, column = self.locate(path, key=key)
        return DesiredStateError(self.file, line, column, problem, hint)


_KINDS: tuple[tuple[type, str], ...] = (
    (bool, "a boolean"),  # before int: a bool is an int to Python, not to a YAML author
    (int, "an integer"),
    (float, "a number"),
    (str, "a string"),
    (dict, "a mapping"),
    (list, "a list"),
)


def kind(value: Any) -> str:
    """``value``'s type in words, as a YAML author reads it."""
    if value is None:
        return "null"
    return next((words for t, words in _KINDS if isinstance(value, t)), f"a {type(value).__name__}")


def dotted(path: Sequence[str | int]) -> str:
    """Human form of a node path, e.g. ``groups.line_a.rollout.waves[1]``."""
    out = ""
    for p in path:
        if isinstance(p, int):
            out += f"[{p}]"
        elif re.fullmatch(r"[A-Za-z0-9_-]+", p):
            out += f".{p}" if out else p
        else:
            out += f'["{p}"]'
    return out or "the top level"


def _pos(mark: Any) -> tuple[int, int]:
    return int(mark.line) + 1, int(mark.column) + 1


# ---------------------------------------------------------------------------------------------------
# Bytes -> text


_BOMS = (
    (codecs.BOM_UTF32_LE, "UTF-32"),  # before UTF-16 LE: it starts with the same two bytes
    (codecs.BOM_UTF32_BE, "UTF-32"),
    (codecs.BOM_UTF8, "UTF-8"),
    (codecs.BOM_UTF16_LE, "UTF-16"),
    (codecs.BOM_UTF16_BE, "UTF-16"),
)


def _read_text(path: str, limits: ModelsLimits) -> str:
    """The file as text: size-capped, strict UTF-8 without a BOM; every refusal located."""
    try:
        with open(path, "rb") as fh:
            data = fh.read(limits.max_file_bytes + 1)
    except FileNotFoundError:
        raise DesiredStateError(path, 0, 0, "file not found", "pass the path of models.yaml") from None
    except IsADirectoryError:
        raise DesiredStateError(path, 0, 0, "is a directory, not a file", "pass the path of models.yaml") from None
    except OSError as exc:
        raise DesiredStateError(path, 0, 0, f"cannot read the file: {exc.strerror or exc}") from None
    if len(data) > limits.max_file_bytes:
        raise DesiredStateError(
            path,
            0,
            0,
            f"the file is larger than {limits.max_file_bytes} bytes",
            "models.yaml holds only pins and rollout policies, far below this; check that the path is the right file",
        )
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            if encoding == "UTF-8":
                raise DesiredStateError(
                    path,
                    1,
                    1,
                    "the file starts with a UTF-8 byte order mark (BOM)",
                    "save it as UTF-8 without BOM (in most editors: encoding 'UTF-8', not 'UTF-8 with BOM'), "
                    "or run: sed -i '1s/^\\xEF\\xBB\\xBF//' " + path,
                )
            raise DesiredStateError(
                path, 1, 1, f"the file is {encoding}-encoded (byte order mark)", "save it as UTF-8 without BOM"
            )
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line_start = data.rfind(b"\n", 0, exc.start) + 1
        line = data.count(b"\n", 0, exc.start) + 1
        column = len(data[line_start : exc.start].decode("utf-8")) + 1  # valid up to the bad byte
        raise DesiredStateError(
            path,
            line,
            column,
            f"the file is not UTF-8: byte 0x{data[exc.start]:02x} at line {line} column {column} "
            f"({exc.reason})",
            "save it as UTF-8; from Latin-1 / Windows-1252: iconv -f latin1 -t utf-8 FILE > FILE.new",
        ) from None


def _text_position(text: str, index: int) -> tuple[int, int]:
    """1-based (line, column) of character ``index`` of ``text``."""
    line = text.count("\n", 0, index) + 1
    return line, index - (text.rfind("\n", 0, index) + 1) + 1


# ---------------------------------------------------------------------------------------------------
# Text -> nodes (no anchors, no aliases, bounded depth) -> plain data with positions


class _Loader(yaml.SafeLoader):
    """A SafeLoader whose composer refuses anchors and aliases and bounds the nesting depth.

    The checks run on the parser's events, before a node is built, so a document of aliases is refused at
    its first anchor without expanding anything.
    """

    def __init__(self, stream: str, file: str, limits: ModelsLimits) -> None:
        super().__init__(stream)
        self.file = file
        self.limits = limits
        self.depth = 0

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        event = self.peek_event()  # type: ignore[no-untyped-call]
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            line, column = _pos(event.start_mark)
            what = "alias *" if isinstance(event, yaml.AliasEvent) else "anchor &"
            raise DesiredStateError(
                self.file,
                line,
                column,
                f"YAML {what}{event.anchor} is not allowed: models.yaml uses no anchors or aliases",
                "write each value out in full (a reviewer must see what each group gets on its own line)",
            )
        if isinstance(event, (yaml.SequenceStartEvent, yaml.MappingStartEvent)):
            if self.depth + 1 > self.limits.max_depth:
                line, column = _pos(event.start_mark)
                raise DesiredStateError(
                    self.file,
                    line,
                    column,
                    f"nesting deeper than {self.limits.max_depth} levels",
                    "models.yaml needs at most 6 levels; check the indentation and brackets",
                )
            self.depth += 1
            try:
                node: yaml.Node | None = super().compose_node(parent, index)
            finally:
                self.depth -= 1
            return node
        result: yaml.Node | None = super().compose_node(parent, index)
        return result


_NUMBER_TAGS = ("tag:yaml.org,2002:int", "tag:yaml.org,2002:float")


def _scalar(loader: _Loader, node: yaml.ScalarNode, path: YamlPath, smap: SourceMap) -> Any:
    """A scalar's value; numbers are bounded in length and must be finite."""
    if node.tag in _NUMBER_TAGS and len(node.value) > loader.limits.max_number_chars:
        raise smap.error(path, f"a number of {len(node.value)} characters (at most {loader.limits.max_number_chars})",
                         "write a plain number, or quote it if it is meant as text")
    value = loader.construct_object(node, deep=True)
    if isinstance(value, float) and not math.isfinite(value):
        raise smap.error(path, f"{node.value!r} is not a finite number", "write a plain number such as 20.0")
    return value


def _construct(loader: _Loader, node: yaml.Node, path: YamlPath, smap: SourceMap) -> Any:
    """Build plain Python data from ``node``, recording positions and rejecting what we refuse.

    The composer already refused aliases, so the node graph is a tree and each node is visited once.
    """
    smap.values[path] = _pos(node.start_mark)
    if isinstance(node, yaml.ScalarNode):
        return _scalar(loader, node, path, smap)
    if isinstance(node, yaml.SequenceNode):
        return [_construct(loader, item, (*path, i), smap) for i, item in enumerate(node.value)]
    if isinstance(node, yaml.MappingNode):
        out: dict[str, Any] = {}
        key_lines: dict[str, int] = {}
        for key_node, value_node in node.value:
            line, column = _pos(key_node.start_mark)
            if key_node.tag == _MERGE_TAG:
                raise DesiredStateError(
                    smap.file, line, column, "YAML merge keys (<<) are not supported", "write the keys out"
                )
            if not isinstance(key_node, yaml.ScalarNode):
                raise DesiredStateError(smap.file, line, column, "a mapping key must be a plain string")
            key = loader.construct_object(key_node, deep=True)
            if not isinstance(key, str):
                raise DesiredStateError(
                    smap.file,
                    line,
                    column,
                    f"key {key_node.value!r} is read as {kind(key)}, not as a string",
                    f'quote it: "{key_node.value}"',
                )
            if key in out:
                raise DesiredStateError(
                    smap.file,
                    line,
                    column,
                    f"duplicate key {key!r} (first on line {key_lines[key]})",
                    "remove one of them; YAML would silently keep only the last",
                )
            key_lines[key] = line
            smap.keys[(*path, key)] = (line, column)
            out[key] = _construct(loader, value_node, (*path, key), smap)
        return out
    raise smap.error(path, f"unsupported YAML node {type(node).__name__}")  # pragma: no cover


def load_yaml(path: str, limits: ModelsLimits = DEFAULT_MODELS_LIMITS) -> tuple[Any, SourceMap]:
    """Load one YAML document with the position of every node; see the module docstring for the refusals."""
    text = _read_text(path, limits)
    smap = SourceMap(path)
    loader: _Loader | None = None
    try:
        loader = _Loader(text, path, limits)  # the reader checks every character here
        node = loader.get_single_node()
        if node is None:
            raise DesiredStateError(path, 1, 1, "the file is empty", "start with 'schema: 1'")
        return _construct(loader, node, (), smap), smap
    except yaml.reader.ReaderError as exc:
        line, column = _text_position(text, exc.position)
        raise DesiredStateError(
            path,
            line,
            column,
            f"character U+{int(exc.character):04X} is not allowed in YAML",
            "remove the control character (only tab, newline and printable characters are allowed)",
        ) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = " ".join(p for p in (exc.context, exc.problem) if p is not None) or "invalid YAML"
        if mark is None:
            raise DesiredStateError(path, 0, 0, f"YAML syntax error: {problem}") from None
        line, column = _pos(mark)
        raise DesiredStateError(path, line, column, f"YAML syntax error: {problem}") from None
    except yaml.YAMLError as exc:
        raise DesiredStateError(path, 0, 0, f"YAML error: {exc}") from None
    except RecursionError:  # pragma: no cover - max_depth stops the composer long before
        raise DesiredStateError(path, 0, 0, "nesting too deep") from None
    finally:
        if loader is not None:
            loader.dispose()

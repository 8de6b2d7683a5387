"""Desired fleet state (``models.yaml``): load, validate, and turn into a rollout plan.

Pure Python: importable without Ansible (the action plugin ``edgeml.fleet.desired_state`` and
``scripts/validate_models.py`` both call :func:`build_plan`). ``edge_runtime`` is imported lazily so
that importing this module stays cheap.

Every problem is raised as :class:`DesiredStateError`, which names the file, the 1-based line and
column of the offending YAML node, the problem and a hint, e.g.
``models.yaml:14:7: defect-classifier 1.2.0 is not in the catalogue (hint: available versions: 1.0.0, 1.1.0)``.
Checks run in this order and the first failure is raised: YAML syntax (and duplicate keys), JSON
Schema (``schemas/models.schema.json``), catalogue (versions, release counters), groups (inventory,
pins, waves), devices pinned to two versions of a model, and last the registry (bundle present,
manifest digest / name / version / release counter / size as catalogued).

Decisions (the contract with the deploy playbooks; see :func:`build_plan` for the plan layout):

* **Rollout defaults.** An omitted ``rollout`` (or key in it) means ``waves: [1, "100%"]``,
  ``max_fail_percent: 0`` and ``health_gate: {require_smoke_pass: true}``. In the plan every health
  gate key is present; thresholds that were not given are ``None`` (no gate).
* **Waves** are cumulative targets: ``"50%"`` means that after this wave up to half of the group has
  been updated. A percentage is rounded up and covers at least one device; a count larger than the
  group covers the group. Written waves must not decrease (counts against counts, percentages against
  percentages); when counts and percentages are mixed, a wave whose target is already reached for
  this group size adds nothing. Waves that add no device are dropped, and if the last wave does not
  cover the whole group the remaining devices form one more, final wave. Wave numbers in the plan
  are 1-based and contiguous.
* **Wave order** of a group's devices is by ``sha256(f"{group}/{pins}/{host}")`` where ``pins`` is
  the group's sorted ``model=version`` list. The order does not depend on the inventory order and is
  identical on every run for the same ``models.yaml`` (an interrupted rollout resumes with the same
  waves), but because the pinned versions are part of the key, every promotion picks a different
  canary, so no single device's quirks always decide the health gate of a new release.
* **Devices in several groups** are allowed as long as no two groups pin different versions of one
  model. Such a device gets the union of the pins and is rolled out once, in the waves (and under
  the policy) of its *rollout group*: the first of its pinning groups by name. Percentages of a
  group count only the devices it rolls out.
* **Devices in no pinned group** get no entry in ``plan["hosts"]``: ``models.yaml`` never removes a
  model, and a device without desired state is left alone.
* **Registry check** covers every catalogue version (they are the rollback targets), not only the
  pinned ones. Signatures are not verified here (devices do that with their trust roots); the digest
  pin makes any other bundle fail.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import json
import math
import os
import re
import tarfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import yaml

__all__ = [
    "DEFAULT_HEALTH_GATE",
    "DEFAULT_MAX_FAIL_PERCENT",
    "DEFAULT_WAVES",
    "DesiredStateError",
    "SourceMap",
    "build_plan",
    "find_schema",
    "load_yaml",
    "resolve_waves",
    "wave_order",
]

#: name of the JSON Schema file, looked up in a ``schemas/`` directory (see :func:`find_schema`)
SCHEMA_FILENAME = "models.schema.json"
#: environment variable that overrides where the schema is
SCHEMA_ENV = "EDGEML_MODELS_SCHEMA"
#: Ansible's implicit groups; never part of the desired state
IMPLICIT_GROUPS = frozenset({"all", "ungrouped"})

DEFAULT_WAVES: tuple[int | str, ...] = (1, "100%")
DEFAULT_MAX_FAIL_PERCENT = 0
DEFAULT_HEALTH_GATE: dict[str, Any] = {
    "require_smoke_pass": True,
    "max_p95_latency_ms": None,
    "max_error_rate_increase": None,
    "min_mean_confidence": None,
}

#: how much of a remote bundle is read to find the manifest (tar headers + manifest <= 1 MiB)
MANIFEST_PREFIX_BYTES = (1 << 20) + 64 * 1024
HTTP_TIMEOUT = (10.0, 30.0)

_PERCENT = re.compile(r"^(\d+)%$")
_MERGE_TAG = "tag:yaml.org,2002:merge"

YamlPath = tuple[str | int, ...]


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


# --------------------------------------------------------------------------------------------------
# YAML with positions


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


class _Loader(yaml.SafeLoader):
    """A SafeLoader used only for its parser, composer and scalar constructors."""


def _pos(mark: yaml.Mark) -> tuple[int, int]:
    return mark.line + 1, mark.column + 1


def _construct(loader: _Loader, node: yaml.Node, path: YamlPath, smap: SourceMap, active: set[int]) -> Any:
    """Build plain Python data from ``node``, recording positions and rejecting what we refuse."""
    smap.values[path] = _pos(node.start_mark)
    if isinstance(node, yaml.ScalarNode):
        return loader.construct_object(node, deep=True)
    if id(node) in active:
        raise smap.error(path, "recursive YAML alias", "an anchor must not contain an alias of itself")
    active.add(id(node))
    try:
        if isinstance(node, yaml.SequenceNode):
            return [_construct(loader, item, (*path, i), smap, active) for i, item in enumerate(node.value)]
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
                        f"key {key_node.value!r} is read as {_kind(key)}, not as a string",
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
                out[key] = _construct(loader, value_node, (*path, key), smap, active)
            return out
        raise smap.error(path, f"unsupported YAML node {type(node).__name__}")  # pragma: no cover
    finally:
        active.discard(id(node))


def load_yaml(path: str) -> tuple[Any, SourceMap]:
    """Load one YAML document with the position of every node; duplicate keys are errors."""
    smap = SourceMap(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DesiredStateError(path, 0, 0, "file not found", "pass the path of models.yaml") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DesiredStateError(path, 0, 0, f"cannot read the file: {exc}") from None
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            raise DesiredStateError(path, 1, 1, "the file is empty", "start with 'schema: 1'")
        return _construct(loader, node, (), smap, set()), smap
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = " ".join(p for p in (exc.context, exc.problem) if p is not None) or "invalid YAML"
        if mark is None:
            raise DesiredStateError(path, 0, 0, f"YAML syntax error: {problem}") from None
        line, column = _pos(mark)
        raise DesiredStateError(path, line, column, f"YAML syntax error: {problem}") from None
    except yaml.YAMLError as exc:
        raise DesiredStateError(path, 0, 0, f"YAML error: {exc}") from None
    finally:
        loader.dispose()


# --------------------------------------------------------------------------------------------------
# JSON Schema


def find_schema(models_path: str | None = None) -> Path:
    """Locate ``models.schema.json``.

    In order: ``$EDGEML_MODELS_SCHEMA``; ``schemas/models.schema.json`` in the directory of
    ``models_path`` or any parent; the same next to this file or any of its parents (the repository
    that holds the collection).
    """
    env = os.environ.get(SCHEMA_ENV)
    if env:
        if not Path(env).is_file():
            raise FileNotFoundError(f"{SCHEMA_ENV}={env} is not a file")
        return Path(env)
    starts = [Path(models_path).resolve().parent] if models_path else []
    starts.append(Path(__file__).resolve().parent)
    for start in starts:
        for d in (start, *start.parents):
            candidate = d / "schemas" / SCHEMA_FILENAME
            if candidate.is_file():
                return candidate
    raise FileNotFoundError(f"schemas/{SCHEMA_FILENAME} not found (set {SCHEMA_ENV})")


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return f"a {type(value).__name__}"


_TYPE_NAMES = {
    "object": "a mapping",
    "array": "a list",
    "string": "a string",
    "integer": "an integer",
    "number": "a number",
    "boolean": "true or false",
    "null": "null",
}


def _dotted(path: Sequence[str | int]) -> str:
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


def _hints(schema: Mapping[str, Any]) -> dict[str, str]:
    """Hints for pattern/type failures, keyed by the failing pattern."""
    d = schema["$defs"]
    return {
        d["semver"]["pattern"]: (
            "exact pins only: MAJOR.MINOR.PATCH such as 1.2.0, quoted; no 'latest', no ranges, no wildcards"
        ),
        d["model_name"]["pattern"]: "1-64 of a-z 0-9 . _ -, starting with a letter or digit",
        d["group_name"]["pattern"]: "an Ansible inventory group name: letters, digits, underscores",
        d["release"]["properties"]["digest"]["pattern"]: "copy the digest edge-release printed: sha256:<64 hex>",
        d["release"]["properties"]["bundle"]["pattern"]: (
            "a path inside the registry such as model/1.0.0.edgebundle (no '..'), or an http(s) URL"
        ),
    }


def _describe(err: Any, schema: Mapping[str, Any], smap: SourceMap) -> DesiredStateError:
    """Turn one ``jsonschema.ValidationError`` into a located, readable error."""
    path: YamlPath = tuple(err.absolute_path)
    where = _dotted(path)
    validator = err.validator
    inst = err.instance
    hints = _hints(schema)
    if "propertyNames" in err.absolute_schema_path:
        key_path = (*path, inst)
        hint = hints.get(err.schema.get("pattern", ""))
        if hint is None:
            hint = err.schema.get("description")
        return smap.error(key_path, f"invalid key {inst!r} in {where}", hint, key=True)
    if len(path) >= 2 and path[-2] == "waves" and isinstance(path[-1], int):
        problem, hint = _wave_item_problem(inst)
        return smap.error(path, f"{where}: {problem}", hint)
    if validator == "additionalProperties" and isinstance(inst, dict):
        allowed = list(err.schema.get("properties", {}))
        extra = [k for k in inst if k not in allowed]
        noun = "key" if len(extra) == 1 else "keys"
        where_in = "at the top level" if not path else f"in {where}"
        return smap.error(
            (*path, extra[0]),
            f"unknown {noun} {', '.join(repr(k) for k in extra)} {where_in}",
            f"allowed keys: {', '.join(allowed)}",
            key=True,
        )
    if validator == "required" and isinstance(inst, dict):
        missing = [k for k in err.validator_value if k not in inst]
        return smap.error(path, f"{where} is missing the required key {missing[0]!r}", key=True)
    if validator == "type":
        expected = err.validator_value if isinstance(err.validator_value, list) else [err.validator_value]
        want = " or ".join(_TYPE_NAMES.get(str(t), str(t)) for t in expected)
        hint = None
        if err.schema.get("pattern") == schema["$defs"]["semver"]["pattern"] and isinstance(inst, (int, float)):
            hint = 'quote versions: "1.2.0" (YAML reads 1.2 as a number)'
        return smap.error(path, f"{where} must be {want}, not {_kind(inst)} ({inst!r})", hint)
    if validator == "pattern":
        hint = hints.get(err.validator_value) or err.schema.get("description")
        return smap.error(path, f"{where}: {inst!r} is not valid", hint)
    if validator == "const":
        return smap.error(path, f"{where} must be {err.validator_value!r}, not {inst!r}")
    if validator in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
        op = {"minimum": ">=", "maximum": "<=", "exclusiveMinimum": ">", "exclusiveMaximum": "<"}[validator]
        return smap.error(path, f"{where} must be {op} {err.validator_value}, not {inst!r}")
    if validator in ("minProperties", "minItems"):
        return smap.error(path, f"{where} must not be empty", err.schema.get("description"), key=True)
    return smap.error(path, f"{where}: {err.message}")


def _validate_schema(data: Any, smap: SourceMap, schema_path: Path) -> None:
    # jsonschema ships no type information; it is only called, never subclassed here.
    from jsonschema import Draft202012Validator, validators  # type: ignore[import-untyped]

    schema = json.loads(schema_path.read_text(encoding="utf-8"))

    def is_integer(_checker: Any, instance: Any) -> bool:  # 1.0 is not a device count or a counter
        return isinstance(instance, int) and not isinstance(instance, bool)

    checker = Draft202012Validator.TYPE_CHECKER.redefine("integer", is_integer)
    strict = validators.extend(Draft202012Validator, type_checker=checker)
    errors = [_describe(e, schema, smap) for e in strict(schema).iter_errors(data)]
    if errors:
        raise min(errors, key=lambda e: (e.line, e.column))


# --------------------------------------------------------------------------------------------------
# Waves


def _wave_item_problem(value: Any) -> tuple[str, str]:
    """Why ``value`` is not a wave (problem, hint); only called for values that are not."""
    hint = "use a device count (1, 2, ...) or a whole percentage of the group ('1%'..'100%')"
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return f"wave {value!r} is {_kind(value)}, not a device count or a percentage", hint
    if isinstance(value, float):
        return f"wave {value!r} is not a whole number of devices", hint
    if isinstance(value, int):
        return f"wave {value!r} is not a positive device count", hint
    m = _PERCENT.match(value.strip())
    if not m:
        return f"wave {value!r} is neither a device count nor a percentage like '50%'", hint
    pct = int(m.group(1))
    if pct == 0:
        return f"wave {value!r} covers no devices", hint
    if pct > 100:
        return f"wave {value!r} is more than the whole group", hint
    return f"wave {value!r} is not written as a whole percentage like '50%'", hint


def _parse_wave(value: Any) -> tuple[str, int]:
    """``("count", n)`` or ``("percent", p)``; raises ValueError(problem, hint) otherwise."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return "count", value
    if isinstance(value, str):
        m = _PERCENT.match(value)
        if m and m.group(1) == str(int(m.group(1))) and 1 <= int(m.group(1)) <= 100:
            return "percent", int(m.group(1))
    raise ValueError(*_wave_item_problem(value))


def resolve_waves(spec: Sequence[int | str], hosts: Sequence[str]) -> list[list[str]]:
    """Split ``hosts`` (already in wave order) into waves according to ``spec``.

    Targets are cumulative; a percentage rounds up and is at least one device; a count is capped at
    the group size; a target already reached adds nothing; empty waves are dropped; devices the last
    target leaves out form one more, final wave.
    """
    n = len(hosts)
    waves: list[list[str]] = []
    done = 0
    for item in spec:
        kind, amount = _parse_wave(item)
        target = min(n, amount) if kind == "count" else min(n, max(1, math.ceil(amount * n / 100)))
        if target > done:
            waves.append(list(hosts[done:target]))
            done = target
    if done < n:
        waves.append(list(hosts[done:]))
    return waves


def wave_order(group: str, pins: Mapping[str, str], hosts: Sequence[str]) -> list[str]:
    """Hosts of ``group`` in rollout order: by ``sha256(f"{group}/{pins}/{host}")``.

    ``pins`` is rendered as the sorted ``model=version`` list joined by ``,``. See the module
    docstring for why the versions are part of the key.
    """
    pin_text = ",".join(f"{m}={v}" for m, v in sorted(pins.items()))

    def key(host: str) -> tuple[str, str]:
        return hashlib.sha256(f"{group}/{pin_text}/{host}".encode()).hexdigest(), host

    return sorted(set(hosts), key=key)


def _check_waves(spec: Sequence[Any], path: YamlPath, smap: SourceMap) -> None:
    """Each wave parses; counts do not decrease, nor do percentages."""
    last: dict[str, tuple[int, int]] = {}  # kind -> (amount, index)
    for i, item in enumerate(spec):
        try:
            kind, amount = _parse_wave(item)
        except ValueError as exc:
            problem, hint = exc.args
            raise smap.error((*path, i), f"{_dotted((*path, i))}: {problem}", hint) from None
        if kind in last and amount < last[kind][0]:
            j = last[kind][1]
            raise smap.error(
                (*path, i),
                f"wave {i + 1} ({item!r}) covers less than wave {j + 1} ({spec[j]!r}, line {smap.line((*path, j))})",
                "waves are cumulative targets and must not decrease",
            )
        last[kind] = (amount, i)


# --------------------------------------------------------------------------------------------------
# Registry


def _is_url(text: str) -> bool:
    return text.startswith(("http://", "https://"))


def _precedence(text: str) -> tuple[Any, ...]:
    """Semantic-version precedence: build metadata ignored, a pre-release sorts before its release."""
    from edge_runtime.manifest import Version

    v = Version.parse(text)
    return (v.major, v.minor, v.patch, 0 if v.pre else 1, v.pre)


def _bundle_source(registry: str, bundle: str) -> str:
    if _is_url(bundle):
        return bundle
    if _is_url(registry):
        return registry.rstrip("/") + "/" + quote(bundle, safe="/")
    return os.path.join(registry, *bundle.split("/"))


def _envelope_from_prefix(data: bytes) -> Any:
    """Parse the manifest envelope from the first bytes of a bundle (the manifest is member one)."""
    from edge_runtime.errors import BundleFormatError
    from edge_runtime.manifest import MANIFEST_NAME, MAX_MANIFEST_BYTES, parse_envelope

    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r|") as tar:
            first = tar.next()
            if first is None or first.name != MANIFEST_NAME:
                found = first.name if first else "nothing"
                raise BundleFormatError(f"the first bundle member must be {MANIFEST_NAME}, found {found}")
            if not first.isreg() or first.size > MAX_MANIFEST_BYTES:
                raise BundleFormatError(f"{MANIFEST_NAME} is not a regular file of at most {MAX_MANIFEST_BYTES} bytes")
            fh = tar.extractfile(first)
            if fh is None:  # pragma: no cover - isreg() was checked
                raise BundleFormatError(f"cannot read {MANIFEST_NAME}")
            body = fh.read()
    except (tarfile.TarError, EOFError) as exc:
        raise BundleFormatError(f"not a bundle (tar) file: {exc}") from None
    if len(body) != first.size:
        raise BundleFormatError(f"{MANIFEST_NAME} is cut short")
    return parse_envelope(body)


class _Missing(Exception):
    """The bundle is not in the registry."""


def _read_remote(url: str) -> tuple[Any, int | None]:
    """Envelope and total size (if the server says) of a bundle, reading only its beginning."""
    import requests

    headers = {"Range": f"bytes=0-{MANIFEST_PREFIX_BYTES - 1}", "Accept-Encoding": "identity"}
    try:
        with requests.get(url, headers=headers, stream=True, timeout=HTTP_TIMEOUT) as resp:
            if resp.status_code in (404, 410):
                raise _Missing(f"HTTP {resp.status_code}")
            if resp.status_code not in (200, 206):
                raise OSError(f"the registry answered HTTP {resp.status_code} {resp.reason}")
            total: int | None = None
            if resp.status_code == 206:
                m = re.search(r"/(\d+)\s*$", resp.headers.get("Content-Range", ""))
                total = int(m.group(1)) if m else None
            elif resp.headers.get("Content-Length", "").isdigit():
                total = int(resp.headers["Content-Length"])
            buf = bytearray()
            for chunk in resp.iter_content(64 * 1024):
                buf += chunk
                if len(buf) >= MANIFEST_PREFIX_BYTES:
                    break
    except requests.RequestException as exc:
        raise OSError(f"cannot reach the registry: {exc}") from None
    return _envelope_from_prefix(bytes(buf[:MANIFEST_PREFIX_BYTES])), total


def _check_registry(data: Mapping[str, Any], registry: str, smap: SourceMap) -> dict[tuple[str, str], int]:
    """Every catalogue entry's bundle exists and its manifest matches the entry.

    Returns the bundle sizes the registry reported, keyed by (model, version).
    """
    from edge_runtime.bundle import read_envelope
    from edge_runtime.errors import EdgeRuntimeError
    from edge_runtime.manifest import Manifest

    if not _is_url(registry) and not os.path.isdir(registry):
        raise smap.error(
            ("registry",),
            f"registry directory {registry} does not exist",
            "publish bundles there first, fix 'registry', or skip the check (--no-registry / check_registry: false)",
        )
    sizes: dict[tuple[str, str], int] = {}
    for name, model in data["models"].items():
        for vtext, entry in model["versions"].items():
            base: YamlPath = ("models", name, "versions", vtext)
            source = _bundle_source(registry, entry["bundle"])
            try:
                if _is_url(source):
                    envelope, size = _read_remote(source)
                else:
                    if not os.path.isfile(source):
                        raise _Missing(source)
                    size = os.path.getsize(source)
                    envelope = read_envelope(Path(source))
                manifest = Manifest.from_signed(envelope.signed)
            except _Missing:
                raise smap.error(
                    (*base, "bundle"),
                    f"bundle of {name} {vtext} is not in the registry: {source}",
                    "publish it with edge-release, or fix 'bundle'",
                ) from None
            except (EdgeRuntimeError, OSError) as exc:
                raise smap.error(
                    (*base, "bundle"),
                    f"cannot read the manifest of {name} {vtext} from {source}: {exc}",
                    "rebuild and republish the bundle",
                ) from None
            if manifest.name != name or str(manifest.version) != vtext:
                raise smap.error(
                    (*base, "bundle"),
                    f"bundle {entry['bundle']} holds {manifest.name} {manifest.version}, not {name} {vtext}",
                    "point 'bundle' at the right file",
                )
            if manifest.digest != entry["digest"]:
                raise smap.error(
                    (*base, "digest"),
                    f"digest of {name} {vtext} does not match the registry: models.yaml pins {entry['digest']}, "
                    f"the bundle's manifest is {manifest.digest}",
                    "if this bundle is the intended release, pin its digest; otherwise republish the pinned bundle",
                )
            if manifest.release_counter != entry["release_counter"]:
                raise smap.error(
                    (*base, "release_counter"),
                    f"release_counter of {name} {vtext} is {entry['release_counter']} here "
                    f"but {manifest.release_counter} in the bundle",
                    "copy the release_counter from the bundle's manifest",
                )
            if size is not None and "size" in entry and size != entry["size"]:
                raise smap.error(
                    (*base, "size"),
                    f"size of {name} {vtext} is {entry['size']} here but the bundle has {size} bytes",
                    f"set size: {size}, or leave size out",
                )
            if size is not None:
                sizes[(name, vtext)] = size
    return sizes


# --------------------------------------------------------------------------------------------------
# The plan


def _check_catalogue(data: Mapping[str, Any], smap: SourceMap) -> None:
    """Versions parse; a higher version has a higher release counter; no two versions are equal."""
    from edge_runtime.errors import EdgeRuntimeError

    for name, model in data["models"].items():
        ranked: list[tuple[tuple[Any, ...], str]] = []
        for vtext in model["versions"]:
            vpath = ("models", name, "versions", vtext)
            try:
                ranked.append((_precedence(vtext), vtext))
            except EdgeRuntimeError as exc:
                raise smap.error(vpath, exc.message, exc.hint, key=True) from None
        ranked.sort(key=lambda r: r[0])
        for (pa, va), (pb, vb) in itertools.pairwise(ranked):
            a = model["versions"][va]["release_counter"]
            b = model["versions"][vb]["release_counter"]
            if pa == pb:
                raise smap.error(
                    ("models", name, "versions", vb),
                    f"{name} {vb} and {va} (line {smap.line(('models', name, 'versions', va), key=True)}) "
                    "differ only in build metadata",
                    "give the release its own MAJOR.MINOR.PATCH",
                    key=True,
                )
            if b <= a:
                line_a = smap.line(("models", name, "versions", va, "release_counter"))
                raise smap.error(
                    ("models", name, "versions", vb, "release_counter"),
                    f"{name} {vb} has release_counter {b}, not higher than {va}'s {a} (line {line_a})",
                    "a higher version needs a higher release_counter (devices refuse to go back to a lower one)",
                )


def _policy(rollout: Mapping[str, Any]) -> dict[str, Any]:
    gate = dict(DEFAULT_HEALTH_GATE)
    gate.update(rollout.get("health_gate", {}))
    return {
        "waves": list(rollout.get("waves", DEFAULT_WAVES)),
        "max_fail_percent": rollout.get("max_fail_percent", DEFAULT_MAX_FAIL_PERCENT),
        "health_gate": gate,
    }


def _close(name: str, choices: Sequence[str]) -> str:
    import difflib

    near = difflib.get_close_matches(name, choices, n=1)
    return f"did you mean {near[0]!r}? " if near else ""


def build_plan(path: str, groups: Mapping[str, Sequence[str]], check_registry: bool = True) -> dict[str, Any]:
    """Validate ``models.yaml`` at ``path`` against the inventory and return the rollout plan.

    ``groups`` is Ansible's ``groups`` magic variable (group name -> host names); ``all`` and
    ``ungrouped`` are ignored. With ``check_registry`` every catalogue bundle is looked up in the
    registry (a directory, or an http(s) server from which only the manifest is read).

    The plan (JSON-serialisable, the contract with the deploy playbooks)::

        {"models_file": "/abs/models.yaml",
         "registry": "/abs/registry/dir" | "https://...",
         "hosts": {"dev-a1": {"groups": ["line_a"],          # pinning groups holding the host
                              "rollout_group": "line_a",     # first of them by name
                              "wave": 1,                     # 1-based, in the rollout group
                              "models": {"defect-classifier": {"version": "1.1.0", "digest": "sha256:..",
                                          "release_counter": 2,
                                          "size": 123,             # bytes; None if unknown (see below)
                                          "source": "/abs/path/or/URL/of/bundle"}}}},
         "groups": {"line_a": {"hosts": [...],     # hosts this group rolls out, sorted by name
                               "waves": [["dev-a3"], ["dev-a1", "dev-a2"]],
                               "pins": {"defect-classifier": {"version": "1.1.0", "line": 37}},
                               "policy": {"waves": [1, "100%"], "max_fail_percent": 0,
                                          "health_gate": {"require_smoke_pass": True,
                                                          "max_p95_latency_ms": None,
                                                          "max_error_rate_increase": None,
                                                          "min_mean_confidence": None}}}},
         "max_wave": 2,
         "catalogue": {"defect-classifier": {"1.1.0": "sha256:.."}}}   # model -> version -> digest

    ``size`` is the catalogue's ``size`` if given, else the size the registry reported during the
    registry check, else ``None`` (``check_registry=False`` and no ``size`` in ``models.yaml``).

    Raises :class:`DesiredStateError` for the first problem found.
    """
    data, smap = load_yaml(path)
    try:
        schema_path = find_schema(path)
    except FileNotFoundError as exc:
        raise DesiredStateError(path, 0, 0, str(exc)) from None
    _validate_schema(data, smap, schema_path)
    _check_catalogue(data, smap)

    models: dict[str, Any] = data["models"]
    desired: dict[str, Any] = data["groups"]
    inventory = {str(g): sorted({str(h) for h in hosts}) for g, hosts in groups.items() if g not in IMPLICIT_GROUPS}

    for gname, group in desired.items():
        gpath: YamlPath = ("groups", gname)
        if gname in IMPLICIT_GROUPS:
            raise smap.error(
                gpath, f"{gname!r} is an implicit inventory group and cannot be pinned", "pin real groups", key=True
            )
        if gname not in inventory:
            known = ", ".join(sorted(inventory)) or "none"
            raise smap.error(
                gpath,
                f"group {gname!r} is not in the inventory",
                f"{_close(gname, sorted(inventory))}inventory groups: {known}",
                key=True,
            )
        for model, vtext in group["models"].items():
            if model not in models:
                catalogue = ", ".join(sorted(models)) or "(empty)"
                raise smap.error(
                    (*gpath, "models", model),
                    f"model {model!r} is not in the catalogue",
                    f"{_close(model, sorted(models))}add it under 'models:'; catalogue: {catalogue}",
                    key=True,
                )
            available = models[model]["versions"]
            if vtext not in available:
                listed = ", ".join(sorted(available, key=_precedence))
                raise smap.error(
                    (*gpath, "models", model),
                    f"{model} {vtext} is not in the catalogue",
                    f"available versions: {listed}",
                )
        rollout = group.get("rollout", {})
        _check_waves(rollout.get("waves", DEFAULT_WAVES), (*gpath, "rollout", "waves"), smap)

    # Which groups pin each host, and the union of their pins (one version per model per device).
    pinning: dict[str, list[str]] = {}
    for gname in sorted(desired):
        for host in inventory[gname]:
            pinning.setdefault(host, []).append(gname)
    host_pins: dict[str, dict[str, tuple[str, str]]] = {}
    for host in sorted(pinning):
        merged: dict[str, tuple[str, str]] = {}
        for gname in pinning[host]:
            for model, vtext in desired[gname]["models"].items():
                if model in merged and merged[model][0] != vtext:
                    other_v, other_g = merged[model]
                    line_other = smap.line(("groups", other_g, "models", model))
                    both = len(set(inventory[other_g]) & set(inventory[gname])) - 1
                    more = f" (and {both} more device(s) in both groups)" if both else ""
                    raise smap.error(
                        ("groups", gname, "models", model),
                        f"device {host!r}{more} gets two versions of {model}: {other_v} from group {other_g} "
                        f"(line {line_other}) and {vtext} from group {gname} "
                        f"(line {smap.line(('groups', gname, 'models', model))})",
                        "a device runs one version of a model: pin the same version in both groups, "
                        "or keep the device in one of them",
                    )
                merged[model] = (vtext, gname)
        host_pins[host] = merged

    registry = _registry_location(path, data["registry"])
    measured = _check_registry(data, registry, smap) if check_registry else {}

    plan_groups: dict[str, Any] = {}
    wave_of: dict[str, int] = {}
    for gname in sorted(desired):
        members = [h for h in inventory[gname] if pinning[h][0] == gname]
        policy = _policy(desired[gname].get("rollout", {}))
        waves = resolve_waves(policy["waves"], wave_order(gname, desired[gname]["models"], members))
        for number, wave in enumerate(waves, start=1):
            for host in wave:
                wave_of[host] = number
        plan_groups[gname] = {"hosts": sorted(members), "waves": waves, "policy": policy,
                              # where each pin is written (rollback.yml names the line to revert)
                              "pins": {m: {"version": v, "line": smap.line(("groups", gname, "models", m))}
                                       for m, v in desired[gname]["models"].items()}}

    plan_hosts: dict[str, Any] = {}
    for host in sorted(host_pins):
        entries: dict[str, Any] = {}
        for model in sorted(host_pins[host]):
            vtext = host_pins[host][model][0]
            entry = models[model]["versions"][vtext]
            entries[model] = {
                "version": vtext,
                "digest": entry["digest"],
                "release_counter": entry["release_counter"],
                "size": entry.get("size", measured.get((model, vtext))),
                "source": _bundle_source(registry, entry["bundle"]),
            }
        plan_hosts[host] = {
            "groups": list(pinning[host]),
            "rollout_group": pinning[host][0],
            "wave": wave_of[host],
            "models": entries,
        }

    return {
        "models_file": os.path.abspath(path),
        "registry": registry,
        "hosts": plan_hosts,
        "groups": plan_groups,
        "max_wave": max((len(g["waves"]) for g in plan_groups.values()), default=0),
        # every catalogued version's digest, so a rollback can name the exact pin that keeps it
        "catalogue": {m: {v: e["digest"] for v, e in spec["versions"].items()} for m, spec in models.items()},
    }


def _registry_location(models_path: str, registry: str) -> str:
    """An http(s) URL as written, or the absolute registry directory (relative to models.yaml's dir)."""
    if _is_url(registry):
        return registry
    return os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(models_path)), registry))

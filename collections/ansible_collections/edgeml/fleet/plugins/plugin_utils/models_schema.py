# Copyright (c) edgeml maintainers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""``models.yaml`` against its JSON Schema (``schemas/models.schema.json``), with readable, located messages.

Controller-only (imports jsonschema). The schema's ``semver`` pattern is replaced at load time by the
runtime's own (``edge_runtime.manifest.SEMVER_PATTERN``): a version the devices would refuse is never
accepted here, and the copy in the JSON file (kept for editors and other tools) is held equal to it by
a unit test.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ansible_collections.edgeml.fleet.plugins.plugin_utils.models_yaml import (
    DesiredStateError,
    SourceMap,
    YamlPath,
    dotted,
    kind,
)
from ansible_collections.edgeml.fleet.plugins.plugin_utils.waves import wave_item_problem

__all__ = ["SCHEMA_ENV", "SCHEMA_FILENAME", "find_schema", "load_schema", "validate_schema"]

#: name of the JSON Schema file, looked up in a ``schemas/`` directory (see :func:`find_schema`)
SCHEMA_FILENAME = "models.schema.json"
#: environment variable that overrides where the schema is
SCHEMA_ENV = "EDGEML_MODELS_SCHEMA"


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


def load_schema(schema_path: Path) -> dict[str, Any]:
    """The schema, with the runtime's version pattern as its ``semver`` pattern."""
    from edge_runtime.manifest import SEMVER_PATTERN

    schema: dict[str, Any] = json.loads(schema_path.read_text(encoding="utf-8"))
    schema["$defs"]["semver"]["pattern"] = SEMVER_PATTERN
    return schema


_TYPE_NAMES = {
    "object": "a mapping",
    "array": "a list",
    "string": "a string",
    "integer": "an integer",
    "number": "a number",
    "boolean": "true or false",
    "null": "null",
}


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
    where = dotted(path)
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
        problem, hint = wave_item_problem(inst)
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
        return smap.error(path, f"{where} must be {want}, not {kind(inst)} ({inst!r})", hint)
    if validator == "pattern":
        hint = hints.get(err.validator_value) or err.schema.get("description")
        return smap.error(path, f"{where}: {inst!r} is not valid", hint)
    if validator == "enum":
        choices = ", ".join(repr(c) for c in err.validator_value)
        return smap.error(path, f"{where} must be one of {choices}, not {inst!r}", err.schema.get("description"))
    if validator == "const":
        return smap.error(path, f"{where} must be {err.validator_value!r}, not {inst!r}")
    if validator in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
        op = {"minimum": ">=", "maximum": "<=", "exclusiveMinimum": ">", "exclusiveMaximum": "<"}[validator]
        return smap.error(path, f"{where} must be {op} {err.validator_value}, not {inst!r}")
    if validator in ("minProperties", "minItems"):
        return smap.error(path, f"{where} must not be empty", err.schema.get("description"), key=True)
    return smap.error(path, f"{where}: {err.message}")


def validate_schema(data: Any, smap: SourceMap, schema_path: Path) -> None:
    """Raise the first (by position) schema violation of ``data`` as a located :class:`DesiredStateError`."""
    # jsonschema ships no type information; it is only called, never subclassed here.
    from jsonschema import Draft202012Validator, validators  # type: ignore[import-untyped,unused-ignore]

    schema = load_schema(schema_path)

    def is_integer(_checker: Any, instance: Any) -> bool:  # 1.0 is not a device count or a counter
        return isinstance(instance, int) and not isinstance(instance, bool)

    checker = Draft202012Validator.TYPE_CHECKER.redefine("integer", is_integer)
    strict = validators.extend(Draft202012Validator, type_checker=checker)
    errors = [_describe(e, schema, smap) for e in strict(schema).iter_errors(data)]
    if errors:
        raise min(errors, key=lambda e: (e.line, e.column))

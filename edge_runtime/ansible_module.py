"""The Ansible module protocol of ``edgeml.fleet``'s device-side modules, without Ansible's ``module_utils``.

Why this exists: a module written with ``AnsibleModule`` is shipped as an AnsiballZ zip whose
``ansible.module_utils.basic`` (with ~40 more files) is compiled from source on the device in every run, because a
zip import writes no bytecode cache. Measured on this project's SSH fleet that is ~0.13 CPU-s per module run,
more than the work of a no-op ``edge_runtime_setup`` (0.03 CPU-s); a Raspberry-class CPU pays several times that.
The device modules of the collection (``edge_runtime_setup``, ``edge_model``, ``edge_model_info``,
``edge_health_info``) are therefore *JSON-args* modules, a module style that ``ansible-core`` supports: the
controller writes the task's arguments into the module's source as JSON and pipes it to the device's Python
(one SSH exec, as with pipelining), and the module imports only the standard library and this installed
package, whose bytecode is cached on the device.

The split of the work, decided once:

* The **controller** validates and normalises the arguments with Ansible's own ``ArgumentSpecValidator``
  against the module's ``ARGUMENT_SPEC`` (``plugin_utils/device_module.py``, in each module's action plugin):
  types, defaults, choices, required options, unknown options. A bad argument fails the task there, before
  anything reaches the device.
* The **device** (this file) reads the JSON it was given, refuses anything that is not an object of the
  spec's options, expands ``type: path`` options on the device (``~`` and ``$VARS`` are the device's, as
  ``AnsibleModule`` does), and writes one JSON result: ``exit_json``/``fail_json`` as in ``AnsibleModule``,
  with ``invocation`` (``no_log`` options masked) and ``warnings``.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping
from pathlib import PurePath
from typing import Any, NoReturn

__all__ = ["DeviceModule", "ModuleArgsError", "device_facts", "parse_args"]

#: what ``AnsibleModule`` puts in ``invocation`` instead of a ``no_log`` option's value
NO_LOG_MASK = "VALUE_SPECIFIED_IN_NO_LOG_PARAMETER"
#: the internal options the controller adds to every module's arguments (``_ansible_check_mode``, ...)
INTERNAL_PREFIX = "_ansible_"


class ModuleArgsError(ValueError):
    """The arguments the module received are not a JSON object of its options."""


def _expand_paths(spec: Mapping[str, Any], params: dict[str, Any]) -> None:
    """Expand ``~`` and ``$VARS`` of every ``type: path`` value (suboptions and lists too), on this device."""
    for key, option in spec.items():
        value = params.get(key)
        kind = option.get("type", "str")
        if value is None:
            continue
        if kind == "path" and isinstance(value, str):
            params[key] = os.path.expanduser(os.path.expandvars(value))
        elif kind == "list" and option.get("elements") == "path" and isinstance(value, list):
            params[key] = [os.path.expanduser(os.path.expandvars(v)) if isinstance(v, str) else v for v in value]
        elif kind == "dict" and isinstance(option.get("options"), Mapping) and isinstance(value, dict):
            _expand_paths(option["options"], value)


def parse_args(text: str, spec: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the module's parameters, the controller's internal options) from the JSON the controller wrote.

    Every option of ``spec`` is present in the parameters (``None`` when not given: the controller filled the
    defaults). An option outside the spec is refused: the controller validated the arguments against the
    same spec, so one here means a module and an action plugin of different collection versions.
    """
    try:
        doc = json.loads(text)
    except (ValueError, RecursionError) as exc:  # (nesting deeper than the parser's recursion limit)
        raise ModuleArgsError(f"the module arguments are not JSON ({type(exc).__name__}: {exc})") from None
    if not isinstance(doc, dict):
        raise ModuleArgsError(f"the module arguments are a JSON {type(doc).__name__}, not an object")
    internal = {k: v for k, v in doc.items() if isinstance(k, str) and k.startswith(INTERNAL_PREFIX)}
    unknown = sorted(k for k in doc if k not in spec and k not in internal)
    if unknown:
        raise ModuleArgsError(
            f"unsupported option(s) {', '.join(unknown)}: this module and its action plugin come from different "
            "versions of the edgeml.fleet collection (reinstall the collection on the controller)"
        )
    params = {key: doc.get(key) for key in spec}
    _expand_paths(spec, params)
    return params, internal


def _jsonable(value: Any) -> Any:
    """What ``json.dumps`` cannot write by itself: paths as text, sets as sorted lists, anything else as text."""
    if isinstance(value, PurePath):
        return str(value)
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=str)
    return str(value)


class DeviceModule:
    """What a device module needs of ``AnsibleModule``: its parameters, check mode, warnings, and the exits."""

    def __init__(self, args_json: str, spec: Mapping[str, Any]) -> None:
        self._spec = spec
        self.warnings: list[str] = []
        try:
            self.params, internal = parse_args(args_json, spec)
        except ModuleArgsError as exc:
            self.params, internal = {}, {}
            self.fail_json(msg=str(exc), error="usage")
        self.check_mode = internal.get("_ansible_check_mode") is True
        self.diff_mode = internal.get("_ansible_diff") is True

    def warn(self, warning: str) -> None:
        self.warnings.append(str(warning))

    def _invocation(self) -> dict[str, Any]:
        return {"module_args": {k: (NO_LOG_MASK if self._spec[k].get("no_log") and v not in (None, [], {}) else v)
                                for k, v in self.params.items()}}

    def _emit(self, result: dict[str, Any], rc: int) -> NoReturn:
        result.setdefault("invocation", self._invocation())
        if self.warnings:
            result["warnings"] = [*result.get("warnings", []), *self.warnings]
        sys.stdout.write(json.dumps(result, default=_jsonable) + "\n")
        sys.stdout.flush()
        raise SystemExit(rc)

    def exit_json(self, **result: Any) -> NoReturn:
        result.setdefault("changed", False)
        self._emit(result, 0)

    def fail_json(self, msg: str, **result: Any) -> NoReturn:
        result.update(failed=True, msg=msg)
        self._emit(result, 1)

    # -- the runtime glue the device modules share --------------------------------------------------------
    def fail_runtime_error(self, exc: Any, **extra: Any) -> NoReturn:
        """Every ``EdgeRuntimeError`` becomes one readable failure: what went wrong and the fix."""
        self.fail_json(msg=exc.diagnostics(), error=getattr(exc, "code", "error"), **extra)

    def twin_facts(self, facts: dict[str, Any]) -> dict[str, Any]:
        """``ansible_facts`` carrying the device twin, stamped with the run id the controller sent.

        The controller acts only on twins that carry its own run's id (fresh answers of this run); a twin
        from a fact cache or an earlier run carries another id, or none, and is treated as unknown.
        """
        return {"edge_runtime": {**facts, "run_id": self.params.get("run_id")}}

    def twin(self, device: Any) -> dict[str, Any]:
        """``ansible_facts`` of the device twin as the runtime reports it now (the facts file is not rewritten)."""
        return self.twin_facts(device_facts(device))


def device_facts(device: Any) -> dict[str, Any]:
    """The device twin as the runtime reports it (read-only: the facts file is not rewritten)."""
    from .facts import collect_facts

    return collect_facts(device)

"""The collection's layout contract: what runs on devices, and what runs on the controller.

Controller-only libraries (YAML, JSON Schema, HTTP, cryptography) and registry reads belong in
``plugins/plugin_utils/`` (the community.general layout). The device-side modules are JSON-args modules
(``plugins/plugin_utils/device_module.py`` says why): they import only the standard library and the device's
``edge_runtime``, never Ansible's ``module_utils`` (which would make Ansible wrap them in AnsiballZ again), and
their action plugins validate their arguments on the controller against the module's own ``ARGUMENT_SPEC``,
which must say what the module's documentation says.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

PLUGINS = Path(__file__).resolve().parents[2] / "collections" / "ansible_collections" / "edgeml" / "fleet" / "plugins"
if str(PLUGINS.parents[3]) not in sys.path:
    sys.path.insert(0, str(PLUGINS.parents[3]))  # collections/: ansible_collections.edgeml.fleet is importable
CONTROLLER_ONLY = ("yaml", "jsonschema", "requests", "cryptography", "urllib3", "tarfile")


def imported_modules(path: Path) -> set[str]:
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
    return out


#: the modules that run on devices (meta/runtime.yml's action group ``device``)
DEVICE_MODULES = ("edge_model", "edge_model_info", "edge_health_info", "edge_runtime_setup")


def test_the_device_group_is_the_device_modules() -> None:
    import yaml

    runtime = yaml.safe_load((PLUGINS.parent / "meta" / "runtime.yml").read_text(encoding="utf-8"))
    assert sorted(runtime["action_groups"]["device"]) == sorted(DEVICE_MODULES)
    # device code lives in edge_runtime, installed by the edge_runtime role
    assert not (PLUGINS / "module_utils").exists()


@pytest.mark.parametrize("name", DEVICE_MODULES)
def test_device_modules_are_json_args_modules(name: str) -> None:
    from ansible.executor.module_common import NEW_STYLE_PYTHON_MODULE_RE, REPLACER, REPLACER_JSONARGS

    path = PLUGINS / "modules" / f"{name}.py"
    src = path.read_bytes()
    # a mention of Ansible's module_utils would make Ansible ship the module as AnsiballZ again
    assert NEW_STYLE_PYTHON_MODULE_RE.search(src) is None
    assert REPLACER not in src
    # the marker once, in a raw triple-quoted string (valid JSON never holds three double quotes in a row)
    assert src.count(REPLACER_JSONARGS) == 1
    assert b'\nARGS = r"""' + REPLACER_JSONARGS + b'"""\n' in src
    # what a device module imports anywhere, in functions too: never a controller-only library
    heavy = {m for m in imported_modules(path) if m.split(".")[0] in CONTROLLER_ONLY}
    assert not heavy, f"{name} imports {sorted(heavy)}: move that code to plugins/plugin_utils/"
    top = {m.split(".")[0] for m in imported_modules_top_level(path)}
    assert top <= set(sys.stdlib_module_names) | {"__future__"}, f"{name} imports {sorted(top)} at import time"


def imported_modules_top_level(path: Path) -> set[str]:
    """The modules imported when the file is imported (not inside functions, not under TYPE_CHECKING)."""
    out: set[str] = set()
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Import):
            out |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
    return out


@pytest.mark.parametrize("name", DEVICE_MODULES)
def test_device_module_action_validates_with_the_module_spec(name: str) -> None:
    import importlib

    from ansible_collections.edgeml.fleet.plugins.plugin_utils.device_module import DeviceModuleAction

    action = importlib.import_module(f"ansible_collections.edgeml.fleet.plugins.action.{name}").ActionModule
    module = importlib.import_module(f"ansible_collections.edgeml.fleet.plugins.modules.{name}")
    assert issubclass(action, DeviceModuleAction)
    assert f"edgeml.fleet.{name}" == action.MODULE
    assert action.ARGUMENT_SPEC is module.ARGUMENT_SPEC


def test_the_validator_lives_in_plugin_utils() -> None:
    assert not (PLUGINS / "module_utils" / "desired_state.py").exists()
    for name in ("desired_state", "models_yaml", "models_schema", "registry", "trusted_keys", "waves", "gates"):
        assert (PLUGINS / "plugin_utils" / f"{name}.py").is_file(), name

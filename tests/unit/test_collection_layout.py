"""The collection's layout contract: module_utils is for code that runs on devices.

Controller-only libraries (YAML, JSON Schema, HTTP, cryptography) and registry reads belong in
``plugins/plugin_utils/`` (the community.general layout); a module_utils file that imported them would
ship them to every device and make the device's dependency list lie.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PLUGINS = Path(__file__).resolve().parents[2] / "collections" / "ansible_collections" / "edgeml" / "fleet" / "plugins"
CONTROLLER_ONLY = ("yaml", "jsonschema", "requests", "cryptography", "urllib3", "tarfile")


def imported_modules(path: Path) -> set[str]:
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
    return out


@pytest.mark.parametrize("path", sorted((PLUGINS / "module_utils").glob("*.py")), ids=lambda p: p.name)
def test_module_utils_import_no_controller_only_library(path: Path) -> None:
    heavy = {m for m in imported_modules(path) if m.split(".")[0] in CONTROLLER_ONLY}
    assert not heavy, f"{path.name} imports {sorted(heavy)}: move that code to plugins/plugin_utils/"


def test_the_validator_lives_in_plugin_utils() -> None:
    assert not (PLUGINS / "module_utils" / "desired_state.py").exists()
    for name in ("desired_state", "models_yaml", "models_schema", "registry", "trusted_keys", "waves", "gates"):
        assert (PLUGINS / "plugin_utils" / f"{name}.py").is_file(), name

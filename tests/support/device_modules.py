"""Run a device module of ``edgeml.fleet`` the way ``ansible-playbook`` does, without a playbook.

The arguments are validated as the module's action plugin validates them on the controller
(``plugin_utils/device_module.py``), then Ansible's own ``modify_module`` writes them into the module's source
(the JSON-args substitution), and the result runs in a fresh interpreter, as piped to a device.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
COLLECTIONS = REPO / "collections"
MODULES = COLLECTIONS / "ansible_collections" / "edgeml" / "fleet" / "plugins" / "modules"
if str(COLLECTIONS) not in sys.path:
    sys.path.insert(0, str(COLLECTIONS))


def validated(name: str, args: dict[str, Any]) -> dict[str, Any]:
    """``args`` as the action plugin sends them: checked against ``ARGUMENT_SPEC``, defaults filled in."""
    from ansible.module_utils.common.arg_spec import ArgumentSpecValidator
    from ansible_collections.edgeml.fleet.plugins.plugin_utils.device_module import controller_spec

    module = importlib.import_module(f"ansible_collections.edgeml.fleet.plugins.modules.{name}")
    result = ArgumentSpecValidator(controller_spec(module.ARGUMENT_SPEC),
                                   required_if=getattr(module, "REQUIRED_IF", None)).validate(args)
    assert not result.error_messages, result.error_messages
    return dict(result.validated_parameters)


def build(name: str, args: dict[str, Any], python: str | Path = sys.executable) -> bytes:
    """The module's source as Ansible sends it to a device whose interpreter is ``python``."""
    from ansible.executor.module_common import modify_module
    from ansible.parsing.dataloader import DataLoader
    from ansible.template import Templar

    built = modify_module(module_name=f"edgeml.fleet.{name}", module_path=str(MODULES / f"{name}.py"),
                          module_args=args, templar=Templar(loader=DataLoader()),
                          task_vars={"ansible_python_interpreter": str(python)})
    assert built.module_style == "new"  # pipelined: one exec on the device
    return bytes(built.b_module_data)


def run(name: str, args: dict[str, Any], *, check: bool = False, timeout: float = 120) -> dict[str, Any]:
    """The module's JSON result, run with validated ``args`` by this interpreter (which has edge_runtime)."""
    source = build(name, {**validated(name, args), "_ansible_check_mode": check})
    proc = subprocess.run([sys.executable, "-"], input=source, capture_output=True, timeout=timeout, check=False,
                          cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.stderr == b"", proc.stderr.decode(errors="replace")
    result: dict[str, Any] = json.loads(proc.stdout)
    assert (proc.returncode == 1) == bool(result.get("failed")), (proc.returncode, result)
    return result

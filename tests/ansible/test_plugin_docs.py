"""Every plugin of the in-repo collection documents itself: `ansible-doc` renders it without errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("plugin", "kind"),
    [("edge_model", "module"), ("edge_model_info", "module"), ("edge_runtime_setup", "module"),
     ("desired_state", "module"), ("fleet_report", "module"), ("role_arguments", "module"),
     ("fleet_lock", "module"), ("device_plan", "module")],
)
def test_ansible_doc_renders(plugin: str, kind: str) -> None:
    env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"),
               PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    proc = subprocess.run([Path(sys.executable).with_name("ansible-doc"), "-t", kind, f"edgeml.fleet.{plugin}"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "OPTIONS" in proc.stdout
    assert "EXAMPLES" in proc.stdout
    assert "[WARNING]" not in proc.stderr, proc.stderr

"""The edge_runtime role's boot recovery unit: real ansible-playbook runs against a local device.

The unit is rendered into a temporary unit directory (the test machine's systemd is left alone), checked
line by line and with ``systemd-analyze verify`` where that tool exists; the setup module installs it (no
extra task), a second run is a no-op, a unit edited on the device is put back; ``auto`` without gathered facts
installs nothing (the simulated fleet needs no systemd).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.support.factory import Release

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
UNIT = "edge-runtime-recover.service"


def play(tmp: Path, **extra: Any) -> tuple[subprocess.CompletedProcess[str], list[dict[str, Any]]]:
    """Run the role once on one local device; return the process and the per-task results of that host."""
    (tmp / "hosts.yml").write_text(
        "edge_devices:\n  hosts:\n    dev1:\n      ansible_connection: local\n"
        "      ansible_python_interpreter: \"{{ ansible_playbook_python }}\"\n"
    )
    (tmp / "site.yml").write_text(
        "- name: Runtime\n  hosts: edge_devices\n  gather_facts: false\n"
        "  roles:\n    - role: edgeml.fleet.edge_runtime\n"
    )
    (tmp / "extra.json").write_text(json.dumps(extra))
    env = {**os.environ, "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"), "ANSIBLE_DISPLAY_SKIPPED_HOSTS": "true",
           "ANSIBLE_ROLES_PATH": str(REPO / "roles"), "ANSIBLE_COLLECTIONS_PATH": str(REPO / "collections"),
           "ANSIBLE_NOCOLOR": "1"}
    proc = subprocess.run(
        [str(BIN / "ansible-playbook"), "-i", str(tmp / "hosts.yml"), str(tmp / "site.yml"),
         "-e", f"@{tmp / 'extra.json'}"],
        capture_output=True, text=True, timeout=300, check=False, cwd=REPO, env=env,
    )
    # the default callback: "TASK [role : name] ***" then one "<status>: [dev1]" line per host
    tasks: list[dict[str, Any]] = []
    for block in re.split(r"(?m)^TASK \[", proc.stdout)[1:]:
        header, _, body = block.partition("\n")
        name = header.split("]")[0].split(" : ", 1)[-1]
        m = re.search(r"(?m)^(ok|changed|skipping|included|fatal|failed)\b", body)
        status = m.group(1) if m else "none"
        tasks.append({"name": name, "status": status, "changed": status == "changed"})
    return proc, tasks


def ran(tasks: list[dict[str, Any]]) -> list[str]:
    """Names of the tasks that ran a module on the device (not skipped, not an include)."""
    return [t["name"] for t in tasks
            if t["status"] in ("ok", "changed", "fatal", "failed") and not t["name"].startswith("Validating arguments")]


@pytest.fixture
def settings(release: Release, tmp_path: Path) -> dict[str, Any]:
    return {
        "edge_runtime_root": str(tmp_path / "dev root"),  # a space: the unit quotes it
        "edge_runtime_trusted_keys": [str(release.keys[0].public_path)],
        "edge_runtime_systemd_unit_dir": str(tmp_path / "units"),
        "edge_runtime_command": str(BIN / "edge-runtime"),
        "edge_runtime_boot_recovery_before": ["edge-inference.service"],
    }


def test_role_installs_a_boot_recovery_unit_and_a_rerun_runs_nothing_more(
    tmp_path: Path, settings: dict[str, Any]
) -> None:
    units = Path(settings["edge_runtime_systemd_unit_dir"])
    proc, tasks = play(tmp_path, **settings, edge_runtime_boot_recovery="systemd")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    unit = units / UNIT
    text = unit.read_text()
    root = settings["edge_runtime_root"]
    for line in (
        "[Unit]",
        "After=local-fs.target",
        f'RequiresMountsFor="{root}"',
        f"ConditionPathExists={root}/config.json",
        "Before=edge-inference.service",
        "Type=oneshot",
        f'ExecStart={settings["edge_runtime_command"]} --root "{root}" recover',
        "TimeoutStartSec=300",
        "WantedBy=multi-user.target",
    ):
        assert line in text.splitlines(), f"{line!r} missing from\n{text}"
    wants = units / "multi-user.target.wants" / UNIT
    assert wants.is_symlink()
    assert Path(os.readlink(wants)) == unit
    setup = next(t for t in tasks if t["name"] == "Initialise the device root (trusted keys, config, local facts)")
    assert setup.get("changed") is True  # the setup module installed it: no extra task per device

    # the unit's command works: recover on the device root the role initialised
    exec_start = next(x for x in text.splitlines() if x.startswith("ExecStart="))
    argv = [settings["edge_runtime_command"], "--root", root, "recover"]
    assert exec_start == "ExecStart=" + " ".join(f'"{a}"' if " " in a else a for a in argv)
    rec = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    assert rec.returncode == 0, rec.stderr

    # a second run: the twin reports the unit (same digest) and its link, so only the setup module runs
    proc, tasks = play(tmp_path, **settings, edge_runtime_boot_recovery="systemd")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert ran(tasks) == ["Initialise the device root (trusted keys, config, local facts)"], ran(tasks)
    assert not any(t.get("changed") for t in tasks)


def test_a_unit_edited_or_unlinked_on_the_device_is_put_back(tmp_path: Path, settings: dict[str, Any]) -> None:
    units = Path(settings["edge_runtime_systemd_unit_dir"])
    proc, _ = play(tmp_path, **settings, edge_runtime_boot_recovery="systemd")
    assert proc.returncode == 0, proc.stderr[-3000:]
    unit, wants = units / UNIT, units / "multi-user.target.wants" / UNIT
    good = unit.read_text()
    unit.write_text(good.replace("recover", "status"))
    wants.unlink()
    proc, tasks = play(tmp_path, **settings, edge_runtime_boot_recovery="systemd")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert unit.read_text() == good
    assert wants.is_symlink()
    assert Path(os.readlink(wants)) == unit
    assert ran(tasks) == ["Initialise the device root (trusted keys, config, local facts)"]
    assert tasks[-1]["changed"] is True


def test_boot_recovery_unit_passes_systemd_analyze_verify(tmp_path: Path, settings: dict[str, Any]) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed on this machine")
    settings["edge_runtime_boot_recovery_before"] = []  # verify would look for the inference unit
    proc, _ = play(tmp_path, **settings, edge_runtime_boot_recovery="systemd")
    assert proc.returncode == 0, proc.stderr[-3000:]
    unit = Path(settings["edge_runtime_systemd_unit_dir"]) / UNIT
    check = subprocess.run([analyze, "verify", "--man=no", str(unit)], capture_output=True, text=True, timeout=60,
                           check=False)
    if check.returncode != 0 and ("Failed to" in check.stderr and "bus" in check.stderr.lower()):
        pytest.skip(f"systemd-analyze cannot run here: {check.stderr.strip()[:200]}")
    assert check.returncode == 0, check.stderr
    assert UNIT not in check.stderr, check.stderr  # no complaint about our unit


@pytest.mark.parametrize("mode", ["auto", "none"])
def test_without_systemd_facts_no_unit_and_no_extra_task(tmp_path: Path, settings: dict[str, Any], mode: str) -> None:
    proc, tasks = play(tmp_path, **settings, edge_runtime_boot_recovery=mode)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert not Path(settings["edge_runtime_systemd_unit_dir"]).exists()
    assert ran(tasks) == ["Initialise the device root (trusted keys, config, local facts)"]

"""The edge_runtime role's monitor units (edge-runtime-monitor.service + .timer): real ansible-playbook runs.

Rendered into a temporary unit directory (the test machine's systemd is left alone) by the same setup module run
that installs the boot recovery unit (no extra task per device), checked line by line and with
``systemd-analyze verify`` where that tool exists; a second run is a no-op, an edited unit is put back,
``edge_runtime_monitor_enabled: false`` removes them, a too-short interval fails with the fix.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.ansible.test_boot_recovery import play, ran
from tests.ansible.test_boot_recovery import settings as boot_settings  # noqa: F401 - the fixture, extended below

pytestmark = pytest.mark.slow

SERVICE, TIMER = "edge-runtime-monitor.service", "edge-runtime-monitor.timer"
SETUP = "Initialise the device root (trusted keys, config, local facts)"


@pytest.fixture
def settings(boot_settings: dict[str, Any]) -> dict[str, Any]:  # noqa: F811 - this module's settings
    """The boot recovery test's device (a space in the root), systemd units, a 30 s monitor interval."""
    return {**boot_settings, "edge_runtime_boot_recovery": "systemd", "edge_runtime_monitor_interval": 30,
            "edge_runtime_boot_recovery_before": []}


def test_role_installs_the_monitor_service_and_timer_in_the_setup_run_and_a_rerun_changes_nothing(
    tmp_path: Path, settings: dict[str, Any]
) -> None:
    units = Path(settings["edge_runtime_systemd_unit_dir"])
    proc, tasks = play(tmp_path, **settings)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert ran(tasks) == [SETUP]  # no extra task per device
    root = settings["edge_runtime_root"]
    service = (units / SERVICE).read_text().splitlines()
    for line in (
        "Type=oneshot",
        f'ExecStart={settings["edge_runtime_command"]} --root "{root}" monitor',
        f'RequiresMountsFor="{root}"',
        f"ConditionPathExists={root}/config.json",
        "After=local-fs.target edge-runtime-recover.service",
        "SuccessExitStatus=75",
        "TimeoutStartSec=300",
    ):
        assert line in service, f"{line!r} missing from {service}"
    timer = (units / TIMER).read_text().splitlines()
    for line in ("OnBootSec=30s", "OnUnitActiveSec=30s", "AccuracySec=1s", f"Unit={SERVICE}",
                 "WantedBy=timers.target"):
        assert line in timer, f"{line!r} missing from {timer}"
    wants = units / "timers.target.wants" / TIMER
    assert wants.is_symlink()
    assert Path(os.readlink(wants)) == units / TIMER
    assert not (units / "multi-user.target.wants" / SERVICE).exists()  # the timer starts it

    # the service's command works on the device root the role initialised
    exec_start = next(x for x in service if x.startswith("ExecStart="))
    argv = [settings["edge_runtime_command"], "--root", root, "monitor"]
    assert exec_start == "ExecStart=" + " ".join(f'"{a}"' if " " in a else a for a in argv)
    run = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    assert run.returncode == 0, run.stderr
    assert "monitor evaluation at" in run.stdout

    proc, tasks = play(tmp_path, **settings)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert ran(tasks) == [SETUP]
    assert not any(t.get("changed") for t in tasks)

    # edited on the device: put back by the same single module run
    good = (units / TIMER).read_text()
    (units / TIMER).write_text(good.replace("30s", "3600s"))
    proc, tasks = play(tmp_path, **settings)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (units / TIMER).read_text() == good
    assert tasks[-1]["changed"] is True

    # disabled: both units and the link are removed, the boot unit stays
    proc, tasks = play(tmp_path, **settings, edge_runtime_monitor_enabled=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert not (units / SERVICE).exists()
    assert not (units / TIMER).exists()
    assert not wants.is_symlink()
    assert (units / "edge-runtime-recover.service").is_file()
    assert tasks[-1]["changed"] is True


def test_an_interval_below_ten_seconds_fails_with_the_fix_and_installs_nothing(
    tmp_path: Path, settings: dict[str, Any]
) -> None:
    proc, _ = play(tmp_path, **{**settings, "edge_runtime_monitor_interval": 5})
    assert proc.returncode != 0
    assert "edge_runtime_monitor_interval must be at least 10 seconds" in proc.stdout + proc.stderr
    assert not (Path(settings["edge_runtime_systemd_unit_dir"]) / TIMER).exists()


def test_monitor_units_pass_systemd_analyze_verify(tmp_path: Path, settings: dict[str, Any]) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed on this machine (Debian package systemd)")
    proc, _ = play(tmp_path, **settings)
    assert proc.returncode == 0, proc.stderr[-3000:]
    units = Path(settings["edge_runtime_systemd_unit_dir"])
    # the timer names the service: verify both together, from their directory
    check = subprocess.run(
        [analyze, "verify", "--man=no", str(units / SERVICE), str(units / TIMER)],
        capture_output=True, text=True, timeout=60, check=False, cwd=units,
    )
    if check.returncode != 0 and ("Failed to" in check.stderr and "bus" in check.stderr.lower()):
        pytest.skip(f"systemd-analyze cannot run here: {check.stderr.strip()[:200]}")
    assert check.returncode == 0, check.stderr
    assert SERVICE not in check.stderr, check.stderr
    assert TIMER not in check.stderr, check.stderr

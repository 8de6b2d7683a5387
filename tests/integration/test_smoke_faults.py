"""Models that hang, crash or produce NaN: a failed smoke test in a bounded child, never a stuck runtime.

Real models where a real model can do it (``demo/fault-models``: defect-classifier 1.4.0 is a WHILE
loop that never returns, 1.5.0 outputs NaN). Crashes of the interpreter (SIGSEGV, abort, an OOM kill)
are injected into the smoke child through ``EDGE_RUNTIME_UNSAFE_SMOKE_FAULT_INJECTION`` because no
valid model triggers them reliably. Every command runs as a real ``edge-runtime`` process.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edge_runtime._limits import DEFAULT_LIMITS
from edge_runtime._smoke_proc import SMOKE_FAULT_ENV
from edge_runtime.device import Device
from tests.support.factory import MODEL, Release, snapshot, state
from tests.support.procs import smoke_children, wait_until_no_smoke_children

pytestmark = pytest.mark.tflite_runtime  # also run with the tflite-runtime backend

#: the hanging model's deadline: its policy (16 samples x 3 x 20 ms x 3 = 2.9 s) is below the floor
HANG_DEADLINE_S = DEFAULT_LIMITS.smoke_start_allowance_s + DEFAULT_LIMITS.smoke_deadline_floor_s + 1
#: what a command that must not wait for a smoke test gets (a generous bound, not a speed goal)
PROMPT_S = 20.0


def _strict(text: str) -> Any:
    """Parse JSON output, refusing NaN/Infinity (which json.loads accepts by default)."""

    def refuse(name: str) -> Any:
        raise AssertionError(f"non-JSON constant {name} in output")

    return json.loads(text, parse_constant=refuse)


def cli(root: Path, *args: str, env: dict[str, str] | None = None, timeout: float = PROMPT_S) -> tuple[int, Any]:
    proc = subprocess.run(
        [sys.executable, "-m", "edge_runtime.cli", "--root", str(root), "--json", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        check=False,
    )
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc.returncode, _strict(proc.stdout)


def start_cli(root: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "edge_runtime.cli", "--root", str(root), "--json", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def wait_for(pred: Any, what: str, timeout: float = PROMPT_S) -> None:
    end = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < end, f"gave up waiting for {what}"
        time.sleep(0.05)


def pending_phase(root: Path) -> str | None:
    try:
        p = state(root).get("pending")
    except (OSError, ValueError):
        return None
    return p["phase"] if isinstance(p, dict) else None


def fault_env(spec: str) -> dict[str, str]:
    return {**os.environ, SMOKE_FAULT_ENV: spec}


@pytest.fixture
def device(release: Release, tmp_path: Path) -> Device:
    dev = release.device(tmp_path / "dev")
    rc, r = cli(dev.root, "install", str(release.bundle("1.0.0")))
    assert rc == 0, r
    return dev


@pytest.fixture
def no_orphans(device: Device) -> Iterator[None]:
    yield
    assert not wait_until_no_smoke_children(device.root)


def test_hanging_model_times_out_is_quarantined_and_never_becomes_active(
    device: Device, release: Release, no_orphans: None
) -> None:
    bundle = release.bundle("1.4.0")  # a WHILE loop of 2^31 trips: one invoke takes ~30 min
    proc = start_cli(device.root, "install", str(bundle))
    try:
        wait_for(lambda: bool(smoke_children(device.root)), "the smoke child to start")
        # while the model hangs in its child: the old version serves, and status answers at once
        assert os.readlink(device.active_link(MODEL)) == "versions/1.0.0"
        assert pending_phase(device.root) == "testing"
        rc, st = cli(device.root, "status")
        assert rc == 0
        assert st["busy"] is True
        assert st["models"][MODEL]["state"] == "busy"
        assert st["models"][MODEL]["active"] == "1.0.0"
        rc, facts = cli(device.root, "facts")
        assert rc == 0
        assert facts["models"][MODEL]["state"] == "busy"
        assert os.readlink(device.active_link(MODEL)) == "versions/1.0.0"
        out, err = proc.communicate(timeout=HANG_DEADLINE_S + PROMPT_S)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == 8, err
    assert "Traceback" not in err
    r = _strict(out)
    assert (r["result"], r["active"], r["ok"]) == ("rolled_back", "1.0.0", False)
    assert "timed out after" in r["reason"]
    assert os.readlink(device.active_link(MODEL)) == "versions/1.0.0"
    s = state(device.root)
    assert "timed out after" in s["bad"]["1.4.0"]["reason"]  # type: ignore[index]
    assert s["pending"] is None
    assert not device.version_dir(MODEL, "1.4.0").exists()
    assert not smoke_children(device.root)  # killed with its process group, not left running


def test_nan_outputs_fail_the_smoke_test_and_never_reach_json(device: Device, release: Release) -> None:
    rc, r = cli(device.root, "install", str(release.bundle("1.5.0")))
    assert rc == 8, r
    assert r["result"] == "rolled_back"
    assert "non-finite outputs" in r["reason"]
    assert os.readlink(device.active_link(MODEL)) == "versions/1.0.0"
    assert "1.5.0" in state(device.root)["bad"]  # type: ignore[operator]
    # nothing the runtime writes holds NaN/Infinity: output, state file, facts file
    rc, st = cli(device.root, "status")
    assert rc == 0
    assert st["models"][MODEL]["state"] == "committed"
    cli(device.root, "facts")
    for path in (device.root / "models" / MODEL / "state.json", device.root / "facts" / "edge_runtime.fact"):
        _strict(path.read_text())


@pytest.mark.parametrize(
    ("fault", "signal_name"),
    [
        ("segv@smoke.invoke", "SIGSEGV"),
        ("abort@smoke.load", "SIGABRT"),
        ("oom@smoke.compare", "SIGKILL"),
        ("exit@smoke.result", "status 3"),
    ],
)
def test_crashing_smoke_child_is_a_failed_smoke_test_not_a_crashed_runtime(
    device: Device, release: Release, fault: str, signal_name: str
) -> None:
    before = snapshot(device.root)
    rc, r = cli(device.root, "install", str(release.bundle("1.1.0")), env=fault_env(fault))
    assert rc == 8, r
    assert r["result"] == "rolled_back"
    assert signal_name in r["reason"]
    assert os.readlink(device.active_link(MODEL)) == "versions/1.0.0"
    assert signal_name in state(device.root)["bad"]["1.1.0"]["reason"]  # type: ignore[index]
    after = snapshot(device.root)
    assert {k: v for k, v in after.items() if not k.endswith("state.json")} == {
        k: v for k, v in before.items() if not k.endswith("state.json")
    }


def test_post_install_check_whose_child_crashes_rolls_back(device: Device, release: Release) -> None:
    rc, r = cli(device.root, "install", str(release.bundle("1.1.0")))
    assert rc == 0, r
    rc, r = cli(device.root, "check", MODEL, env=fault_env("segv@smoke.invoke"))
    assert rc == 8, r
    assert (r["result"], r["active"]) == ("rolled_back", "1.0.0")
    assert "SIGSEGV" in r["reason"]
    assert os.readlink(device.active_link(MODEL)) == "versions/1.0.0"


def _kill_install_during_staged_test(device: Device, release: Release) -> None:
    """Start an install of 1.1.0 whose smoke child hangs, SIGKILL the installer while the child runs."""
    proc = start_cli(device.root, "install", str(release.bundle("1.1.0")), env=fault_env("hang@smoke.invoke"))
    try:
        wait_for(lambda: bool(smoke_children(device.root)), "the smoke child to start")
        assert pending_phase(device.root) == "testing"
        assert os.readlink(device.active_link(MODEL)) == "versions/1.0.0"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
    # the child dies with its parent (PR_SET_PDEATHSIG; stdin EOF as the fallback)
    assert not wait_until_no_smoke_children(device.root), "the orphaned smoke child survived"
    assert os.readlink(device.active_link(MODEL)) == "versions/1.0.0"


def test_installer_killed_during_smoke_child_leaves_old_version_and_status_reports_recovery_pending(
    device: Device, release: Release
) -> None:
    _kill_install_during_staged_test(device, release)
    before = snapshot(device.root)
    rc, st = cli(device.root, "status")  # read-only: reports, recovers nothing, runs no smoke test
    assert rc == 0
    assert (st["busy"], st["models"][MODEL]["state"]) == (False, "recovery pending")
    assert st["models"][MODEL]["active"] == "1.0.0"
    rc, facts = cli(device.root, "facts")
    assert facts["models"][MODEL]["state"] == "recovery pending"
    human = subprocess.run(
        [sys.executable, "-m", "edge_runtime.cli", "--root", str(device.root), "status"],
        capture_output=True, text=True, timeout=PROMPT_S, check=False,
    ).stdout
    assert "recovery pending" in human
    assert "edge-runtime recover" in human
    rc, v = cli(device.root, "verify", MODEL)
    assert rc == 0, v
    assert snapshot(device.root) == before
    # a mutating command recovers with the same bounded child: the staged test passes, the install completes
    rc, rec = cli(device.root, "recover")
    assert rc == 0, rec
    assert [(d["phase"], d["action"]) for d in rec["recovered"]] == [("testing", "retested")]
    assert rec["recovered"][0]["result"]["result"] == "installed"
    assert os.readlink(device.active_link(MODEL)) == "versions/1.1.0"
    rc, st = cli(device.root, "status")
    assert st["models"][MODEL]["state"] == "committed"


def test_model_that_takes_the_installer_down_repeatedly_is_quarantined_after_max_attempts(
    device: Device, release: Release
) -> None:
    attempts = device.config.max_smoke_attempts
    _kill_install_during_staged_test(device, release)
    for _ in range(attempts - 1):  # recovery re-runs the staged test; it is interrupted again
        proc = start_cli(device.root, "recover", env=fault_env("hang@smoke.invoke"))
        try:
            wait_for(lambda: bool(smoke_children(device.root)), "the recovery's smoke child to start")
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.communicate()
        assert not wait_until_no_smoke_children(device.root), "the orphaned smoke child survived"
    assert state(device.root)["pending"]["smoke_attempts"] == attempts  # type: ignore[index]
    rc, rec = cli(device.root, "recover")
    assert rc == 0, rec
    assert rec["recovered"][0]["action"] == "rolled_back"
    s = state(device.root)
    assert f"interrupted {attempts} time(s)" in s["bad"]["1.1.0"]["reason"]  # type: ignore[index]
    assert (s["active"], s["pending"]) == ("1.0.0", None)
    assert os.readlink(device.active_link(MODEL)) == "versions/1.0.0"


def test_model_needing_more_memory_than_the_cap_fails_its_test_in_the_child(device: Device) -> None:
    # The cap is data (Limits); a tiny one stands in for a greedy model, which cannot be made without
    # really allocating gigabytes on the test machine.
    from edge_runtime._limits import Limits
    from edge_runtime._smoke_proc import run_smoke_test_in_child

    manifest = device.verify_installed(MODEL, "1.0.0")
    tiny = Limits(smoke_memory_base_bytes=48 << 20, smoke_memory_per_model_byte=0)
    r = run_smoke_test_in_child(device.version_dir(MODEL, "1.0.0"), manifest, tiny)
    assert r.passed is False
    assert r.reason
    assert run_smoke_test_in_child(device.version_dir(MODEL, "1.0.0"), manifest).passed  # the default cap fits


def test_post_install_check_whose_smoke_test_hangs_times_out_and_rolls_back(
    device: Device, release: Release, no_orphans: None
) -> None:
    rc, r = cli(device.root, "install", str(release.bundle("1.1.0")))
    assert rc == 0, r
    rc, r = cli(device.root, "check", MODEL, env=fault_env("hang@smoke.invoke"), timeout=HANG_DEADLINE_S + PROMPT_S)
    assert rc == 8, r
    assert (r["result"], r["active"]) == ("rolled_back", "1.0.0")
    assert "timed out after" in r["reason"]
    assert os.readlink(device.active_link(MODEL)) == "versions/1.0.0"


def test_the_installing_process_never_imports_numpy_nor_a_backend(device: Device, release: Release) -> None:
    # the model runs only in the smoke child; the runtime process stays small and cannot be crashed by it
    code = (
        "import sys; from edge_runtime.device import Device; "
        f"r = Device({str(device.root)!r}).install({str(release.bundle('1.1.0'))!r}); "
        "bad = [m for m in ('numpy', 'ai_edge_litert', 'tflite_runtime') if m in sys.modules]; "
        "print(r.result, bad)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.split() == ["installed", "[]"], out.stdout + out.stderr

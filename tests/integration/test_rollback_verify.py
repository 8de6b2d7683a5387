"""Rollbacks verify their target before the swap; a device that cannot roll back says it is DEGRADED.

Real signed bundles are installed with the real CLI; the kept copies are then damaged on disk (as a
failing disk or a careless hand would) and every rollback path is exercised: the automatic rollback
of a failed install, its recovery after an interruption, the post-install check and the operator
``rollback``. The invariant each test defends: the active model is never a copy that does not verify,
``previous`` is never one either, and the device records why it could not do what was intended.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import stat
from pathlib import Path
from typing import Any

import pytest

from edge_runtime import _faults
from edge_runtime.cli import main as cli
from edge_runtime.device import Device
from edge_runtime.errors import RollbackError
from tests.support.attacks import (
    READ_ONLY_DIR,
    active_version,
    add_stray_file,
    clone_device,
    corrupt_file,
    installed_device,
    model_state,
    pinned_digest,
    run_cli,
)
from tests.support.factory import MODEL, Release, snapshot


def run(root: Path, *args: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, dict[str, Any]]:
    capsys.readouterr()
    rc = cli(["--root", str(root), "--json", *args])
    return rc, json.loads(capsys.readouterr().out)


@pytest.fixture(scope="module")
def templates(release: Release, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Device roots prepared once: "two" (1.0.0 then 1.1.0) and "three" (then 2.0.0), three versions kept."""
    base = tmp_path_factory.mktemp("rollback-templates")
    two = installed_device(release, base / "two", [release.bundle("1.0.0"), release.bundle("1.1.0")], keep_versions=3)
    v2 = release.custom("v2.edgebundle", "1.1.0", "--model-version", "2.0.0", "--counter", "20")
    three = clone_device(two.root, base / "three")
    assert three.install(str(v2)).ok
    return {"two": two.root, "three": three.root}


@pytest.fixture
def device(templates: dict[str, Path], tmp_path: Path) -> Device:
    """1.0.0 then 1.1.0 committed, three versions kept."""
    return clone_device(templates["two"], tmp_path / "dev")


@pytest.fixture
def three(templates: dict[str, Path], tmp_path: Path) -> Device:
    """1.0.0, 1.1.0 and 2.0.0 committed and kept."""
    return clone_device(templates["three"], tmp_path / "dev")


def status_of(dev: Device, capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    rc, st = run(dev.root, "status", capsys=capsys)
    assert rc == 0, st
    m: dict[str, Any] = st["models"][MODEL]
    return m


def facts_of(dev: Device, capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    rc, f = run(dev.root, "facts", capsys=capsys)
    assert rc == 0
    on_disk = json.loads(dev.facts_file.read_text())
    assert on_disk["models"] == f["models"]
    m: dict[str, Any] = f["models"][MODEL]
    return m


def test_failed_install_does_not_roll_back_to_a_corrupt_active_version(
    device: Device, release: Release, capsys: pytest.CaptureFixture[str]
) -> None:
    corrupt_file(device, "1.1.0", "model.tflite")
    rc, r = run(device.root, "install", str(release.bundle("1.2.0")), capsys=capsys)
    assert rc == 8, r
    assert r["result"] == "rolled_back"
    # 1.1.0 was the intended target; it does not verify, so the next kept one that does is used
    assert r["active"] == "1.0.0"
    assert active_version(device) == "1.0.0"
    assert "cannot roll back to 1.1.0: model.tflite no longer verifies" in r["degraded"]
    rc, v = run(device.root, "verify", MODEL, capsys=capsys)
    assert rc == 0, v
    st = status_of(device, capsys)
    assert st["state"] == "degraded"
    assert "cannot roll back to 1.1.0: model.tflite no longer verifies" in st["degraded"]["reason"]
    assert "1.0.0 is active instead" in st["degraded"]["reason"]
    assert st["previous"] is None, "a corrupt kept version must never be offered as previous"
    assert "1.1.0" not in st["kept"]
    assert "1.1.0" in st["corrupt"]
    facts = facts_of(device, capsys)
    assert facts["state"] == "degraded"
    assert "model.tflite no longer verifies" in facts["degraded_reason"]
    assert facts["previous_version"] is None
    assert facts["corrupt_versions"] == ["1.1.0"]


def test_failed_install_with_every_kept_version_corrupt_leaves_no_model_active(
    device: Device, release: Release, capsys: pytest.CaptureFixture[str]
) -> None:
    corrupt_file(device, "1.1.0", "model.tflite")
    add_stray_file(device, "1.0.0")
    rc, r = run(device.root, "install", str(release.bundle("1.2.0")), capsys=capsys)
    assert rc == 8, r
    assert r["active"] is None
    assert not device.active_link(MODEL).is_symlink(), "never a corrupt model active"
    st = status_of(device, capsys)
    assert (st["state"], st["active"], st["previous"], st["kept"]) == ("degraded", None, None, [])
    reason = st["degraded"]["reason"]
    assert "cannot roll back to 1.1.0: model.tflite no longer verifies" in reason
    assert "1.0.0 does not verify either: extra.bin" in reason
    assert "no model is active" in reason


def test_operator_rollback_to_a_corrupt_kept_version_is_refused_and_only_recorded(
    device: Device, capsys: pytest.CaptureFixture[str]
) -> None:
    corrupt_file(device, "1.0.0", "labels.txt")
    before = snapshot(device.root)
    rc, r = run(device.root, "rollback", MODEL, capsys=capsys)
    assert rc == 1, r  # RollbackError: exit 1, error "rollback"
    assert r["error"] == "rollback"
    assert "rollback" in r["message"]
    assert "labels.txt no longer verifies" in r["message"]
    assert "1.1.0 is active now" in r["hint"]
    after = snapshot(device.root)
    changed = {k for k in before.keys() | after.keys() if before.get(k) != after.get(k)}
    assert changed == {f"models/{MODEL}/state.json"}, "only the degraded/corrupt record may change"
    assert active_version(device) == "1.1.0"
    s = model_state(device.root)
    assert "1.0.0" in s["corrupt"]
    assert s["degraded"]["version"] == "1.0.0"
    st = status_of(device, capsys)
    assert (st["state"], st["active"], st["previous"]) == ("degraded", "1.1.0", None)
    # asked again, it is refused before reading anything: nothing left to roll back to
    rc, r = run(device.root, "rollback", MODEL, capsys=capsys)
    assert rc == 1
    assert "no previous committed version that verifies" in r["message"]
    rc, r = run(device.root, "rollback", MODEL, "--to", "1.0.0", capsys=capsys)
    assert rc == 1
    assert "rollback of defect-classifier to 1.0.0 refused" in r["message"]


def _damage(dev: Device, how: str) -> None:
    vdir = dev.version_dir(MODEL, "1.0.0")
    os.chmod(vdir, stat.S_IRWXU)
    if how == "truncated":
        f = vdir / "model.tflite"
        os.chmod(f, stat.S_IRUSR | stat.S_IWUSR)
        f.write_bytes(f.read_bytes()[:-100])
    elif how == "deleted":
        (vdir / "labels.txt").unlink()
    elif how == "symlink":
        (vdir / "labels.txt").unlink()
        (vdir / "labels.txt").symlink_to("/etc/hostname")
    elif how == "fifo":
        os.mkfifo(vdir / "pipe")
    elif how == "empty-dir":
        (vdir / "plugins").mkdir()
    elif how == "manifest":
        m = vdir / "manifest.json"
        os.chmod(m, stat.S_IRUSR | stat.S_IWUSR)
        m.write_bytes(m.read_bytes().replace(b'"release_counter": 1', b'"release_counter": 9'))
    elif how == "directory-gone":
        shutil.rmtree(vdir)
        return
    os.chmod(vdir, READ_ONLY_DIR)


@pytest.mark.parametrize("how", ["truncated", "deleted", "symlink", "fifo", "empty-dir", "manifest", "directory-gone"])
def test_operator_rollback_refuses_every_kind_of_damaged_target(device: Device, how: str) -> None:
    _damage(device, how)
    r = run_cli(device.root, "rollback", MODEL, timeout=30)  # a FIFO must not block the verification
    r.assert_clean()
    assert (r.rc, r.out["error"]) == (1, "rollback"), r.out
    assert "rollback of defect-classifier to 1.0.0 refused" in r.out["message"]
    assert active_version(device) == "1.1.0"
    st = run_cli(device.root, "status").out["models"][MODEL]
    assert (st["state"], st["previous"], st["kept"]) == ("degraded", None, ["1.1.0"])
    assert "cannot roll back to 1.0.0" in st["degraded"]["reason"]


def test_operator_rollback_when_target_and_active_are_corrupt_leaves_no_corrupt_model_active(
    three: Device, capsys: pytest.CaptureFixture[str]
) -> None:
    dev = three
    corrupt_file(dev, "1.1.0")
    corrupt_file(dev, "2.0.0", "labels.txt")
    rc, r = run(dev.root, "rollback", MODEL, capsys=capsys)
    assert rc == 1, r
    assert r["error"] == "rollback"
    assert active_version(dev) == "1.0.0", "the newest kept version that verifies replaces the corrupt active"
    st = status_of(dev, capsys)
    assert st["state"] == "degraded"
    assert "2.0.0 does not verify either" in st["degraded"]["reason"]
    assert "1.0.0 is active instead" in st["degraded"]["reason"]
    assert run(dev.root, "verify", MODEL, capsys=capsys)[0] == 0
    # the corrupt versions stay on disk (for inspection) until the next install's garbage collection
    assert dev.version_dir(MODEL, "2.0.0").is_dir()


def test_corrupt_previous_found_by_verify_is_no_longer_offered(
    device: Device, capsys: pytest.CaptureFixture[str]
) -> None:
    assert status_of(device, capsys)["previous"] == "1.0.0"
    corrupt_file(device, "1.0.0", "golden.npz")
    rc, r = run(device.root, "verify", MODEL, "--model-version", "1.0.0", capsys=capsys)
    assert rc == 3
    assert r["error"] == "integrity"
    st = status_of(device, capsys)
    assert st["previous"] is None
    assert st["kept"] == ["1.1.0"]
    assert facts_of(device, capsys)["previous_version"] is None
    # the active version is fine: the model is not degraded, it only lost a rollback target
    assert st["state"] == "committed"


def test_corrupt_active_found_by_verify_makes_status_say_degraded(
    device: Device, capsys: pytest.CaptureFixture[str]
) -> None:
    corrupt_file(device, "1.1.0")
    rc, _ = run(device.root, "verify", MODEL, capsys=capsys)
    assert rc == 3
    st = status_of(device, capsys)
    assert st["state"] == "degraded", "status must not say committed while verify fails"
    assert "check" in st["degraded"]["reason"]
    rc, r = run(device.root, "check", MODEL, capsys=capsys)
    assert rc == 8, r
    assert r["active"] == "1.0.0"
    assert run(device.root, "verify", MODEL, capsys=capsys)[0] == 0


def test_degraded_clears_after_a_good_install(
    device: Device, release: Release, capsys: pytest.CaptureFixture[str]
) -> None:
    corrupt_file(device, "1.1.0")
    assert run(device.root, "install", str(release.bundle("1.2.0")), capsys=capsys)[0] == 8
    assert status_of(device, capsys)["state"] == "degraded"
    nxt = release.custom("v2.edgebundle", "1.1.0", "--model-version", "2.0.0", "--counter", "20")
    rc, r = run(device.root, "install", str(nxt), capsys=capsys)
    assert rc == 0, r
    assert r["degraded"] is None
    assert r["previous"] == "1.0.0"
    st = status_of(device, capsys)
    assert (st["state"], st["active"], st["previous"]) == ("committed", "2.0.0", "1.0.0")
    assert st["degraded"] is None
    # the corrupt copy was dropped by the garbage collection of that install
    assert not device.version_dir(MODEL, "1.1.0").exists()
    assert st["corrupt"] == {}
    assert facts_of(device, capsys)["degraded_reason"] is None


def test_install_over_an_active_copy_found_corrupt_reports_no_corrupt_previous(
    device: Device, release: Release, capsys: pytest.CaptureFixture[str]
) -> None:
    corrupt_file(device, "1.1.0")
    assert run(device.root, "verify", MODEL, capsys=capsys)[0] == 3  # found: 1.1.0 is marked corrupt
    nxt = release.custom("v2.edgebundle", "1.1.0", "--model-version", "2.0.0", "--counter", "20")
    rc, r = run(device.root, "install", str(nxt), capsys=capsys)
    assert rc == 0, r
    assert (r["active"], r["previous"]) == ("2.0.0", "1.0.0"), "the damaged 1.1.0 is not offered as previous"
    st = status_of(device, capsys)
    assert (st["state"], st["previous"], st["corrupt"]) == ("committed", "1.0.0", {})


def test_degraded_clears_after_a_good_operator_rollback(three: Device, capsys: pytest.CaptureFixture[str]) -> None:
    dev = three
    corrupt_file(dev, "1.1.0")
    assert run(dev.root, "rollback", MODEL, capsys=capsys)[0] == 1
    assert status_of(dev, capsys)["previous"] == "1.0.0"
    rc, r = run(dev.root, "rollback", MODEL, capsys=capsys)
    assert rc == 0, r
    assert r["active"] == "1.0.0"
    st = status_of(dev, capsys)
    assert (st["state"], st["degraded"]) == ("committed", None)


@pytest.mark.parametrize("version", ["1.0.0", "1.1.0"], ids=["kept", "active"])
def test_reinstall_of_a_corrupt_copy_restages_it_from_the_bundle(
    device: Device, release: Release, capsys: pytest.CaptureFixture[str], version: str
) -> None:
    corrupt_file(device, version)
    rc, r = run(device.root, "install", str(release.bundle(version)), capsys=capsys)
    assert rc == 0, r
    assert r["result"] == "installed", "a corrupt copy is never re-activated or reported unchanged as it is"
    assert run(device.root, "verify", MODEL, capsys=capsys)[0] == 0
    st = status_of(device, capsys)
    assert (st["state"], st["active"], st["corrupt"]) == ("committed", version, {})


def test_version_directory_holding_another_release_does_not_verify_as_that_version(
    device: Device, release: Release, capsys: pytest.CaptureFixture[str]
) -> None:
    # swap the two kept directories' contents: each is a valid signed release, but not the one recorded
    a, b = device.version_dir(MODEL, "1.0.0"), device.version_dir(MODEL, "1.1.0")
    os.chmod(a.parent, stat.S_IRWXU)
    tmp = a.with_name("swap")
    os.rename(a, tmp)
    os.rename(b, a)
    os.rename(tmp, b)
    rc, r = run(device.root, "verify", MODEL, "--model-version", "1.0.0", capsys=capsys)
    assert rc == 3
    assert "not the committed" in r["message"]


class Interrupted(BaseException):
    """Stands for a power cut at a checkpoint: unwinds without running the rest of the operation."""


def test_recovery_of_an_interrupted_rollback_verifies_its_target_again(
    device: Device, release: Release, capsys: pytest.CaptureFixture[str]
) -> None:
    # The failed install of 1.2.0 is interrupted right after it verified 1.1.0 (persisted phase
    # rolling_back); the disk then damages 1.1.0. Recovery must not trust the earlier verification.
    def cut(name: str) -> None:
        if name == "rollback.verify":
            raise Interrupted

    _faults.unsafe_arm(cut)
    try:
        with pytest.raises(Interrupted):
            Device(device.root).install(str(release.bundle("1.2.0")))
    finally:
        _faults.unsafe_arm(None)
    assert model_state(device.root)["pending"]["phase"] == "rolling_back"
    corrupt_file(device, "1.1.0")
    rc, rec = run(device.root, "recover", capsys=capsys)
    assert rc == 0, rec
    st = status_of(device, capsys)
    assert st["pending"] is None
    assert (st["state"], st["active"]) == ("degraded", "1.0.0")
    assert "cannot roll back to 1.1.0" in st["degraded"]["reason"]
    assert active_version(device) == "1.0.0"


def test_rollback_refusal_is_reported_by_the_console_script(device: Device) -> None:
    corrupt_file(device, "1.0.0")
    r = run_cli(device.root, "rollback", MODEL)
    r.assert_clean()
    assert r.rc == 1
    assert r.out["error"] == "rollback"
    st = run_cli(device.root, "status")
    assert st.out["models"][MODEL]["state"] == "degraded"


def run_module(tmp_path: Path, **args: Any) -> dict[str, Any]:
    """Run ``edgeml.fleet.edge_model`` the way Ansible does on a device (tests/support/device_modules.py)."""
    from tests.support import device_modules

    del tmp_path
    return device_modules.run("edge_model", args)


def test_ansible_module_fails_on_a_degraded_model_with_the_reason(
    device: Device, release: Release, tmp_path: Path
) -> None:
    corrupt_file(device, "1.1.0")
    pin = {"root": str(device.root), "name": MODEL}
    # the install the fleet asked for fails and the rollback cannot reach 1.1.0: both are said
    r = run_module(tmp_path, **pin, version="1.2.0", digest=pinned_digest(release.bundle("1.2.0")),
                   source=str(release.bundle("1.2.0")))
    assert r["failed"] is True, r
    assert (r.get("rolled_back"), r["degraded"]) == (True, True), {k: v for k, v in r.items() if k != "ansible_facts"}
    assert "cannot roll back to 1.1.0" in r["degraded_reason"]
    # a run that changes nothing (the active version is pinned) still fails while the model is degraded
    r = run_module(tmp_path, **pin, version="1.0.0", digest=pinned_digest(release.bundle("1.0.0")),
                   source=str(release.bundle("1.0.0")))
    assert r["failed"] is True, r
    assert (r["error"], r["degraded"]) == ("degraded", True)
    assert "DEGRADED" in r["msg"]
    assert r["ansible_facts"]["edge_runtime"]["models"][MODEL]["state"] == "degraded"


def test_failed_post_install_check_with_a_corrupt_previous_leaves_no_corrupt_model_active(
    device: Device, capsys: pytest.CaptureFixture[str]
) -> None:
    corrupt_file(device, "1.1.0", "labels.txt")  # the check fails on the active version...
    corrupt_file(device, "1.0.0")  # ...and its rollback target does not verify either
    rc, r = run(device.root, "check", MODEL, capsys=capsys)
    assert rc == 8, r
    assert (r["result"], r["active"]) == ("rolled_back", None)
    assert "cannot roll back to 1.0.0: model.tflite no longer verifies" in r["degraded"]
    assert not device.active_link(MODEL).is_symlink()
    st = status_of(device, capsys)
    assert (st["state"], st["active"], st["previous"]) == ("degraded", None, None)


def test_sigkill_at_every_step_of_a_rollback_falling_back_from_a_corrupt_active_leaves_a_verified_model(
    three: Device, tmp_path: Path
) -> None:
    """Crash safety of the ``fallback`` path (R1's harness cannot start from a corrupt active version).

    Operator rollback from a corrupt 2.0.0 to a corrupt 1.1.0: the runtime falls back to 1.0.0. The
    process is SIGKILLed at every checkpoint (every file verified, the swap, the commit); after
    recovery the model is either untouched (the kill came before anything was persisted, and the
    corrupt active is what the device already had) or on the verified 1.0.0 with the reason recorded.
    """
    corrupt_file(three, "2.0.0", "labels.txt")
    corrupt_file(three, "1.1.0")
    template = three.root

    def op(dev: Device) -> None:
        with contextlib.suppress(RollbackError):
            dev.rollback(MODEL)

    names: list[str] = []
    counted = clone_device(template, tmp_path / "count")
    _faults.unsafe_arm(names.append)
    try:
        op(counted)
    finally:
        _faults.unsafe_arm(None)
    assert "rollback.swap" in names, names
    assert names.count("verify.file") >= 3, names
    outcomes: list[str] = []
    for k in range(1, len(names) + 1):
        dev = clone_device(template, tmp_path / f"k{k}")
        pid = os.fork()
        if pid == 0:  # the child runs the operation and kills itself at checkpoint k
            try:
                _faults.unsafe_arm(_faults.kill_at(k))
                op(Device(dev.root))
            finally:
                os._exit(0)
        _, status = os.waitpid(pid, 0)
        assert os.WIFSIGNALED(status), f"checkpoint {k} ({names[k - 1]}) was not reached"
        Device(dev.root).recover()
        s = model_state(dev.root)
        assert s["pending"] is None, (k, names[k - 1])
        if s["active"] == "2.0.0":  # nothing happened yet
            assert s["degraded"] is None, (k, names[k - 1], s)
            assert active_version(dev) == "2.0.0", (k, names[k - 1])
            outcomes.append("untouched")
        else:
            outcomes.append("fell back")
            assert s["active"] == "1.0.0" == active_version(dev), (k, names[k - 1], s)
            assert "1.0.0 is active instead" in s["degraded"]["reason"]
            Device(dev.root).verify_installed(MODEL)
    assert "untouched" in outcomes, outcomes
    assert "fell back" in outcomes, outcomes  # kills after the fallback was persisted were recovered too


# ---- one inference per install: the post-activation check re-verifies the active files (docs/DESIGN.md) ----


def test_install_runs_one_smoke_test_and_records_its_post_install_check(device: Device, release: Release) -> None:
    names: list[str] = []
    _faults.unsafe_arm(names.append)
    try:
        r = Device(device.root).install(str(release.bundle("1.0.0")))  # the kept 1.0.0, staged test + swap
    finally:
        _faults.unsafe_arm(None)
    assert (r.result, r.active, r.checked) == ("activated_kept", "1.0.0", True), r
    assert names.count("smoke.done") == 1, names
    # the active files were verified after the swap, before the commit
    assert names.index("activate.swap") < names.index("activate.verified") < names.index("commit"), names
    check = model_state(device.root)["versions"]["1.0.0"]["check"]
    assert check["passed"] is True
    assert check["p95_ms"] == r.smoke["p95_ms"]
    # the controller counts it healthy without a second check (edge_runtime.decision.healthy)
    from edge_runtime.decision import healthy

    assert healthy(device.store.load(MODEL), "1.0.0")


def test_files_changed_after_the_staged_smoke_test_are_caught_after_the_swap(device: Device, release: Release) -> None:
    def rot(name: str) -> None:  # the disk changes the tested directory right after the swap
        if name == "activate.swap":
            corrupt_file(device, "1.0.0")

    _faults.unsafe_arm(rot)
    try:
        r = Device(device.root).install(str(release.bundle("1.0.0")))
    finally:
        _faults.unsafe_arm(None)
    assert (r.result, r.active, r.checked) == ("rolled_back", "1.1.0", False), r
    assert "active files do not verify" in r.reason, r.reason
    assert "model.tflite" in r.reason, r.reason
    assert active_version(device) == "1.1.0"
    st = model_state(device.root)
    assert "1.0.0" in st["bad"]
    assert st["pending"] is None
    device.verify_installed(MODEL, "1.1.0")


def test_install_interrupted_after_the_swap_recovers_with_a_full_smoke_test_and_no_recorded_check(
    device: Device, release: Release
) -> None:
    def cut(name: str) -> None:
        if name == "activate.swap":
            raise Interrupted

    _faults.unsafe_arm(cut)
    try:
        with pytest.raises(Interrupted):
            Device(device.root).install(str(release.bundle("1.0.0")))
    finally:
        _faults.unsafe_arm(None)
    assert model_state(device.root)["pending"]["phase"] == "activating"
    names: list[str] = []
    _faults.unsafe_arm(names.append)
    try:
        done = Device(device.root).recover()
    finally:
        _faults.unsafe_arm(None)
    assert [(d["action"], d["result"]["result"]) for d in done] == [("retested", "activated_kept")], done
    assert names.count("smoke.done") == 1, names  # recovery tests the active path in a fresh child
    st = model_state(device.root)
    assert st["active"] == "1.0.0"
    assert st["pending"] is None
    # committed by recovery without a recorded check: the controller's post-install check runs for it
    assert "check" not in st["versions"]["1.0.0"]

"""CLI conventions and a device that never gets stuck, through the real ``edge-runtime`` console script.

Every test runs the installed command as a subprocess: option parsing, exit codes, what reaches stdout
and stderr, and what is (not) created on disk are the behaviour under test.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edge_runtime import errors
from edge_runtime._cli_common import EXIT_CODES
from tests.support.disks import fill, small_tmpfs
from tests.support.factory import MODEL, Release
from tests.support.http_server import BundleServer, Route

EXE = Path(sys.executable).with_name("edge-runtime")
REPO = Path(__file__).resolve().parents[2]
COMMANDS = ["init", "install", "rollback", "status", "facts", "recover", "verify", "check", "repair"]


def cli(*args: object, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(EXE), *map(str, args)], capture_output=True, text=True, timeout=timeout, check=False,
        env={**os.environ, "EDGE_RUNTIME_ROOT": "/nonexistent/edge-runtime-root"},
    )


def as_json(proc: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert "Traceback" not in proc.stderr, proc.stderr
    doc = json.loads(proc.stdout)
    assert isinstance(doc, dict)
    return doc


@pytest.fixture
def device_root(release: Release, tmp_path: Path) -> Path:
    root = tmp_path / "dev"
    proc = cli("--root", root, "init", "--trusted-key", release.keys[0].public_path)
    assert proc.returncode == 0, proc.stderr
    return root


# --- options ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["before", "after"])
def test_json_is_accepted_before_and_after_the_subcommand(device_root: Path, where: str) -> None:
    args = ["--json", "status"] if where == "before" else ["status", "--json"]
    proc = cli("--root", device_root, *args)
    assert proc.returncode == 0, proc.stderr
    assert as_json(proc)["ok"] is True


def test_root_is_accepted_after_the_subcommand(device_root: Path) -> None:
    proc = cli("status", "--root", device_root, "--json")
    assert proc.returncode == 0, proc.stderr
    assert as_json(proc)["root"] == str(device_root)


@pytest.mark.parametrize(
    "args",
    [
        ["install", "x.edgebundle", "--allow"],  # must not mean --allow-quarantined
        ["install", "x.edgebundle", "--expect-dig", "sha256:00"],  # must not mean --expect-digest
        ["--js", "status"],  # must not mean --json
        ["status", "--js"],
        ["--ro", "/tmp", "status"],  # must not mean --root
    ],
)
def test_options_are_never_prefix_matched(device_root: Path, args: list[str]) -> None:
    proc = cli("--root", device_root, *args)
    assert proc.returncode == 2
    assert "unrecognized arguments" in proc.stderr or "invalid choice" in proc.stderr or "required" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_model_version_option_does_not_overload_the_program_version(device_root: Path) -> None:
    version = cli("--version")
    assert version.returncode == 0
    assert re.fullmatch(r"edge-runtime \d+\.\d+\.\d+\n", version.stdout)
    proc = cli("--root", device_root, "verify", MODEL, "--model-version", "1.0.0", "--json")
    assert proc.returncode != 2, proc.stderr  # parsed; the model is simply not installed
    assert as_json(proc)["error"] in ("not_installed", "integrity")
    # the old spelling after the command still works, with a deprecation warning ...
    old = cli("--root", device_root, "verify", MODEL, "--version", "1.0.0", "--json")
    assert old.returncode == proc.returncode
    assert "--model-version" in old.stderr
    # ... but without a value it is refused, naming both meanings
    bare = cli("--root", device_root, "check", MODEL, "--version")
    assert bare.returncode == 2
    assert "--model-version" in bare.stderr


# --- a mistyped --root ------------------------------------------------------------------------------


def _command_args(cmd: str, bundle: Path) -> list[str]:
    return {
        "install": [str(bundle)],
        "rollback": [MODEL],
        "verify": [MODEL],
        "check": [MODEL],
        "repair": [MODEL],
    }.get(cmd, [])


@pytest.mark.parametrize("cmd", [c for c in COMMANDS if c != "init"])
@pytest.mark.parametrize("exists", [False, True], ids=["missing-dir", "empty-dir"])
def test_mistyped_root_is_an_error_that_creates_nothing(
    release: Release, tmp_path: Path, cmd: str, exists: bool
) -> None:
    root = tmp_path / "typo"
    if exists:
        root.mkdir()
    for args in (["--root", root, cmd], ["--root", root, "--json", cmd]):
        proc = cli(*args, *_command_args(cmd, release.bundle("1.0.0")))
        assert proc.returncode == 2, (cmd, proc.stdout, proc.stderr)
        assert "not an initialised device root" in proc.stdout + proc.stderr
        assert "Traceback" not in proc.stderr
    assert root.exists() == exists
    if exists:
        assert list(root.iterdir()) == []  # no lock, no facts/, no models/


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--keep-versions", "0"], "keep_versions"),
        (["--threshold", "0"], "threshold"),
        (["--model", "../escape"], "not a valid model name"),
        (["--facts-path", "relative/edge.fact"], "absolute path"),
        (["--download-setting", "min_rate=-1"], "min_rate"),
    ],
    ids=["keep-0", "threshold-0", "bad-model-name", "relative-facts-path", "bad-download-setting"],
)
def test_init_refuses_a_value_the_runtime_could_not_load_and_creates_nothing(
    release: Release, tmp_path: Path, args: list[str], words: str
) -> None:
    # one check (DeviceConfig.validate) for init and for loading: init never writes a config that the
    # next command refuses
    root = tmp_path / "dev"
    proc = cli("--root", root, "init", "--trusted-key", release.keys[0].public_path, *args)
    assert proc.returncode in (2, 3), (proc.stdout, proc.stderr)
    assert words in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
    assert not root.exists()


def test_default_root_from_the_environment_is_checked_too(tmp_path: Path) -> None:
    proc = cli("status")  # EDGE_RUNTIME_ROOT points at a directory that does not exist
    assert proc.returncode == 2
    assert "/nonexistent/edge-runtime-root" in proc.stderr
    assert not Path("/nonexistent/edge-runtime-root").exists()


# --- exit codes -------------------------------------------------------------------------------------


def _error_classes() -> list[type[errors.EdgeRuntimeError]]:
    out = []
    todo: list[type[errors.EdgeRuntimeError]] = [errors.EdgeRuntimeError]
    while todo:
        cls = todo.pop()
        out.append(cls)
        todo.extend(cls.__subclasses__())
    return out


def test_every_exit_code_of_every_error_is_documented() -> None:
    missing = {cls.__name__: cls.exit_code for cls in _error_classes() if cls.exit_code not in EXIT_CODES}
    assert missing == {}


@pytest.mark.parametrize("cmd", [None, *COMMANDS])
def test_help_lists_every_exit_code(cmd: str | None) -> None:
    proc = cli(*([cmd] if cmd else []), "--help")
    assert proc.returncode == 0
    listed = {int(m) for m in re.findall(r"(?m)^\s+(\d+)\s{2,}\S", proc.stdout.split("exit codes:")[1])}
    assert listed == set(EXIT_CODES)


def test_readme_lists_every_exit_code() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("Exit codes (also in `edge-runtime --help`)"):]
    listed = {int(c) for c in re.findall(r"(?m)^\| (\d+) \|", section[: section.index("\n\n", 50)])}
    assert listed == set(EXIT_CODES)


def test_invalid_download_setting_is_a_usage_error_that_changes_nothing(device_root: Path, release: Release) -> None:
    before = (device_root / "config.json").read_bytes()
    for setting in ("min_rat=5", "min_rate=0", "retries=many", "nonsense"):
        proc = cli("--root", device_root, "init", "--trusted-key", release.keys[0].public_path,
                   "--download-setting", setting)
        assert proc.returncode == 2, (setting, proc.stderr)
        assert "Traceback" not in proc.stderr
    assert (device_root / "config.json").read_bytes() == before
    ok = cli("--root", device_root, "init", "--trusted-key", release.keys[0].public_path,
             "--download-setting", 'allowed_redirect_hosts=["mirror.example:8443"]',
             "--download-setting", "min_rate=8192")
    assert ok.returncode == 0, ok.stderr
    config = json.loads((device_root / "config.json").read_text())
    assert config["download"] == {"allowed_redirect_hosts": ["mirror.example:8443"], "min_rate": 8192}
    # a later init without download settings keeps them
    again = cli("--root", device_root, "init", "--trusted-key", release.keys[0].public_path)
    assert again.returncode == 0
    assert json.loads((device_root / "config.json").read_text())["download"] == config["download"]


# --- full disks ---------------------------------------------------------------------------------------


@pytest.fixture
def small_root(release: Release, tmp_path: Path) -> Iterator[Path]:
    """An initialised device root with 1.0.0 installed, on a real 4 MiB file system."""
    with small_tmpfs(tmp_path / "small", "4m") as mnt:
        root = mnt / "dev"
        assert cli("--root", root, "init", "--trusted-key", release.keys[0].public_path,
                   "--download-setting", "reserve_bytes=65536").returncode == 0
        proc = cli("--root", root, "install", release.bundle("1.0.0"))
        assert proc.returncode == 0, proc.stderr
        yield root


def test_status_and_facts_keep_working_on_a_full_disk(small_root: Path) -> None:
    facts_before = (small_root / "facts" / "edge_runtime.fact").read_bytes()
    (small_root / "lock").write_bytes(b"")  # naming the holder would need a block the disk does not have
    fill(small_root.parent)
    st = cli("--root", small_root, "status", "--json")
    assert st.returncode == 0, st.stderr
    assert as_json(st)["models"][MODEL]["active"] == "1.0.0"
    facts = cli("--root", small_root, "facts", "--json")
    assert facts.returncode == 0, facts.stderr
    assert as_json(facts)["models"][MODEL]["active_version"] == "1.0.0"
    assert "facts not written" in facts.stderr  # said, not hidden and not fatal
    assert (small_root / "facts" / "edge_runtime.fact").read_bytes() == facts_before  # old facts intact
    rec = cli("--root", small_root, "recover", "--json")
    assert rec.returncode == 0, rec.stderr


def test_failed_facts_write_never_hides_the_real_error(small_root: Path, release: Release) -> None:
    fill(small_root.parent)
    proc = cli("--root", small_root, "install", release.bundle("1.1.0"), "--json")
    doc = as_json(proc)
    # the staging failure is reported with its own code; the facts problem rides along as a warning
    assert proc.returncode == 6, doc
    assert doc["error"] in ("disk_full", "storage", "staging")
    assert any("facts not written" in w for w in doc.get("warnings", [])), doc
    st = as_json(cli("--root", small_root, "status", "--json"))
    assert st["models"][MODEL]["active"] == "1.0.0"
    assert [p.name for p in (small_root / "models" / MODEL / "versions").iterdir()] == ["1.0.0"]


def test_download_bigger_than_free_space_is_refused_and_leaves_nothing(
    small_root: Path, http_server: BundleServer
) -> None:
    http_server.add("/big.edgebundle", os.urandom(6 * 1024 * 1024))
    proc = cli("--root", small_root, "install", http_server.url("/big.edgebundle"), "--json")
    doc = as_json(proc)
    assert proc.returncode == 6, doc
    assert doc["error"] == "disk_full"
    assert list((small_root / "downloads").iterdir()) == []
    assert as_json(cli("--root", small_root, "status", "--json"))["models"][MODEL]["active"] == "1.0.0"


def test_endless_download_on_a_small_disk_leaves_nothing(small_root: Path, http_server: BundleServer) -> None:
    http_server.add("/endless", Route(b"", extra_bytes=64 * 1024 * 1024))  # chunked, no length, "never" ends
    proc = cli("--root", small_root, "install", http_server.url("/endless"), "--json")
    doc = as_json(proc)
    assert proc.returncode == 6, doc
    assert list((small_root / "downloads").iterdir()) == []
    assert cli("--root", small_root, "status").returncode == 0


# --- a slow server cannot hold the device lock ------------------------------------------------------


def test_a_dripping_download_is_cut_and_an_operator_rollback_gets_through(
    release: Release, tmp_path: Path, http_server: BundleServer
) -> None:
    root = tmp_path / "dev"
    assert cli("--root", root, "init", "--trusted-key", release.keys[0].public_path).returncode == 0
    for v in ("1.0.0", "1.1.0"):
        assert cli("--root", root, "install", release.bundle(v)).returncode == 0
    # one byte every 0.5 s never trips a 1 s stall timeout; only the minimum rate can end it
    http_server.add("/drip", Route(os.urandom(300_000), drip_interval=0.5, drip_bytes=1))
    t0 = time.monotonic()
    install = subprocess.Popen(
        [str(EXE), "--root", str(root), "--json", "install", http_server.url("/drip"), "--read-timeout", "1",
         "--download-setting", "min_rate=100", "--download-setting", "rate_window_s=1",
         "--download-setting", "rate_grace_s=2"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        # the install takes the device lock before it connects: once the server saw the request, the lock is held
        while not http_server.requests_for("/drip") and install.poll() is None and time.monotonic() - t0 < 30:
            time.sleep(0.05)
        seen_busy = False
        while time.monotonic() - t0 < 30:
            rb = cli("--root", root, "--json", "rollback", MODEL)
            if rb.returncode == 75:
                seen_busy = True
                assert as_json(rb)["error"] == "locked"
                time.sleep(0.2)
                continue
            break
        elapsed = time.monotonic() - t0
        out, err = install.communicate(timeout=30)
    finally:
        if install.poll() is None:
            install.kill()
            install.wait()
    assert seen_busy, "the rollback never met the install holding the lock"
    assert rb.returncode == 0, rb.stdout + rb.stderr
    assert as_json(rb)["active"] == "1.0.0"
    assert elapsed < 20, elapsed  # bounded by the rate rule, not by the 300 000 bytes at 2 bytes/s (42 h)
    assert install.returncode == 5, err
    assert json.loads(out)["error"] == "download_too_slow"


# --- edge-release follows the same conventions -------------------------------------------------------

RELEASE = Path(sys.executable).with_name("edge-release")


def test_edge_release_takes_json_after_the_command_and_never_prefix_matches(release: Release) -> None:
    after = subprocess.run([str(RELEASE), "inspect", str(release.bundle("1.0.0")), "--json"],
                           capture_output=True, text=True, timeout=60, check=False)
    assert after.returncode == 0, after.stderr
    assert json.loads(after.stdout)
    abbrev = subprocess.run([str(RELEASE), "inspect", str(release.bundle("1.0.0")), "--js"],
                            capture_output=True, text=True, timeout=60, check=False)
    assert abbrev.returncode == 2
    helptext = subprocess.run([str(RELEASE), "--help"], capture_output=True, text=True, timeout=60, check=False).stdout
    listed = {int(m) for m in re.findall(r"(?m)^\s+(\d+)\s{2,}\S", helptext.split("exit codes:")[1])}
    assert listed <= set(EXIT_CODES)
    assert {0, 2, 3} <= listed


# --- more of each class: read-only disks, leftovers, redirects through the device's settings --------------


def test_status_and_facts_keep_working_on_a_read_only_disk(small_root: Path, release: Release) -> None:
    subprocess.run(["mount", "-o", "remount,ro", str(small_root.parent)], check=True, timeout=10)
    try:
        st = cli("--root", small_root, "status", "--json")
        assert st.returncode == 0, st.stderr
        facts = cli("--root", small_root, "facts", "--json")
        assert facts.returncode == 0, facts.stderr
        assert "facts not written" in facts.stderr
        inst = cli("--root", small_root, "install", release.bundle("1.1.0"), "--json")
        assert inst.returncode == 6, inst.stdout + inst.stderr  # a storage error, said plainly
        assert as_json(inst)["ok"] is False
    finally:
        subprocess.run(["mount", "-o", "remount,rw", str(small_root.parent)], check=False, timeout=10)


def test_stale_partials_and_crash_leftovers_are_removed_by_the_next_download(
    device_root: Path, release: Release, http_server: BundleServer
) -> None:
    downloads = device_root / "downloads"
    downloads.mkdir(exist_ok=True)
    old = time.time() - 10 * 24 * 3600
    stale = downloads / "0123456789abcdef.edgebundle.part"
    stale.write_bytes(b"x" * 1000)
    (downloads / "0123456789abcdef.edgebundle.part.json").write_text("{}")
    os.utime(stale, (old, old))
    leftover = downloads / "fedcba9876543210.edgebundle"  # a finished download a crash left behind
    leftover.write_bytes(b"y")
    http_server.add("/b.edgebundle", release.bundle("1.0.0").read_bytes())
    proc = cli("--root", device_root, "install", http_server.url("/b.edgebundle"), "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert list(downloads.iterdir()) == []


def test_redirects_follow_the_devices_allowed_hosts(device_root: Path, release: Release) -> None:
    with BundleServer() as origin, BundleServer() as mirror:
        mirror.add("/b.edgebundle", release.bundle("1.0.0").read_bytes())
        origin.add("/b.edgebundle", Route(b"", redirect_to=mirror.url("/b.edgebundle")))
        refused = cli("--root", device_root, "install", origin.url("/b.edgebundle"), "--json")
        assert refused.returncode == 5, refused.stdout
        assert as_json(refused)["error"] == "redirect_refused"
        assert mirror.requests_for("/b.edgebundle") == []
        port = mirror.url("/").rsplit(":", 1)[1].split("/")[0]
        key = release.keys[0].public_path
        assert cli("--root", device_root, "init", "--trusted-key", key,
                   "--download-setting", f'allowed_redirect_hosts=["127.0.0.1:{port}"]').returncode == 0
        ok = cli("--root", device_root, "install", origin.url("/b.edgebundle"), "--json")
        assert ok.returncode == 0, ok.stdout + ok.stderr
        assert as_json(ok)["active"] == "1.0.0"


@pytest.mark.parametrize("bad", [["--read-timeout", "0"], ["--retries", "-1"], ["--download-setting", "min_rate=0"],
                                 ["--download-setting", "nonsense=1"]])
def test_bad_download_option_of_install_is_a_usage_error_that_changes_nothing(
    device_root: Path, release: Release, bad: list[str]
) -> None:
    before = sorted(p.relative_to(device_root) for p in device_root.rglob("*"))
    proc = cli("--root", device_root, "--json", "install", "http://127.0.0.1:9/b.edgebundle", *bad)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert as_json(proc)["error"] == "config"
    assert sorted(p.relative_to(device_root) for p in device_root.rglob("*")) == before

"""The attack suite: TUF's attack classes and the fault classes, against the real ``edge-runtime`` CLI.

Organised by the attacks python-tuf's specification names (arbitrary installation, endless data,
extraneous dependencies, fast-forward, freeze and indefinite freeze, malicious mirrors, mix-and-match,
rollback, slow retrieval, key compromise) plus the faults a device meets (hanging, crashing and
NaN-producing models, corrupt kept versions, full disks, hostile headers). Every test runs the
installed console script in a child process (:func:`tests.support.attacks.run_cli`) and asserts the
same invariant:

* an exit code from the documented set (``edge_runtime._cli_common.EXIT_CODES``), the expected one;
* no traceback, strict JSON on stdout;
* bounded time (the child is killed and the test fails on its deadline) and bounded peak memory
  (RSS of the whole process tree, and an address-space cap);
* the device root byte-identical (a hash of every path, mode, link and file) when the input is
  refused, or else a valid state: ``status`` says committed or degraded and ``verify`` agrees;
* the reason recorded: in the error, or in the state (``last``, ``bad``, ``degraded``).
"""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edge_runtime.device import Device
from tests.support.attacks import (
    CliRun,
    Hostile,
    HostileServer,
    active_version,
    add_stray_file,
    clone_device,
    corrupt_file,
    installed_device,
    model_state,
    pinned_digest,
    run_cli,
    strict_json,
    tree_digest,
)
from tests.support.factory import MODEL, Release, rewrite_bundle

#: what the "unchanged" hash leaves out: the lock file's holder line and the facts (rewritten by design)
VOLATILE = ("lock", "facts/")
STATE_JSON = f"models/{MODEL}/state.json"
#: downloads/ may keep a resumable partial after a network failure (bounded by count and age, R3)
NETWORK_VOLATILE = (*VOLATILE, "downloads/")


# --- fixtures ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def templates(release: Release, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Device roots prepared once per module and cloned per test."""
    base = tmp_path_factory.mktemp("attack-templates")
    two = installed_device(release, base / "two", [release.bundle("1.0.0"), release.bundle("1.1.0")])
    both = release.custom("both.edgebundle", "1.0.0", keys=release.keys[:2])
    multi = installed_device(release, base / "threshold", [both], threshold=2, trusted=3)
    return {"two": two.root, "threshold": multi.root}


@pytest.fixture
def device(templates: dict[str, Path], tmp_path: Path) -> Device:
    """1.0.0 then 1.1.0 committed (1.1.0 active, 1.0.0 kept), one trusted key."""
    return clone_device(templates["two"], tmp_path / "dev")


@pytest.fixture
def server() -> Iterator[HostileServer]:
    with HostileServer({}) as srv:
        yield srv


def refused(dev: Device, r: CliRun, before: str, *, rc: int | set[int], errors: set[str], words: tuple[str, ...] = (),
            skip: tuple[str, ...] = VOLATILE, max_rss_mib: int = 512) -> None:
    """The invariant for hostile input: the documented refusal, and nothing on the device changed."""
    r.assert_clean(max_rss_mib=max_rss_mib)
    assert r.rc in ({rc} if isinstance(rc, int) else rc), (r.rc, r.out, r.stderr)
    assert r.out.get("ok") is False, r.out
    assert r.out.get("error") in errors, r.out
    for w in words:
        assert w in r.out["message"], r.out
    assert r.out.get("hint"), r.out
    assert tree_digest(dev.root, skip=skip) == before, "the device changed although the input was refused"
    assert active_version(dev) == "1.1.0"


def valid_after(dev: Device, *, states: tuple[str, ...] = ("committed",)) -> dict[str, Any]:
    """The invariant after a fault: status answers, in an allowed state, and verify agrees with it."""
    st = run_cli(dev.root, "status")
    st.assert_clean()
    assert st.rc == 0, st.out
    m: dict[str, Any] = st.out["models"][MODEL]
    assert m["state"] in states, m
    v = run_cli(dev.root, "verify", MODEL) if m["active"] else None
    if v is not None:
        assert v.rc == 0, ("status names an active version that does not verify", v.out)
    return m


def install(dev: Device, source: str | Path, *args: str, timeout: float = 60.0, **kw: Any) -> CliRun:
    return run_cli(dev.root, "install", str(source), *args, timeout=timeout, **kw)


def edited(release: Release, tmp_path: Path, version: str, member: str, fn: Any) -> Path:
    return rewrite_bundle(release.bundle(version), tmp_path / "edited.edgebundle",
                          lambda n, d: fn(d) if n == member else d)


def flip_last(data: bytes) -> bytes:
    return data[:-1] + bytes([data[-1] ^ 1])


def member(bundle: Path, name: str) -> bytes:
    with tarfile.open(bundle) as t:
        f = t.extractfile(name)
        assert f is not None
        return f.read()


# --- arbitrary installation ---------------------------------------------------------------------------


def test_arbitrary_installation_signed_by_an_unknown_key_is_refused(
    device: Device, release: Release
) -> None:
    b = release.custom("stranger.edgebundle", "1.1.0", "--model-version", "2.0.0", "--counter", "20",
                       keys=[release.stranger])
    before = tree_digest(device.root, skip=VOLATILE)
    refused(device, install(device, b), before, rc=3, errors={"signature"}, words=("unknown key",))


@pytest.mark.parametrize("what", ["model.tflite", "golden.npz"])
def test_arbitrary_installation_of_a_file_changed_after_signing_is_refused(
    device: Device, release: Release, tmp_path: Path, what: str
) -> None:
    b = edited(release, tmp_path, "1.2.0", what, flip_last)
    before = tree_digest(device.root, skip=VOLATILE)
    refused(device, install(device, b), before, rc=3, errors={"integrity"}, words=(what,))


def test_arbitrary_installation_with_signatures_stripped_is_refused(
    device: Device, release: Release, tmp_path: Path
) -> None:
    def strip(data: bytes) -> bytes:
        doc = json.loads(data)
        doc["signatures"] = []
        return json.dumps(doc).encode()

    b = edited(release, tmp_path, "1.2.0", "manifest.json", strip)
    before = tree_digest(device.root, skip=VOLATILE)
    refused(device, install(device, b), before, rc=3, errors={"signature"}, words=("no signature",))


# --- extraneous dependencies ------------------------------------------------------------------------------


def test_extraneous_file_in_a_bundle_is_refused(device: Device, release: Release, tmp_path: Path) -> None:
    info = tarfile.TarInfo("postinst.sh")
    info.size = 10
    b = rewrite_bundle(release.bundle("1.2.0"), tmp_path / "b", lambda n, d: d, extra=[(info, b"rm -rf /\n\n")])
    before = tree_digest(device.root, skip=VOLATILE)
    refused(device, install(device, b), before, rc=3, errors={"integrity", "bundle_format", "unsafe_bundle"},
            words=("postinst.sh",))


def test_extraneous_file_planted_in_a_kept_version_blocks_rollback_to_it(device: Device) -> None:
    add_stray_file(device, "1.0.0", "libevil.so")
    r = run_cli(device.root, "rollback", MODEL)
    r.assert_clean()
    assert (r.rc, r.out["error"]) == (1, "rollback"), r.out
    assert "libevil.so" in r.out["message"]
    assert active_version(device) == "1.1.0"
    m = valid_after(device, states=("degraded",))
    assert m["previous"] is None
    assert "libevil.so" in m["degraded"]["reason"]


# --- mix-and-match ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("manifest_of", "files_of"), [("1.1.0", "1.0.0"), ("1.0.0", "1.1.0")])
def test_mix_and_match_of_two_signed_releases_is_refused(
    device: Device, release: Release, tmp_path: Path, manifest_of: str, files_of: str
) -> None:
    # a new version number for the manifest side, so the refusal cannot come from "already installed"
    signed = release.custom(f"m{manifest_of}.edgebundle", manifest_of, "--model-version", "2.0.0", "--counter", "20")
    other = release.bundle(files_of)
    b = rewrite_bundle(signed, tmp_path / "mix.edgebundle",
                       lambda n, d: d if n == "manifest.json" else member(other, n))
    before = tree_digest(device.root, skip=VOLATILE)
    refused(device, install(device, b), before, rc=3, errors={"integrity"})


# --- malicious mirrors -------------------------------------------------------------------------------------


def test_malicious_mirror_serving_another_models_bundle_is_refused(
    device: Device, release: Release, server: HostileServer
) -> None:
    server.routes["/models/other-model.edgebundle"] = Hostile("body", release.bundle("1.2.0").read_bytes())
    before = tree_digest(device.root, skip=NETWORK_VOLATILE)
    r = install(device, server.url("/models/other-model.edgebundle"), "--model", "other-model")
    refused(device, r, before, rc=4, errors={"model_name"}, skip=NETWORK_VOLATILE)


def test_malicious_mirror_serving_another_build_than_the_pin_is_refused(
    device: Device, release: Release, server: HostileServer
) -> None:
    pinned = release.custom("v2.edgebundle", "1.1.0", "--model-version", "2.0.0", "--counter", "20")
    rebuilt = release.custom("v2-other.edgebundle", "1.2.0", "--model-version", "2.0.0", "--counter", "20")
    digest = pinned_digest(pinned)
    server.routes["/v2.edgebundle"] = Hostile("body", rebuilt.read_bytes())
    before = tree_digest(device.root, skip=NETWORK_VOLATILE)
    r = install(device, server.url("/v2.edgebundle"), "--expect-digest", digest)
    r.assert_clean()
    assert r.rc == 3, r.out
    assert r.out["error"] in {"integrity", "signature"}
    assert tree_digest(device.root, skip=NETWORK_VOLATILE) == before


def test_malicious_mirror_redirecting_to_another_host_is_refused(
    device: Device, release: Release, server: HostileServer
) -> None:
    server.routes["/b"] = Hostile("redirect", location="http://127.0.0.2:9/b")
    before = tree_digest(device.root, skip=NETWORK_VOLATILE)
    r = install(device, server.url("/b"), "--retries", "0", timeout=30)
    refused(device, r, before, rc=5, errors={"redirect_refused"}, words=("another host",), skip=NETWORK_VOLATILE)


# --- rollback (downgrade) --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("version", "counter", "rc", "error"),
    [
        ("0.9.0", "0", 3, "downgrade"),  # an old release, no longer kept
        ("3.0.0", "1", 3, "downgrade"),  # a higher version string does not beat a lower counter
        ("1.1.0", "2", 4, "immutable_version"),  # the active version number with other content
    ],
)
def test_rollback_attack_with_an_older_release_is_refused(
    device: Device, release: Release, version: str, counter: str, rc: int, error: str
) -> None:
    b = release.custom(f"old-{version}-{counter}.edgebundle", "1.0.0", "--model-version", version,
                       "--counter", counter)
    before = tree_digest(device.root, skip=VOLATILE)
    refused(device, install(device, b), before, rc=rc, errors={error})


# --- fast-forward --------------------------------------------------------------------------------------


def test_fast_forward_by_a_release_that_fails_does_not_lock_out_later_releases(
    device: Device, release: Release
) -> None:
    # A trusted but broken release with a huge counter is rolled back: the counter it carried must not
    # become the device's floor, or every later legitimate release would be refused as a downgrade.
    jump = release.custom("jump.edgebundle", "1.2.0", "--model-version", "99.0.0", "--counter", str(2**40))
    r = install(device, jump)
    r.assert_clean()
    assert r.rc == 8, r.out
    assert model_state(device.root)["highest_counter"] == 2
    nxt = release.custom("v2.edgebundle", "1.1.0", "--model-version", "2.0.0", "--counter", "20")
    r = install(device, nxt)
    assert r.rc == 0, r.out
    assert valid_after(device)["active"] == "2.0.0"


def test_fast_forward_signed_by_a_revoked_key_is_refused(
    device: Device, release: Release
) -> None:
    # keys[0] is compromised: the device is re-initialised to trust keys[1] only
    r = run_cli(device.root, "init", "--trusted-key", str(release.keys[1].public_path))
    assert r.rc == 0, r.out
    jump = release.custom("jump0.edgebundle", "1.1.0", "--model-version", "99.0.0", "--counter", str(2**40))
    before = tree_digest(device.root, skip=VOLATILE)
    refused(device, install(device, jump), before, rc=3, errors={"signature"})
    # Versions signed by the revoked key no longer verify: the rollback is refused, and as the active
    # copy fails the same check, no model signed by the revoked key is left serving (fail closed).
    r = run_cli(device.root, "rollback", MODEL)
    r.assert_clean()
    assert (r.rc, r.out["error"]) == (1, "rollback"), r.out
    assert active_version(device) is None
    m = valid_after(device, states=("degraded",))
    assert "signature" in m["degraded"]["reason"]


# --- key compromise (below the threshold) ------------------------------------------------------------------


def _relabel(data: bytes, old: str, new: str) -> bytes:
    doc = json.loads(data)
    for sig in doc["signatures"]:
        if sig["keyid"] == old:
            sig["keyid"] = new
    return json.dumps(doc).encode()


def _dup_signature(data: bytes) -> bytes:
    doc = json.loads(data)
    doc["signatures"] = doc["signatures"] * 3
    return json.dumps(doc).encode()


@pytest.mark.parametrize(
    "how", ["one-trusted-key", "same-key-three-times", "trusted-plus-stranger", "stranger-claims-a-trusted-keyid"]
)
def test_key_compromise_below_the_threshold_is_refused(
    templates: dict[str, Path], release: Release, tmp_path: Path, how: str
) -> None:
    dev = clone_device(templates["threshold"], tmp_path / "dev")
    args = ("--model-version", "2.0.0", "--counter", "20")
    if how == "one-trusted-key":
        b = release.custom("one.edgebundle", "1.1.0", *args, keys=[release.keys[0]])
    elif how == "same-key-three-times":
        one = release.custom("one.edgebundle", "1.1.0", *args, keys=[release.keys[0]])
        b = rewrite_bundle(one, tmp_path / "dup.edgebundle",
                           lambda n, d: _dup_signature(d) if n == "manifest.json" else d)
    elif how == "trusted-plus-stranger":
        b = release.custom("mixed.edgebundle", "1.1.0", *args, keys=[release.keys[0], release.stranger])
    else:  # the stranger's signature relabelled with keys[1]'s id: it must not count for keys[1]
        mixed = release.custom("mixed.edgebundle", "1.1.0", *args, keys=[release.keys[0], release.stranger])
        b = rewrite_bundle(mixed, tmp_path / "spoof.edgebundle",
                           lambda n, d: _relabel(d, release.stranger.keyid, release.keys[1].keyid)
                           if n == "manifest.json" else d)
    before = tree_digest(dev.root, skip=VOLATILE)
    r = install(dev, b)
    r.assert_clean()
    assert (r.rc, r.out["error"]) == (3, "signature"), r.out
    assert "2 required" in r.out["message"]
    assert tree_digest(dev.root, skip=VOLATILE) == before


def test_key_threshold_met_by_two_distinct_keys_installs(
    templates: dict[str, Path], release: Release, tmp_path: Path
) -> None:
    """The control for the test above: the same release signed by two trusted keys is accepted."""
    dev = clone_device(templates["threshold"], tmp_path / "dev")
    b = release.custom("two.edgebundle", "1.1.0", "--model-version", "2.0.0", "--counter", "20",
                       keys=[release.keys[1], release.keys[2]])
    r = install(dev, b)
    assert r.rc == 0, r.out


# --- freeze and indefinite freeze ----------------------------------------------------------------------


def test_freeze_with_an_expired_manifest_is_refused(device: Device, release: Release) -> None:
    b = release.custom("expired.edgebundle", "1.1.0", "--model-version", "2.0.0", "--counter", "20",
                       "--created", "2020-01-01T00:00:00Z", "--expires-in-days", "1")
    before = tree_digest(device.root, skip=VOLATILE)
    refused(device, install(device, b), before, rc=3, errors={"expired"}, words=("expired",))


def test_indefinite_freeze_replaying_the_old_release_for_a_new_pin_is_refused(
    device: Device, release: Release, server: HostileServer
) -> None:
    # The registry keeps answering with the release the device already runs instead of the pinned new one.
    pinned = release.custom("v2.edgebundle", "1.1.0", "--model-version", "2.0.0", "--counter", "20")
    digest = pinned_digest(pinned)
    server.routes["/defect-classifier/2.0.0.edgebundle"] = Hostile("body", release.bundle("1.1.0").read_bytes())
    before = tree_digest(device.root, skip=NETWORK_VOLATILE)
    r = install(device, server.url("/defect-classifier/2.0.0.edgebundle"), "--expect-digest", digest)
    refused(device, r, before, rc=3, errors={"integrity"}, words=("pinned",), skip=NETWORK_VOLATILE)


# --- endless data --------------------------------------------------------------------------------------


def test_endless_data_without_a_declared_length_is_cut_at_the_cap(device: Device, server: HostileServer) -> None:
    server.routes["/endless"] = Hostile("endless")
    before = tree_digest(device.root, skip=NETWORK_VOLATILE)
    r = install(device, server.url("/endless"), "--retries", "0", "--download-setting", "max_bytes=4194304",
                timeout=60)
    refused(device, r, before, rc=5, errors={"download_too_large"}, skip=NETWORK_VOLATILE, max_rss_mib=200)
    assert sum(p.stat().st_size for p in (device.root / "downloads").rglob("*") if p.is_file()) == 0


def test_endless_data_beyond_the_expected_size_is_cut(
    device: Device, release: Release, server: HostileServer
) -> None:
    size = release.bundle("1.2.0").stat().st_size
    server.routes["/endless"] = Hostile("endless")
    before = tree_digest(device.root, skip=NETWORK_VOLATILE)
    r = install(device, server.url("/endless"), "--retries", "0", "--expect-size", str(size), timeout=60)
    refused(device, r, before, rc=5, errors={"download_too_large"}, skip=NETWORK_VOLATILE, max_rss_mib=200)


def test_endless_data_declaring_a_length_larger_than_the_disk_is_refused_before_fetching(
    device: Device, server: HostileServer
) -> None:
    server.routes["/huge"] = Hostile("endless", declared=10**13)
    before = tree_digest(device.root, skip=NETWORK_VOLATILE)
    r = install(device, server.url("/huge"), "--retries", "0", timeout=60)
    refused(device, r, before, rc=5, errors={"download_too_large"}, words=("declares",), skip=NETWORK_VOLATILE,
            max_rss_mib=200)


# --- slow retrieval --------------------------------------------------------------------------------------


def test_slow_retrieval_dripping_bytes_is_cut_by_the_minimum_rate(
    device: Device, release: Release, server: HostileServer
) -> None:
    # 20 bytes/s, each byte well inside the 2 s stall timeout: only the minimum-rate rule can end it
    server.routes["/drip"] = Hostile("drip", release.bundle("1.2.0").read_bytes(), interval=0.05)
    before = tree_digest(device.root, skip=NETWORK_VOLATILE)
    t0 = time.monotonic()
    r = install(device, server.url("/drip"), "--retries", "0", "--read-timeout", "2",
                "--download-setting", "min_rate=4096", "--download-setting", "rate_grace_s=1",
                "--download-setting", "rate_window_s=1", timeout=30)
    refused(device, r, before, rc=5, errors={"download_too_slow"}, skip=NETWORK_VOLATILE)
    assert time.monotonic() - t0 < 20
    # the lock is free again: the device answers at once
    assert run_cli(device.root, "status", timeout=10).rc == 0


@pytest.mark.parametrize("pinned", [True, False], ids=["with-expected-size", "no-size"])
def test_slow_retrieval_of_the_response_head_is_cut(device: Device, server: HostileServer, pinned: bool) -> None:
    # a slow-loris head: one header line per second, each inside the read timeout, never a body
    server.routes["/head"] = Hostile("header-drip", interval=1.0)
    size = ("--expect-size", "10240") if pinned else ()
    before = tree_digest(device.root, skip=NETWORK_VOLATILE)
    t0 = time.monotonic()
    r = install(device, server.url("/head"), "--retries", "0", "--read-timeout", "2", *size,
                "--download-setting", "min_rate=4096", "--download-setting", "deadline_allowance_s=3",
                "--download-setting", "rate_grace_s=2", "--download-setting", "rate_window_s=2", timeout=40)
    refused(device, r, before, rc=5, errors={"download_too_slow"}, skip=NETWORK_VOLATILE)
    assert time.monotonic() - t0 < 15, "the deadline or the minimum rate must end it, not the header count"


# --- hostile headers ----------------------------------------------------------------------------------------


def test_hostile_tar_header_huge_pax_record_is_refused_with_bounded_memory(
    device: Device, release: Release, tmp_path: Path
) -> None:
    src = release.bundle("1.2.0")
    out = tmp_path / "pax.edgebundle"
    with tarfile.open(src) as tin, tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as tout:
        for i, m in enumerate(tin.getmembers()):
            f = tin.extractfile(m)
            data = f.read() if f else b""
            info = tarfile.TarInfo(m.name)
            info.size = len(data)
            if i == 0:
                info.pax_headers = {"comment": "A" * (64 << 20)}
            tout.addfile(info, io.BytesIO(data))
    before = tree_digest(device.root, skip=VOLATILE)
    refused(device, install(device, out), before, rc=3, errors={"bundle_format", "unsafe_bundle"},
            max_rss_mib=150)


def test_hostile_tar_header_gnu_long_name_is_refused_with_bounded_memory(
    device: Device, release: Release, tmp_path: Path
) -> None:
    out = tmp_path / "gnu.edgebundle"
    with tarfile.open(release.bundle("1.2.0")) as tin, tarfile.open(out, "w", format=tarfile.GNU_FORMAT) as tout:
        first = tarfile.TarInfo("x" * (16 << 20))
        first.size = 1
        tout.addfile(first, io.BytesIO(b"x"))
        for m in tin.getmembers():
            data = member(release.bundle("1.2.0"), m.name)
            info = tarfile.TarInfo(m.name)
            info.size = len(data)
            tout.addfile(info, io.BytesIO(data))
    before = tree_digest(device.root, skip=VOLATILE)
    refused(device, install(device, out), before, rc=3, errors={"bundle_format"}, max_rss_mib=150)


@pytest.mark.parametrize(
    ("path", "content", "rc", "error"),
    [
        (STATE_JSON, b"[" * 100_000, 1, "state_corrupt"),
        (STATE_JSON, b'{"schema": 1, "active": "1' + b"0" * 5000 + b'"}', 1, "state_corrupt"),
        (STATE_JSON, b"\xff\xfe not utf-8", 1, "state_corrupt"),
        ("config.json", b"[" * 100_000, 2, "config"),
    ],
    ids=["state-deep", "state-huge-number", "state-not-utf8", "config-deep"],
)
def test_hostile_local_state_is_a_typed_error_and_changes_nothing(
    device: Device, path: str, content: bytes, rc: int, error: str
) -> None:
    (device.root / path).write_bytes(content)
    before = tree_digest(device.root, skip=VOLATILE)
    for cmd in (("status",), ("verify", MODEL), ("rollback", MODEL)):
        r = run_cli(device.root, *cmd, timeout=30)
        r.assert_clean(max_rss_mib=150)
        assert (r.rc, r.out.get("error")) == (rc, error), (cmd, r.out)
    assert tree_digest(device.root, skip=VOLATILE) == before


def test_hostile_manifest_json_nested_ten_thousand_deep_is_refused(
    device: Device, release: Release, tmp_path: Path
) -> None:
    b = edited(release, tmp_path, "1.2.0", "manifest.json", lambda d: b"[" * 100_000 + b"]" * 100_000)
    before = tree_digest(device.root, skip=VOLATILE)
    refused(device, install(device, b), before, rc=3, errors={"bundle_format"}, max_rss_mib=150)


@pytest.mark.parametrize(("count", "value_len"), [(20_000, 8), (1, 1 << 20)], ids=["many", "long"])
def test_hostile_http_headers_are_refused_with_bounded_memory(
    device: Device, release: Release, server: HostileServer, count: int, value_len: int
) -> None:
    server.routes["/h"] = Hostile("headers", release.bundle("1.2.0").read_bytes(), count=count, value_len=value_len)
    before = tree_digest(device.root, skip=NETWORK_VOLATILE)
    r = install(device, server.url("/h"), "--retries", "0", timeout=30)
    refused(device, r, before, rc=5, errors={"http_headers"}, skip=NETWORK_VOLATILE, max_rss_mib=200)


# --- faults: hanging, crashing and NaN-producing models -----------------------------------------------------


def test_hanging_model_times_out_and_the_device_answers(device: Device, release: Release) -> None:
    r = install(device, release.bundle("1.4.0"), timeout=90)
    r.assert_clean()
    assert (r.rc, r.out["result"]) == (8, "rolled_back"), r.out
    assert "timed out after" in r.out["reason"]
    assert active_version(device) == "1.1.0"
    assert "timed out after" in model_state(device.root)["bad"]["1.4.0"]["reason"]
    valid_after(device)


def test_crashing_model_is_a_failed_smoke_test_not_a_crashed_runtime(device: Device, release: Release) -> None:
    from edge_runtime._smoke_proc import SMOKE_FAULT_ENV  # injected: no valid model segfaults reliably

    nxt = release.custom("v2.edgebundle", "1.1.0", "--model-version", "2.0.0", "--counter", "20")
    r = install(device, nxt, env={SMOKE_FAULT_ENV: "segv@smoke.invoke"})
    r.assert_clean()
    assert (r.rc, r.out["result"]) == (8, "rolled_back"), r.out
    assert "SIGSEGV" in r.out["reason"]
    assert "SIGSEGV" in model_state(device.root)["bad"]["2.0.0"]["reason"]
    valid_after(device)


def test_nan_producing_model_is_rolled_back_and_no_nan_reaches_json(device: Device, release: Release) -> None:
    r = install(device, release.bundle("1.5.0"))
    r.assert_clean()  # strict JSON: NaN on stdout would fail here
    assert r.rc == 8, r.out
    assert "non-finite" in r.out["reason"]
    valid_after(device)
    f = run_cli(device.root, "facts")
    f.assert_clean()
    for p in (device.root / "models" / MODEL / "state.json", device.facts_file):
        strict_json(p.read_text())  # raises on NaN/Infinity constants (a reason may *say* NaN, as text)


# --- faults: corrupt kept versions ------------------------------------------------------------------------


def test_corrupt_active_version_with_a_failed_install_lands_on_a_verified_version(
    device: Device, release: Release
) -> None:
    corrupt_file(device, "1.1.0")
    r = install(device, release.bundle("1.2.0"))
    r.assert_clean()
    assert (r.rc, r.out["active"]) == (8, "1.0.0"), r.out
    m = valid_after(device, states=("degraded",))
    assert "cannot roll back to 1.1.0: model.tflite no longer verifies" in m["degraded"]["reason"]
    assert m["previous"] is None


# --- faults: full disks -------------------------------------------------------------------------------------


@pytest.fixture
def tiny_device(release: Release, tmp_path: Path) -> Iterator[Device]:
    """1.0.0 installed on a 3 MiB tmpfs (needs root; skipped elsewhere)."""
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mnt)], check=False,
                      capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        dev = release.device(mnt / "dev")
        assert dev.install(str(release.bundle("1.0.0"))).ok
        yield dev
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_full_disk_is_refused_before_staging_and_leaves_nothing(tiny_device: Device, release: Release) -> None:
    dev = tiny_device
    filler = dev.root.parent / "filler"
    free = shutil.disk_usage(dev.root).free
    filler.write_bytes(bytes(max(free - 1_500_000, 0)))  # room for the download check, not for staging
    before = tree_digest(dev.root, skip=VOLATILE)
    r = install(dev, release.bundle("1.3.0"))
    r.assert_clean()
    assert (r.rc, r.out["error"]) == (6, "disk_full"), r.out
    assert tree_digest(dev.root, skip=VOLATILE) == before
    assert active_version(dev, MODEL) == "1.0.0"


def test_disk_filling_up_while_staging_is_refused_and_leaves_nothing(device: Device, release: Release) -> None:
    # The free-space check passed, then another writer filled the disk mid-copy. That race cannot be
    # arranged reliably with a real file system, so the runtime's ENOSPC fault hook stands in for it.
    before = tree_digest(device.root, skip=VOLATILE)
    r = install(device, release.bundle("1.2.0"), env={"EDGE_RUNTIME_UNSAFE_FAULT_INJECTION": "enospc@stage.write"})
    refused(device, r, before, rc=6, errors={"disk_full"})
    valid_after(device)


def test_full_disk_from_an_endless_download_is_refused_and_the_device_recovers(
    tiny_device: Device, server: HostileServer
) -> None:
    dev = tiny_device
    server.routes["/endless"] = Hostile("endless")
    before = tree_digest(dev.root, skip=NETWORK_VOLATILE)
    r = install(dev, server.url("/endless"), "--retries", "0", timeout=60)
    r.assert_clean(max_rss_mib=200)
    assert (r.rc, r.out["error"]) == (6, "disk_full"), r.out  # the reserve is reached long before max_bytes
    assert tree_digest(dev.root, skip=NETWORK_VOLATILE) == before
    assert not [p for p in (dev.root / "downloads").rglob("*") if p.is_file()], "partial left on a full disk"
    st = run_cli(dev.root, "status")
    assert st.rc == 0, st.out  # never wedged: status works right after


def test_full_disk_declared_by_the_server_is_refused_before_the_first_byte(
    tiny_device: Device, server: HostileServer
) -> None:
    dev = tiny_device
    server.routes["/big"] = Hostile("endless", declared=100 << 20)  # < max_bytes, > the 3 MiB disk
    before = tree_digest(dev.root, skip=NETWORK_VOLATILE)
    r = install(dev, server.url("/big"), "--retries", "0", timeout=60)
    r.assert_clean(max_rss_mib=200)
    assert (r.rc, r.out["error"]) == (6, "disk_full"), r.out
    assert tree_digest(dev.root, skip=NETWORK_VOLATILE) == before
    assert not [p for p in (dev.root / "downloads").rglob("*") if p.is_file()]

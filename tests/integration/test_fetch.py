"""edge_runtime._fetch against a real loopback HTTP server that drops, stalls and lies."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge_runtime._fetch import FetchConfig, fetch, part_path, sidecar_path
from edge_runtime.errors import (
    ConfigError,
    DiskFullError,
    DownloadError,
    DownloadInterruptedError,
    DownloadStalledError,
    DownloadTooLargeError,
    HTTPStatusError,
)
from tests.support.http_server import BundleServer, Route

CHUNK = 16 * 1024
FAST = FetchConfig(connect_timeout=2.0, read_timeout=1.0, retries=1, backoff_s=0.0, chunk_size=CHUNK)
BODY = os.urandom(300 * 1024 + 123)
PATH = "/models/b.edgebundle"


@pytest.fixture
def dest(tmp_path: Path) -> Path:
    return tmp_path / "downloads" / "b.edgebundle"


def leftovers(directory: Path, keep: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p != keep)


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_fetch_downloads_exact_bytes(http_server: BundleServer, dest: Path, chunked: bool) -> None:
    http_server.add(PATH, Route(BODY, chunked=chunked))
    res = fetch(http_server.url(PATH), dest, config=FAST, progress=False)
    assert dest.read_bytes() == BODY
    assert (res.path, res.length, res.resumed_from, res.attempts) == (dest, len(BODY), 0, 1)
    [req] = http_server.requests_for(PATH)
    assert req.range is None


def test_fetch_leaves_no_part_file_after_success(http_server: BundleServer, dest: Path) -> None:
    dest.parent.mkdir(parents=True)
    # a stale partial from another URL must not be spliced in, nor survive
    part_path(dest).write_bytes(b"stale" * 100)
    sidecar_path(dest).write_text(json.dumps({"version": 1, "url": "http://elsewhere/x", "validator": '"x"'}))
    http_server.add(PATH, BODY)
    fetch(http_server.url(PATH), dest, config=FAST, progress=False)
    assert dest.read_bytes() == BODY
    assert leftovers(dest.parent, dest) == []
    [req] = http_server.requests_for(PATH)
    assert req.range is None


def test_fetch_resumes_with_range_after_dropped_connection(http_server: BundleServer, dest: Path) -> None:
    cut = 4 * CHUNK
    route = http_server.add(PATH, Route(BODY, drop_after=cut, fault_requests=1))
    res = fetch(http_server.url(PATH), dest, config=FAST, progress=False)
    first, second = http_server.requests_for(PATH)
    assert first.range is None
    assert second.range == f"bytes={cut}-"
    assert second.if_range == route.strong_etag()
    assert second.status == 206
    assert dest.read_bytes() == BODY
    assert (res.resumed_from, res.attempts) == (cut, 2)


def test_fetch_interrupted_keeps_partial_and_next_run_resumes(http_server: BundleServer, dest: Path) -> None:
    cut = 2 * CHUNK
    http_server.add(PATH, Route(BODY, drop_after=cut, fault_requests=1))
    url = http_server.url(PATH)
    with pytest.raises(DownloadInterruptedError) as exc:
        fetch(url, dest, config=FetchConfig(retries=0, backoff_s=0, chunk_size=CHUNK), progress=False)
    err = exc.value
    assert f"received {cut} of {len(BODY)} bytes" in err.message
    assert "re-running resumes from the partial file" in err.message
    assert err.details["partial"] == str(part_path(dest))
    assert part_path(dest).read_bytes() == BODY[:cut]
    assert not dest.exists()

    res = fetch(url, dest, config=FAST, progress=False)
    assert http_server.requests_for(PATH)[1].range == f"bytes={cut}-"
    assert (res.resumed_from, res.attempts) == (cut, 1)
    assert dest.read_bytes() == BODY
    assert leftovers(dest.parent, dest) == []


def test_fetch_restarts_when_server_ignores_range(http_server: BundleServer, dest: Path) -> None:
    http_server.add(PATH, Route(BODY, ignore_range=True, drop_after=3 * CHUNK, fault_requests=1))
    res = fetch(http_server.url(PATH), dest, config=FAST, progress=False)
    _first, second = http_server.requests_for(PATH)
    assert second.range == f"bytes={3 * CHUNK}-"
    assert second.status == 200
    assert dest.read_bytes() == BODY  # not the first 48 KiB followed by the whole body again
    assert res.resumed_from == 0


def test_fetch_restarts_when_file_changed_on_server(http_server: BundleServer, dest: Path) -> None:
    old = os.urandom(len(BODY))
    http_server.add(PATH, Route(old, drop_after=2 * CHUNK))
    url = http_server.url(PATH)
    with pytest.raises(DownloadInterruptedError):
        fetch(url, dest, config=FetchConfig(retries=0, chunk_size=CHUNK), progress=False)
    http_server.add(PATH, BODY)  # new release, new ETag: If-Range must not match
    res = fetch(url, dest, config=FAST, progress=False)
    assert http_server.requests_for(PATH)[1].range == f"bytes={2 * CHUNK}-"
    assert dest.read_bytes() == BODY
    assert res.resumed_from == 0


def test_fetch_restarts_when_server_sends_206_for_a_changed_file(http_server: BundleServer, dest: Path) -> None:
    http_server.add(PATH, Route(os.urandom(len(BODY)), drop_after=2 * CHUNK))
    url = http_server.url(PATH)
    with pytest.raises(DownloadInterruptedError):
        fetch(url, dest, config=FetchConfig(retries=0, chunk_size=CHUNK), progress=False)
    http_server.add(PATH, Route(BODY, ignore_if_range=True))  # 206 with a new ETag: must not splice
    res = fetch(url, dest, config=FAST, progress=False)
    assert [(r.range, r.status) for r in http_server.requests_for(PATH)[1:]] == [
        (f"bytes={2 * CHUNK}-", 206),
        (None, 200),
    ]
    assert dest.read_bytes() == BODY
    assert res.resumed_from == 0


def test_fetch_treats_short_chunked_body_as_interrupted(http_server: BundleServer, dest: Path) -> None:
    http_server.add(PATH, Route(BODY[: 5 * CHUNK], chunked=True))  # ends cleanly, but too early
    with pytest.raises(DownloadInterruptedError, match=f"received {5 * CHUNK} of {len(BODY)} bytes"):
        fetch(http_server.url(PATH), dest, expected_length=len(BODY), config=FAST, progress=False)
    # the retry resumes, the server has nothing past its end (416), so it restarts from zero
    assert [(r.range, r.status) for r in http_server.requests_for(PATH)] == [
        (None, 200),
        (f"bytes={5 * CHUNK}-", 416),
        (None, 200),
    ]
    assert not dest.exists()


def test_fetch_restarts_from_zero_after_416(http_server: BundleServer, dest: Path) -> None:
    http_server.add(PATH, BODY)
    url = http_server.url(PATH)
    dest.parent.mkdir(parents=True)
    part_path(dest).write_bytes(b"\0" * (len(BODY) + 10))
    etag = http_server.routes[PATH].strong_etag()
    sidecar_path(dest).write_text(json.dumps({"version": 1, "url": url, "validator": etag, "length": None}))
    res = fetch(url, dest, config=FAST, progress=False)
    first, second = http_server.requests_for(PATH)
    assert (first.range, first.status) == (f"bytes={len(BODY) + 10}-", 416)
    assert (second.range, second.status) == (None, 200)
    assert dest.read_bytes() == BODY
    assert res.attempts == 1


@pytest.mark.parametrize("extra", [1, 100_000])
def test_fetch_refuses_more_bytes_than_declared_and_deletes_partial(
    http_server: BundleServer, dest: Path, extra: int
) -> None:
    http_server.add(PATH, Route(BODY, extra_bytes=extra))  # chunked, keeps going past the real size
    with pytest.raises(DownloadTooLargeError, match=f"more than the declared {len(BODY)} bytes"):
        fetch(http_server.url(PATH), dest, expected_length=len(BODY), config=FAST, progress=False)
    assert not dest.exists()
    assert leftovers(dest.parent, dest) == []  # the poisoned .part and its sidecar are gone
    assert len(http_server.requests_for(PATH)) == 1  # not retried


def test_fetch_caps_undeclared_length_at_max_bytes(http_server: BundleServer, dest: Path) -> None:
    http_server.add(PATH, Route(BODY, chunked=True))
    cfg = FetchConfig(retries=0, chunk_size=CHUNK, max_bytes=len(BODY) - 1)
    with pytest.raises(DownloadTooLargeError, match=f"more than {len(BODY) - 1} bytes"):
        fetch(http_server.url(PATH), dest, config=cfg, progress=False)
    assert leftovers(dest.parent, dest) == []


def test_fetch_refuses_content_length_larger_than_expected(http_server: BundleServer, dest: Path) -> None:
    http_server.add(PATH, BODY)
    with pytest.raises(DownloadTooLargeError) as exc:
        fetch(http_server.url(PATH), dest, expected_length=len(BODY) - 1, config=FAST, progress=False)
    assert str(len(BODY)) in exc.value.message
    assert str(len(BODY) - 1) in exc.value.message
    assert not dest.parent.exists() or leftovers(dest.parent, dest) == []  # nothing written
    assert len(http_server.requests_for(PATH)) == 1


def test_fetch_refuses_content_length_smaller_than_expected(http_server: BundleServer, dest: Path) -> None:
    http_server.add(PATH, BODY)
    with pytest.raises(DownloadError) as exc:
        fetch(http_server.url(PATH), dest, expected_length=len(BODY) + 1, config=FAST, progress=False)
    assert type(exc.value) is DownloadError
    assert str(len(BODY)) in exc.value.message
    assert str(len(BODY) + 1) in exc.value.message
    assert leftovers(dest.parent, dest) == []


def test_fetch_stall_raises_stalled_error_and_keeps_partial(http_server: BundleServer, dest: Path) -> None:
    cut = 2 * CHUNK
    http_server.add(PATH, Route(BODY, stall_after=cut, stall_seconds=3.0))
    cfg = FetchConfig(read_timeout=0.5, retries=0, backoff_s=0, chunk_size=CHUNK)
    t0 = time.monotonic()
    with pytest.raises(DownloadStalledError) as exc:
        fetch(http_server.url(PATH), dest, config=cfg, progress=False)
    assert time.monotonic() - t0 < 1.5
    err = exc.value
    assert f"received {cut} of {len(BODY)} bytes" in err.message
    assert "re-running resumes from the partial file" in err.message
    assert err.details["partial"] == str(part_path(dest))
    assert part_path(dest).read_bytes() == BODY[:cut]
    assert sidecar_path(dest).exists()


def test_fetch_retries_after_stall_and_resumes(http_server: BundleServer, dest: Path) -> None:
    cut = 3 * CHUNK
    http_server.add(PATH, Route(BODY, stall_after=cut, stall_seconds=3.0, fault_requests=1))
    cfg = FetchConfig(read_timeout=0.5, retries=1, backoff_s=0, chunk_size=CHUNK)
    res = fetch(http_server.url(PATH), dest, config=cfg, progress=False)
    assert http_server.requests_for(PATH)[1].range == f"bytes={cut}-"
    assert (res.resumed_from, res.attempts) == (cut, 2)
    assert dest.read_bytes() == BODY


def test_fetch_404_is_not_retried(http_server: BundleServer, dest: Path) -> None:
    http_server.add(PATH, Route(BODY, status=404))
    url = http_server.url(PATH)
    with pytest.raises(HTTPStatusError) as exc:
        fetch(url, dest, config=FetchConfig(retries=3, backoff_s=0), progress=False)
    assert "404" in exc.value.message
    assert url in exc.value.message
    assert len(http_server.requests_for(PATH)) == 1


def test_fetch_500_is_retried(http_server: BundleServer, dest: Path) -> None:
    http_server.add(PATH, Route(BODY, status=500, status_requests=1))
    res = fetch(http_server.url(PATH), dest, config=FAST, progress=False)
    assert [r.status for r in http_server.requests_for(PATH)] == [500, 200]
    assert res.attempts == 2
    assert dest.read_bytes() == BODY


def test_fetch_500_gives_up_after_retries_with_exponential_backoff(
    http_server: BundleServer, dest: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sleeps: list[float] = []
    monkeypatch.setattr("edge_runtime._fetch.time.sleep", sleeps.append)
    http_server.add(PATH, Route(BODY, status=503))
    with pytest.raises(HTTPStatusError, match="503") as exc:
        fetch(http_server.url(PATH), dest, config=FetchConfig(retries=3, backoff_s=0.5), progress=False)
    assert len(http_server.requests_for(PATH)) == 4
    assert sleeps == [0.5, 1.0, 2.0]
    assert exc.value.details["attempts"] == 4


@pytest.mark.parametrize(
    "url", ["file:///etc/passwd", "ftp://127.0.0.1/b.edgebundle", "127.0.0.1/b.edgebundle", "http:///nohost"]
)
def test_fetch_rejects_non_http_scheme(dest: Path, url: str) -> None:
    with pytest.raises(ConfigError):
        fetch(url, dest, config=FAST, progress=False)
    assert not dest.exists()


def test_fetch_redacts_credentials_in_errors(http_server: BundleServer, dest: Path) -> None:
    http_server.add(PATH, Route(BODY, status=404))
    url = http_server.url(PATH).replace("http://", "http://user:s3cret@")
    with pytest.raises(HTTPStatusError) as exc:
        fetch(url, dest, config=FAST, progress=False)
    assert "s3cret" not in exc.value.message
    assert "s3cret" not in json.dumps(exc.value.to_dict())


def test_fetch_draws_progress_bar_and_clears_it(
    http_server: BundleServer, dest: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    http_server.add(PATH, BODY)
    fetch(http_server.url(PATH), dest, config=FAST, progress=True)
    err = capsys.readouterr().err
    assert "%" in err
    assert "MiB/s" in err
    assert "ETA" in err
    assert err.endswith("\r")
    assert "\n" not in err


@pytest.fixture
def tiny_fs(tmp_path: Path) -> Iterator[Path]:
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    try:
        proc = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mnt)],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        pytest.skip(f"cannot mount a 256 KiB tmpfs to simulate a full disk: {exc}")
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a 256 KiB tmpfs to simulate a full disk: {proc.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], capture_output=True, timeout=10, check=False)


def test_fetch_disk_full_raises_disk_full_error(http_server: BundleServer, tiny_fs: Path) -> None:
    body = os.urandom(512 * 1024)
    http_server.add(PATH, body)
    dest = tiny_fs / "b.edgebundle"
    with pytest.raises(DiskFullError) as exc:
        fetch(http_server.url(PATH), dest, config=FAST, progress=False)
    assert str(part_path(dest)) in exc.value.message
    assert not dest.exists()
    assert sorted(p.name for p in tiny_fs.iterdir()) in (
        [part_path(dest).name, sidecar_path(dest).name],
        [sidecar_path(dest).name],
    )
    with contextlib.suppress(FileNotFoundError):
        assert part_path(dest).read_bytes() == body[: part_path(dest).stat().st_size]

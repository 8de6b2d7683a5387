"""edge_runtime._fetch against a real loopback HTTP server that drops, stalls and lies."""

from __future__ import annotations

import contextlib
import dataclasses
import ipaddress
import json
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from edge_runtime._fetch import FetchConfig, expire_partials, fetch, part_path, sidecar_path
from edge_runtime.errors import (
    ConfigError,
    DiskFullError,
    DownloadError,
    DownloadInterruptedError,
    DownloadStalledError,
    DownloadTooLargeError,
    DownloadTooSlowError,
    HTTPHeaderError,
    HTTPStatusError,
    RedirectRefusedError,
)
from tests.support.disks import free_bytes, small_tmpfs
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


# --- a download cannot wedge a device: full disks, endless bodies, drips, redirects, hostile heads -----


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 4 MiB file system."""
    with small_tmpfs(tmp_path / "small", "4m") as mnt:
        yield mnt


BIG = os.urandom(6 * 1024 * 1024)  # more than the 4 MiB disk


def test_declared_size_bigger_than_free_space_is_refused_before_writing(
    http_server: BundleServer, small_disk: Path
) -> None:
    http_server.add(PATH, BIG)
    dest = small_disk / "downloads" / "b.edgebundle"
    with pytest.raises(DiskFullError) as exc:
        fetch(http_server.url(PATH), dest, config=dataclasses.replace(FAST, reserve_bytes=0), progress=False)
    assert exc.value.exit_code == 6
    assert f"{len(BIG)} more bytes" in exc.value.message
    assert list(dest.parent.iterdir()) == []  # nothing left behind, not even a sidecar
    assert len(http_server.requests_for(PATH)) == 1


def test_expected_size_bigger_than_free_space_is_refused_before_any_request(
    http_server: BundleServer, small_disk: Path
) -> None:
    http_server.add(PATH, BIG)
    dest = small_disk / "downloads" / "b.edgebundle"
    with pytest.raises(DiskFullError):
        fetch(http_server.url(PATH), dest, expected_length=len(BIG), config=FAST, progress=False)
    assert http_server.requests_for(PATH) == []
    assert list(dest.parent.iterdir()) == []


def test_free_space_check_counts_the_reserve_at_the_threshold(http_server: BundleServer, small_disk: Path) -> None:
    body = os.urandom(256 * 1024)
    http_server.add(PATH, body)
    dest = small_disk / "b.edgebundle"
    free = free_bytes(small_disk)
    # one byte more reserve than fits: refused; exactly what fits: accepted
    with pytest.raises(DiskFullError):
        fetch(http_server.url(PATH), dest, config=dataclasses.replace(FAST, reserve_bytes=free - len(body) + 1),
              progress=False)
    assert sorted(p.name for p in small_disk.iterdir()) == []
    cfg = dataclasses.replace(FAST, reserve_bytes=free - len(body) - 64 * 1024)  # a page of slack for the sidecar
    fetch(http_server.url(PATH), dest, config=cfg, progress=False)
    assert dest.read_bytes() == body


@pytest.mark.parametrize("declared", [False, True], ids=["chunked", "content-length-lie"])
def test_endless_body_on_a_small_disk_stops_at_the_reserve_and_leaves_nothing(
    http_server: BundleServer, small_disk: Path, declared: bool
) -> None:
    # chunked: no length at all, 64 MiB of "endless" body; lie: a small Content-Length check passes, but
    # another writer fills the disk while the body arrives (see the next test): the reserve holds either way
    route = Route(os.urandom(64 * 1024), extra_bytes=64 * 1024 * 1024) if not declared else Route(BIG)
    http_server.add(PATH, route)
    dest = small_disk / "b.edgebundle"
    cfg = dataclasses.replace(FAST, reserve_bytes=1024 * 1024, max_bytes=1 << 30)
    if declared:
        filler = small_disk / "filler"
        filler.write_bytes(b"\0" * (free_bytes(small_disk) - 1024 * 1024 - 512 * 1024))
    before = free_bytes(small_disk)
    with pytest.raises(DiskFullError) as exc:
        fetch(http_server.url(PATH), dest, config=cfg, progress=False)
    assert "reserve" in exc.value.message
    assert not part_path(dest).exists()
    assert not sidecar_path(dest).exists()
    assert free_bytes(small_disk) == before  # every byte it wrote was given back


def test_disk_filled_by_another_writer_mid_download_removes_partial(
    http_server: BundleServer, small_disk: Path
) -> None:
    body = os.urandom(1024 * 1024)
    http_server.add(PATH, Route(body, drip_interval=0.05, drip_bytes=64 * 1024))
    dest = small_disk / "b.edgebundle"
    cfg = dataclasses.replace(FAST, read_timeout=3.0, reserve_bytes=64 * 1024, retries=0)

    def fill_when_started() -> None:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not (part_path(dest).exists() and part_path(dest).stat().st_size):
            time.sleep(0.01)
        with contextlib.suppress(OSError):
            (small_disk / "filler").write_bytes(b"\0" * free_bytes(small_disk))

    filler = threading.Thread(target=fill_when_started)
    filler.start()
    try:
        with pytest.raises(DiskFullError):
            fetch(http_server.url(PATH), dest, config=cfg, progress=False)
    finally:
        filler.join()
    assert sorted(p.name for p in small_disk.iterdir()) == ["filler"]


def test_endless_body_is_cut_at_the_expected_size(http_server: BundleServer, dest: Path) -> None:
    http_server.add(PATH, Route(BODY, extra_bytes=64 * 1024 * 1024))
    t0 = time.monotonic()
    with pytest.raises(DownloadTooLargeError):
        fetch(http_server.url(PATH), dest, expected_length=len(BODY), config=FAST, progress=False)
    assert time.monotonic() - t0 < 5
    assert leftovers(dest.parent, dest) == []


def test_endless_undeclared_body_is_cut_at_max_bytes(http_server: BundleServer, dest: Path) -> None:
    http_server.add(PATH, Route(b"", extra_bytes=64 * 1024 * 1024))
    cfg = dataclasses.replace(FAST, max_bytes=2 * 1024 * 1024)
    with pytest.raises(DownloadTooLargeError, match=f"more than {2 * 1024 * 1024} bytes"):
        fetch(http_server.url(PATH), dest, config=cfg, progress=False)
    assert leftovers(dest.parent, dest) == []


SLOW = dataclasses.replace(FAST, read_timeout=1.0, min_rate=100.0, rate_window_s=1.0, rate_grace_s=1.0, retries=3)


def test_dripping_server_is_cut_by_the_minimum_rate_in_bounded_time(http_server: BundleServer, dest: Path) -> None:
    # one byte every 0.5 s never trips the 1 s stall timeout: only the rate rule can end it
    http_server.add(PATH, Route(BODY, drip_interval=0.5, drip_bytes=1))
    t0 = time.monotonic()
    with pytest.raises(DownloadTooSlowError) as exc:
        fetch(http_server.url(PATH), dest, config=SLOW, progress=False)
    elapsed = time.monotonic() - t0
    assert elapsed < 5, elapsed
    assert "below the minimum of 100 bytes/s" in exc.value.message
    assert exc.value.exit_code == 5
    assert len(http_server.requests_for(PATH)) == 1  # a slow server is not retried


def test_server_dripping_its_headers_is_cut_in_bounded_time(http_server: BundleServer, dest: Path) -> None:
    http_server.add(PATH, Route(BODY, drip_head=True, drip_interval=0.3))
    t0 = time.monotonic()
    with pytest.raises(DownloadTooSlowError):
        fetch(http_server.url(PATH), dest, config=SLOW, progress=False)
    assert time.monotonic() - t0 < 5
    assert leftovers(dest.parent, dest) == []


def test_retries_never_outlast_the_overall_deadline(http_server: BundleServer, dest: Path) -> None:
    # every attempt stalls; ten retries would take > 10 s, the deadline (1 s + size / min_rate) ends it
    http_server.add(PATH, Route(BODY, stall_after=CHUNK, stall_seconds=5.0))
    size = len(BODY)
    cfg = dataclasses.replace(
        FAST, read_timeout=0.5, retries=10, rate_grace_s=60.0, min_rate=size / 1.0, deadline_allowance_s=1.0
    )
    t0 = time.monotonic()
    with pytest.raises(DownloadTooSlowError, match="deadline"):
        fetch(http_server.url(PATH), dest, config=cfg, progress=False)
    assert time.monotonic() - t0 < 4
    assert cfg.deadline_s(size) == pytest.approx(2.0)


def test_rate_at_the_minimum_passes(http_server: BundleServer, dest: Path) -> None:
    # 2 KiB every 0.1 s = 20 KiB/s against a minimum of 10 KiB/s, measured over 0.5 s windows
    body = os.urandom(40 * 1024)
    http_server.add(PATH, Route(body, drip_interval=0.1, drip_bytes=2048))
    cfg = dataclasses.replace(FAST, min_rate=10 * 1024, rate_window_s=0.5, rate_grace_s=0.5)
    fetch(http_server.url(PATH), dest, config=cfg, progress=False)
    assert dest.read_bytes() == body


def test_redirect_on_the_same_host_is_followed(http_server: BundleServer, dest: Path) -> None:
    http_server.add(PATH, BODY)
    http_server.add("/old", Route(b"", redirect_to=PATH, redirect_status=301))
    fetch(http_server.url("/old"), dest, config=FAST, progress=False)
    assert dest.read_bytes() == BODY


@pytest.fixture
def other_server() -> Iterator[BundleServer]:
    with BundleServer() as srv:
        yield srv


def test_redirect_to_another_host_is_refused_unless_allowed(
    http_server: BundleServer, other_server: BundleServer, dest: Path
) -> None:
    other_server.add(PATH, BODY)
    http_server.add("/r", Route(b"", redirect_to=other_server.url(PATH)))
    with pytest.raises(RedirectRefusedError, match="another host") as exc:
        fetch(http_server.url("/r"), dest, config=FAST, progress=False)
    assert exc.value.exit_code == 5
    assert other_server.requests_for(PATH) == []  # never contacted
    assert leftovers(dest.parent, dest) == []
    port = other_server.url("/").split(":")[2].split("/")[0]
    fetch(http_server.url("/r"), dest, config=dataclasses.replace(FAST, allowed_redirect_hosts=(f"127.0.0.1:{port}",)),
          progress=False)
    assert dest.read_bytes() == BODY


@pytest.mark.parametrize("target", ["file:///etc/passwd", "ftp://127.0.0.1/b", "gopher://127.0.0.1:70/x"])
def test_redirect_off_http_is_refused(http_server: BundleServer, dest: Path, target: str) -> None:
    http_server.add("/r", Route(b"", redirect_to=target))
    with pytest.raises(RedirectRefusedError, match="only http and https"):
        fetch(http_server.url("/r"), dest, config=dataclasses.replace(FAST, allowed_redirect_hosts=("127.0.0.1",)),
              progress=False)
    assert leftovers(dest.parent, dest) == []


def test_redirect_loop_is_bounded(http_server: BundleServer, dest: Path) -> None:
    http_server.add("/loop", Route(b"", redirect_to="/loop"))
    with pytest.raises(RedirectRefusedError, match="more than 5 times"):
        fetch(http_server.url("/loop"), dest, config=FAST, progress=False)
    assert len(http_server.requests_for("/loop")) == 6


@pytest.fixture
def tls_files(tmp_path: Path) -> tuple[str, str]:
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return str(cert_path), str(key_path)


def test_redirect_from_https_to_http_is_refused(
    http_server: BundleServer, dest: Path, tls_files: tuple[str, str]
) -> None:
    http_server.add(PATH, BODY)
    with BundleServer(tls=tls_files) as tls_server:
        tls_server.add(PATH, BODY)
        session = requests.Session()
        session.verify = tls_files[0]
        session.trust_env = False  # else REQUESTS_CA_BUNDLE from the environment overrides verify
        # the real https server works ...
        fetch(tls_server.url(PATH), dest, config=FAST, progress=False, session=session)
        assert dest.read_bytes() == BODY
        dest.unlink()
        # ... but never redirects a download to plain http, even to an allowed host
        tls_server.add("/down", Route(b"", redirect_to=tls_server.url(PATH).replace("https://", "http://")))
        cfg = dataclasses.replace(FAST, allowed_redirect_hosts=("127.0.0.1",))
        with pytest.raises(RedirectRefusedError, match="https to http"):
            fetch(tls_server.url("/down"), dest, config=cfg, progress=False, session=session)
    assert not dest.exists()


@pytest.mark.parametrize(
    "headers",
    [
        [(f"X-Flood-{i}", "x") for i in range(150)],  # more headers than http.client reads
        [(f"X-Many-{i}", "y") for i in range(101)],  # one beyond Limits.http_max_headers (100, with ours)
        [("X-Long", "z" * (9 * 1024))],  # one line beyond 8 KiB
        [(f"X-Big-{i}", "w" * 4000) for i in range(20)],  # 80 KiB of head, beyond 64 KiB
    ],
    ids=["150-headers", "101-headers", "9KiB-line", "80KiB-head"],
)
def test_oversized_response_head_is_refused_and_not_retried(
    http_server: BundleServer, dest: Path, headers: list[tuple[str, str]]
) -> None:
    http_server.add(PATH, Route(BODY, extra_headers=headers))
    with pytest.raises(HTTPHeaderError):
        fetch(http_server.url(PATH), dest, config=FAST, progress=False)
    assert len(http_server.requests_for(PATH)) == 1
    assert leftovers(dest.parent, dest) == []


def test_response_head_at_the_limits_is_accepted(http_server: BundleServer, dest: Path) -> None:
    http_server.add(PATH, Route(BODY, extra_headers=[("X-Long", "z" * (8 * 1024 - len("X-Long: ")))]))
    fetch(http_server.url(PATH), dest, config=FAST, progress=False)
    assert dest.read_bytes() == BODY


def test_stale_partials_expire_by_age_and_count(tmp_path: Path) -> None:
    d = tmp_path / "downloads"
    d.mkdir()
    now = time.time()
    for i, age_h in enumerate([1, 2, 3, 100]):
        part = d / f"p{i}.edgebundle.part"
        part.write_bytes(b"x")
        (d / f"p{i}.edgebundle.part.json").write_text("{}")
        os.utime(part, (now - age_h * 3600, now - age_h * 3600))
    (d / "orphan.edgebundle.part.json").write_text("{}")
    cfg = FetchConfig(partial_max_age_s=48 * 3600, partial_max_count=2)
    expire_partials(d, cfg, keep=d / "p2.edgebundle")
    # p3 is too old, the orphan sidecar has no partial; of the rest the current one (p2) and the newest stay
    assert sorted(p.name for p in d.iterdir()) == [
        "p0.edgebundle.part", "p0.edgebundle.part.json", "p2.edgebundle.part", "p2.edgebundle.part.json",
    ]


def test_download_settings_are_validated_with_a_clear_error() -> None:
    with pytest.raises(ConfigError, match="min_rate must be > 0"):
        FetchConfig(min_rate=0)
    with pytest.raises(ConfigError, match="unknown download setting"):
        FetchConfig().with_overrides({"min_rat": 1})
    with pytest.raises(ConfigError, match="wrong type"):
        FetchConfig().with_overrides({"retries": "3"})
    with pytest.raises(ConfigError, match="host"):
        FetchConfig(allowed_redirect_hosts=("evil.example/path",))
    assert FetchConfig().with_overrides({"retries": 0, "read_timeout": None}).retries == 0


def test_with_the_shipped_defaults_a_drip_is_cut_within_seconds(http_server: BundleServer, dest: Path) -> None:
    # only the stall timeout is shortened (to 1 s, which the drip never trips); every other limit is the default
    http_server.add(PATH, Route(BODY, drip_interval=0.5, drip_bytes=1))
    cfg = FetchConfig(read_timeout=1.0)
    t0 = time.monotonic()
    with pytest.raises(DownloadTooSlowError):
        fetch(http_server.url(PATH), dest, config=cfg, progress=False)
    elapsed = time.monotonic() - t0
    assert cfg.rate_grace_s <= elapsed < cfg.rate_grace_s + 5, elapsed

"""Resumable, bounded HTTP(S) download of a bundle to disk.

:func:`fetch` streams a URL into ``<dest>.part`` next to a sidecar ``<dest>.part.json`` that records
the URL, the server's validator (a strong ETag, else Last-Modified) and the declared length. A later
call for the same URL resumes with ``Range`` + ``If-Range``, so a changed file on the server is
downloaded afresh instead of being spliced onto old bytes. When every byte has arrived the file is
fsynced, renamed onto ``dest`` and the directory fsynced; the sidecar is then removed.

Guarantees:

* never more than one chunk in memory, never more bytes on disk than declared (the caller's
  ``expected_length``, else the server's length, else :attr:`FetchConfig.max_bytes`);
* a stall (no byte for ``read_timeout`` seconds) or a dropped connection is retried with exponential
  backoff, resuming from the bytes already on disk;
* every failure is an :class:`~edge_runtime.errors.EdgeRuntimeError` subclass with a hint.

Callers serialise downloads to the same ``dest`` (the device lock does that); two concurrent
:func:`fetch` calls for one destination would interleave writes.
"""

from __future__ import annotations

import contextlib
import errno
import http.client
import json
import logging
import os
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Literal
from urllib.parse import urlsplit, urlunsplit

import requests
import urllib3.exceptions

from ._fsutil import atomic_write_bytes, fsync_dir
from .errors import (
    ConfigError,
    DiskFullError,
    DownloadError,
    DownloadInterruptedError,
    DownloadStalledError,
    DownloadTooLargeError,
    HTTPStatusError,
    StagingError,
)

__all__ = ["FetchConfig", "FetchResult", "fetch", "part_path", "sidecar_path"]

_log = logging.getLogger(__name__)

_SIDECAR_VERSION = 1
_MiB = 1024 * 1024
#: statuses worth retrying: request timeout, rate limiting and every server-side error
_RETRYABLE_STATUS = frozenset({408, 429})
_CONTENT_RANGE = re.compile(r"^\s*bytes\s+(\d+)-(\d+)/(\d+|\*)\s*$", re.IGNORECASE)
#: errors raised while reading a response body: a stall, a reset, a truncated body
_BODY_ERRORS: tuple[type[BaseException], ...] = (
    urllib3.exceptions.HTTPError,  # ReadTimeoutError, ProtocolError, IncompleteRead, SSLError ...
    requests.exceptions.RequestException,  # ChunkedEncodingError, ConnectionError
    http.client.HTTPException,  # http.client.IncompleteRead
    OSError,  # socket.timeout (TimeoutError), ConnectionResetError
)


@dataclass(frozen=True)
class FetchConfig:
    """Limits and retry policy for :func:`fetch`."""

    #: seconds to establish the TCP/TLS connection
    connect_timeout: float = 10.0
    #: a stall longer than this (no byte received) aborts the attempt
    read_timeout: float = 30.0
    #: hard cap when neither the caller nor the server declares a length
    max_bytes: int = 4 * 1024**3
    #: extra attempts after a stall, a drop or a 5xx, each resuming with ``Range``
    retries: int = 3
    #: sleep before retry ``n`` (1-based) is ``backoff_s * 2**(n-1)``
    backoff_s: float = 1.0
    #: bytes read per chunk; also the most the download holds in memory
    chunk_size: int = 1 << 20

    def __post_init__(self) -> None:
        problems = []
        if not self.connect_timeout > 0:
            problems.append(f"connect_timeout must be > 0, got {self.connect_timeout}")
        if not self.read_timeout > 0:
            problems.append(f"read_timeout must be > 0, got {self.read_timeout}")
        if self.max_bytes < 0:
            problems.append(f"max_bytes must be >= 0, got {self.max_bytes}")
        if self.retries < 0:
            problems.append(f"retries must be >= 0, got {self.retries}")
        if not self.backoff_s >= 0:
            problems.append(f"backoff_s must be >= 0, got {self.backoff_s}")
        if self.chunk_size <= 0:
            problems.append(f"chunk_size must be > 0, got {self.chunk_size}")
        if problems:
            raise ConfigError("invalid download settings: " + "; ".join(problems))


@dataclass(frozen=True)
class FetchResult:
    """What :func:`fetch` produced."""

    #: the complete file (``dest``)
    path: Path
    #: its size in bytes
    length: int
    #: the offset the successful attempt resumed from (0: it downloaded every byte itself)
    resumed_from: int
    #: HTTP attempts made, including retries (1 when nothing went wrong)
    attempts: int


def part_path(dest: Path) -> Path:
    """The partial file :func:`fetch` streams into for ``dest``."""
    return dest.with_name(dest.name + ".part")


def sidecar_path(dest: Path) -> Path:
    """The JSON file recording how to resume ``part_path(dest)``."""
    return dest.with_name(dest.name + ".part.json")


def fetch(
    url: str,
    dest: Path,
    *,
    expected_length: int | None = None,
    config: FetchConfig = FetchConfig(),
    progress: bool | None = None,
    session: requests.Session | None = None,
) -> FetchResult:
    """Download ``url`` (http or https) to ``dest``, resuming a partial download of the same URL.

    ``expected_length`` (for example from a release index) overrides whatever the server declares; a
    server declaring another length is refused before any byte is written. ``progress`` draws a
    one-line progress bar on stderr (default: only when stderr is a terminal). ``session`` lets the
    caller supply proxies, CA bundles or authentication; otherwise a private session is used.

    Raises :class:`ConfigError` (bad URL or settings), :class:`HTTPStatusError`,
    :class:`DownloadStalledError`, :class:`DownloadInterruptedError` (the partial file is kept so
    re-running resumes), :class:`DownloadTooLargeError` (the partial file is deleted),
    :class:`DownloadError` (other transfer problems) and :class:`DiskFullError`.
    """
    _check_url(url)
    if expected_length is not None and expected_length < 0:
        raise ConfigError(f"expected_length must be >= 0, got {expected_length}")
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    show = sys.stderr.isatty() if progress is None else progress
    own_session = session is None
    sess = requests.Session() if session is None else session
    bar = _Progress(sys.stderr) if show else None
    try:
        return _Download(url, dest, expected_length, config, sess, bar).run()
    finally:
        if bar is not None:
            bar.clear()
        if own_session:
            sess.close()


# --- internals ---------------------------------------------------------------------------------


def _check_url(url: str) -> None:
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise ConfigError(f"invalid download URL: {exc}") from exc
    if parts.scheme.lower() not in ("http", "https"):
        raise ConfigError(
            f"unsupported URL scheme {parts.scheme or '(none)'!r} in {_redact(url)}",
            hint="use an http:// or https:// URL, or pass a local file path",
        )
    if not parts.hostname:
        raise ConfigError(f"download URL {_redact(url)} has no host")


def _redact(url: str) -> str:
    """``url`` without user:password, for messages and logs."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<invalid URL>"
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host += f":{parts.port}"
    return urlunsplit((parts.scheme, "***@" + host, parts.path, parts.query, parts.fragment))


def _validator(resp: requests.Response) -> str | None:
    """A validator usable in ``If-Range``: a strong ETag, else Last-Modified (RFC 9110 13.1.5)."""
    etag = resp.headers.get("ETag")
    if etag and not etag.startswith("W/"):
        return etag
    return resp.headers.get("Last-Modified") or None


def _int_header(resp: requests.Response, name: str) -> int | None:
    value = resp.headers.get(name)
    if value is None:
        return None
    value = value.strip()
    if not value.isdigit():
        raise DownloadError(f"server sent an invalid {name} header {value!r}")
    return int(value)


def _is_enospc(exc: OSError) -> bool:
    return exc.errno in (errno.ENOSPC, errno.EDQUOT)


def _is_stall(exc: BaseException) -> bool:
    """Whether ``exc`` (or anything it wraps) is a read timeout rather than a dropped connection."""
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return False
    seen: set[int] = set()
    todo: list[BaseException] = [exc]
    while todo:
        e = todo.pop()
        if id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, (requests.exceptions.ReadTimeout, urllib3.exceptions.ReadTimeoutError, TimeoutError)):
            return True
        todo.extend(a for a in e.args if isinstance(a, BaseException))
        for linked in (e.__cause__, e.__context__):
            if linked is not None:
                todo.append(linked)
    return False


class _Retry(Exception):
    """An attempt failed in a way that another attempt may fix."""

    def __init__(
        self, kind: Literal["stall", "drop", "status"], detail: str, status: int = 0, reason: str = ""
    ) -> None:
        super().__init__(detail)
        self.kind = kind
        self.detail = detail
        self.status = status
        self.reason = reason


class _Restart(Exception):
    """The partial file cannot be continued; start from byte 0 with a fresh request."""


@dataclass
class _Plan:
    """How to consume an accepted response."""

    start: int
    declared: int | None


class _Download:
    def __init__(
        self,
        url: str,
        dest: Path,
        expected_length: int | None,
        config: FetchConfig,
        session: requests.Session,
        bar: _Progress | None,
    ) -> None:
        self.url = url
        self.shown_url = _redact(url)
        self.dest = dest
        self.part = part_path(dest)
        self.sidecar = sidecar_path(dest)
        self.expected = expected_length
        self.config = config
        self.session = session
        self.bar = bar
        # what the sidecar says (and, once written, what it holds on disk)
        self.validator: str | None = None
        self.declared: int | None = expected_length
        self._load_sidecar()

    # -- sidecar ---------------------------------------------------------------------------------

    def _load_sidecar(self) -> None:
        """Keep ``.part`` only if its sidecar proves it is a prefix of this URL's current content."""
        size = self._part_size()
        if size == 0:
            self._discard()
            return
        meta = self._read_sidecar()
        length = meta.get("length") if meta is not None else None
        if (
            meta is None
            or meta.get("url") != self.url
            or not isinstance(meta.get("validator"), str)
            or (length is not None and not isinstance(length, int))
            or (self.expected is not None and length is not None and length != self.expected)
            or (length is not None and size > length)
        ):
            _log.info("discarding partial download %s: it does not belong to %s", self.part, self.shown_url)
            self._discard()
            return
        self.validator = str(meta["validator"])
        self.declared = self.expected if self.expected is not None else length

    def _read_sidecar(self) -> dict[str, object] | None:
        try:
            meta = json.loads(self.sidecar.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if not isinstance(meta, dict) or meta.get("version") != _SIDECAR_VERSION:
            return None
        return meta

    def _write_sidecar(self, validator: str | None, declared: int | None) -> None:
        self.validator, self.declared = validator, declared
        data = {"version": _SIDECAR_VERSION, "url": self.url, "validator": validator, "length": declared}
        try:
            # 0600: the URL may carry credentials or a signed query string
            atomic_write_bytes(self.sidecar, json.dumps(data, sort_keys=True).encode("utf-8"), mode=0o600)
        except OSError as exc:
            raise self._disk_error(exc, self.sidecar) from exc

    def _discard(self) -> None:
        for p in (self.part, self.sidecar):
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
        self.validator = None
        self.declared = self.expected

    def _part_size(self) -> int:
        try:
            return self.part.stat().st_size
        except FileNotFoundError:
            return 0

    # -- attempts --------------------------------------------------------------------------------

    def run(self) -> FetchResult:
        cfg = self.config
        attempt = 0
        while True:
            attempt += 1
            try:
                resumed_from = self._attempt()
            except _Retry as failure:
                if attempt > cfg.retries:
                    raise self._give_up(failure, attempt) from failure.__cause__
                delay = cfg.backoff_s * 2 ** (attempt - 1)
                _log.warning(
                    "download of %s: %s; retry %d of %d in %.1f s",
                    self.shown_url,
                    failure.detail,
                    attempt,
                    cfg.retries,
                    delay,
                )
                if delay > 0:
                    time.sleep(delay)
                continue
            length = self._finish()
            return FetchResult(path=self.dest, length=length, resumed_from=resumed_from, attempts=attempt)

    def _attempt(self) -> int:
        """One request (two if the partial file has to be restarted); returns the start offset."""
        offset = self._part_size()
        if offset and self.validator is None:
            self._discard()
            offset = 0
        try:
            if offset:
                with self._get(offset) as resp:
                    try:
                        plan = self._accept(resp, offset)
                    except _Restart as why:
                        _log.info("download of %s: restarting from byte 0: %s", self.shown_url, why)
                    else:
                        self._stream(resp, plan)
                        return plan.start
                self._discard()
            with self._get(0) as resp:
                plan = self._accept(resp, 0)
                self._stream(resp, plan)
                return plan.start
        except _Restart as why:
            # only reachable without a Range header, i.e. the server itself is inconsistent
            raise DownloadError(f"download of {self.shown_url} failed: {why}") from None

    def _get(self, offset: int) -> requests.Response:
        # identity: the bytes on disk must be exactly the bytes the lengths and ranges refer to
        headers = {"Accept-Encoding": "identity"}
        if offset and self.validator is not None:
            headers["Range"] = f"bytes={offset}-"
            headers["If-Range"] = self.validator
        try:
            return self.session.get(
                self.url,
                headers=headers,
                stream=True,
                timeout=(self.config.connect_timeout, self.config.read_timeout),
            )
        except requests.exceptions.SSLError as exc:
            raise DownloadError(
                f"TLS error talking to {self.shown_url}: {exc}",
                hint="check the server certificate and the device's CA bundle and clock",
            ) from exc
        except (
            requests.exceptions.InvalidURL,
            requests.exceptions.InvalidSchema,
            requests.exceptions.MissingSchema,
        ) as exc:
            raise ConfigError(f"unusable download URL {self.shown_url}: {exc}") from exc
        except requests.exceptions.TooManyRedirects as exc:
            raise DownloadError(f"too many redirects fetching {self.shown_url}") from exc
        except (requests.exceptions.Timeout, requests.exceptions.ConnectionError) as exc:
            kind: Literal["stall", "drop"] = "stall" if _is_stall(exc) else "drop"
            raise _Retry(kind, f"request failed: {exc}") from exc
        except requests.exceptions.RequestException as exc:
            raise DownloadError(f"download of {self.shown_url} failed: {exc}") from exc

    def _accept(self, resp: requests.Response, offset: int) -> _Plan:
        """Check status and headers; decide where the body goes. Writes nothing but the sidecar."""
        status = resp.status_code
        if status == 416 and offset:
            raise _Restart(f"server rejected Range bytes={offset}- (416)")
        if not 200 <= status < 300:
            if status >= 500 or status in _RETRYABLE_STATUS:
                raise _Retry("status", f"HTTP {status}", status, resp.reason or "")
            raise self._status_error(status, resp.reason, 1)
        encoding = resp.headers.get("Content-Encoding", "identity").strip().lower()
        if encoding not in ("", "identity"):
            raise DownloadError(
                f"server applied Content-Encoding {encoding!r} to {self.shown_url} although identity was requested",
                hint="serve bundles without compression (they are already dense)",
            )
        validator = _validator(resp)
        content_length = _int_header(resp, "Content-Length")

        if status == 206:
            if not offset:
                raise _Restart("server answered 206 Partial Content to a request without Range")
            m = _CONTENT_RANGE.match(resp.headers.get("Content-Range", ""))
            if m is None:
                raise _Restart(f"invalid Content-Range {resp.headers.get('Content-Range')!r}")
            first, last = int(m.group(1)), int(m.group(2))
            total = None if m.group(3) == "*" else int(m.group(3))
            if first != offset or last < first or (total is not None and last != total - 1):
                raise _Restart(f"Content-Range {m.group(0).strip()!r} does not continue at byte {offset}")
            if content_length is not None and content_length != last - first + 1:
                raise _Restart(f"Content-Length {content_length} disagrees with Content-Range")
            if validator is not None and validator != self.validator:
                raise _Restart("the file changed on the server (validator differs)")
            declared = self._check_declared(total if total is not None else last + 1)
            if declared != self.declared:
                self._write_sidecar(self.validator, declared)
            return _Plan(start=offset, declared=declared)

        # a full response: to a plain request, or because If-Range did not match
        declared = self._check_declared(content_length)
        if validator is None:
            _log.info("%s sends no ETag or Last-Modified: a broken download restarts", self.shown_url)
        self._write_sidecar(validator, declared)
        return _Plan(start=0, declared=declared)

    def _check_declared(self, server_length: int | None) -> int | None:
        """The length to enforce, refusing a server whose length contradicts the expected one."""
        if self.expected is not None:
            if server_length is not None and server_length != self.expected:
                self._discard()
                if server_length > self.expected:
                    raise DownloadTooLargeError(
                        f"server declares {server_length} bytes for {self.shown_url}, more than the "
                        f"expected {self.expected}",
                        hint="the file on the server is not the one expected; check the URL and the release",
                        declared=server_length,
                        expected=self.expected,
                    )
                raise DownloadError(
                    f"server declares {server_length} bytes for {self.shown_url}, fewer than the "
                    f"expected {self.expected}",
                    hint="the file on the server is not the one expected; check the URL and the release",
                    declared=server_length,
                    expected=self.expected,
                )
            return self.expected
        if server_length is not None and server_length > self.config.max_bytes:
            self._discard()
            raise DownloadTooLargeError(
                f"server declares {server_length} bytes for {self.shown_url}, more than the limit of "
                f"{self.config.max_bytes}",
                hint="raise the download size limit if this file is legitimate",
                declared=server_length,
                limit=self.config.max_bytes,
            )
        return server_length

    def _stream(self, resp: requests.Response, plan: _Plan) -> None:
        """Append the body at ``plan.start``; enforce the declared length byte for byte."""
        limit = plan.declared if plan.declared is not None else self.config.max_bytes
        received = plan.start
        if self.bar is not None:
            self.bar.begin(plan.start, plan.declared)
        try:
            fh: IO[bytes] = self.part.open("r+b" if plan.start else "wb", buffering=0)
        except OSError as exc:
            raise self._disk_error(exc, self.part) from exc
        with fh:
            try:
                fh.seek(plan.start)
                fh.truncate()
            except OSError as exc:
                raise self._disk_error(exc, self.part) from exc
            chunks = resp.raw.stream(self.config.chunk_size, decode_content=False)
            while True:
                try:
                    chunk = next(chunks)
                except StopIteration:
                    break
                except _BODY_ERRORS as exc:
                    kind: Literal["stall", "drop"] = "stall" if _is_stall(exc) else "drop"
                    what = "no data" if kind == "stall" else "connection dropped"
                    raise _Retry(kind, f"{what} after {received} bytes ({exc})") from exc
                if not chunk:
                    continue
                if received + len(chunk) > limit:
                    fh.close()
                    self._discard()
                    if plan.declared is not None:
                        raise DownloadTooLargeError(
                            f"server sent more than the declared {plan.declared} bytes for {self.shown_url}",
                            hint="the server or a proxy is misbehaving; the partial download was deleted",
                            declared=plan.declared,
                        )
                    raise DownloadTooLargeError(
                        f"server sent more than {limit} bytes for {self.shown_url} without declaring a length",
                        hint="raise the download size limit if this file is legitimate",
                        limit=limit,
                    )
                self._write_all(fh, chunk)
                received += len(chunk)
                if self.bar is not None:
                    self.bar.update(received)
        if plan.declared is not None and received < plan.declared:
            raise _Retry("drop", f"body ended after {received} of {plan.declared} bytes")

    def _write_all(self, fh: IO[bytes], chunk: bytes) -> None:
        view = memoryview(chunk)
        try:
            while view:
                view = view[fh.write(view) :]
        except OSError as exc:
            raise self._disk_error(exc, self.part) from exc

    def _finish(self) -> int:
        try:
            fd = os.open(self.part, os.O_RDONLY)
            try:
                os.fsync(fd)
                length = os.fstat(fd).st_size
            finally:
                os.close(fd)
            os.replace(self.part, self.dest)
            fsync_dir(self.dest.parent)
        except OSError as exc:
            raise self._disk_error(exc, self.dest) from exc
        with contextlib.suppress(FileNotFoundError):
            self.sidecar.unlink()
        return length

    # -- errors ----------------------------------------------------------------------------------

    def _disk_error(self, exc: OSError, path: Path) -> StagingError:
        if _is_enospc(exc):
            return DiskFullError(
                f"no space left on the device while writing {path}",
                hint=f"free space under {path.parent} and re-run (the partial download {self.part} is "
                "kept and resumed; delete it to reclaim its space)",
                path=str(path),
                partial=str(self.part),
            )
        return StagingError(f"cannot write {path}: {exc.strerror or exc}", path=str(path))

    def _status_error(self, status: int, reason: str | None, attempts: int) -> HTTPStatusError:
        after = f" (after {attempts} attempts)" if attempts > 1 else ""
        return HTTPStatusError(
            f"server returned HTTP {status} {reason or ''}".rstrip() + f" for {self.shown_url}{after}",
            hint=(
                "the server is failing or overloaded; try again later"
                if status >= 500 or status in _RETRYABLE_STATUS
                else "check the URL and the server's access rules"
            ),
            status=status,
            url=self.shown_url,
            attempts=attempts,
        )

    def _give_up(self, failure: _Retry, attempts: int) -> DownloadError:
        if failure.kind == "status":
            return self._status_error(failure.status, failure.reason, attempts)
        received = self._part_size()
        total = "an unknown number of" if self.declared is None else str(self.declared)
        resumable = received > 0 and self.validator is not None
        if resumable:
            tail = f"re-running resumes from the partial file {self.part}"
        else:
            if received and self.validator is None:
                self._discard()
                received = 0
            tail = "re-running starts again from the beginning"
        what = f"stalled (no data for {self.config.read_timeout:g} s)" if failure.kind == "stall" else "was interrupted"
        message = (
            f"download of {self.shown_url} {what} after {attempts} attempt(s); received {received} of "
            f"{total} bytes; {tail}"
        )
        cls = DownloadStalledError if failure.kind == "stall" else DownloadInterruptedError
        return cls(
            message,
            hint="check the network and re-run the same command",
            url=self.shown_url,
            received=received,
            expected=self.declared,
            attempts=attempts,
            partial=str(self.part) if resumable else None,
            last_error=failure.detail,
        )


class _Progress:
    """A one-line progress bar on a terminal: percent, MiB, MiB/s, ETA; at most ~5 redraws a second."""

    INTERVAL = 0.2
    WIDTH = 24

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream
        self.total: int | None = None
        self.start_bytes = 0
        self.start_time = 0.0
        self.last_draw = 0.0
        self.drawn = 0

    def begin(self, start: int, total: int | None) -> None:
        self.total, self.start_bytes = total, start
        self.start_time = time.monotonic()
        self.last_draw = 0.0
        self.update(start, force=True)

    def update(self, done: int, *, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self.last_draw < self.INTERVAL:
            return
        self.last_draw = now
        elapsed = max(now - self.start_time, 1e-6)
        rate = (done - self.start_bytes) / elapsed
        speed = f"{rate / _MiB:6.1f} MiB/s"
        if self.total:
            frac = min(done / self.total, 1.0)
            filled = int(frac * self.WIDTH)
            bar = "#" * filled + "-" * (self.WIDTH - filled)
            eta = _eta((self.total - done) / rate) if rate > 0 else "--:--"
            line = f"[{bar}] {frac * 100:5.1f}% {done / _MiB:8.1f}/{self.total / _MiB:.1f} MiB {speed} ETA {eta}"
        else:
            line = f"{done / _MiB:8.1f} MiB {speed}"
        self._write("\r" + line.ljust(self.drawn))
        self.drawn = len(line)

    def clear(self) -> None:
        if self.drawn:
            self._write("\r" + " " * self.drawn + "\r")
            self.drawn = 0

    def _write(self, text: str) -> None:
        with contextlib.suppress(OSError, ValueError):
            self.stream.write(text)
            self.stream.flush()


def _eta(seconds: float) -> str:
    s = int(seconds + 0.5)
    h, rem = divmod(s, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"

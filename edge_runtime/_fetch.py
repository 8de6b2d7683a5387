"""Resumable, bounded HTTP(S) download of a bundle to disk; a download can never wedge a device.

:func:`fetch` streams a URL into ``<dest>.part`` next to a sidecar ``<dest>.part.json`` that records
the URL, the server's validator (a strong ETag, else Last-Modified) and the declared length. A later
call for the same URL resumes with ``Range`` + ``If-Range``, so a changed file on the server is
downloaded afresh instead of being spliced onto old bytes. When every byte has arrived the file is
fsynced, renamed onto ``dest`` and the directory fsynced; the sidecar is then removed.

Every limit comes from :class:`~edge_runtime._fetch_config.FetchConfig` (see there for the rules).
Guarantees:

* never more than one chunk in memory, never more bytes on disk than declared (the caller's
  ``expected_length``, else the server's length, else ``max_bytes``);
* free space is checked against the size still to come plus ``reserve_bytes`` *before* the first
  byte is written (before the request when the length is expected), and again before every write,
  so a download stops at the reserve instead of filling the disk;
* a stall (no byte for ``read_timeout`` s) or a dropped connection is retried with exponential
  backoff, resuming from the bytes already on disk;
* a minimum average rate (after a grace period, over a sliding window) and an overall deadline bound
  the time of a retrieval, connection and headers included: a watchdog thread shuts the socket down
  when either is broken, so a server dripping bytes (or header lines) cannot hold the device lock;
* redirects are followed by hand: http(s) only, never https -> http, the URL's own host and port only
  unless ``allowed_redirect_hosts`` names the target, at most ``max_redirects`` in a row;
* the response head is bounded (header count, line length, total size);
* every failure is an :class:`~edge_runtime.errors.EdgeRuntimeError` subclass with a hint; a partial
  file survives only a failure that a re-run can resume (stall, drop, slow, retryable server error)
  and only when the server gave a validator; anything else (disk full, write error, too large,
  refused redirect, client error) deletes it and its sidecar.

Callers serialise downloads to the same ``dest`` (the device lock does that); two concurrent
:func:`fetch` calls for one destination would interleave writes.
"""

from __future__ import annotations

import contextlib
import errno
import http.client
import logging
import os
import re
import socket
import sys
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Literal
from urllib.parse import urljoin, urlsplit, urlunsplit

import requests
import requests.adapters
import urllib3
import urllib3.connection
import urllib3.exceptions

from ._fetch_config import FetchConfig
from ._fsutil import atomic_write_bytes, fsync_dir
from ._json import dumps_strict_bytes, loads_untrusted
from ._partials import expire_partials, part_path, sidecar_path
from .errors import (
    ConfigError,
    DiskFullError,
    DownloadError,
    DownloadInterruptedError,
    DownloadStalledError,
    DownloadTooLargeError,
    DownloadTooSlowError,
    EdgeRuntimeError,
    HTTPHeaderError,
    HTTPStatusError,
    RedirectRefusedError,
    StagingError,
    quote_untrusted,
)

__all__ = ["FetchConfig", "FetchResult", "expire_partials", "fetch", "part_path", "sidecar_path"]

_log = logging.getLogger(__name__)

_SIDECAR_VERSION = 1
_MiB = 1024 * 1024
#: statuses worth retrying: request timeout, rate limiting and every server-side error
_RETRYABLE_STATUS = frozenset({408, 429})
_REDIRECT_STATUS = frozenset({301, 302, 303, 307, 308})
_DEFAULT_PORTS = {"http": 80, "https": 443}
_CONTENT_RANGE = re.compile(r"^\s*bytes\s+(\d{1,20})-(\d{1,20})/(\d{1,20}|\*)\s*$", re.IGNORECASE | re.ASCII)
#: errors raised while reading a response body: a stall, a reset, a truncated body
_BODY_ERRORS: tuple[type[BaseException], ...] = (
    urllib3.exceptions.HTTPError,  # ReadTimeoutError, ProtocolError, IncompleteRead, SSLError ...
    requests.exceptions.RequestException,  # ChunkedEncodingError, ConnectionError
    http.client.HTTPException,  # http.client.IncompleteRead
    OSError,  # socket.timeout (TimeoutError), ConnectionResetError
)


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


def fetch(
    url: str,
    dest: Path,
    *,
    expected_length: int | None = None,
    config: FetchConfig | None = None,
    progress: bool | None = None,
    session: requests.Session | None = None,
) -> FetchResult:
    """Download ``url`` (http or https) to ``dest``, resuming a partial download of the same URL.

    ``expected_length`` (for example from the pin in models.yaml) overrides whatever the server
    declares; a server declaring another length is refused before any byte is written. ``progress``
    draws a one-line progress bar on stderr (default: only when stderr is a terminal). ``session`` lets
    the caller supply proxies, CA bundles or authentication; fetch mounts its own transport adapters on
    it (they let the watchdog cut a connection), so custom adapters of that session are replaced.

    Raises :class:`ConfigError` (bad URL or settings), :class:`HTTPStatusError`,
    :class:`DownloadStalledError`, :class:`DownloadInterruptedError` (the partial file is kept so
    re-running resumes), :class:`DownloadTooSlowError`, :class:`DownloadTooLargeError`,
    :class:`RedirectRefusedError`, :class:`HTTPHeaderError`, :class:`DownloadError` (other transfer
    problems), :class:`DiskFullError` and :class:`StagingError` (nothing left behind).
    """
    cfg = config if config is not None else FetchConfig()
    _check_url(url)
    if expected_length is not None and expected_length < 0:
        raise ConfigError(f"expected_length must be >= 0, got {expected_length}")
    if expected_length is not None and expected_length > cfg.max_bytes:
        raise DownloadTooLargeError(
            f"the expected size of {_redact(url)} is {expected_length} bytes, more than the limit of {cfg.max_bytes}",
            hint="raise the download size limit (max_bytes) if this file is legitimate",
            expected=expected_length,
            limit=cfg.max_bytes,
        )
    dest = Path(dest)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StagingError(f"cannot create the download directory {dest.parent}: {exc.strerror or exc}") from None
    show = sys.stderr.isatty() if progress is None else progress
    own_session = session is None
    sess = requests.Session() if session is None else session
    adapter = _WatchedAdapter()
    sess.mount("http://", adapter)
    sess.mount("https://", adapter)
    bar = _Progress(sys.stderr) if show else None
    try:
        with _Watchdog(cfg, expected_length) as watchdog:
            return _Download(url, dest, expected_length, cfg, sess, bar, watchdog).run()
    finally:
        if bar is not None:
            bar.clear()
        if own_session:
            sess.close()


# --- internals ---------------------------------------------------------------------------------


def _check_url(url: str) -> None:
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a port that is not a number
    except ValueError as exc:
        raise ConfigError(f"invalid download URL: {exc}") from exc
    if parts.scheme.lower() not in ("http", "https"):
        raise ConfigError(
            f"unsupported URL scheme {quote_untrusted(parts.scheme or '(none)', 20)} in {_redact(url)}",
            hint="use an http:// or https:// URL, or pass a local file path",
        )
    if not parts.hostname:
        raise ConfigError(f"download URL {_redact(url)} has no host")


def _redact(url: str) -> str:
    """``url`` without user:password, for messages and logs; long URLs truncated."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<invalid URL>"
    if parts.username is not None or parts.password is not None:
        host = parts.hostname or ""
        with contextlib.suppress(ValueError):
            if parts.port is not None:
                host += f":{parts.port}"
        url = urlunsplit((parts.scheme, "***@" + host, parts.path, parts.query, parts.fragment))
    return _shown(url, 200)


def _shown(text: str, limit: int) -> str:
    """Untrusted ``text`` for a message: as is when short and printable, else quoted and truncated."""
    return text if len(text) <= limit and text.isprintable() else quote_untrusted(text, limit)


def _origin(url: str) -> tuple[str, str, int]:
    """(scheme, host, port) of an http(s) URL, the port made explicit."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    return scheme, (parts.hostname or "").lower(), parts.port or _DEFAULT_PORTS.get(scheme, 0)


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
    if not value.isdigit() or len(value) > 20:
        raise DownloadError(f"server sent an invalid {name} header {quote_untrusted(value, 40)}")
    return int(value)


def _is_enospc(exc: OSError) -> bool:
    return exc.errno in (errno.ENOSPC, errno.EDQUOT)


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and everything it wraps (args, cause, context), each once."""
    seen: set[int] = set()
    todo: list[BaseException] = [exc]
    while todo:
        e = todo.pop()
        if id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        todo.extend(a for a in e.args if isinstance(a, BaseException))
        todo.extend(x for x in (e.__cause__, e.__context__) if x is not None)


def _is_stall(exc: BaseException) -> bool:
    """Whether ``exc`` (or anything it wraps) is a read timeout rather than a dropped connection."""
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return False
    stalls = (requests.exceptions.ReadTimeout, urllib3.exceptions.ReadTimeoutError, TimeoutError)
    return any(isinstance(e, stalls) for e in _chain(exc))


def _header_overflow(exc: BaseException) -> str | None:
    """http.client's own bounds on the response head (a line > 64 KiB, > 100 headers), if hit."""
    for e in _chain(exc):
        if isinstance(e, http.client.LineTooLong):
            return f"a response header line is too long ({e})"
        if isinstance(e, http.client.HTTPException) and "more than" in str(e) and "headers" in str(e):
            return f"the response has too many headers ({e})"
    return None


# --- the watchdog: bounded time for every step, even a blocked read ---------------------------------

_current = threading.local()


def _register(sock: socket.socket) -> None:
    watchdog: _Watchdog | None = getattr(_current, "watchdog", None)
    if watchdog is not None:
        watchdog.watch(sock)


class _WatchedHTTPConnection(urllib3.connection.HTTPConnection):
    """Hands its socket to the download's watchdog as soon as it is connected (before TLS, headers)."""

    def _new_conn(self) -> socket.socket:
        sock = super()._new_conn()
        _register(sock)
        return sock


class _WatchedHTTPSConnection(urllib3.connection.HTTPSConnection):
    def _new_conn(self) -> socket.socket:
        sock = super()._new_conn()
        _register(sock)
        return sock


class _WatchedHTTPPool(urllib3.HTTPConnectionPool):
    ConnectionCls = _WatchedHTTPConnection


class _WatchedHTTPSPool(urllib3.HTTPSConnectionPool):
    ConnectionCls = _WatchedHTTPSConnection


_WATCHED_POOLS: dict[str, type[urllib3.HTTPConnectionPool]] = {"http": _WatchedHTTPPool, "https": _WatchedHTTPSPool}


class _WatchedAdapter(requests.adapters.HTTPAdapter):
    """A requests adapter whose connections (direct or through an HTTP proxy) the watchdog can cut."""

    def init_poolmanager(self, connections: int, maxsize: int, block: bool = False, **pool_kwargs: Any) -> None:
        super().init_poolmanager(connections, maxsize, block, **pool_kwargs)
        self.poolmanager.pool_classes_by_scheme = _WATCHED_POOLS

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        if isinstance(manager, urllib3.PoolManager) and not proxy.lower().startswith("socks"):
            manager.pool_classes_by_scheme = _WATCHED_POOLS
        return manager


class _Monitor:
    """One daemon thread for the whole process that polls every active :class:`_Watchdog` on its tick.

    Shared, so a download pays no thread start-up (measured: ~1 ms per fetch on this machine for a
    thread per download); it sleeps on a condition while no download runs, and is restarted after a fork.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._active: dict[_Watchdog, float] = {}  # watchdog -> monotonic time of its next poll
        self._thread: threading.Thread | None = None

    def add(self, wd: _Watchdog) -> None:
        with self._cond:
            self._active[wd] = time.monotonic() + wd.tick
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="edge-fetch-watchdog", daemon=True)
                self._thread.start()
            self._cond.notify()

    def remove(self, wd: _Watchdog) -> None:
        with self._cond:
            self._active.pop(wd, None)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._active:
                    self._cond.wait()
                now = time.monotonic()
                due = [wd for wd, at in self._active.items() if at <= now]
                for wd in due:
                    self._active[wd] = now + wd.tick
                wait = min(self._active.values()) - now
                if not due:
                    self._cond.wait(max(wait, 0.001))
                    continue
            for wd in due:
                wd.poll()


_MONITOR = _Monitor()


def _new_monitor_after_fork() -> None:
    # a forked child has no monitor thread, and the parent's condition may have been held at the fork
    global _MONITOR
    _MONITOR = _Monitor()


os.register_at_fork(after_in_child=_new_monitor_after_fork)


class _Watchdog:
    """Enforces the minimum average rate and the overall deadline of one download.

    The download thread reports the body bytes it receives (:meth:`received`); the process's monitor
    thread samples them every ``tick`` seconds and, when a rule is broken, records why and shuts down
    every socket the download opened. A blocked ``recv`` (in the TLS handshake, a header line, a
    chunk-size line or the body) then returns at once, and the download raises
    :class:`DownloadTooSlowError`.
    """

    def __init__(self, config: FetchConfig, size: int | None) -> None:
        self.config = config
        self._lock = threading.Lock()
        self._socks: list[socket.socket] = []
        self.started = time.monotonic()
        self.deadline = self.started + config.deadline_s(size)
        self.deadline_size = size
        self.reason: str | None = None
        self._attempt_start = self.started
        self._bytes = 0
        self._samples: deque[tuple[float, int]] = deque([(self.started, 0)])
        self.tick = min(0.25, config.rate_window_s / 8, max(config.rate_grace_s / 4, 0.01))

    def __enter__(self) -> _Watchdog:
        _current.watchdog = self
        _MONITOR.add(self)
        return self

    def __exit__(self, *exc: object) -> None:
        _MONITOR.remove(self)
        _current.watchdog = None

    # -- called by the download thread -------------------------------------------------------------

    def set_size(self, size: int | None) -> None:
        """The size is known now (declared by the server): the deadline follows it."""
        if size != self.deadline_size:
            with self._lock:
                self.deadline_size = size
                self.deadline = self.started + self.config.deadline_s(size)

    def begin_attempt(self) -> None:
        with self._lock:
            now = time.monotonic()
            self._attempt_start = now
            self._bytes = 0
            self._samples = deque([(now, 0)])
            self._socks = [s for s in self._socks if s.fileno() != -1]

    def received(self, n: int) -> None:
        with self._lock:
            self._bytes += n

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def watch(self, sock: socket.socket) -> None:
        with self._lock:
            self._socks.append(sock)
            cut = self.reason is not None
        if cut:
            _shutdown(sock)

    def check(self) -> None:
        """Raise the watchdog's verdict, if it has cut this download (or the deadline has passed)."""
        if self.reason is None and time.monotonic() >= self.deadline:
            self._cut(self._deadline_reason())
        if self.reason is not None:
            raise _Cut(self.reason)

    # -- called by the monitor thread ------------------------------------------------------------

    def poll(self) -> None:
        with self._lock:
            verdict = None if self.reason is not None else self._verdict(time.monotonic())
        if verdict is not None:
            self._cut(verdict)

    def _verdict(self, now: float) -> str | None:
        cfg = self.config
        if now >= self.deadline:
            return self._deadline_reason()
        samples = self._samples
        samples.append((now, self._bytes))
        horizon = now - cfg.rate_window_s
        while len(samples) > 2 and samples[1][0] <= horizon:
            samples.popleft()
        if now - self._attempt_start < cfg.rate_grace_s:
            return None
        t0, b0 = samples[0]
        span = now - t0
        got = self._bytes - b0
        # equal to the minimum passes; slower is cut
        if span > 0 and got < cfg.min_rate * span:
            return (
                f"the average rate was {got / span:.1f} bytes/s over the last {span:.1f} s, below the minimum "
                f"of {cfg.min_rate:g} bytes/s"
            )
        return None

    def _deadline_reason(self) -> str:
        size = "an unknown size" if self.deadline_size is None else f"{self.deadline_size} bytes"
        return (
            f"the download passed its deadline of {self.config.deadline_s(self.deadline_size):.0f} s "
            f"({self.config.deadline_allowance_s:g} s + {size} at {self.config.min_rate:g} bytes/s)"
        )

    def _cut(self, reason: str) -> None:
        with self._lock:
            if self.reason is None:
                self.reason = reason
            socks = list(self._socks)
        for s in socks:
            _shutdown(s)


def _shutdown(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


class _Cut(Exception):
    """The watchdog ended the download (too slow or past the deadline)."""


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


def _resumable(exc: BaseException) -> bool:
    """Whether a partial download is worth keeping after ``exc`` (a re-run may continue it)."""
    if isinstance(exc, HTTPStatusError):
        status = exc.details.get("status")
        return isinstance(status, int) and (status >= 500 or status in _RETRYABLE_STATUS)
    return isinstance(exc, (DownloadStalledError, DownloadInterruptedError, DownloadTooSlowError))


class _Download:
    def __init__(
        self,
        url: str,
        dest: Path,
        expected_length: int | None,
        config: FetchConfig,
        session: requests.Session,
        bar: _Progress | None,
        watchdog: _Watchdog,
    ) -> None:
        self.url = url
        self.shown_url = _redact(url)
        self.origin = _origin(url)
        self.dest = dest
        self.part = part_path(dest)
        self.sidecar = sidecar_path(dest)
        self.expected = expected_length
        self.config = config
        self.session = session
        self.bar = bar
        self.watchdog = watchdog
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
            or (length is not None and (not isinstance(length, int) or isinstance(length, bool)))
            or (self.expected is not None and length is not None and length != self.expected)
            or (length is not None and size > length)
            or (self.expected is not None and size > self.expected)
            or size > self.config.max_bytes
        ):
            _log.info("discarding partial download %s: it does not belong to %s", self.part, self.shown_url)
            self._discard()
            return
        self.validator = str(meta["validator"])
        self.declared = self.expected if self.expected is not None else length

    def _read_sidecar(self) -> dict[str, Any] | None:
        limit = self.config.limits.local_json_max_bytes
        try:
            with self.sidecar.open("rb") as fh:
                data = fh.read(limit + 1)
            meta = loads_untrusted(data, self.config.limits, f"sidecar {self.sidecar}", error=DownloadError,
                                   max_bytes=limit)
        except (OSError, EdgeRuntimeError):
            return None
        if not isinstance(meta, dict) or meta.get("version") != _SIDECAR_VERSION:
            return None
        return meta

    def _write_sidecar(self, validator: str | None, declared: int | None) -> None:
        self.validator, self.declared = validator, declared
        data = {"version": _SIDECAR_VERSION, "url": self.url, "validator": validator, "length": declared}
        try:
            # 0600: the URL may carry credentials or a signed query string
            atomic_write_bytes(self.sidecar, dumps_strict_bytes(data, "download sidecar", sort_keys=True), mode=0o600)
        except OSError as exc:
            raise self._disk_error(exc, self.sidecar) from exc

    def _discard(self) -> None:
        for p in (self.part, self.sidecar):
            with contextlib.suppress(OSError):
                p.unlink()
        self.validator = None
        self.declared = self.expected

    def _part_size(self) -> int:
        try:
            return self.part.stat().st_size
        except OSError:
            return 0

    # -- free space ------------------------------------------------------------------------------

    def _check_space(self, incoming: int, *, fd: int | None = None) -> None:
        """Refuse (nothing left behind) unless ``incoming`` bytes fit and ``reserve_bytes`` stay free."""
        try:
            st = os.fstatvfs(fd) if fd is not None else os.statvfs(self.dest.parent)
        except OSError:
            return  # cannot tell; the write itself will report ENOSPC
        free = st.f_bavail * st.f_frsize
        reserve = self.config.reserve_bytes
        if free - incoming < reserve:
            self._discard()
            raise DiskFullError(
                f"not enough free space under {self.dest.parent} to download {self.shown_url}: "
                f"{incoming} more bytes and a reserve of {reserve} need {incoming + reserve}, {free} are free",
                hint="free space on the device (or lower reserve_bytes in the download settings) and re-run; "
                "nothing of this download was left on disk",
                path=str(self.dest.parent),
                needed=incoming + reserve,
                free=free,
            )

    # -- attempts --------------------------------------------------------------------------------

    def run(self) -> FetchResult:
        try:
            return self._run()
        except _Cut as cut:
            raise self._too_slow(str(cut)) from None
        except Exception as exc:
            if not _resumable(exc) or self.validator is None:
                self._discard()
            raise

    def _run(self) -> FetchResult:
        cfg = self.config
        if self.expected is not None:
            # before any request: the whole expected file (less what is already here) must fit
            self._check_space(self.expected - self._part_size())
        attempt = 0
        while True:
            attempt += 1
            self.watchdog.check()
            self.watchdog.begin_attempt()
            try:
                resumed_from = self._attempt()
            except _Retry as failure:
                self.watchdog.check()
                if attempt > cfg.retries:
                    raise self._give_up(failure, attempt) from failure.__cause__
                delay = cfg.backoff_s * 2 ** (attempt - 1)
                if delay >= self.watchdog.remaining():
                    raise self._too_slow(
                        f"{failure.detail}; the next retry would start after the download's deadline"
                    ) from failure.__cause__
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
        """GET the URL, following redirects under the redirect rule (module docstring)."""
        # identity: the bytes on disk must be exactly the bytes the lengths and ranges refer to;
        # close: one connection per request, so each is handed to the watchdog when it opens
        headers = {"Accept-Encoding": "identity", "Connection": "close"}
        if offset and self.validator is not None:
            headers["Range"] = f"bytes={offset}-"
            headers["If-Range"] = self.validator
        url = self.url
        for hop in range(self.config.max_redirects + 1):
            resp = self._request(url, headers)
            try:
                self._check_head(resp)
            except BaseException:
                resp.close()
                raise
            if resp.status_code not in _REDIRECT_STATUS:
                return resp
            location = resp.headers.get("Location")
            resp.close()
            if hop == self.config.max_redirects:
                raise RedirectRefusedError(
                    f"{self.shown_url} redirected more than {self.config.max_redirects} times in a row",
                    hint="point the pin at the final URL, or raise max_redirects in the download settings",
                    url=self.shown_url,
                )
            url = self._redirect_target(url, location)
            _log.info("download of %s: following a redirect to %s", self.shown_url, _redact(url))
        raise AssertionError("unreachable")  # pragma: no cover

    def _redirect_target(self, current: str, location: str | None) -> str:
        """The absolute target of a redirect, if the redirect rule allows it; else RedirectRefusedError."""
        if not location:
            raise DownloadError(f"{_redact(current)} answered with a redirect without a Location header")
        try:
            target = urljoin(current, location.strip())
            scheme, host, port = _origin(target)
        except ValueError:
            raise RedirectRefusedError(
                f"{self.shown_url} redirected to an invalid URL {quote_untrusted(location, 120)}"
            ) from None
        shown = _redact(target)
        hint = (
            "downloads follow redirects only over http(s), never from https to http, and only to the URL's own "
            "host and port unless the device's download settings list the target in allowed_redirect_hosts"
        )
        if scheme not in _DEFAULT_PORTS or not host:
            raise RedirectRefusedError(
                f"{self.shown_url} redirected to {shown}: only http and https redirects are followed",
                hint=hint, url=self.shown_url, location=shown,
            )
        if _origin(current)[0] == "https" and scheme == "http":
            raise RedirectRefusedError(
                f"{self.shown_url} redirected from https to http ({shown}): a downgrade is never followed",
                hint=hint, url=self.shown_url, location=shown,
            )
        if (host, port) != self.origin[1:] and host not in self.config.allowed_redirect_hosts and (
            f"{host}:{port}" not in self.config.allowed_redirect_hosts
        ):
            raise RedirectRefusedError(
                f"{self.shown_url} redirected to another host ({host}:{port}): {shown}",
                hint=hint, url=self.shown_url, location=shown,
            )
        return target

    def _request(self, url: str, headers: dict[str, str]) -> requests.Response:
        try:
            return self.session.get(
                url,
                headers=headers,
                stream=True,
                allow_redirects=False,
                timeout=(self.config.connect_timeout, self.config.read_timeout),
            )
        except requests.exceptions.SSLError as exc:
            self.watchdog.check()
            raise DownloadError(
                f"TLS error talking to {_redact(url)}: {exc}",
                hint="check the server certificate and the device's CA bundle and clock",
            ) from exc
        except (
            requests.exceptions.InvalidURL,
            requests.exceptions.InvalidSchema,
            requests.exceptions.MissingSchema,
        ) as exc:
            raise ConfigError(f"unusable download URL {_redact(url)}: {exc}") from exc
        except (requests.exceptions.Timeout, requests.exceptions.ConnectionError) as exc:
            self.watchdog.check()
            overflow = _header_overflow(exc)
            if overflow is not None:
                raise HTTPHeaderError(
                    f"{_redact(url)}: {overflow}",
                    hint="the server or a proxy is misbehaving; nothing was written",
                    url=_redact(url),
                ) from None
            kind: Literal["stall", "drop"] = "stall" if _is_stall(exc) else "drop"
            raise _Retry(kind, f"request failed: {exc}") from exc
        except requests.exceptions.RequestException as exc:
            self.watchdog.check()
            raise DownloadError(f"download of {_redact(url)} failed: {exc}") from exc

    def _check_head(self, resp: requests.Response) -> None:
        """The response head within the HTTP limits: header count, longest line, total size."""
        lim = self.config.limits
        items = list(resp.raw.headers.items()) if resp.raw is not None else list(resp.headers.items())
        status_line = 13 + len(resp.reason or "")  # "HTTP/1.1 200 " + reason
        longest = max([status_line] + [len(k) + 2 + len(v) for k, v in items])
        total = status_line + sum(len(k) + 4 + len(v) for k, v in items)
        problem = None
        if len(items) > lim.http_max_headers:
            problem = f"{len(items)} header lines, more than the limit of {lim.http_max_headers}"
        elif longest > lim.http_max_header_line:
            problem = f"a header line of {longest} bytes, more than the limit of {lim.http_max_header_line}"
        elif total > lim.http_max_header_bytes:
            problem = f"a response head of {total} bytes, more than the limit of {lim.http_max_header_bytes}"
        if problem is not None:
            raise HTTPHeaderError(
                f"{self.shown_url} sent {problem}",
                hint="the server or a proxy is misbehaving; nothing was written",
                url=self.shown_url,
            )

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
                f"server applied Content-Encoding {quote_untrusted(encoding, 40)} to {self.shown_url} although "
                "identity was requested",
                hint="serve bundles without compression (they are already dense)",
            )
        validator = _validator(resp)
        if validator is not None and len(validator) > 1024:
            validator = None  # not worth storing or sending back
        content_length = _int_header(resp, "Content-Length")

        if status == 206:
            if not offset:
                raise _Restart("server answered 206 Partial Content to a request without Range")
            m = _CONTENT_RANGE.match(resp.headers.get("Content-Range", ""))
            if m is None:
                raise _Restart(f"invalid Content-Range {quote_untrusted(resp.headers.get('Content-Range'), 60)}")
            first, last = int(m.group(1)), int(m.group(2))
            total = None if m.group(3) == "*" else int(m.group(3))
            if first != offset or last < first or (total is not None and last != total - 1):
                raise _Restart(f"Content-Range {quote_untrusted(m.group(0).strip(), 60)} does not continue at {offset}")
            if content_length is not None and content_length != last - first + 1:
                raise _Restart(f"Content-Length {content_length} disagrees with Content-Range")
            if validator is not None and validator != self.validator:
                raise _Restart("the file changed on the server (validator differs)")
            declared = self._check_declared(total if total is not None else last + 1)
            self.watchdog.set_size(declared)
            if declared is not None:
                self._check_space(declared - self._part_size())
            if declared != self.declared:
                self._write_sidecar(self.validator, declared)
            return _Plan(start=offset, declared=declared)

        # a full response: to a plain request, or because If-Range did not match
        declared = self._check_declared(content_length)
        self.watchdog.set_size(declared)
        self._check_space(max(0, (declared or 0) - self._part_size()))  # the partial file is truncated
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
                hint="raise the download size limit (max_bytes) if this file is legitimate",
                declared=server_length,
                limit=self.config.max_bytes,
            )
        return server_length

    def _read_chunks(self, resp: requests.Response) -> Iterator[bytes]:
        """The body as it arrives: ``read1`` returns whatever one ``recv`` brought (up to chunk_size), so
        the watchdog's byte count follows the network, not the chunk size."""
        raw = resp.raw
        size = self.config.chunk_size
        read1 = getattr(raw, "read1", None)
        while True:
            if read1 is not None:
                chunk = read1(size, decode_content=False)
            else:  # urllib3 < 2: bounded reads instead
                chunk = raw.read(min(size, 65536), decode_content=False)
            if not chunk:
                return
            yield chunk

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
            chunks = self._read_chunks(resp)
            while True:
                try:
                    chunk = next(chunks)
                except StopIteration:
                    break
                except _BODY_ERRORS as exc:
                    self.watchdog.check()
                    kind: Literal["stall", "drop"] = "stall" if _is_stall(exc) else "drop"
                    what = "no data" if kind == "stall" else "connection dropped"
                    raise _Retry(kind, f"{what} after {received} bytes ({exc})") from exc
                self.watchdog.received(len(chunk))
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
                        hint="raise the download size limit (max_bytes) if this file is legitimate",
                        limit=limit,
                    )
                self._check_space(len(chunk), fd=fh.fileno())
                self._write_all(fh, chunk)
                received += len(chunk)
                if self.bar is not None:
                    self.bar.update(received)
        self.watchdog.check()  # an EOF may be the watchdog's doing
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
        with contextlib.suppress(OSError):
            self.sidecar.unlink()
        return length

    # -- errors ----------------------------------------------------------------------------------

    def _disk_error(self, exc: OSError, path: Path) -> StagingError:
        """A failed write: the partial download cannot be trusted or continued, so it is deleted."""
        self._discard()
        if _is_enospc(exc):
            return DiskFullError(
                f"no space left on the device while writing {path}",
                hint=f"free space under {path.parent} and re-run; the partial download was deleted",
                path=str(path),
            )
        return StagingError(
            f"cannot write {path}: {exc.strerror or exc}",
            hint="the active model is unchanged; fix the device storage and retry (the partial download was deleted)",
            path=str(path),
        )

    def _too_slow(self, reason: str) -> DownloadTooSlowError:
        received = self._part_size()
        resumable = received > 0 and self.validator is not None
        if not resumable:
            self._discard()
            received = 0
        return DownloadTooSlowError(
            f"download of {self.shown_url} was cut: {reason}; received {received} bytes"
            + (f"; re-running resumes from the partial file {self.part}" if resumable else ""),
            hint="the server or the network is too slow (or hostile); check it, or relax min_rate / "
            "deadline_allowance_s in the download settings, then re-run",
            url=self.shown_url,
            received=received,
            partial=str(self.part) if resumable else None,
        )

    def _status_error(self, status: int, reason: str | None, attempts: int) -> HTTPStatusError:
        after = f" (after {attempts} attempts)" if attempts > 1 else ""
        return HTTPStatusError(
            f"server returned HTTP {status} {_shown(reason or '', 60)}".rstrip()
            + f" for {self.shown_url}{after}",
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

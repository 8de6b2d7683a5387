"""A real HTTP/1.1 server on 127.0.0.1 for download tests, with per-path misbehaviour.

Usage::

    with BundleServer({"/b.edgebundle": Route(body)}) as srv:
        fetch(srv.url("/b.edgebundle"), dest)
        assert srv.requests_for("/b.edgebundle")[0].range is None

Every behaviour is bounded: a stall waits at most ``stall_seconds`` (and ends at once when the server
stops), extra bytes are a fixed count, and the server thread is joined on exit.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import socket
import ssl
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType

__all__ = ["AUTO", "BundleServer", "RecordedRequest", "Route"]

AUTO = "auto"
_PIECE = 16 * 1024
_MAX_EXTRA = 64 * 1024 * 1024
_RANGE = re.compile(r"^bytes=(\d+)-(\d*)$")


@dataclass
class Route:
    """What to serve at one path, and how to misbehave."""

    body: bytes
    #: strong ETag sent with every response; ``AUTO`` derives one from the body, None sends none
    etag: str | None = AUTO
    last_modified: str | None = None
    #: answer every request with 200 and the whole body (a server without Range support)
    ignore_range: bool = False
    #: honour Range even when If-Range does not match (a buggy server or cache)
    ignore_if_range: bool = False
    #: answer with this status (and a short text body) instead of the file
    status: int | None = None
    #: apply ``status`` to the first k requests only (None: to all)
    status_requests: int | None = None
    #: chunked transfer encoding, no Content-Length
    chunked: bool = False
    #: send the body and then this many more bytes, chunked without Content-Length
    extra_bytes: int = 0
    #: after this many body bytes, stop sending for ``stall_seconds``, then close the connection
    stall_after: int | None = None
    stall_seconds: float = 2.0
    #: after this many body bytes, close the socket abruptly
    drop_after: int | None = None
    #: apply ``stall_after``/``drop_after`` to the first k requests only (None: to all)
    fault_requests: int | None = None
    #: send the body ``drip_bytes`` at a time, one piece every ``drip_interval`` seconds (a slow server)
    drip_interval: float | None = None
    drip_bytes: int = 1
    #: drip the response head too (one header byte per ``drip_interval``): a server stuck in the headers
    drip_head: bool = False
    #: answer with this redirect status and ``Location: redirect_to`` instead of the file
    redirect_to: str | None = None
    redirect_status: int = 302
    #: extra response header lines (name, value), e.g. a header flood
    extra_headers: list[tuple[str, str]] = field(default_factory=list)
    #: send this Content-Length instead of the real one (a server that lies about the size)
    declared_length: int | None = None
    #: requests seen so far for this route (set by the server)
    hits: int = field(default=0, init=False)

    def strong_etag(self) -> str | None:
        if self.etag == AUTO:
            return '"' + hashlib.sha256(self.body).hexdigest()[:16] + '"'
        return self.etag


@dataclass
class RecordedRequest:
    """One request as it arrived; ``status`` is filled in once the response headers are chosen."""

    method: str
    path: str
    range: str | None
    if_range: str | None
    status: int | None = None


class BundleServer:
    """A context manager running a ThreadingHTTPServer on an ephemeral loopback port."""

    def __init__(
        self, routes: Mapping[str, Route | bytes] | None = None, *, tls: tuple[str, str] | None = None
    ) -> None:
        #: (certificate PEM path, key PEM path): serve https instead of http
        self.tls = tls
        self.routes: dict[str, Route] = {}
        for path, route in (routes or {}).items():
            self.add(path, route)
        self.requests: list[RecordedRequest] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- routes and records -----------------------------------------------------------------------

    def add(self, path: str, route: Route | bytes) -> Route:
        r = route if isinstance(route, Route) else Route(route)
        self.routes[path] = r
        return r

    def url(self, path: str) -> str:
        assert self._httpd is not None, "server not started"
        host, port = self._httpd.server_address[:2]
        return f"{'https' if self.tls else 'http'}://{host!s}:{port}{path}"

    def requests_for(self, path: str) -> list[RecordedRequest]:
        with self._lock:
            return [r for r in self.requests if r.path == path]

    def _record(self, req: RecordedRequest) -> None:
        with self._lock:
            self.requests.append(req)

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> BundleServer:
        server = self

        class Handler(_Handler):
            owner = server

        httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        httpd.daemon_threads = True
        if self.tls is not None:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(*self.tls)
            httpd.socket = ctx.wrap_socket(httpd.socket, server_side=True)
        self._httpd = httpd
        self._thread = threading.Thread(
            target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="bundle-http", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()  # wakes stalled handlers
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._httpd = self._thread = None

    def __enter__(self) -> BundleServer:
        return self.start()

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    owner: BundleServer
    record: RecordedRequest

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        self.close_connection = True
        # recorded on arrival, so a test can see a request whose response is still stalling
        self.record = RecordedRequest("GET", self.path, self.headers.get("Range"), self.headers.get("If-Range"))
        self.owner._record(self.record)
        route = self.owner.routes.get(self.path)
        if route is None:
            self._simple(404)
            return
        with self.owner._lock:
            route.hits += 1
            hit = route.hits
        self._serve(route, hit)

    def send_response(self, code: int, message: str | None = None) -> None:
        self.record.status = code
        super().send_response(code, message)

    def _serve(self, route: Route, hit: int) -> None:
        if route.status is not None and (route.status_requests is None or hit <= route.status_requests):
            self._simple(route.status)
            return
        if route.redirect_to is not None:
            self.send_response(route.redirect_status)
            self.send_header("Location", route.redirect_to)
            self.send_header("Content-Length", "0")
            self.send_header("Connection", "close")
            self.end_headers()
            return
        if route.drip_head and route.drip_interval is not None:
            self._drip(b"HTTP/1.1 200 OK\r\n" + b"X-Slow: " + b"s" * 100_000, route.drip_interval, 1)
            return
        body = route.body
        etag = route.strong_etag()
        start, status = 0, 200
        rng = self.headers.get("Range")
        if_range = self.headers.get("If-Range")
        if (
            rng
            and not route.ignore_range
            and (if_range is None or route.ignore_if_range or if_range in (etag, route.last_modified))
        ):
            m = _RANGE.match(rng.strip())
            if m is None or int(m.group(1)) >= len(body):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.send_header("Content-Length", "0")
                self.send_header("Connection", "close")
                self.end_headers()
                return
            start = int(m.group(1))
            end = min(int(m.group(2)), len(body) - 1) if m.group(2) else len(body) - 1
            body = body[start : end + 1]
            status = 206
        faulty = route.fault_requests is None or hit <= route.fault_requests
        chunked = route.chunked or route.extra_bytes > 0

        self.send_response(status)
        if etag:
            self.send_header("ETag", etag)
        if route.last_modified:
            self.send_header("Last-Modified", route.last_modified)
        self.send_header("Accept-Ranges", "none" if route.ignore_range else "bytes")
        self.send_header("Content-Type", "application/octet-stream")
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{start + len(body) - 1}/{len(route.body)}")
        for name, value in route.extra_headers:
            self.send_header(name, value)
        if chunked:
            self.send_header("Transfer-Encoding", "chunked")
        else:
            self.send_header("Content-Length", str(route.declared_length if route.declared_length else len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        if route.drip_interval is not None:
            with contextlib.suppress(OSError):
                self._drip(body, route.drip_interval, route.drip_bytes, chunked)
            return

        cut = None
        if faulty and route.drop_after is not None:
            cut = route.drop_after
        if faulty and route.stall_after is not None:
            cut = route.stall_after if cut is None else min(cut, route.stall_after)
        try:
            sent = self._send(body[:cut] if cut is not None else body, chunked)
            if cut is not None and cut < len(body):
                if faulty and route.stall_after is not None and sent >= route.stall_after:
                    self.owner._stop.wait(min(route.stall_seconds, 10.0))
                self._abort()
                return
            if route.extra_bytes:
                extra = min(route.extra_bytes, _MAX_EXTRA)
                self._send(b"X" * extra, chunked)
            if chunked:
                self.wfile.write(b"0\r\n\r\n")
        except OSError:  # the client went away (e.g. it refused extra bytes)
            pass

    def _send(self, data: bytes, chunked: bool) -> int:
        sent = 0
        for i in range(0, len(data), _PIECE):
            piece = data[i : i + _PIECE]
            if chunked:
                self.wfile.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
            else:
                self.wfile.write(piece)
            sent += len(piece)
        self.wfile.flush()
        return sent

    def _drip(self, data: bytes, interval: float, piece: int, chunked: bool = False) -> None:
        """Send ``data`` ``piece`` bytes at a time, one piece per ``interval`` s, until done or stopped."""
        for i in range(0, len(data), piece):
            part = data[i : i + piece]
            self.wfile.write(f"{len(part):x}\r\n".encode() + part + b"\r\n" if chunked else part)
            self.wfile.flush()
            if self.owner._stop.wait(interval):
                return
        if chunked:
            self.wfile.write(b"0\r\n\r\n")

    def _abort(self) -> None:
        try:
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _simple(self, status: int) -> None:
        text = f"status {status}\n".encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(text)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(text)

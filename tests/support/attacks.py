"""Helpers for the attack and rollback-verification tests: damage a device, run the real CLI, check invariants.

``run_cli`` runs the installed ``edge-runtime`` console script as a subprocess with a deadline and a
memory limit (``RLIMIT_AS``), so a test fails instead of hanging or swapping when the runtime
misbehaves; ``tree_digest`` hashes a whole device root for "nothing changed" assertions.
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
import shutil
import signal
import stat
import subprocess
import sys
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from edge_runtime._cli_common import EXIT_CODES
from edge_runtime.device import Device

from .factory import MODEL, Release

EXE = Path(sys.executable).with_name("edge-runtime")
#: exit codes the CLI documents (``_cli_common.EXIT_CODES``: README and ``edge-runtime --help``), but the
#: Ctrl-C one: no test interrupts the CLI
DOCUMENTED_EXIT_CODES = frozenset(EXIT_CODES) - {130}
#: address-space cap of one CLI run: LiteRT maps ~1 GiB of virtual memory at import; a parser that
#: reads a hostile header whole blows through this long before the machine notices
MEMORY_LIMIT = 3 << 30
#: the mode the runtime gives version directories (edge_runtime._fsutil.make_tree_readonly)
READ_ONLY_DIR = 0o555


@dataclass
class CliRun:
    rc: int
    out: dict[str, Any]
    stdout: str
    stderr: str
    #: peak resident memory of the CLI and every process it started (KiB, from the kernel's rusage)
    max_rss_kib: int
    seconds: float

    def assert_clean(self, *, max_rss_mib: int = 512) -> None:
        """No traceback, an exit code from the documented set, strict JSON output, bounded memory."""
        assert "Traceback" not in self.stderr, self.stderr
        assert self.rc in DOCUMENTED_EXIT_CODES, (self.rc, self.stdout, self.stderr)
        assert "unparsed" not in self.out, self.stdout
        assert self.max_rss_kib < max_rss_mib * 1024, f"peak RSS {self.max_rss_kib // 1024} MiB"


# Runs the CLI and writes the peak RSS of its process tree (RUSAGE_CHILDREN of this wrapper) to argv[1].
_WRAPPER = (
    "import resource, subprocess, sys\n"
    "rc = subprocess.call(sys.argv[2:])\n"
    "open(sys.argv[1], 'w').write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss))\n"
    "sys.exit(rc)\n"
)


def _limit_memory() -> None:  # runs in the child between fork and exec
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))


def run_cli(root: Path, *args: str, timeout: float = 60.0, env: dict[str, str] | None = None) -> CliRun:
    """The real ``edge-runtime --root ROOT --json <args>`` in a child process, bounded in time and memory.

    On the deadline the whole process group is killed and the test fails (a hung command is a bug).
    """
    import tempfile
    import time

    with tempfile.NamedTemporaryFile("r", suffix=".rss") as rss:
        t0 = time.monotonic()
        proc = subprocess.Popen(
            [sys.executable, "-c", _WRAPPER, rss.name, str(EXE), "--root", str(root), "--json", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            preexec_fn=_limit_memory,
            start_new_session=True,
            env={**os.environ, **(env or {})},
        )
        try:
            stdout, stderr = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            raise AssertionError(f"edge-runtime {' '.join(args)} did not finish within {timeout} s") from None
        seconds = time.monotonic() - t0
        peak = int(rss.read().strip() or 0)
    try:
        out = json.loads(stdout, parse_constant=_no_constant) if stdout.strip() else {}
    except ValueError:
        out = {"unparsed": stdout}
    return CliRun(proc.returncode, out, stdout, stderr, peak, seconds)


def _no_constant(name: str) -> Any:
    raise ValueError(f"non-JSON constant {name}")


def strict_json(text: str) -> Any:
    """Parse JSON as a strict reader would: NaN, Infinity and -Infinity are errors, not numbers."""
    return json.loads(text, parse_constant=_no_constant)


def pinned_digest(bundle: Path) -> str:
    """The manifest digest a plan pins for ``bundle`` (what ``--expect-digest`` and models.yaml carry)."""
    from edge_runtime.bundle import read_envelope
    from edge_runtime.manifest import Manifest

    return Manifest.from_signed(read_envelope(bundle).signed).digest


def tree_digest(root: Path, *, skip: tuple[str, ...] = ("lock", "facts/")) -> str:
    """One hash over every path, type, mode, link target and file content under ``root``."""
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        if rel in skip or rel.startswith(tuple(s for s in skip if s.endswith("/"))):
            continue
        st = p.lstat()
        h.update(f"{rel}\0{stat.S_IFMT(st.st_mode)}\0{stat.S_IMODE(st.st_mode):o}\0".encode())
        if p.is_symlink():
            h.update(os.readlink(p).encode())
        elif p.is_file():
            h.update(p.read_bytes())
    return h.hexdigest()


def corrupt_file(dev: Device, version: str, name: str = "model.tflite", *, model: str = MODEL) -> Path:
    """Flip the last byte of an installed file (same length, different content), as a failing disk would."""
    path = dev.version_dir(model, version) / name
    data = path.read_bytes()
    os.chmod(path, 0o644)
    path.write_bytes(data[:-1] + bytes([data[-1] ^ 0xFF]))
    os.chmod(path, 0o444)
    return path


def add_stray_file(dev: Device, version: str, name: str = "extra.bin", *, model: str = MODEL) -> Path:
    """Drop a file the manifest does not list into an installed version."""
    vdir = dev.version_dir(model, version)
    os.chmod(vdir, stat.S_IRWXU)
    (vdir / name).write_bytes(b"not signed\n")
    os.chmod(vdir, READ_ONLY_DIR)
    return vdir / name


def model_state(root: Path, model: str = MODEL) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((root / "models" / model / "state.json").read_text())
    return data


def active_version(dev: Device, model: str = MODEL) -> str | None:
    link = dev.active_link(model)
    return os.readlink(link).split("/")[-1] if link.is_symlink() else None


def installed_device(release: Release, root: Path, bundles: list[Path], **config: object) -> Device:
    """A device root with ``bundles`` installed (and committed) in order, through the runtime's API."""
    dev = release.device(root, **config)
    for b in bundles:
        r = dev.install(str(b))
        assert r.ok, r
    return dev


def clone_device(template: Path, dest: Path) -> Device:
    """A copy of a prepared device root (links, modes and state as they are): cheaper than installing again."""
    shutil.copytree(template, dest, symlinks=True)
    return Device(dest)


# --- a hostile HTTP server -------------------------------------------------------------------------


@dataclass
class Hostile:
    """How one path misbehaves. Every behaviour ends when the client hangs up or the server stops."""

    kind: str  # "body", "drip", "endless", "headers", "header-drip", "redirect"
    body: bytes = b""
    #: drip: seconds between single bytes; endless: declared Content-Length (None: none, close-delimited)
    interval: float = 0.5
    declared: int | None = None
    #: headers: how many extra header lines, and how long each value is
    count: int = 0
    value_len: int = 8
    location: str = ""


class HostileServer:
    """A loopback HTTP/1.0 server whose paths drip, never end, flood headers or redirect elsewhere."""

    def __init__(self, routes: dict[str, Hostile]) -> None:
        self.routes = routes
        self.stop = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                route = server.routes.get(self.path.split("?")[0])
                self.connection.settimeout(5.0)
                try:
                    if route is None:
                        self.send_error(404)
                    else:
                        server.serve(self, route)
                except (OSError, ValueError):
                    pass  # the client hung up: that is how these behaviours end

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"

    def serve(self, h: BaseHTTPRequestHandler, r: Hostile) -> None:
        if r.kind == "redirect":
            h.send_response(302)
            h.send_header("Location", r.location)
            h.end_headers()
            return
        h.send_response(200)
        h.send_header("Content-Type", "application/octet-stream")
        if r.kind == "header-drip":  # a slow-loris response head: one header line at a time, forever
            h.flush_headers()
            for i in range(1_000_000):
                if self.stop.wait(r.interval):
                    return
                h.wfile.write(f"X-Drip-{i}: x\r\n".encode())
                h.wfile.flush()
            return
        if r.kind == "headers":
            for i in range(r.count):
                h.send_header(f"X-Flood-{i}", "v" * r.value_len)
        length = r.declared if r.kind == "endless" else len(r.body)
        if length is not None:
            h.send_header("Content-Length", str(length))
        h.end_headers()
        if r.kind == "drip":
            for i in range(len(r.body)):
                if self.stop.wait(r.interval):
                    return
                h.wfile.write(r.body[i : i + 1])
                h.wfile.flush()
        elif r.kind == "endless":
            chunk = bytes(64 * 1024)
            while not self.stop.is_set():
                h.wfile.write(chunk)
        else:
            h.wfile.write(r.body)

    def __enter__(self) -> HostileServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=10)

"""The smoke test child process (started by :mod:`edge_runtime._smoke_proc`; not a public command).

``python -I -c <boot> PKG_PARENT REQUEST_JSON RESULT_FD``: ``REQUEST_JSON`` names the model directory
(a staged version or the active link), the most golden samples the parent's deadline allows, the CPU
seconds cap and the parent's pid. The child first makes sure it cannot outlive its parent, then runs
:func:`edge_runtime.smoke.run_smoke_test` on the manifest in that directory (the parent verified it)
and writes one strict JSON document (no NaN/Infinity) to ``RESULT_FD``. Anything the model does to the
process (a hang, a crash) is judged by the parent.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import threading
import time
from pathlib import Path
from typing import Any, NoReturn

PR_SET_PDEATHSIG = 1
EXIT_PARENT_GONE = 70  # == _smoke_proc.EXIT_PARENT_GONE (not imported: keep the child's imports minimal)


def _die_with_parent(parent: int) -> None:
    """SIGKILL this process when the parent dies (Linux), with an stdin-EOF watchdog as the fallback."""
    try:
        import ctypes
        import signal

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: the watchdog and the CPU cap remain
        pass
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(EXIT_PARENT_GONE)

    def watch() -> None:
        try:
            while os.read(0, 4096):
                pass
        except OSError:
            pass
        os._exit(EXIT_PARENT_GONE)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def _limit_resources(cpu_s: int, mem_bytes: int) -> None:
    """Cap CPU time just above the deadline (an orphan cannot spin on) and the address space; no core
    files; be the OOM killer's first choice."""
    try:
        with open("/proc/self/oom_score_adj", "w", encoding="ascii") as fh:
            fh.write("1000")
    except OSError:
        pass
    caps = (
        (resource.RLIMIT_CPU, cpu_s, cpu_s + 1),
        (resource.RLIMIT_CORE, 0, 0),
        (resource.RLIMIT_AS, mem_bytes, mem_bytes),
    )
    for res, soft, hard in caps:
        try:
            _, cur_hard = resource.getrlimit(res)
            if cur_hard != resource.RLIM_INFINITY:
                hard = min(hard, cur_hard)
                soft = min(soft, hard)
            resource.setrlimit(res, (soft, hard))
        except (ValueError, OSError):
            pass


def _run(req: dict[str, Any]) -> dict[str, Any]:
    from . import _faults
    from ._json import read_untrusted_file
    from ._limits import DEFAULT_LIMITS
    from .manifest import MANIFEST_NAME, Manifest, parse_envelope
    from .smoke import run_smoke_test

    model_dir = Path(req["dir"])
    raw = read_untrusted_file(model_dir / MANIFEST_NAME, DEFAULT_LIMITS.manifest_max_bytes)
    manifest = Manifest.from_signed(parse_envelope(raw).signed)
    _faults.checkpoint("smoke.child")
    doc = run_smoke_test(model_dir, manifest, max_samples=int(req["max_samples"])).to_dict()
    doc.pop("process_ms", None)  # the parent's measurement
    return doc


def _failure(reason: str, start: float) -> dict[str, Any]:
    from ._smoke_result import SmokeResult

    doc = SmokeResult.failed(reason[:1000], duration_ms=(time.perf_counter() - start) * 1e3).to_dict()
    doc.pop("process_ms", None)
    return doc


def main(argv: list[str]) -> NoReturn:
    start = time.perf_counter()
    req = json.loads(argv[0])
    out_fd = int(argv[1])
    _die_with_parent(int(req["parent"]))
    _limit_resources(int(req["cpu_s"]), int(req["mem_bytes"]))
    try:
        doc = _run(req)
        data = json.dumps(doc, allow_nan=False, sort_keys=True).encode()
    except MemoryError:
        data = json.dumps(_failure(f"out of memory: the model needs more than {req['mem_bytes']} bytes of "
                                   "address space", start), sort_keys=True).encode()
    except Exception as exc:  # the parent turns this into a failed smoke test with the reason
        from .errors import EdgeRuntimeError

        msg = exc.message if isinstance(exc, EdgeRuntimeError) else f"{type(exc).__name__}: {exc}"
        data = json.dumps(_failure(f"smoke test error: {msg}", start), sort_keys=True).encode()
    from . import _faults

    _faults.checkpoint("smoke.result")
    view = memoryview(data)
    while view:
        view = view[os.write(out_fd, view) :]
    os.close(out_fd)
    # The verdict is sent: exit at once. Interpreter teardown (backend threads, module finalizers) could
    # only add time, or hang, and the parent would then have to kill a child whose result it already has.
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":  # pragma: no cover - started through _smoke_proc's boot line
    sys.exit(main(sys.argv[1:]))

"""The smoke test in a child process with a hard deadline (the parent side).

Every smoke test -- at install (on the staged version), after activation, in ``check`` and in
recovery -- runs in a fresh child: ``sys.executable -I -c <boot>`` (isolated mode: no ``PYTHON*``
variables, no current directory or user site on ``sys.path``), in its own session and process group.
The parent never imports numpy or a TFLite backend for it.

- **Deadline** (:func:`smoke_deadline_s`): derived from the signed policy and the limits in
  :class:`~edge_runtime._limits.Limits`::

      start_allowance + model_bytes / load_rate + max(floor, margin * samples * repeats * p95_budget)

  capped at ``smoke_deadline_max_s`` and rounded up to whole seconds. ``samples`` is read from the
  header of the golden file's ``inputs.npy`` (stdlib only, bounded); the child refuses to run more.
  At the deadline the whole process group is killed and the result is a failed smoke test whose
  reason starts with ``timed out after N s``.
- **Crashes are failed smoke tests**: a child killed by a signal (SIGSEGV, SIGABRT, SIGKILL from the
  OOM killer, ...), a non-zero exit, no result, or a result that is not a valid document all give a
  failed :class:`SmokeResult` naming the cause (the signal's name, the tail of the child's stderr).
- **The result is untrusted**: at most ``smoke_result_max_bytes``, parsed by
  :func:`~edge_runtime._json.loads_untrusted` (no NaN/Infinity, bounded numbers and depth), exact field
  set and types, finite non-negative metrics.
- **The child never outlives its parent**: it asks the kernel for SIGKILL when the parent dies
  (``PR_SET_PDEATHSIG``), watches its stdin pipe for EOF as a fallback, and caps its own CPU time
  (``RLIMIT_CPU``) just above the deadline, so an orphan of a parent killed mid-test cannot spin on.
- **Bounded memory**: the child caps its address space (``RLIMIT_AS``, from ``Limits``) and makes itself
  the kernel OOM killer's first choice (``oom_score_adj`` 1000), so a greedy model fails its own test
  rather than taking the runtime or a serving process with it.

Start-up cost (measured, bench goal 5): an isolated interpreter plus numpy and the backend start in
0.12-0.25 s here; the bare LiteRT loop of the benchmark is started the same way, and the child reports
its own test duration so the start-up is reported separately. A fork server would save most of that,
but a process forked from a long-lived parent shares its state (locks, file descriptors, the lock on
the device); a fresh interpreter is the robust choice at this cost.

Fault injection (tests only): the parent never passes its own ``EDGE_RUNTIME_UNSAFE_FAULT_INJECTION``
to the child; ``EDGE_RUNTIME_UNSAFE_SMOKE_FAULT_INJECTION`` is passed to the child as that variable
(see :mod:`edge_runtime._faults`), for crash modes no real model can produce here (SIGSEGV, abort, an
OOM kill).
"""

from __future__ import annotations

import ast
import contextlib
import math
import os
import selectors
import signal
import struct
import subprocess
import sys
import time
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import _faults
from ._json import dumps_strict, loads_untrusted
from ._limits import DEFAULT_LIMITS, Limits
from ._smoke_result import BACKEND_ENV, BACKENDS, CHILD_FIELDS, SmokeResult, available_backends
from .errors import EdgeRuntimeError, safe_text

if TYPE_CHECKING:
    from .manifest import Manifest, SmokePolicy

__all__ = [
    "BACKENDS",
    "BACKEND_ENV",
    "SMOKE_FAULT_ENV",
    "SmokeResult",
    "available_backends",
    "golden_sample_count",
    "parse_child_result",
    "run_smoke_test_in_child",
    "smoke_deadline_s",
]

FAULT_ENV = "EDGE_RUNTIME_UNSAFE_FAULT_INJECTION"
SMOKE_FAULT_ENV = "EDGE_RUNTIME_UNSAFE_SMOKE_FAULT_INJECTION"
#: the child's exit status when its parent went away (its stdin pipe reached EOF)
EXIT_PARENT_GONE = 70
#: this package's directory, given to the isolated child
_PKG_DIR = str(Path(__file__).resolve().parent)
# The child registers the package without running its __init__ (which imports the whole device layer:
# ~35 ms of the child's start-up for nothing), then imports only the smoke modules from this directory.
_BOOT = (
    "import sys,types;m=types.ModuleType('edge_runtime');m.__path__=[sys.argv[1]];"
    "sys.modules['edge_runtime']=m;"
    "from edge_runtime._smoke_child import main;sys.exit(main(sys.argv[2:]))"
)
_SIGNAL_HINTS = {
    "SIGSEGV": "segmentation fault",
    "SIGBUS": "bus error",
    "SIGILL": "illegal instruction",
    "SIGFPE": "arithmetic fault",
    "SIGABRT": "aborted",
    "SIGKILL": "killed; out of memory?",
    "SIGXCPU": "CPU time limit exceeded",
}


class _InvalidResult(EdgeRuntimeError):
    code = "smoke_result"


# ----------------------------------------------------------------------------- deadline ----------


def golden_sample_count(path: Path, max_header: int = 64 * 1024) -> int:
    """Number of golden samples: the first dimension of ``inputs.npy`` in the ``.npz``, from its header.

    Reads only the zip directory and the npy header (at most ``max_header`` bytes). Raises
    :class:`ValueError` naming the problem when the file is not a readable npz with such an array.
    """
    try:
        with zipfile.ZipFile(path) as z, z.open("inputs.npy") as f:
            magic = f.read(8)
            if len(magic) != 8 or magic[:6] != b"\x93NUMPY":
                raise ValueError("inputs.npy is not a numpy array file")
            size_fmt = "<H" if magic[6] == 1 else "<I"
            raw = f.read(struct.calcsize(size_fmt))
            if len(raw) != struct.calcsize(size_fmt):
                raise ValueError("inputs.npy header is truncated")
            (hlen,) = struct.unpack(size_fmt, raw)
            if hlen > max_header:
                raise ValueError(f"inputs.npy header is {hlen} bytes, more than {max_header}")
            header = ast.literal_eval(f.read(hlen).decode("latin-1"))
    except (OSError, KeyError, ValueError, zipfile.BadZipFile, SyntaxError, MemoryError) as exc:
        raise ValueError(f"golden samples are unreadable: {safe_text(str(exc))[:200]}") from None
    except RecursionError:
        raise ValueError("golden samples are unreadable: inputs.npy header nests too deeply") from None
    shape = header.get("shape") if isinstance(header, dict) else None
    if not isinstance(shape, tuple) or not shape or not isinstance(shape[0], int) or isinstance(shape[0], bool):
        raise ValueError("golden samples are unreadable: inputs.npy declares no sample dimension")
    if shape[0] < 1:
        raise ValueError("golden samples hold no sample")
    return shape[0]


def smoke_deadline_s(samples: int, policy: SmokePolicy, model_bytes: int, limits: Limits = DEFAULT_LIMITS) -> int:
    """Whole seconds the smoke child gets (see the module docstring for the formula)."""
    work = limits.smoke_deadline_margin * samples * policy.repeats * policy.p95_latency_ms / 1000.0
    total = limits.smoke_start_allowance_s + model_bytes / limits.smoke_load_bytes_per_s
    total += max(limits.smoke_deadline_floor_s, work)
    if not math.isfinite(total):  # cannot happen with validated policies; fail towards the cap
        total = limits.smoke_deadline_max_s
    return math.ceil(min(total, limits.smoke_deadline_max_s))


# ----------------------------------------------------------------------------- result ------------


def _number(doc: dict[str, Any], key: str, *, optional: bool, hi: float | None = None) -> float | None:
    v = doc[key]
    if v is None and optional:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
        raise _InvalidResult(f"field {key} is not a finite non-negative number")
    if hi is not None and v > hi:
        raise _InvalidResult(f"field {key} is above {hi}")
    return float(v)


def parse_child_result(data: bytes, limits: Limits = DEFAULT_LIMITS) -> SmokeResult:
    """Validate the child's result document; raise :class:`ValueError` (with the reason) if invalid."""
    try:
        doc = loads_untrusted(
            data, limits, "smoke test result", error=_InvalidResult, max_bytes=limits.smoke_result_max_bytes
        )
        if not isinstance(doc, dict) or set(doc) != CHILD_FIELDS:
            raise _InvalidResult("the document does not hold exactly the smoke result fields")
        passed, reason, backend, samples = doc["passed"], doc["reason"], doc["backend"], doc["samples"]
        if not isinstance(passed, bool):
            raise _InvalidResult("field passed is not a boolean")
        if not isinstance(reason, str) or not reason:
            raise _InvalidResult("field reason is not a non-empty string")
        if backend is not None and (not isinstance(backend, str) or not 0 < len(backend) <= 64):
            raise _InvalidResult("field backend is not a short string")
        if isinstance(samples, bool) or not isinstance(samples, int) or not 0 <= samples <= 10**7:
            raise _InvalidResult("field samples is not a sample count")
        res = SmokeResult(
            passed=passed,
            reason=safe_text(reason[:1000]),
            backend=backend,
            samples=samples,
            label_agreement=_number(doc, "label_agreement", optional=True, hi=1.0),
            max_abs_diff=_number(doc, "max_abs_diff", optional=True),
            p50_ms=_number(doc, "p50_ms", optional=True),
            p95_ms=_number(doc, "p95_ms", optional=True),
            duration_ms=_number(doc, "duration_ms", optional=False) or 0.0,
            mean_confidence=_number(doc, "mean_confidence", optional=True),
        )
    except EdgeRuntimeError as exc:
        raise ValueError(exc.message) from None
    if passed and (
        reason != "passed"
        or backend is None
        or samples < 1
        or None in (res.label_agreement, res.max_abs_diff, res.p50_ms, res.p95_ms, res.mean_confidence)
    ):
        raise ValueError("a passing result without its metrics")
    return res


# ----------------------------------------------------------------------------- the child ---------


#: numpy's BLAS (OpenBLAS) starts one thread per core when it is imported: CPU the smoke test never uses (its
#: interpreter runs with num_threads=1 on a few samples) taken from the device's serving workload, ~0.07 CPU-s
#: per install on this machine. One thread unless the operator set these.
SINGLE_THREAD_ENV = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    for var in SINGLE_THREAD_ENV:
        env.setdefault(var, "1")
    env.pop(FAULT_ENV, None)  # the parent's own faults (kill@N, enospc@...) are not the child's
    child_fault = env.pop(SMOKE_FAULT_ENV, None)
    if child_fault:
        env[FAULT_ENV] = child_fault
    return env


def _last_line(tail: bytes) -> str:
    lines = [  # TFLite's own INFO lines ("Created TensorFlow Lite XNNPACK delegate") explain nothing
        ln.strip() for ln in tail.decode("utf-8", "replace").splitlines() if ln.strip() and not ln.startswith("INFO: ")
    ]
    return f" (last output: {safe_text(lines[-1])[:200]})" if lines else ""


def _exited(pid: int) -> bool:
    """Whether the child has exited, without reaping it (so its process group id stays reserved)."""
    try:
        return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True


def run_smoke_test_in_child(model_dir: Path, manifest: Manifest, limits: Limits = DEFAULT_LIMITS) -> SmokeResult:
    """Run the smoke test of the model in ``model_dir`` (a version directory or the active link).

    Never raises for anything the model or the child does; returns a failed result instead.
    """
    t0 = time.monotonic()

    def fail(reason: str, **kw: Any) -> SmokeResult:
        return SmokeResult.failed(reason, process_ms=(time.monotonic() - t0) * 1e3, **kw)

    model_dir = Path(os.path.abspath(model_dir))  # the child runs in "/"; a symlink stays a symlink
    try:
        samples = golden_sample_count(model_dir / manifest.entrypoints["golden"])
    except ValueError as exc:
        return fail(str(exc))
    deadline = smoke_deadline_s(samples, manifest.smoke, manifest.file(manifest.entrypoints["model"]).length, limits)
    model_bytes = manifest.file(manifest.entrypoints["model"]).length
    request = dumps_strict(
        {
            "dir": str(model_dir),
            "max_samples": samples,
            "cpu_s": deadline + 1,
            "mem_bytes": limits.smoke_memory_base_bytes + limits.smoke_memory_per_model_byte * model_bytes,
            "parent": os.getpid(),
        },
        "smoke request",
    )
    rfd, wfd = os.pipe()
    try:
        proc = subprocess.Popen(
            [sys.executable, "-I", "-c", _BOOT, _PKG_DIR, request, str(wfd)],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            pass_fds=(wfd,),
            cwd="/",
            env=_child_env(),
            start_new_session=True,
        )
    except OSError as exc:
        os.close(rfd)
        os.close(wfd)
        return fail(f"cannot start the smoke test process: {exc.strerror or exc}")
    os.close(wfd)
    outcome: str | None = None
    out = bytearray()
    err = b""
    try:
        _faults.checkpoint("smoke.child_started")
        assert proc.stderr is not None
        sel = selectors.DefaultSelector()
        sel.register(rfd, selectors.EVENT_READ, "result")
        sel.register(proc.stderr.fileno(), selectors.EVENT_READ, "stderr")
        open_pipes = 2
        end = t0 + deadline
        while outcome is None and (open_pipes or not _exited(proc.pid)):
            left = end - time.monotonic()
            if left <= 0:
                outcome = "timeout"
                break
            if not open_pipes:  # both pipes closed: the child is exiting
                time.sleep(min(0.002, left))
                continue
            for key, _ in sel.select(left):
                chunk = os.read(key.fd, 65536)
                if not chunk:
                    sel.unregister(key.fd)
                    open_pipes -= 1
                elif key.data == "result":
                    out += chunk
                    if len(out) > limits.smoke_result_max_bytes:
                        outcome = "too_big"
                else:
                    err = (err + chunk)[-limits.smoke_stderr_tail_bytes :]
        sel.close()
    finally:
        # Kill the whole group before reaping the leader: its unreaped zombie keeps the group id ours,
        # so this can never hit an unrelated process. It also ends any grandchild the model started.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        rc = proc.wait()
        os.close(rfd)
        for pipe in (proc.stdin, proc.stderr):
            if pipe is not None:
                pipe.close()
    process_ms = (time.monotonic() - t0) * 1e3
    if outcome == "timeout":
        return fail(
            f"timed out after {deadline} s (deadline for {samples} samples x {manifest.smoke.repeats} repeats "
            f"x {manifest.smoke.p95_latency_ms:g} ms budget x {limits.smoke_deadline_margin:g}, at least "
            f"{limits.smoke_deadline_floor_s:g} s, plus {limits.smoke_start_allowance_s:g} s start-up); "
            "the smoke test process was killed"
        )
    if outcome == "too_big":
        return fail(f"the smoke test process sent more than {limits.smoke_result_max_bytes} bytes of result")
    if rc < 0:
        try:
            name = signal.Signals(-rc).name
        except ValueError:
            name = f"signal {-rc}"
        hint = _SIGNAL_HINTS.get(name)
        return fail(f"the smoke test process crashed: {name}{f' ({hint})' if hint else ''}{_last_line(err)}")
    if rc != 0:
        return fail(f"the smoke test process exited with status {rc}{_last_line(err)}")
    try:
        res = parse_child_result(bytes(out), limits)
    except ValueError as exc:
        what = "no result" if not out else f"an invalid result ({exc})"
        return fail(f"the smoke test process returned {what}{_last_line(err)}")
    return SmokeResult(**{**res.to_dict(), "process_ms": process_ms})

"""Instrumented step boundaries for the crash-safety harness.

Production code calls :func:`checkpoint` at every durable step (each write, fsync, rename, smoke
phase, commit, rollback). Normally it costs one global lookup. The crash harness (and only tests)
arm it through :func:`unsafe_arm`, or through the environment variable
``EDGE_RUNTIME_UNSAFE_FAULT_INJECTION``; both log a warning because an armed process kills itself.

Environment form: ``kill@N`` sends SIGKILL to this process at the N-th checkpoint (1-based);
``enospc@NAME`` raises ``OSError(ENOSPC)`` at the first checkpoint called ``NAME``;
``count@FILE`` appends the name of every checkpoint to FILE (to enumerate boundaries).

Crash modes, for the smoke test child (``EDGE_RUNTIME_UNSAFE_SMOKE_FAULT_INJECTION`` in the runtime's
environment is passed to the child as ``EDGE_RUNTIME_UNSAFE_FAULT_INJECTION``; the runtime's own value
never reaches the child): at the first checkpoint called ``NAME`` (``smoke.load``, ``smoke.invoke``,
``smoke.compare``, ``smoke.result``), ``segv@NAME`` and ``abort@NAME`` crash the process with SIGSEGV
or SIGABRT, ``oom@NAME`` SIGKILLs it as the kernel's out-of-memory killer would, ``hang@NAME`` blocks
forever and ``exit@NAME`` exits with status 3. They stand in for models that crash the interpreter,
which no valid model does reliably (a hanging and a NaN-producing model are real models, see
``demo/fault-models``).
"""

from __future__ import annotations

import errno
import logging
import os
import signal
import time
from collections.abc import Callable

_log = logging.getLogger(__name__)

_hook: Callable[[str], None] | None = None


def checkpoint(name: str) -> None:
    """A step boundary. A no-op unless a fault hook is armed."""
    if _hook is not None:
        _hook(name)


def unsafe_arm(hook: Callable[[str], None] | None) -> None:
    """Install (or with ``None`` remove) a hook called at every checkpoint. Test-only."""
    global _hook
    if hook is not None:
        _log.warning("UNSAFE: fault injection is armed in this process")
    _hook = hook


def kill_at(target: int) -> Callable[[str], None]:
    """A hook that SIGKILLs this process at the ``target``-th checkpoint (1-based)."""
    seen = 0

    def hook(name: str) -> None:
        nonlocal seen
        seen += 1
        if seen == target:
            os.kill(os.getpid(), signal.SIGKILL)

    return hook


def _hang() -> None:
    while True:
        time.sleep(3600)


_CRASHES: dict[str, Callable[[], None]] = {
    "segv": lambda: os.kill(os.getpid(), signal.SIGSEGV),
    "abort": os.abort,
    "oom": lambda: os.kill(os.getpid(), signal.SIGKILL),
    "hang": _hang,
    "exit": lambda: os._exit(3),
}


def _from_env() -> None:
    spec = os.environ.get("EDGE_RUNTIME_UNSAFE_FAULT_INJECTION")
    if not spec:
        return
    kind, _, arg = spec.partition("@")
    if kind == "kill":
        unsafe_arm(kill_at(int(arg)))
    elif kind == "enospc":

        def enospc_hook(name: str) -> None:
            if name == arg:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        unsafe_arm(enospc_hook)
    elif kind in _CRASHES:
        crash = _CRASHES[kind]

        def crash_hook(name: str) -> None:
            if name == arg:
                crash()

        unsafe_arm(crash_hook)
    elif kind == "count":

        def count_hook(name: str) -> None:
            with open(arg, "a", encoding="utf-8") as fh:
                fh.write(name + "\n")

        unsafe_arm(count_hook)
    else:
        raise SystemExit(f"EDGE_RUNTIME_UNSAFE_FAULT_INJECTION: unknown mode {kind!r}")


_from_env()

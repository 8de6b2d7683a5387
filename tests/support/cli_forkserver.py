"""A fork server for running the real CLIs many times fast (the hostile-input corpus runs ~120 inputs).

``python -m tests.support.cli_forkserver`` imports the CLIs once, then for each request line on stdin
(JSON: ``{"module": "edge_runtime.cli", "argv": [...], "stdout": path, "stderr": path, "timeout": s}``)
forks a child that points fds 1 and 2 at the given files and runs ``main(argv)`` exactly as the
console script would -- an exception that escapes ``main`` is printed as a traceback, like the
interpreter does. The answer line holds the exit status and the child's own peak RSS (``wait4``).
A fresh interpreter per input costs ~0.2 CPU-s of imports; a fork costs a few milliseconds.
"""

from __future__ import annotations

import importlib
import json
import os
import signal
import sys
import time
import traceback
from typing import Any

PRELOAD = ("edge_runtime.cli", "edge_runtime.release_cli", "edge_runtime.bundle", "edge_runtime.trust")


def _child(req: dict[str, Any]) -> None:
    """In the forked child: redirect output, run the CLI, exit with its status. Never returns."""
    rc = 1
    try:
        out = os.open(req["stdout"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        err = os.open(req["stderr"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(out, 1)
        os.dup2(err, 2)
        sys.stdin = open(os.devnull)  # noqa: SIM115 - the child exits through os._exit
        try:
            rc = importlib.import_module(req["module"]).main(req["argv"])
        except SystemExit as exc:  # argparse usage errors
            rc = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        except BaseException:  # what the interpreter would print for an uncaught exception
            traceback.print_exc()
            rc = 1
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        os._exit(rc)


def _serve_one(req: dict[str, Any]) -> dict[str, Any]:
    sys.stdout.flush()
    pid = os.fork()
    if pid == 0:
        _child(req)
    rc, max_rss_kib = wait_with_deadline(pid, float(req.get("timeout", 60)))
    return {"rc": rc, "max_rss_kib": max_rss_kib}


def wait_with_deadline(pid: int, timeout: float) -> tuple[int, int]:
    """Wait for child ``pid`` (SIGKILL after ``timeout`` s); return its exit code and peak RSS in KiB."""
    deadline = time.monotonic() + timeout
    while True:
        wpid, status, usage = os.wait4(pid, os.WNOHANG)
        if wpid == pid:
            break
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            _, status, usage = os.wait4(pid, 0)
            break
        time.sleep(0.002)
    return os.waitstatus_to_exitcode(status), usage.ru_maxrss


def main() -> None:
    for name in PRELOAD:
        importlib.import_module(name)
    sys.stdout.write(json.dumps({"ready": True}) + "\n")
    sys.stdout.flush()
    for line in sys.stdin:
        sys.stdout.write(json.dumps(_serve_one(json.loads(line))) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()

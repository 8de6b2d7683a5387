"""Output and exit-code conventions shared by the two command-line tools.

Human text by default, strict JSON (never ``NaN``) with ``--json``; every failure is one readable
message and a documented exit code (:data:`EXIT_CODES`), never a traceback.
"""

from __future__ import annotations

import argparse
import errno
import logging
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from ._json import dumps_strict
from .errors import EdgeRuntimeError, quote_untrusted, safe_text

__all__ = ["EXIT_CODES", "emit", "exit_codes_epilog", "run"]

#: every exit status the CLIs use, with its meaning (also in ``--help`` and the README)
EXIT_CODES: dict[int, str] = {
    0: "success (including 'nothing to do')",
    1: "state error (corrupt state, not installed, rollback refused) or an unexpected error; the message says which",
    2: "usage or configuration error: bad option, not an initialised device root, unusable key file",
    3: "trust failure: signature, integrity, bundle format, expiry or downgrade (nothing changed)",
    4: "policy refusal: model name, compatibility, quarantined or immutable version (nothing changed)",
    5: "download failed: HTTP error, stalled, too slow, too large, refused redirect (a resumable partial is kept)",
    6: "staging or storage error, disk full (nothing half-written is left; the active model is unchanged)",
    7: "the TFLite backend cannot load or run the model",
    8: "the new version failed its smoke test or health check and was rolled back (and quarantined); "
    "monitor: a rule rolled a model back",
    75: "another operation holds the device lock; try again later",
    130: "interrupted (Ctrl-C)",
}


def exit_codes_epilog(codes: Sequence[int] | None = None) -> str:
    """The ``exit codes:`` block for ``--help`` (all of :data:`EXIT_CODES`, or ``codes``)."""
    lines = ["exit codes:"]
    lines += [f"  {c:<4} {EXIT_CODES[c]}" for c in (codes if codes is not None else EXIT_CODES)]
    return "\n".join(lines)


def dumps_json(data: Any) -> str:
    return dumps_strict(data, "--json output", indent=1, sort_keys=True)


def emit(as_json: bool, data: dict[str, Any], human: str, *, warnings: Sequence[str] = ()) -> None:
    """Print ``data`` as JSON (with ``warnings`` when there are any) or ``human`` as text.

    In text mode warnings have already gone to stderr through logging. Strict JSON (no NaN/Infinity);
    human text may quote untrusted names, so what cannot be printed is escaped.
    """
    if as_json:
        if warnings:
            data = {**data, "warnings": list(warnings)}
        sys.stdout.write(dumps_json(data) + "\n")
    else:
        sys.stdout.write(safe_text(human.rstrip("\n")) + "\n")


class ArgumentParser(argparse.ArgumentParser):
    """argparse without prefix matching (``--allow`` never means ``--allow-quarantined``), with the exit
    codes in ``--help``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(*args, **kwargs)


def run(fn: Callable[[], int], as_json: bool, *, warnings: Sequence[str] = ()) -> int:
    """Run a command body, turning every failure into a clear message and a documented exit code.

    ``warnings`` (a list the body may append to) is added to the JSON error output.
    """
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    try:
        return fn()
    except EdgeRuntimeError as exc:
        _report(as_json, exc.to_dict(), exc.diagnostics(), warnings)
        return exc.exit_code
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        return 130
    except OSError as exc:
        storage = exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO)
        code = "storage" if storage else "os"
        message = f"{exc.strerror or exc}" + (f": {quote_untrusted(exc.filename)}" if exc.filename else "")
        hint = (
            "free space or fix the device's storage, then re-run; the active model is unchanged"
            if storage
            else "check the path and its permissions"
        )
        data = {"error": code, "message": message, "hint": hint}
        _report(as_json, data, f"error[{code}]: {message}\n  hint: {hint}", warnings)
        return 6 if storage else 1
    except Exception as exc:  # a bug: one line, the traceback on demand
        if os.environ.get("EDGE_RUNTIME_DEBUG"):
            raise
        message = f"unexpected {type(exc).__name__}: {quote_untrusted(str(exc), 300)}"
        hint = "this is a bug; re-run with EDGE_RUNTIME_DEBUG=1 for the traceback and report it"
        _report(as_json, {"error": "internal", "message": message, "hint": hint},
                f"error[internal]: {message}\n  hint: {hint}", warnings)
        return 1


def _report(as_json: bool, data: dict[str, Any], human: str, warnings: Sequence[str]) -> None:
    if as_json:
        out = {"ok": False, **data}
        if warnings:
            out["warnings"] = list(warnings)
        try:
            text = dumps_json(out)
        except EdgeRuntimeError:  # an error message that is not strict JSON: say so, plainly
            text = dumps_json({"ok": False, "error": data.get("error"), "message": "(message not encodable)"})
        sys.stdout.write(text + "\n")
    else:
        sys.stderr.write(safe_text(human) + "\n")

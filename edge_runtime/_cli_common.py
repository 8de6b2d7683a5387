"""Output helpers shared by the two command-line tools: human text by default, JSON with --json."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable
from typing import Any

from ._json import dumps_strict
from .errors import EdgeRuntimeError, safe_text


def emit(as_json: bool, data: dict[str, Any], human: str) -> None:
    # strict JSON (no NaN/Infinity); human text may quote untrusted names: escape what cannot be printed
    if as_json:
        sys.stdout.write(dumps_strict(data, "--json output", indent=1, sort_keys=True) + "\n")
    else:
        sys.stdout.write(safe_text(human.rstrip("\n")) + "\n")


def run(fn: Callable[[], int], as_json: bool) -> int:
    """Run a command body, turning our errors into a clear message and their exit code."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    try:
        return fn()
    except EdgeRuntimeError as exc:
        if as_json:
            sys.stdout.write(json.dumps({"ok": False, **exc.to_dict()}, indent=1, sort_keys=True) + "\n")
        else:
            sys.stderr.write(exc.diagnostics() + "\n")
        return exc.exit_code
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        return 130

"""What a smoke test returns, and which TFLite backends exist here: no heavy imports.

Shared by the parent (:mod:`edge_runtime._smoke_proc`, which must not import numpy) and the smoke
child (:mod:`edge_runtime._smoke_child`, whose start-up this keeps small).
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import asdict, dataclass, fields
from typing import Any

from .errors import ConfigError

__all__ = ["BACKENDS", "BACKEND_ENV", "CHILD_FIELDS", "SmokeResult", "available_backends"]


@dataclass(frozen=True)
class SmokeResult:
    passed: bool
    reason: str
    backend: str | None
    samples: int
    label_agreement: float | None
    max_abs_diff: float | None
    p50_ms: float | None
    p95_ms: float | None
    #: the test itself (golden load, model load, inference, comparison), measured by whoever ran it
    duration_ms: float
    #: mean of the top-class score on the golden samples (a confidence proxy right after install)
    mean_confidence: float | None = None
    #: wall time of the child process as the parent saw it (start-up included); None when in-process
    process_ms: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def failed(cls, reason: str, duration_ms: float = 0.0, **kw: Any) -> SmokeResult:
        fields_: dict[str, Any] = {
            "backend": None,
            "samples": 0,
            "label_agreement": None,
            "max_abs_diff": None,
            "p50_ms": None,
            "p95_ms": None,
        }
        fields_.update(kw)
        return cls(False, reason, duration_ms=duration_ms, **fields_)


#: the fields the child sends (``process_ms`` is the parent's own measurement)
CHILD_FIELDS = frozenset(f.name for f in fields(SmokeResult)) - {"process_ms"}


#: backend name -> module that provides ``Interpreter``
BACKENDS: dict[str, str] = {
    "litert": "ai_edge_litert.interpreter",
    "tflite-runtime": "tflite_runtime.interpreter",
}
BACKEND_ENV = "EDGE_RUNTIME_BACKEND"


def available_backends() -> tuple[str, ...]:
    """Backends importable here, honouring ``EDGE_RUNTIME_BACKEND`` (no backend is imported)."""
    forced = os.environ.get(BACKEND_ENV)
    if forced:
        if forced not in BACKENDS:
            raise ConfigError(
                f"{BACKEND_ENV}={forced!r} is not a known backend", hint=f"use one of {', '.join(BACKENDS)}"
            )
        names: tuple[str, ...] = (forced,)
    else:
        names = tuple(BACKENDS)
    out = []
    for name in names:
        top = BACKENDS[name].split(".")[0]
        if importlib.util.find_spec(top) is not None:
            out.append(name)
    return tuple(out)

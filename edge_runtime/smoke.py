"""TFLite backends and the smoke test: real inference on the bundle's golden samples.

Backends, in order of preference: ``litert`` (``ai_edge_litert``) and ``tflite-runtime``
(``tflite_runtime``, which needs numpy<2). ``EDGE_RUNTIME_BACKEND`` forces one of them.

:func:`run_smoke_test` runs in-process; the runtime calls it only inside the bounded child of
:mod:`edge_runtime._smoke_proc` (a model that hangs or crashes must not take the runtime with it).

Non-finite numbers fail the test: a NaN or infinite output, golden output or metric is never
compared with a threshold (comparisons are written so that NaN fails them), and a NaN row never
counts as agreeing with a label.
"""

from __future__ import annotations

import importlib
import math
import time
from pathlib import Path
from typing import Any

import numpy as np

from . import _faults
from ._smoke_result import BACKEND_ENV, BACKENDS, SmokeResult, available_backends
from .errors import ModelLoadError
from .manifest import Manifest

__all__ = ["BACKENDS", "BACKEND_ENV", "SmokeResult", "available_backends", "load_interpreter", "run_smoke_test"]

def load_interpreter(model_path: Path, backends: tuple[str, ...]) -> tuple[Any, str]:
    """Load and allocate a model with the first usable backend among ``backends``."""
    usable = [b for b in available_backends() if b in backends]
    if not usable:
        raise ModelLoadError(
            f"no TFLite backend available among {', '.join(backends)}",
            hint="install ai-edge-litert (or tflite-runtime with numpy<2)",
        )
    backend = usable[0]
    module = importlib.import_module(BACKENDS[backend])
    try:
        interp = module.Interpreter(model_path=str(model_path), num_threads=1)
        interp.allocate_tensors()
    except Exception as exc:  # the backends raise ValueError/RuntimeError with C++ messages
        raise ModelLoadError(f"{backend} cannot load {model_path.name}: {str(exc).strip()[:300]}") from None
    return interp, backend


def _quantize(x: np.ndarray, detail: dict[str, Any]) -> np.ndarray:
    dtype = detail["dtype"]
    if dtype == np.float32:
        return x.astype(np.float32)
    scale, zero = detail["quantization"]
    if not scale:
        raise ModelLoadError("quantized input tensor has no scale")
    info = np.iinfo(dtype)
    q: np.ndarray = np.clip(np.round(x / scale + zero), info.min, info.max).astype(dtype)
    return q


def _dequantize(y: np.ndarray, detail: dict[str, Any]) -> np.ndarray:
    if detail["dtype"] == np.float32:
        return y.astype(np.float32)
    scale, zero = detail["quantization"]
    out: np.ndarray = ((y.astype(np.float32) - zero) * scale).astype(np.float32)
    return out


def _load_golden(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as data:
            inputs = np.asarray(data["inputs"], dtype=np.float32)
            outputs = np.asarray(data["expected_outputs"], dtype=np.float32)
            labels = np.asarray(data["expected_labels"], dtype=np.int64)
    except (OSError, KeyError, ValueError) as exc:
        raise ModelLoadError(f"golden samples {path.name} are unreadable: {exc}") from None
    if len(inputs) == 0 or len(inputs) != len(outputs) or len(inputs) != len(labels):
        raise ModelLoadError(f"golden samples {path.name}: inputs, outputs and labels differ in count")
    return inputs, outputs, labels


def run_smoke_test(version_dir: Path, manifest: Manifest, *, max_samples: int | None = None) -> SmokeResult:
    """Run the golden samples through the model; compare outputs, labels and latency with the policy.

    ``max_samples``: refuse golden files with more samples (the caller's deadline assumed that many).
    """
    start = time.perf_counter()
    policy = manifest.smoke

    def fail(reason: str, **kw: Any) -> SmokeResult:
        return SmokeResult.failed(reason, duration_ms=(time.perf_counter() - start) * 1e3, **kw)

    _faults.checkpoint("smoke.load")
    try:
        inputs, expected, labels = _load_golden(version_dir / manifest.entrypoints["golden"])
        interp, backend = load_interpreter(version_dir / manifest.entrypoints["model"], manifest.backends)
    except ModelLoadError as exc:
        return fail(exc.message)
    if max_samples is not None and len(inputs) > max_samples:
        return fail(f"golden samples hold {len(inputs)} samples, the deadline was computed for {max_samples}")
    if not np.all(np.isfinite(inputs)):
        return fail("golden inputs hold non-finite numbers (NaN or infinity): the bundle's golden file is broken")
    in_d = interp.get_input_details()[0]
    out_d = interp.get_output_details()[0]
    actual_shape = tuple(int(d) for d in in_d["shape"])
    actual_dtype = np.dtype(in_d["dtype"]).name
    if actual_shape != manifest.input_shape or actual_dtype != manifest.input_dtype:
        return fail(
            f"model input is {list(actual_shape)} {actual_dtype}, manifest declares "
            f"{list(manifest.input_shape)} {manifest.input_dtype}",
            backend=backend,
        )
    if inputs.shape[1:] != actual_shape[1:]:
        return fail(
            f"golden inputs have shape {list(inputs.shape[1:])}, model takes {list(actual_shape[1:])}", backend=backend
        )

    n = len(inputs)
    total = n * policy.repeats
    allowed_slow = math.floor(0.05 * total)  # more than this many over budget means p95 > budget
    budget_ns = policy.p95_latency_ms * 1e6
    latencies: list[int] = []
    slow = 0
    outputs = np.empty_like(expected)
    _faults.checkpoint("smoke.invoke")
    quantized = [_quantize(inputs[i : i + 1], in_d) for i in range(n)]
    for rep in range(policy.repeats):
        for i in range(n):
            interp.set_tensor(in_d["index"], quantized[i])
            t0 = time.perf_counter_ns()
            interp.invoke()
            dt = time.perf_counter_ns() - t0
            latencies.append(dt)
            if rep == 0:
                out = _dequantize(interp.get_tensor(out_d["index"]), out_d).reshape(-1)
                if out.shape != expected[i].shape:
                    return fail(
                        f"model output has {out.shape[0]} values, golden samples expect {expected[i].shape[0]}",
                        backend=backend,
                    )
                outputs[i] = out
            if dt > budget_ns:
                slow += 1
                if slow > allowed_slow:
                    lat = np.array(latencies) / 1e6
                    return fail(
                        f"latency over budget: {slow} of {total} planned invocations exceeded "
                        f"{policy.p95_latency_ms:g} ms (stopped early; slowest {lat.max():.2f} ms)",
                        backend=backend,
                        samples=n,
                        p50_ms=float(np.percentile(lat, 50)),
                        p95_ms=float(np.percentile(lat, 95)),
                    )
    _faults.checkpoint("smoke.compare")
    lat_ms = np.array(latencies) / 1e6
    p50, p95 = float(np.percentile(lat_ms, 50)), float(np.percentile(lat_ms, 95))
    finite_rows = np.all(np.isfinite(outputs), axis=1)
    if not np.all(finite_rows):
        bad = int(np.count_nonzero(~finite_rows))
        return fail(
            f"model produced non-finite outputs (NaN or infinity) for {bad} of {n} golden samples "
            f"(first: sample #{int(np.argmin(finite_rows))})",
            backend=backend,
            samples=n,
            p50_ms=p50,
            p95_ms=p95,
        )
    if not np.all(np.isfinite(expected)):
        return fail(
            "golden expected outputs hold non-finite numbers (NaN or infinity): the bundle's golden file is broken",
            backend=backend,
            samples=n,
            p50_ms=p50,
            p95_ms=p95,
        )
    max_diff = float(np.max(np.abs(outputs - expected)))
    agreement = float(np.mean(np.argmax(outputs, axis=1) == labels))
    metrics: dict[str, Any] = {
        "backend": backend,
        "samples": n,
        "label_agreement": agreement,
        "max_abs_diff": max_diff,
        "mean_confidence": float(np.mean(np.max(outputs, axis=1))),
        "p50_ms": p50,
        "p95_ms": p95,
    }
    problems = []
    # Every test is written "not (value within bound)", so a NaN that got this far fails it.
    if not max_diff <= policy.atol:
        worst = int(np.argmax(np.max(np.abs(outputs - expected), axis=1)))
        problems.append(
            f"outputs differ from the golden outputs by up to {max_diff:.4f} (tolerance "
            f"{policy.atol:g}; worst sample #{worst})"
        )
    if not agreement >= policy.min_label_agreement:
        problems.append(f"label agreement {agreement:.0%} is below the required {policy.min_label_agreement:.0%}")
    if not p95 <= policy.p95_latency_ms:
        problems.append(f"p95 latency {p95:.2f} ms exceeds the budget of {policy.p95_latency_ms:g} ms")
    if not all(math.isfinite(v) for v in (max_diff, agreement, p50, p95, metrics["mean_confidence"])):
        problems.append("a smoke test metric is not a finite number")
    if problems:
        return fail("; ".join(problems), **metrics)
    return SmokeResult(True, "passed", duration_ms=(time.perf_counter() - start) * 1e3, **metrics)

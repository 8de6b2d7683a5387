"""The smoke child's result is untrusted input; its deadline comes from the signed policy and the limits."""

from __future__ import annotations

import io
import json
import math
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge_runtime._limits import DEFAULT_LIMITS, Limits
from edge_runtime._smoke_proc import (
    CHILD_FIELDS,
    SmokeResult,
    golden_sample_count,
    parse_child_result,
    smoke_deadline_s,
)
from edge_runtime.manifest import SmokePolicy

GOOD: dict[str, Any] = {
    "passed": True,
    "reason": "passed",
    "backend": "litert",
    "samples": 16,
    "label_agreement": 1.0,
    "max_abs_diff": 0.0,
    "p50_ms": 0.02,
    "p95_ms": 0.03,
    "duration_ms": 20.5,
    "mean_confidence": 0.92,
}


def doc(**changes: Any) -> bytes:
    d = {**GOOD, **changes}
    return json.dumps({k: v for k, v in d.items() if v is not ...}).encode()


def test_valid_child_result_round_trips() -> None:
    assert set(GOOD) == CHILD_FIELDS
    r = parse_child_result(doc())
    assert (r.passed, r.samples, r.process_ms) == (True, 16, None)
    sent = SmokeResult.failed("latency over budget").to_dict()
    del sent["process_ms"]  # the parent's own measurement, never sent by the child
    failed = parse_child_result(json.dumps(sent).encode())
    assert (failed.passed, failed.reason) == (False, "latency over budget")


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"garbage \x00\xff",
        b"[]",
        b'{"passed": true}',
        doc(extra=1),
        doc(mean_confidence=...),  # a field missing
        doc(passed="yes"),
        doc(passed=1),
        doc(reason=""),
        doc(reason=5),
        doc(backend="x" * 65),
        doc(samples=True),
        doc(samples=-1),
        doc(samples=1.5),
        doc(label_agreement=1.0000001),  # one step beyond the bound
        doc(p95_ms=-0.001),
        doc(duration_ms=None),
        doc(max_abs_diff="0"),
        doc().replace(b'"p95_ms": 0.03', b'"p95_ms": NaN'),
        doc().replace(b'"p95_ms": 0.03', b'"p95_ms": Infinity'),
        doc().replace(b'"p95_ms": 0.03', b'"p95_ms": 1e400'),
        doc().replace(b'"samples": 16', b'"samples": ' + b"9" * 5000),
        doc().replace(b'"reason": "passed"', b'"reason": "passed", "reason": "passed"'),  # duplicate key
        b"[" * 100_000,
        doc(reason="x" * (DEFAULT_LIMITS.smoke_result_max_bytes + 1)),  # one byte too many, at least
        doc(p95_ms=None),  # a passing result without its metrics
        doc(reason="looks fine"),  # passed, but not the child's "passed"
    ],
)
def test_invalid_child_result_is_refused_with_a_reason(data: bytes) -> None:
    with pytest.raises(ValueError, match=r"\w") as info:
        parse_child_result(data)
    assert len(str(info.value)) < 300


def test_result_at_the_size_limit_is_read_and_one_byte_beyond_is_refused() -> None:
    lim = Limits(smoke_result_max_bytes=len(doc()))
    assert parse_child_result(doc(), lim).passed
    with pytest.raises(ValueError, match="more than the limit"):
        parse_child_result(doc() + b" ", lim)


def test_untrusted_reason_is_escaped_and_truncated() -> None:
    r = parse_child_result(doc(passed=False, reason="\x1b[31mred\u202e" + "y" * 5000))
    assert "\x1b" not in r.reason
    assert "\u202e" not in r.reason
    assert len(r.reason) <= 1100


POLICY = SmokePolicy(atol=0.02, min_label_agreement=0.9, p95_latency_ms=20.0, repeats=3)


def test_deadline_uses_the_floor_for_short_policies() -> None:
    lim = DEFAULT_LIMITS
    # 16 x 3 x 20 ms x 3 = 2.88 s < floor
    assert smoke_deadline_s(16, POLICY, 0, lim) == math.ceil(lim.smoke_start_allowance_s + lim.smoke_deadline_floor_s)


def test_deadline_grows_with_samples_repeats_budget_and_model_size() -> None:
    lim = Limits(smoke_deadline_margin=2.0, smoke_deadline_floor_s=1.0, smoke_start_allowance_s=3.0,
                 smoke_load_bytes_per_s=1_000_000.0)
    policy = SmokePolicy(atol=0.02, min_label_agreement=0.9, p95_latency_ms=100.0, repeats=5)
    # 3 + 2 MB / 1 MB/s + 2 * 10 * 5 * 0.1 s = 3 + 2 + 10
    assert smoke_deadline_s(10, policy, 2_000_000, lim) == 15
    # exactly at the floor: work 1.0 s == floor
    assert smoke_deadline_s(1, SmokePolicy(0.1, 0.5, 100.0, 5), 0, lim) == 4
    # one step beyond the floor
    assert smoke_deadline_s(1, SmokePolicy(0.1, 0.5, 100.0, 6), 0, lim) == 5


def test_deadline_is_capped() -> None:
    lim = Limits(smoke_deadline_max_s=60.0)
    policy = SmokePolicy(atol=0.02, min_label_agreement=0.9, p95_latency_ms=3.6e6, repeats=1000)
    assert smoke_deadline_s(10**6, policy, 0, lim) == 60


def _npz(path: Path, **arrays: Any) -> Path:
    with path.open("wb") as fh:
        np.savez_compressed(fh, **arrays)
    return path


def test_golden_sample_count_reads_the_header_only(tmp_path: Path) -> None:
    p = _npz(tmp_path / "g.npz", inputs=np.zeros((16, 32, 32, 1), np.float32), expected_outputs=np.zeros((16, 2)))
    assert golden_sample_count(p) == 16


@pytest.mark.parametrize(
    "member",
    [
        None,  # no inputs.npy
        b"not a numpy file",
        b"\x93NUMPY\x01\x00\xff\xff" + b"{" * 10,  # header length past the bound
        b"\x93NUMPY\x01\x00\x10\x00{'shape': ()}   ",  # no sample dimension
        b"\x93NUMPY\x01\x00\x14\x00{'shape': (0, 2)}   ",  # no sample
        b"\x93NUMPY\x01\x00\x10\x00__import__('os')",  # not a literal
        b"\x93NUMPY\x01\x00\x40\x00" + b"(" * 64,  # nesting
    ],
)
def test_golden_sample_count_refuses_malformed_files(tmp_path: Path, member: bytes | None) -> None:
    p = tmp_path / "g.npz"
    with zipfile.ZipFile(p, "w") as z:
        z.writestr("other.npy", b"x")
        if member is not None:
            z.writestr("inputs.npy", member)
    with pytest.raises(ValueError, match="golden samples"):
        golden_sample_count(p, max_header=1024)


def test_golden_sample_count_refuses_a_file_that_is_not_a_zip(tmp_path: Path) -> None:
    p = tmp_path / "g.npz"
    p.write_bytes(io.BytesIO(b"garbage").getvalue())
    with pytest.raises(ValueError, match="golden samples"):
        golden_sample_count(p)


def test_the_smoke_child_runs_numpys_blas_with_one_thread_unless_the_operator_says_otherwise(monkeypatch) -> None:
    from edge_runtime import _smoke_proc

    for var in _smoke_proc.SINGLE_THREAD_ENV:
        monkeypatch.delenv(var, raising=False)
    assert {v: _smoke_proc._child_env()[v] for v in _smoke_proc.SINGLE_THREAD_ENV} == dict.fromkeys(
        _smoke_proc.SINGLE_THREAD_ENV, "1")
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "4")
    assert _smoke_proc._child_env()["OPENBLAS_NUM_THREADS"] == "4"

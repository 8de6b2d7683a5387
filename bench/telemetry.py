"""Telemetry benchmarks (issue 9, section 7, goals 1 and 4); prints a table (or ``--json``) with PASS/FAIL.

    .venv/bin/python bench/telemetry.py [--json] [--calls 20000] [--records 1000000] [--tmp-dir DIR] [--keep]

T1. Recording overhead per inference: the recording step of :meth:`edge_runtime.serve.Predictor.predict`
    (input statistics + the store's in-memory aggregate, ``Predictor._record``) timed on its own, p50 and
    p99, with the real store and its writer thread running (default config: a flush every 5 s); next to it,
    in the same loop and on the same inputs, a bare inference loop on the raw interpreter (set_tensor,
    invoke, get_tensor), a bare inference through the API (``Predictor`` without telemetry) and a
    recorded one (``Predictor`` with telemetry) on the demo model (defect-classifier 1.1.0, installed for
    real), and the per-call hot-swap check (one ``stat`` of ``state.json``, part of every predict, reported
    only). Goal: recording p99 <= 50 us.
T4. Store size after 1,000,000 recorded inferences (through the hot path, with an injected clock: 50
    inferences a minute over 20,000 minutes, ~14 days, so retention and the cap both come into play;
    a flush every 10 simulated minutes), once with the default config (cap 32 MiB, retention 7 days) and
    once with a 1 MiB cap. Goal: the database plus its WAL never exceed the configured cap after a flush.

Progress goes to stderr. Exit status 1 if a goal fails. Scratch files are removed at the end.
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import DEMO, Goal, common_options, log, run_goals

from edge_runtime.device import Device
from edge_runtime.keys import generate_keypair
from edge_runtime.release_cli import main as release_main
from edge_runtime.serve import Predictor
from edge_runtime.telemetry._status import file_bytes
from edge_runtime.telemetry.config import TelemetryConfig
from edge_runtime.telemetry.store import TelemetryStore

MODEL = "defect-classifier"
MiB = 1 << 20


def pct(xs: list[float] | np.ndarray, q: float) -> float:
    return float(np.percentile(np.asarray(xs, dtype=np.float64), q))


def device_with_demo(tmp: Path) -> Device:
    keys = tmp / "keys"
    keys.mkdir()
    generate_keypair(keys / "bench.key", keys / "bench.pub")
    bundle = tmp / "demo-1.1.0.edgebundle"
    with contextlib.redirect_stdout(sys.stderr):
        rc = release_main(["build", "--release-dir", str(DEMO / "1.1.0"), "-o", str(bundle),
                           "--key", str(keys / "bench.key")])
    if rc != 0:
        raise RuntimeError("edge-release build failed")
    dev = Device(tmp / "dev")
    dev.init([keys / "bench.pub"])
    res = dev.install(str(bundle))
    if res.result != "installed":
        raise RuntimeError(f"install of the demo model failed: {res.reason}")
    return dev


def goal_recording(tmp: Path, calls: int) -> Goal:
    log(f"T1: installing the demo model, then {calls} calls of each kind")
    dev = device_with_demo(tmp)
    golden = np.load(DEMO / "1.1.0" / "golden.npz")
    xs = [np.asarray(x, dtype=np.float32).reshape(1, 32, 32, 1) for x in golden["inputs"]]
    bare = Predictor(dev.root, MODEL, telemetry=False)
    rec = Predictor(dev.root, MODEL)
    from edge_runtime.smoke import load_interpreter

    raw, _ = load_interpreter(dev.active_link(MODEL) / "model.tflite", ("litert", "tflite-runtime"))
    ri, ro = raw.get_input_details()[0]["index"], raw.get_output_details()[0]["index"]
    try:
        for x in xs * 20:  # warm-up: load, verify, page cache, first minute
            bare.predict(x)
            rec.predict(x)
        loaded, _ = rec._current()
        assert loaded is not None
        assert rec.store is not None
        b_ns, r_ns, s_ns, c_ns, i_ns = [], [], [], [], []
        pc = time.perf_counter_ns
        for i in range(calls):
            x = xs[i % len(xs)]
            tr = pc()
            raw.set_tensor(ri, x)
            raw.invoke()
            raw.get_tensor(ro)
            t0 = pc()
            i_ns.append(t0 - tr)
            bare.predict(x)
            t1 = pc()
            rec.predict(x)
            t2 = pc()
            rec._record(loaded, x, 0.1, True, "good", 0.9)
            t3 = pc()
            rec._signature()  # the per-call hot-swap check (one stat of state.json), part of every predict
            t4 = pc()
            b_ns.append(t1 - t0)
            r_ns.append(t2 - t1)
            s_ns.append(t3 - t2)
            c_ns.append(t4 - t3)
        status = rec.store.status()
    finally:
        bare.close()
        rec.close()
    us = lambda v: np.asarray(v, dtype=np.float64) / 1e3  # noqa: E731
    b, r, s, c, i = us(b_ns), us(r_ns), us(s_ns), us(c_ns), us(i_ns)
    d: dict[str, Any] = {
        "calls": calls,
        "recording_us": {"p50": pct(s, 50), "p99": pct(s, 99), "p99.9": pct(s, 99.9), "max": float(s.max())},
        "raw_interpreter_us": {"p50": pct(i, 50), "p99": pct(i, 99)},
        "bare_predict_us": {"p50": pct(b, 50), "p99": pct(b, 99)},
        "recorded_predict_us": {"p50": pct(r, 50), "p99": pct(r, 99)},
        "swap_check_us": {"p50": pct(c, 50), "p99": pct(c, 99)},
        "difference_us": {"p50": pct(r, 50) - pct(b, 50), "p99": pct(r, 99) - pct(b, 99)},
        "recording_share_of_bare_p50": pct(s, 50) / pct(b, 50),
        "store": {k: status[k] for k in ("recorded", "flushed", "dropped", "size_bytes")},
    }
    p50, p99 = d["recording_us"]["p50"], d["recording_us"]["p99"]
    return Goal(
        1, "recording overhead per inference", f"record p50 {p50:.1f} us, p99 {p99:.1f} us",
        f"bare predict p50 {d['bare_predict_us']['p50']:.1f} us, p99 {d['bare_predict_us']['p99']:.1f} us",
        p99, f"p99 {p99:.1f} us ({d['recording_share_of_bare_p50']:.0%} of a bare p50)", "p99 <= 50 us",
        p99 <= 50.0, d,
    )


def fill_store(path: Path, cfg: TelemetryConfig, records: int, minutes: int) -> dict[str, Any]:
    """``records`` inferences through the hot path, evenly over ``minutes`` simulated minutes."""
    baseline = json.loads((DEMO / "1.1.0" / "baseline.json").read_text())
    edges = {n: f["bin_edges"] for n, f in baseline["features"].items()}
    rng = np.random.default_rng(9)
    means = rng.normal(0.5, 0.12, records)
    stds = rng.normal(0.097, 0.022, records)
    confs = rng.uniform(0.5, 1.0, records)
    t0 = 1_800_000_000.0
    now = [t0]
    store = TelemetryStore(path, cfg, clock=lambda: now[0])
    store.register_features(MODEL, "1.1.0", edges)
    step = 60.0 * minutes / records
    flush_every = 10 * 60.0
    next_flush = t0 + flush_every
    sizes: list[int] = []
    flush_ms: list[float] = []
    started = time.monotonic()
    try:
        for i in range(records):
            t = t0 + i * step
            if t >= next_flush:
                now[0] = t
                f0 = time.perf_counter()
                store.flush()
                flush_ms.append((time.perf_counter() - f0) * 1e3)
                sizes.append(file_bytes(path))
                next_flush += flush_every
            store.record(MODEL, "1.1.0", t, 0.1, True, "good" if confs[i] > 0.7 else "defect", float(confs[i]),
                         {"pixel_mean": float(means[i]), "pixel_std": float(stds[i])})
        now[0] = t0 + records * step
        store.flush()
        sizes.append(file_bytes(path))
        rows = store.minutes(MODEL)
        reads = []
        for _ in range(5):  # what a monitor pays to read the last 24 h (a fresh reader each time)
            with TelemetryStore(path, cfg) as reader:
                r0 = time.perf_counter()
                day = reader.minutes(MODEL, since=now[0] - 86400)
                r1 = time.perf_counter()
                xs = reader.samples(MODEL, "1.1.0", "pixel_mean", since=now[0] - 86400)
                r2 = time.perf_counter()
            reads.append(((r1 - r0) * 1e3, (r2 - r1) * 1e3))
        status = store.status()
    finally:
        store.close()
    return {
        "records": records,
        "simulated_minutes": minutes,
        "max_bytes": cfg.max_bytes,
        "retention_days": cfg.retention_days,
        "final_bytes": file_bytes(path),
        "max_bytes_after_flush": max(sizes),
        "flushes": len(sizes),
        "flush_ms_p50": pct(flush_ms, 50),
        "flush_ms_p99": pct(flush_ms, 99),
        "minutes_kept": len(rows),
        "oldest_kept_age_days": round((now[0] - rows[0].minute) / 86400, 2) if rows else None,
        "inferences_kept": sum(r.count for r in rows),
        "read_24h": {"minutes_rows": len(day), "minutes_ms_median": pct([r[0] for r in reads], 50),
                     "samples_values": len(xs), "samples_ms_median": pct([r[1] for r in reads], 50)},
        "dropped": status["dropped"],
        "errors": status["errors"],
        "elapsed_s": round(time.monotonic() - started, 1),
    }


def goal_size(tmp: Path, records: int) -> Goal:
    runs = []
    for name, cfg in (("default", TelemetryConfig(flush_interval_s=3600)),
                      ("1 MiB cap", TelemetryConfig(max_bytes=1 * MiB, flush_interval_s=3600))):
        log(f"T4: {records} recorded inferences, {name} config (cap {cfg.max_bytes / MiB:g} MiB, "
            f"retention {cfg.retention_days:g} days)")
        d = fill_store(tmp / name.replace(" ", "_") / "telemetry.db", cfg, records, 20_000)
        d["config"] = name
        log(f"T4: {name}: max {d['max_bytes_after_flush'] / MiB:.2f} MiB after a flush, final "
            f"{d['final_bytes'] / MiB:.2f} MiB, {d['minutes_kept']} minutes kept, {d['elapsed_s']} s")
        runs.append(d)
    worst = max(d["max_bytes_after_flush"] / d["max_bytes"] for d in runs)
    text = ", ".join(f"{d['config']}: max {d['max_bytes_after_flush'] / MiB:.2f} of {d['max_bytes'] / MiB:g} MiB"
                     for d in runs)
    return Goal(
        4, f"store size after {records:,} inferences", text,
        "the configured cap", worst, f"max {worst:.0%} of the cap", "<= cap after every flush",
        worst <= 1.0 and all(d["dropped"] == 0 for d in runs), {"runs": runs},
    )


def main(argv: list[str] | None = None) -> int:
    ap = common_options(__doc__)
    ap.add_argument("--calls", type=int, default=20_000, help="calls of each kind for T1 (default 20000)")
    ap.add_argument("--records", type=int, default=1_000_000, help="recorded inferences for T4 (default 1000000)")
    args = ap.parse_args(argv)
    return run_goals(args, lambda tmp: [goal_recording(tmp, args.calls), goal_size(tmp, args.records)])


if __name__ == "__main__":
    sys.exit(main())

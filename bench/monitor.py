"""Monitor benchmark (issue 9, section 7, goal 3); prints a table (or ``--json``) with PASS/FAIL.

    .venv/bin/python bench/monitor.py [--json] [--repeat 31] [--per-minute 20] [--tmp-dir DIR] [--keep]

M3. Monitor evaluation over 24 h of per-minute aggregates: a device with the demo model installed for real
    (defect-classifier 1.1.0), 1,440 minutes of telemetry recorded through the real store's hot path at an
    injected clock (``--per-minute`` inferences a minute with both demo features, a little feedback and a few
    errors, so every row carries histograms, labels and latency buckets like a busy device's), then, at a
    ``now`` right after the last minute:

    * ``read``: ``TelemetryStore.minutes(model, since=now - 24 h)`` (SQLite read + decoding 1,440 rows);
    * ``rules``: ``edge_runtime.monitor.evaluate`` over those rows (confidence, errors, wrong; no drift);
    * ``read + rules``: both, back to back -- **the goal: <= 50 ms**, judged on the median CPU time of this
      thread over ``--repeat`` rounds (``time.thread_time``: the evaluation is single-threaded and does not
      wait for I/O once the page cache is warm, so on an idle device wall time equals it; on this shared
      2-core machine at load 6-8 the wall time mostly measures the scheduler). The wall-clock median and
      best round are printed next to it;
    * ``run_once``: what one ``edge-runtime monitor`` run does after start-up, reported only: read, rules,
      the drift rule (the store's samples of the last hour, KS with scipy + PSI for both features), the
      findings file and the facts written.

Progress goes to stderr. Exit status 1 if the goal fails. Scratch files are removed at the end.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import Goal, common_options, log, run_goals
from telemetry import MODEL, device_with_demo

from edge_runtime._monitor_record import parse_time as _epoch
from edge_runtime._monitor_run import run_once
from edge_runtime.device import Device
from edge_runtime.monitor import MonitorConfig, evaluate, minute_floor
from edge_runtime.telemetry._status import db_path
from edge_runtime.telemetry.store import TelemetryStore

MINUTES = 24 * 60
GOAL_MS = 50.0


def fill(dev: Device, per_minute: int) -> tuple[int, float]:
    """24 h of telemetry for the active version through the store's hot path; returns (start, now)."""
    version = dev.store.load(MODEL).active
    assert version is not None
    activated = _epoch(dev.store.load(MODEL).versions[version]["activated_at"])
    assert activated is not None
    start_minute = minute_floor(activated) + 60
    baseline = json.loads((dev.version_dir(MODEL, version) / "baseline.json").read_text())["features"]
    store = TelemetryStore(db_path(dev.root), dev.config.telemetry_config())
    store.register_features(MODEL, version, {k: v["bin_edges"] for k, v in baseline.items()})
    rng = np.random.default_rng(9)
    pm, ps = np.asarray(baseline["pixel_mean"]["sample"]), np.asarray(baseline["pixel_std"]["sample"])
    for m in range(MINUTES):
        t0 = start_minute + 60 * m
        conf = rng.uniform(0.78, 0.99, per_minute)
        means, stds = rng.choice(pm, per_minute), rng.choice(ps, per_minute)
        for j in range(per_minute):
            ok = j != 0 or m % 7  # an error now and then
            store.record(MODEL, version, t0 + 1 + j * (58 / per_minute), 0.3 + j * 0.01, bool(ok),
                         "ok" if j % 3 else "defect", float(conf[j]),
                         {"pixel_mean": float(means[j]), "pixel_std": float(stds[j])})
        if m % 5 == 0:
            store.feedback(MODEL, version, t0 + 30, wrong=m % 15 == 0)
        if m % 60 == 59:
            store.flush()
    store.close()
    return start_minute, start_minute + 60 * MINUTES + 1


def median_ms(fn: Any, repeat: int) -> tuple[float, list[float], float]:
    """Median wall ms, every round's wall ms, and the median CPU ms of this thread (what the step costs
    without the waits for a core that other processes on a loaded machine cause)."""
    times, cpu = [], []
    for _ in range(repeat):
        c0, t0 = time.thread_time(), time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
        cpu.append((time.thread_time() - c0) * 1e3)
    return statistics.median(times), times, statistics.median(cpu)


def goal_monitor(tmp: Path, repeat: int, per_minute: int) -> Goal:
    log("M3: installing the demo model")
    dev = device_with_demo(tmp)
    log(f"M3: recording {MINUTES} minutes x {per_minute} inferences through the store")
    t0 = time.monotonic()
    _, now = fill(dev, per_minute)
    log(f"M3: filled in {time.monotonic() - t0:.1f} s; timing {repeat} rounds of each step")
    version = dev.store.load(MODEL).active
    assert version is not None
    activated = _epoch(dev.store.load(MODEL).versions[version]["activated_at"])
    cfg = MonitorConfig()
    store = TelemetryStore(db_path(dev.root), dev.config.telemetry_config())
    since = int(now) - (cfg.lookback_minutes + 1) * 60
    rows = store.minutes(MODEL, since=since)
    if len(rows) != MINUTES:
        raise RuntimeError(f"expected {MINUTES} stored minutes, read {len(rows)}")

    def read() -> object:
        return store.minutes(MODEL, since=since)

    def rules() -> object:
        return evaluate(MODEL, version, activated, rows, now, cfg)

    def both() -> object:
        return evaluate(MODEL, version, activated, store.minutes(MODEL, since=since), now, cfg)

    ev = evaluate(MODEL, version, activated, rows, now, cfg)
    states = {f.rule: f.status for f in ev.findings}
    for fn in (read, rules, both):  # warm-up: page cache, reader connection, imports
        fn()
    read_ms, _, read_cpu = median_ms(read, repeat)
    rules_ms, _, rules_cpu = median_ms(rules, repeat)
    both_ms, both_all, both_cpu = median_ms(both, repeat)
    store.close()
    run_once(dev, now=now)  # warm-up: scipy import, drift
    once_ms, _, once_cpu = median_ms(lambda: run_once(dev, now=now), max(3, repeat // 3))
    report = run_once(dev, now=now)
    drift = next((f for f in report["models"][MODEL]["findings"] if f["rule"] == "drift"), {})
    detail = {
        "minutes": MINUTES, "per_minute": per_minute, "rows_read": len(rows),
        "read_ms": round(read_ms, 2), "rules_ms": round(rules_ms, 2), "read_rules_ms": round(both_ms, 2),
        "read_rules_p90_ms": round(float(np.percentile(both_all, 90)), 2),
        "run_once_ms": round(once_ms, 2),
        "cpu_ms": {"read": round(read_cpu, 2), "rules": round(rules_cpu, 2), "read_rules": round(both_cpu, 2),
                   "run_once": round(once_cpu, 2)},
        "rule_states": states, "drift_status": drift.get("status"),
        "store_bytes": sum(p.stat().st_size for p in db_path(dev.root).parent.glob("telemetry.db*")),
        "repeat": repeat,
    }
    detail["read_rules_best_ms"] = round(min(both_all), 2)
    return Goal(
        3, "monitor evaluation over 24 h of per-minute aggregates (store read + rules), CPU",
        f"{both_cpu:.1f} ms CPU",
        f"read {read_cpu:.1f} + rules {rules_cpu:.1f} ms CPU; wall median {both_ms:.1f}, best {min(both_all):.1f} ms",
        both_cpu / GOAL_MS, f"{both_cpu:.1f} ms", f"<= {GOAL_MS:.0f} ms", both_cpu <= GOAL_MS, detail,
    )


def _notes(goals: list[Goal]) -> str:
    d = goals[0].detail
    return (f"rules: {d['rule_states']}, drift {d['drift_status']}; store {d['store_bytes'] / 1e6:.1f} MB; "
            f"read+rules wall p90 {d['read_rules_p90_ms']} ms; full run_once (with drift, files) "
            f"{d['run_once_ms']} ms wall, {d['cpu_ms']['run_once']} ms CPU")


def main(argv: list[str] | None = None) -> int:
    ap = common_options(__doc__)
    ap.add_argument("--repeat", type=int, default=31, help="timed rounds of each step (default 31)")
    ap.add_argument("--per-minute", type=int, default=20, help="inferences recorded per minute (default 20)")
    args = ap.parse_args(argv)
    return run_goals(args, lambda tmp: [goal_monitor(tmp, args.repeat, args.per_minute)], _notes)


if __name__ == "__main__":
    sys.exit(main())

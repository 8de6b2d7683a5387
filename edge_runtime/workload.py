"""Workload simulator: real inference on devices of the local fleet, synthetic inputs with ground truth, in
accelerated time.

Every simulated inference is a real :meth:`edge_runtime.serve.Predictor.predict` on the device's committed
active version (real TFLite, real telemetry store, real hot swap); only the clock is simulated. All devices
share one :class:`SimClock` and advance minute by minute in lockstep: in each minute every device makes
``rate`` inferences (time-stamped inside that minute), attaches ground truth to a ``feedback`` share of them,
commits its telemetry, and then -- when ``monitor`` is on -- ``edge-runtime monitor``'s evaluation runs on the
device at the end of the minute (:func:`edge_runtime._monitor_run.run_once` under the device root's monitor
lock), so a 5-minute rule is exercised in seconds and a self-rollback takes effect for the next minute's
inferences.

Scenarios (per device; inputs from :mod:`edge_runtime._synthetic`, the demo models' own generator):

==========  ==============================================================================================
clean       no change: the inputs the models were trained on (no drift)
winter      darker scenes (brightness -0.12): ``pixel_mean`` drifts
noise       a degraded sensor (pixel noise 0.08): ``pixel_std`` drifts
collapse    a scrambled sensor readout: each image's pixels permuted, so its mean and standard deviation
            (the drift features) are exactly those of a clean image, but the picture is gone; the weaker
            demo model 1.0.0 is unsure on it (mean top-1 confidence ~0.72, below the 0.75 rule), 1.1.0 much
            less so (~0.85): on a device running 1.0.0 with 1.1.0 kept, the confidence rule rolls it back
errors      a sensor dropping frames: ``error_rate`` (30 %) of the images are all NaN, the model answers
            NaN, and the call is an error result (the error-rate finding; report only by default)
==========  ==============================================================================================

Simulated time starts at the next whole minute after the device's latest activation (so every minute counts
for the active version) unless ``start`` is given. Telemetry stamped ahead of the real clock is what an NTP
step back looks like to a monitor run at real time: it ignores those minutes and says so (``clock`` finding).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ._synthetic import SCENARIOS as INPUT_SCENARIOS
from ._synthetic import stream

__all__ = ["SCENARIOS", "DeviceLoad", "SimClock", "inputs", "main", "simulate"]

#: every scenario the simulator knows (the input scenarios of ``_synthetic`` plus collapse and errors)
SCENARIOS: tuple[str, ...] = (*INPUT_SCENARIOS, "collapse", "errors")


class SimClock:
    """Seconds since the epoch, moved by the simulator only (never by the wall clock)."""

    def __init__(self, t: float) -> None:
        self.t = float(t)

    def now(self) -> float:
        return self.t


@dataclass
class DeviceLoad:
    """One device of the simulation: its root, the model its application runs and the scenario of its inputs."""

    root: Path
    scenario: str = "clean"
    #: the model name; None: the device's only installed model
    model: str | None = None
    seed: int = 1
    #: for ``errors``: the share of inputs with NaN pixels
    error_rate: float = 0.3


def inputs(scenario: str, seed: int, error_rate: float = 0.3) -> Iterator[tuple[np.ndarray, int]]:
    """An endless stream of ``(image [32, 32, 1] float32, true label)`` under ``scenario``."""
    if scenario not in SCENARIOS:
        raise ValueError(f"unknown scenario {scenario!r}; known: {', '.join(SCENARIOS)}")
    if not (math.isfinite(error_rate) and 0.0 <= error_rate <= 1.0):
        raise ValueError(f"error_rate must be in [0, 1], got {error_rate!r}")
    base = scenario if scenario in INPUT_SCENARIOS else "clean"
    rng = np.random.default_rng([seed, 2])
    for img, label in stream(seed, base):
        if scenario == "collapse":
            img = rng.permutation(img.reshape(-1)).reshape(img.shape)
        elif scenario == "errors" and rng.random() < error_rate:
            img = np.full_like(img, np.nan)  # a frame the sensor dropped
        yield img, label


@dataclass
class _Device:
    load: DeviceLoad
    model: str
    predictor: Any
    source: Iterator[tuple[np.ndarray, int]]
    rng: np.random.Generator
    stats: dict[str, Any] = field(default_factory=dict)


def _only_model(root: Path) -> str:
    from .device import Device

    names = Device(root).store.names()
    if len(names) != 1:
        raise ValueError(f"{root}: name the model to drive (installed: {', '.join(names) or 'none'})")
    return names[0]


def _latest_activation(root: Path, model: str) -> float:
    from ._monitor_record import parse_time as _epoch
    from .device import Device

    state = Device(root).store.load(model)
    info = state.versions.get(state.active or "") or {}
    t = _epoch(info.get("activated_at")) or _epoch(info.get("committed_at"))
    return t if t is not None else time.time()


def simulate(
    loads: list[DeviceLoad],
    *,
    minutes: int,
    rate: int = 60,
    feedback: float = 0.2,
    monitor: bool = True,
    start: float | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run ``minutes`` simulated minutes of ``rate`` inferences on every device; return what happened.

    Per device: the scenario, the versions that served (in order), inferences, errors, mean confidence per
    version, feedback given and how much of it was wrong, and the monitor's state after each minute (with the
    minute a self-rollback happened).
    """
    from ._monitor_run import monitor_lock, run_once
    from .device import Device
    from .serve import Predictor

    if minutes < 1 or rate < 1 or not 0.0 <= feedback <= 1.0:
        raise ValueError("minutes and rate must be >= 1 and feedback in [0, 1]")
    devices: list[_Device] = []
    for load in loads:
        model = load.model or _only_model(load.root)
        devices.append(_Device(load, model, None, inputs(load.scenario, load.seed, load.error_rate),
                               np.random.default_rng([load.seed, 3])))
    if start is None:
        start = max(_latest_activation(d.load.root, d.model) for d in devices) + 60
    clock = SimClock(math.floor(start / 60) * 60)
    t0 = clock.t
    for d in devices:
        d.predictor = Predictor(d.load.root, d.model, clock=clock.now)
        d.stats = {"root": str(d.load.root), "model": d.model, "scenario": d.load.scenario, "inferences": 0,
                   "errors": 0, "feedback": 0, "wrong": 0, "versions": [], "conf": {}, "monitor": [],
                   "rolled_back_at_minute": None}
    try:
        for minute in range(minutes):
            m0 = t0 + 60 * minute
            for d in devices:
                for k in range(rate):
                    clock.t = m0 + (k + 0.5) * 60 / rate
                    x, truth = next(d.source)
                    p = d.predictor.predict(x)
                    s = d.stats
                    s["inferences"] += 1
                    if p.version is not None and (not s["versions"] or s["versions"][-1] != p.version):
                        s["versions"].append(p.version)
                    if not p.ok:
                        s["errors"] += 1
                        continue
                    c = s["conf"].setdefault(p.version, [0.0, 0])
                    c[0] += p.confidence
                    c[1] += 1
                    if d.rng.random() < feedback:
                        s["feedback"] += 1
                        s["wrong"] += not d.predictor.feedback(p.id, truth)
                if d.predictor.store is not None:
                    d.predictor.store.flush()  # the minute is committed before the monitor reads it
            clock.t = m0 + 60 + 1  # the minute is complete
            if not monitor:
                continue
            for d in devices:
                dev = Device(d.load.root)
                with monitor_lock(dev.root):
                    report = run_once(dev, now=clock.t)
                state = (report["models"].get(d.model) or {}).get("state")
                d.stats["monitor"].append(state)
                if report["rolled_back"] and d.stats["rolled_back_at_minute"] is None:
                    d.stats["rolled_back_at_minute"] = minute + 1
            if progress is not None:
                progress(f"simulated minute {minute + 1}/{minutes}")
    finally:
        for d in devices:
            if d.predictor is not None:
                d.predictor.close()
    out = []
    for d in devices:
        s = d.stats
        s["mean_confidence"] = {v: (c[0] / c[1] if c[1] else None) for v, c in s["conf"].items()}
        del s["conf"]
        out.append(s)
    return {"start": t0, "end": clock.t, "minutes": minutes, "rate": rate, "devices": out}


def main(argv: list[str] | None = None) -> int:
    """``python -m edge_runtime.workload --root DEV [--root DEV ...] --scenario S [...]``: drive devices."""
    import json

    ap = argparse.ArgumentParser(prog="python -m edge_runtime.workload", description=__doc__.split("\n\n")[0])
    ap.add_argument("--root", type=Path, action="append", required=True, help="a device root (repeat)")
    ap.add_argument("--scenario", action="append", default=[], choices=SCENARIOS,
                    help="the scenario of each --root, in order (default clean)")
    ap.add_argument("--model", help="the model to drive (default: each device's only model)")
    ap.add_argument("--minutes", type=int, default=10, help="simulated minutes (default 10)")
    ap.add_argument("--rate", type=int, default=60, help="inferences per device and simulated minute (default 60)")
    ap.add_argument("--feedback", type=float, default=0.2, help="share of inferences given ground truth (0.2)")
    ap.add_argument("--no-monitor", action="store_true", help="do not run the monitor after each minute")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    if len(args.scenario) > len(args.root):
        ap.error("more --scenario than --root")
    scenarios = args.scenario + ["clean"] * (len(args.root) - len(args.scenario))
    loads = [DeviceLoad(r, s, args.model, args.seed + i) for i, (r, s) in enumerate(zip(args.root, scenarios,
                                                                                       strict=True))]
    rep = simulate(loads, minutes=args.minutes, rate=args.rate, feedback=args.feedback, monitor=not args.no_monitor,
                   progress=lambda m: print(m, file=sys.stderr))
    if args.json:
        print(json.dumps(rep, indent=1, sort_keys=True))
    else:
        for s in rep["devices"]:
            conf = ", ".join(f"{v} {c:.3f}" for v, c in s["mean_confidence"].items() if c is not None)
            print(f"{s['root']}: {s['scenario']}: {s['inferences']} inferences, {s['errors']} errors, versions "
                  f"{' -> '.join(s['versions'])}, mean confidence {conf}; monitor {s['monitor'][-1:] or '-'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The monitor's I/O: read the telemetry, evaluate the rules (:mod:`edge_runtime.monitor`), self-roll back,
record the findings. ``edge-runtime monitor`` is its command.

One evaluation (:func:`run_once`), for every model with an active, settled version:

1. read the model's minute rows of the last ``lookback_minutes`` from the telemetry store;
2. :func:`edge_runtime.monitor.evaluate` them at ``now`` (injectable: tests and the workload simulator
   pass their own clock);
3. a breach whose action is ``rollback`` calls :meth:`Device.self_rollback` -- the device's one persisted
   rollback path. An install or rollback holding the device lock is waited for at most ``lock_wait_s``,
   then the model is reported ``busy`` and the next run tries again (the rule is evaluated afresh: a
   breach since the activation is still there);
4. the findings are written to ``<root>/monitor/last.json`` (atomically) and the facts are rewritten, so
   ``ansible_facts.edge_runtime.monitor`` and ``edge-runtime status`` show them.

Only one monitor runs per device root: :func:`monitor_lock` (``<root>/monitor/lock``, ``flock``) is held for
one evaluation or for the whole loop; a second monitor is refused at once (exit 75).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from ._monitor_record import LAST_SCHEMA, MONITOR_DIR, write_last
from ._monitor_record import format_time as _iso
from ._monitor_record import parse_time as _epoch
from ._state import DeviceLock
from .errors import EdgeRuntimeError, LockedError, RollbackError
from .monitor import DriftInput, Evaluation, Finding, MonitorConfig, evaluate, rollback_reason
from .telemetry.aggregate import MinuteAggregate

if TYPE_CHECKING:
    from .device import Device

__all__ = ["MinuteSource", "monitor_lock", "run_once"]

LOCK_NAME = "lock"

#: the one-word state of a model after an evaluation, most urgent first
STATES = ("rolled_back", "cannot_roll_back", "busy", "breach", "error", "drift", "skipped", "insufficient_data", "ok")


class MinuteSource(Protocol):
    """Where the rows come from: the telemetry store (``TelemetryStore.minutes``), or a test's list."""

    def minutes(
        self, model: str, *, version: str | None = None, since: float | None = None, until: float | None = None
    ) -> list[MinuteAggregate]: ...


@contextmanager
def monitor_lock(root: Path) -> Iterator[None]:
    """Hold ``<root>/monitor/lock`` (one monitor per device root), or raise :class:`LockedError` at once."""
    lock = DeviceLock(Path(root) / MONITOR_DIR / LOCK_NAME)
    try:
        with lock.hold("monitor"):
            yield
    except LockedError:
        if lock.held_here:
            raise
        raise LockedError(
            f"another edge-runtime monitor is running on {root} ({lock.holder()})",
            hint="one monitor per device root: the running one (e.g. edge-runtime-monitor.service) keeps "
            "evaluating; stop it first to run one by hand",
        ) from None


@contextmanager
def _device_store(device: Device) -> Iterator[MinuteSource]:
    """The device's telemetry store, read-only use (no writer thread starts); a missing one reads empty."""
    from .telemetry._status import db_path
    from .telemetry.store import TelemetryStore

    store = TelemetryStore(db_path(device.root), device.config.telemetry_config())
    try:
        yield store
    finally:
        store.close()


def _baseline_of(device: Device, name: str, version: str) -> Any:
    """The ``baseline.json`` document of an installed version (None when the bundle has none or it cannot be
    read: the drift rule then reports the baseline as invalid). Read bounded and strict; the monitor only
    reports drift, so the files are not re-verified here (``verify`` and the serving process do that)."""
    from ._json import loads_untrusted, read_untrusted_file
    from ._limits import DEFAULT_LIMITS
    from .manifest import Manifest, parse_envelope
    from .serve import BASELINE_MAX_BYTES

    vdir = device.version_dir(name, version)
    try:
        env = parse_envelope(read_untrusted_file(vdir / "manifest.json", DEFAULT_LIMITS.manifest_max_bytes))
        entry = Manifest.from_signed(env.signed).entrypoints.get("baseline")
        if not entry:
            return None
        data = read_untrusted_file(vdir / entry, BASELINE_MAX_BYTES)
        return loads_untrusted(data, DEFAULT_LIMITS, f"{name} {version} baseline", error=EdgeRuntimeError,
                               max_bytes=BASELINE_MAX_BYTES)
    except (OSError, EdgeRuntimeError):
        return None


def _drift_input(device: Device, source: MinuteSource, name: str, version: str) -> DriftInput | None:
    """The drift rule's input for the active version, or None when the source has no samples (a test's)."""
    sampler = getattr(source, "samples", None)
    if sampler is None:
        return None
    baseline = _baseline_of(device, name, version)
    bundle = baseline.get("drift") if isinstance(baseline, dict) and isinstance(baseline.get("drift"), dict) else None
    try:
        config = device.config.drift_config(bundle)
    except EdgeRuntimeError:  # the bundle's drift object is refused: the device's settings alone
        config = device.config.drift_config(None)
    return DriftInput(baseline, config, lambda feature, since: sampler(name, version, feature, since=since))


def _summary_state(ev: Evaluation, action: Finding | None) -> str:
    statuses = {f.status for f in ev.findings}
    if action is not None:
        return action.status
    if "breach" in statuses:
        return "breach"
    if "drift" in statuses:
        return "drift"
    if any(f.rule == "confidence" and f.status == "insufficient_data" for f in ev.findings):
        return "insufficient_data"
    return "ok"


def _self_rollback(
    device: Device, ev: Evaluation, cfg: MonitorConfig, clock: Callable[[], float], sleep: Callable[[float], None]
) -> Finding:
    """Ask the device to roll back (bounded wait for its lock); the outcome as a ``rollback`` finding."""
    breach = ev.rollback
    assert breach is not None
    assert ev.version is not None
    reason = rollback_reason(breach)
    evidence = {"rule": breach.rule, **breach.evidence}
    deadline = clock() + cfg.lock_wait_s
    while True:
        try:
            res = device.self_rollback(ev.model, ev.version, reason, evidence)
        except LockedError as exc:
            left = deadline - clock()
            if left <= 0:
                return Finding(
                    "rollback", ev.model, ev.version, "busy", "rollback",
                    f"{reason}; not done yet: {exc.message} (waited {cfg.lock_wait_s:g} s); the next run tries again",
                    {"reason": reason},
                )
            sleep(min(0.2, left))
            continue
        except RollbackError as exc:
            return Finding(
                "rollback", ev.model, ev.version, "cannot_roll_back", "rollback",
                f"{reason}; {exc.message}; {ev.version} stays active", {"reason": reason},
            )
        except EdgeRuntimeError as exc:
            return Finding(
                "rollback", ev.model, ev.version, "error", "rollback",
                f"{reason}; the rollback failed: {exc.message}", {"reason": reason, "error": exc.code},
            )
        if res.result == "unchanged":
            return Finding("rollback", ev.model, ev.version, "changed", "none", res.reason, {})
        return Finding(
            "rollback", ev.model, ev.version, "rolled_back", "rollback",
            f"{reason}; {res.active or 'no version'} is active now, {ev.version} is quarantined"
            + (f" (DEGRADED: {res.degraded})" if res.degraded else ""),
            {"reason": reason, "active": res.active, "degraded": res.degraded},
        )


def run_once(
    device: Device,
    *,
    now: float | None = None,
    source: MinuteSource | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, Any]:
    """Evaluate every model once at ``now`` (default: the wall clock) and act; return the report.

    ``source``: where the rows come from (default: the device's telemetry store). ``clock``/``sleep``: the
    bounded wait for the device lock. The drift rule runs when the source also has the store's ``samples``.
    The caller holds :func:`monitor_lock`.
    """
    if source is None:
        with _device_store(device) as store:
            return run_once(device, now=now, source=store, clock=clock, sleep=sleep)
    cfg = device.config.monitor_config()
    t = time.time() if now is None else float(now)
    since = int(t) - (cfg.lookback_minutes + 1) * 60
    models: dict[str, Any] = {}
    rolled_back = 0
    for name in device.store.names():
        try:
            state = device.store.load(name)
        except EdgeRuntimeError as exc:
            models[name] = {"state": "skipped", "version": None, "findings": [
                Finding("state", name, None, "skipped", "none", f"not evaluated: {exc.message}").to_dict()
            ]}
            continue
        version = state.active
        if version is None or state.pending is not None:
            why = "no active version" if version is None else f"an operation on {state.pending.version} is pending"  # type: ignore[union-attr]
            models[name] = {"state": "skipped", "version": version, "findings": [
                Finding("state", name, version, "skipped", "none", f"not evaluated: {why}").to_dict()
            ]}
            continue
        info = state.versions.get(version) or {}
        activated = _epoch(info.get("activated_at")) or _epoch(info.get("committed_at"))
        try:
            rows = source.minutes(name, since=since)
        except EdgeRuntimeError as exc:
            models[name] = {"state": "error", "version": version, "findings": [
                Finding("store", name, version, "error", "none", f"telemetry unreadable: {exc.message}").to_dict()
            ]}
            continue
        drift = _drift_input(device, source, name, version) if cfg.drift_action != "off" else None
        ev = evaluate(name, version, activated, rows, t, cfg, drift=drift)
        action = _self_rollback(device, ev, cfg, clock, sleep) if ev.rollback is not None else None
        if action is not None:
            ev.findings.append(action)
            rolled_back += action.status == "rolled_back"
        models[name] = {
            "state": _summary_state(ev, action),
            "version": version,
            "activated_at": _iso(activated) if activated is not None else None,
            "since": ev.since,
            "findings": [f.to_dict() for f in ev.findings],
        }
    report = {
        "schema": LAST_SCHEMA,
        "evaluated_at": _iso(t),
        "now": t,
        "rolled_back": rolled_back,
        "settings": cfg.to_dict(),
        "models": models,
    }
    problem = write_last(device.root, report)
    if problem:
        device._warn(problem)
    device.write_facts()
    return report

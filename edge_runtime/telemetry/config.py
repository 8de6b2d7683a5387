"""Telemetry settings: the one place their defaults live (``config.json`` ``"telemetry"`` section).

:class:`TelemetryConfig` is built from the device config's ``telemetry`` mapping
(:meth:`~edge_runtime.device.DeviceConfig.telemetry_config`); unknown keys, wrong types and values out
of range are refused with a :class:`~edge_runtime.errors.ConfigError` when the config is loaded or
written by ``init``, never discovered later by the recorder. Imports nothing heavy (no sqlite3, no numpy).

A limit is compared so that a value *equal* to it is accepted and one step beyond is refused.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError, quote_untrusted

__all__ = ["MIN_MAX_BYTES", "TelemetryConfig"]

_KiB = 1 << 10
_MiB = 1 << 20

#: the smallest size cap accepted: the empty database (schema pages) plus room for a few minutes of rows
MIN_MAX_BYTES = 64 * _KiB


@dataclass(frozen=True)
class TelemetryConfig:
    """Where telemetry goes and how much of it is kept. Sizes in bytes, times in seconds."""

    #: record telemetry at all (False: :class:`~edge_runtime.serve.Predictor` records nothing)
    enabled: bool = True
    #: the database file plus its write-ahead log, measured after each flush, stay at or below this; the
    #: oldest minutes (aggregates and samples) are deleted first to get back under it
    max_bytes: int = 32 * _MiB
    #: minutes older than this (by the recorder's clock) are deleted
    retention_days: float = 7.0
    #: the background writer commits what the hot path aggregated this often; a SIGKILL or power cut
    #: loses at most the records of the last interval, never the store
    flush_interval_s: float = 5.0
    #: per (model, version, feature, minute), a uniform reservoir sample of this many input statistics
    #: is kept for the KS test (0: no samples)
    samples_per_minute: int = 32
    #: :meth:`~edge_runtime.telemetry.store.TelemetryStore.samples` returns at most this many values
    max_samples: int = 20_000
    #: feedback (ground truth) can be attached to the last this many predictions of a process (each one held
    #: costs ~150 bytes of the application's memory until then)
    feedback_window: int = 10_000
    #: how long the writer waits for another writer's lock before it drops the batch (milliseconds)
    busy_timeout_ms: int = 2_000
    #: at most this many (model, version, minute) aggregates wait in memory for the writer; beyond it a
    #: record is dropped and counted (a writer that cannot keep up never grows the application's memory)
    max_pending_minutes: int = 512

    def __post_init__(self) -> None:
        problems: list[str] = []

        def check(name: str, ok: bool, rule: str) -> None:
            if not ok:
                problems.append(f"{name} must be {rule}, got {getattr(self, name)!r}")

        def num(name: str) -> float:
            v = getattr(self, name)
            return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else math.nan

        def integer(name: str) -> bool:
            v = getattr(self, name)
            return isinstance(v, int) and not isinstance(v, bool)

        if not isinstance(self.enabled, bool):
            problems.append(f"enabled must be true or false, got {self.enabled!r}")
        check("max_bytes", integer("max_bytes") and MIN_MAX_BYTES <= self.max_bytes <= 1 << 40,
              f"an integer in [{MIN_MAX_BYTES}, 2**40]")
        check("retention_days", 1 / 1440 <= num("retention_days") <= 3660, "in [1/1440, 3660] days")
        check("flush_interval_s", 0.01 <= num("flush_interval_s") <= 3600, "in [0.01, 3600] seconds")
        check("samples_per_minute", integer("samples_per_minute") and 0 <= self.samples_per_minute <= 10_000,
              "an integer in [0, 10000]")
        check("max_samples", integer("max_samples") and 1 <= self.max_samples <= 10_000_000,
              "an integer in [1, 10000000]")
        check("feedback_window", integer("feedback_window") and 0 <= self.feedback_window <= 10_000_000,
              "an integer in [0, 10000000]")
        check("busy_timeout_ms", integer("busy_timeout_ms") and 0 <= self.busy_timeout_ms <= 60_000,
              "an integer in [0, 60000]")
        check("max_pending_minutes", integer("max_pending_minutes") and 1 <= self.max_pending_minutes <= 100_000,
              "an integer in [1, 100000]")
        if problems:
            raise ConfigError(
                "invalid telemetry settings: " + "; ".join(problems),
                hint="fix the 'telemetry' section of config.json (init --telemetry-setting KEY=VALUE)",
            )

    @property
    def retention_s(self) -> int:
        return int(self.retention_days * 86400)

    @classmethod
    def from_mapping(cls, doc: Mapping[str, Any] | None, what: str = "telemetry settings") -> TelemetryConfig:
        """The defaults with ``doc``'s overrides (``None`` values ignored); unknown keys are refused."""
        if doc is None:
            return cls()
        if not isinstance(doc, Mapping):
            raise ConfigError(f"{what} must be an object, got {type(doc).__name__}")
        known = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(str(k) for k in doc if k not in known)
        if unknown:
            raise ConfigError(
                f"unknown {what}: {', '.join(quote_untrusted(k, 40) for k in unknown)}",
                hint=f"known settings: {', '.join(sorted(known))}",
            )
        changes = {k: v for k, v in doc.items() if v is not None}
        try:
            return dataclasses.replace(cls(), **changes)
        except ConfigError as exc:
            raise ConfigError(f"{what}: {exc.message}", hint=exc.hint) from None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

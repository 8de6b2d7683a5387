"""The drift thresholds and window sizes, as data: the one place their defaults live.

:class:`DriftConfig` is read by :mod:`edge_runtime.drift` (the statistics) and by the monitor (the window).
The bundle may carry an optional ``"drift"`` object in its ``baseline.json`` (the model author's view of
how noisy the features are) and the device config an optional ``"drift"`` object (the operator's view, and
later ``models.yaml`` per group); :meth:`DriftConfig.resolve` applies them in that order over the defaults,
so the device wins. Unknown keys, wrong types and out-of-range values are a :class:`ConfigError` naming
the source, the key and the accepted range.

This module imports nothing heavy (no numpy): the device config is validated on the no-op paths.

Comparisons (each tested at the threshold and one step beyond):

* PSI drift: ``psi >= psi_threshold`` (inclusive).
* KS drift: ``ks_statistic >= ks_statistic_threshold`` (inclusive) **and** ``p_value < ks_p_value``
  (strict, the usual "p below alpha"). Both must hold: the p-value says the difference is not chance, the
  statistic (the largest gap between the two CDFs, 0..1) says it is large enough to matter. On large
  samples every tiny difference is significant, so the p-value alone would alarm on noise.
* Enough data: ``n >= min_samples`` (inclusive); below it a statistic is not computed and a window with
  no statistic reports ``insufficient_data``, never ``drift``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .errors import ConfigError, quote_untrusted

__all__ = ["DriftConfig"]


@dataclass(frozen=True)
class DriftConfig:
    """Thresholds of the drift verdict and the size of the window it is computed over.

    Defaults and why (measured by ``tests/unit/test_drift.py`` on fixed seeds, 10 quantile bins,
    a baseline sample of 1,000 values, windows of 1,000 live values):

    * ``psi_threshold = 0.2``: the common rule of thumb reads PSI < 0.1 as "no change", 0.1-0.25 as
      "moderate" and > 0.25 as "major"; 0.2 sits in the upper moderate band. With 10 bins the PSI of an
      unchanged distribution is about ``9 / n`` (0.009 at n = 1,000, 0.045 at n = 200), far below it.
    * ``ks_statistic_threshold = 0.1``: a 10-percentage-point gap between the live and the baseline CDF,
      what a mean shift of about 0.25 sigma of a normal feature produces. A 0.5 sigma shift gives ~0.2.
    * ``ks_p_value = 0.01``: at n = 1,000 against a 1,000-value sample the p-value crosses 0.01 at a gap
      of ~0.073, so the statistic threshold is the one that binds there; at small n the p-value keeps
      a chance gap of 0.1 from alarming.
    * ``min_samples = 200``: below it the KS test has little power and the PSI noise (~9/n) approaches
      the threshold's order of magnitude; 200 is ~3 minutes at one inference per second.
    * ``window_minutes = 60``: the monitor merges this many per-minute aggregates into one window.
    * ``psi_floor = 1e-4``: a bin fraction below it (an empty bin) is raised to it, so PSI is always finite;
      an emptied bin that held 10 % of the baseline then adds ~0.69 by itself.
    """

    #: drift when PSI >= this (inclusive)
    psi_threshold: float = 0.2
    #: KS drift needs the statistic >= this (inclusive) ...
    ks_statistic_threshold: float = 0.1
    #: ... and the p-value < this (strict)
    ks_p_value: float = 0.01
    #: a statistic is computed only on at least this many finite live values (inclusive)
    min_samples: int = 200
    #: the monitor's window: this many per-minute aggregates are merged into one
    window_minutes: int = 60
    #: bin fractions below this are raised to it before PSI (keeps PSI finite)
    psi_floor: float = 1e-4

    def __post_init__(self) -> None:
        problems = [p for p in (_check(f.name, getattr(self, f.name)) for f in dataclasses.fields(self)) if p]
        if problems:
            raise ConfigError("invalid drift settings: " + "; ".join(problems), hint=_HINT)

    def with_overrides(self, overrides: Mapping[str, Any] | None, what: str = "drift settings") -> DriftConfig:
        """A copy with ``overrides`` applied; ``None`` or ``{}`` changes nothing.

        Refuses a non-object, unknown keys, booleans and values of the wrong type or out of range, each
        with a message naming ``what`` (e.g. "device config /x/config.json: drift") and the key.
        """
        if overrides is None:
            return self
        if not isinstance(overrides, Mapping):
            raise ConfigError(f"{what} must be an object, got {type(overrides).__name__}", hint=_HINT)
        unknown = sorted(str(k) for k in overrides if k not in _FIELDS)
        if unknown:
            raise ConfigError(
                f"{what}: unknown drift setting(s) {', '.join(quote_untrusted(k, 40) for k in unknown)}",
                hint=f"known settings: {', '.join(sorted(_FIELDS))}",
            )
        changes: dict[str, Any] = {}
        problems: list[str] = []
        for key, value in overrides.items():
            problem = _check(key, value)
            if problem:
                problems.append(problem)
            else:
                changes[key] = float(value) if _FIELDS[key] is float else value
        if problems:
            raise ConfigError(f"{what}: " + "; ".join(problems), hint=_HINT)
        return dataclasses.replace(self, **changes) if changes else self

    @classmethod
    def from_mapping(cls, doc: Mapping[str, Any] | None, what: str = "drift settings") -> DriftConfig:
        """The defaults with ``doc``'s overrides (a ``drift`` object of JSON)."""
        return cls().with_overrides(doc, what)

    @classmethod
    def resolve(
        cls,
        bundle: Mapping[str, Any] | None = None,
        device: Mapping[str, Any] | None = None,
        *,
        device_what: str = "device config: drift",
    ) -> DriftConfig:
        """Defaults, then the bundle's ``baseline.json`` ``drift`` object, then the device config's ``drift``
        object (the device wins: it is the operator's setting for this device and, later, its group)."""
        return cls().with_overrides(bundle, "baseline.json: drift").with_overrides(device, device_what)

    @property
    def window_seconds(self) -> int:
        return self.window_minutes * 60

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def thresholds(self) -> dict[str, Any]:
        """The values a finding is judged by, as stated in every finding."""
        return {
            "psi": self.psi_threshold, "ks_statistic": self.ks_statistic_threshold,
            "ks_p_value": self.ks_p_value, "min_samples": self.min_samples,
        }


_HINT = ("fix the 'drift' object of the device config (config.json) or of the bundle's baseline.json; "
         "see docs/DESIGN.md (Drift statistics) for the defaults and ranges")

_FIELDS: dict[str, type] = {
    "psi_threshold": float, "ks_statistic_threshold": float, "ks_p_value": float, "min_samples": int,
    "window_minutes": int, "psi_floor": float,
}

#: accepted ranges: (low, high, low inclusive, high inclusive)
_RANGES: dict[str, tuple[float, float, bool, bool]] = {
    "psi_threshold": (0.0, 10.0, False, True),
    "ks_statistic_threshold": (0.0, 1.0, False, True),
    "ks_p_value": (0.0, 1.0, False, True),
    "min_samples": (2, 10_000_000, True, True),
    "window_minutes": (1, 7 * 24 * 60, True, True),
    "psi_floor": (0.0, 0.01, False, True),
}


def _check(key: str, value: Any) -> str | None:
    """None if ``value`` is acceptable for ``key``, else the problem in words."""
    kind = _FIELDS[key]
    if isinstance(value, bool) or not isinstance(value, (int, float) if kind is float else int):
        return f"{key} must be {'a number' if kind is float else 'an integer'}, got {quote_untrusted(repr(value), 40)}"
    if not math.isfinite(value):
        return f"{key} must be finite, got {value!r}"
    low, high, low_incl, high_incl = _RANGES[key]
    above = value >= low if low_incl else value > low
    below = value <= high if high_incl else value < high
    if not (above and below):
        return (f"{key} must be in {'[' if low_incl else '('}{low:g}, {high:g}{']' if high_incl else ')'}, "
                f"got {value!r}")
    return None

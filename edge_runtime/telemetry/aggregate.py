"""The per-minute telemetry record: the contract between the recorder, the store, the monitor and the fleet.

One :class:`MinuteAggregate` per (model, version, minute). ``minute`` is the start of the UTC minute in whole
seconds since the epoch (a multiple of 60), taken from the recorder's injectable clock. Counts are exact
integers; sums are floats of finite values only (a non-finite output is an error, never a confidence).

Latency is kept as counts per fixed bucket (:data:`LATENCY_BUCKETS_MS`, upper bounds, the last one is
``+inf``) so that a p95 over any set of minutes is computed from merged counts, never by averaging
percentiles.

Feature histograms are counts per bin of the bundle baseline's ``bin_edges`` for that feature
(``len(bin_edges) - 1`` counts; a value below the first edge counts in the first bin, above the last edge
in the last bin, a non-finite value is counted in ``features_nonfinite`` and in no bin).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

#: Upper bounds (inclusive) of the latency buckets in milliseconds; the last bucket is +inf.
LATENCY_BUCKETS_MS: tuple[float, ...] = (
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 10000.0,
    math.inf,
)


def latency_bucket(ms: float) -> int:
    """Index of the bucket a latency in milliseconds falls in (inclusive upper bounds)."""
    for i, bound in enumerate(LATENCY_BUCKETS_MS):
        if ms <= bound:
            return i
    return len(LATENCY_BUCKETS_MS) - 1


@dataclass
class MinuteAggregate:
    model: str
    version: str
    #: start of the UTC minute, seconds since the epoch, a multiple of 60
    minute: int
    #: inferences attempted in this minute
    count: int = 0
    #: inferences that failed (exception in the interpreter, non-finite output)
    errors: int = 0
    #: sum and number of top-1 confidences of the successful inferences
    conf_sum: float = 0.0
    conf_n: int = 0
    #: inferences whose ground truth was attached (feedback) and how many of them were wrong
    feedback_n: int = 0
    feedback_wrong: int = 0
    #: latency counts per LATENCY_BUCKETS_MS bucket, and the exact sum in milliseconds
    latency_counts: list[int] = field(default_factory=lambda: [0] * len(LATENCY_BUCKETS_MS))
    latency_sum_ms: float = 0.0
    #: feature name -> counts per baseline bin
    features: dict[str, list[int]] = field(default_factory=dict)
    #: feature name -> number of non-finite values seen
    features_nonfinite: dict[str, int] = field(default_factory=dict)
    #: top-1 label -> count
    labels: dict[str, int] = field(default_factory=dict)

    @property
    def mean_confidence(self) -> float | None:
        return self.conf_sum / self.conf_n if self.conf_n else None

    def merge(self, other: MinuteAggregate) -> None:
        """Add ``other``'s counts and sums into this aggregate (same model, version and minute).

        Feature histograms must have the same number of bins; a mismatch raises ``ValueError`` and
        leaves this aggregate unchanged.
        """
        if (other.model, other.version, other.minute) != (self.model, self.version, self.minute):
            raise ValueError(
                f"cannot merge {other.model} {other.version} @{other.minute} into "
                f"{self.model} {self.version} @{self.minute}"
            )
        for name, counts in other.features.items():
            mine = self.features.get(name)
            if mine is not None and len(mine) != len(counts):
                raise ValueError(f"feature {name}: {len(counts)} bins do not merge into {len(mine)}")
        if len(other.latency_counts) != len(self.latency_counts):
            raise ValueError("latency buckets differ")
        self.count += other.count
        self.errors += other.errors
        self.conf_sum += other.conf_sum
        self.conf_n += other.conf_n
        self.feedback_n += other.feedback_n
        self.feedback_wrong += other.feedback_wrong
        self.latency_counts = [a + b for a, b in zip(self.latency_counts, other.latency_counts, strict=True)]
        self.latency_sum_ms += other.latency_sum_ms
        for name, counts in other.features.items():
            mine = self.features.get(name)
            self.features[name] = list(counts) if mine is None else [a + b for a, b in zip(mine, counts, strict=True)]
        for name, n in other.features_nonfinite.items():
            self.features_nonfinite[name] = self.features_nonfinite.get(name, 0) + n
        for label, n in other.labels.items():
            self.labels[label] = self.labels.get(label, 0) + n

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model, "version": self.version, "minute": self.minute, "count": self.count,
            "errors": self.errors, "conf_sum": self.conf_sum, "conf_n": self.conf_n,
            "feedback_n": self.feedback_n, "feedback_wrong": self.feedback_wrong,
            "latency_counts": list(self.latency_counts), "latency_sum_ms": self.latency_sum_ms,
            "features": {k: list(v) for k, v in self.features.items()},
            "features_nonfinite": dict(self.features_nonfinite), "labels": dict(self.labels),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> MinuteAggregate:
        return cls(
            model=str(d["model"]), version=str(d["version"]), minute=int(d["minute"]), count=int(d["count"]),
            errors=int(d["errors"]), conf_sum=float(d["conf_sum"]), conf_n=int(d["conf_n"]),
            feedback_n=int(d.get("feedback_n", 0)), feedback_wrong=int(d.get("feedback_wrong", 0)),
            latency_counts=[int(x) for x in d["latency_counts"]], latency_sum_ms=float(d["latency_sum_ms"]),
            features={str(k): [int(x) for x in v] for k, v in d.get("features", {}).items()},
            features_nonfinite={str(k): int(v) for k, v in d.get("features_nonfinite", {}).items()},
            labels={str(k): int(v) for k, v in d.get("labels", {}).items()},
        )


def latency_quantile_ms(rows: Iterable[MinuteAggregate], q: float) -> float | None:
    """The q-quantile (0 < q <= 1) of latency over rows, as the upper bound of the bucket it falls in.

    None when there are no inferences. The answer is conservative (an upper bound); +inf when it falls in
    the last bucket.
    """
    if not 0.0 < q <= 1.0:
        raise ValueError(f"quantile must be in (0, 1], got {q!r}")
    merged = [0] * len(LATENCY_BUCKETS_MS)
    for r in rows:
        for i, c in enumerate(r.latency_counts):
            merged[i] += c
    total = sum(merged)
    if total == 0:
        return None
    rank = math.ceil(q * total)
    seen = 0
    for i, c in enumerate(merged):
        seen += c
        if seen >= rank:
            return LATENCY_BUCKETS_MS[i]
    return LATENCY_BUCKETS_MS[-1]

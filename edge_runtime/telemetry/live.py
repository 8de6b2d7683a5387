"""Live telemetry summary of a model since its activation, and of the version it replaced (read-only).

What the fleet's live canary gate reads from a device, once per check, through ``edgeml.fleet.edge_model_info``
(option ``telemetry``). The verdict is not made here: the controller's
``plugins/plugin_utils/live_gate.py`` compares the numbers (exactly) with the group's ``live_gate`` policy.

For each model:

* ``new``: the active version's committed minutes **since its activation** (``activated_at`` of the active
  version, or its ``committed_at``; the minute the activation falls in included). Minutes stamped after the
  device's clock are counted too: the telemetry of an accelerated workload (the simulator) is stamped ahead.
* ``baseline``: the previous committed version's minutes in the ``baseline_minutes`` minutes before that
  activation (``[activation minute - baseline_minutes * 60, activation minute + 60)``): the same device, the
  version it replaced, over a comparable window just before the change. Minutes of the previous version
  after the activation (a rollback and re-install) are not part of it.

Each side: ``inferences`` (attempted), ``errors`` (failed inferences: an exception, a NaN output),
``feedback`` / ``feedback_wrong`` (inferences whose ground truth the application attached, and how many of
them the model got wrong), ``conf_sum`` / ``conf_n`` (top-1 confidences of the successful inferences),
``mean_confidence``, ``latency_counts`` (merged per-bucket counts) and ``p95_ms`` (the upper bound of the
bucket the 95th percentile falls in, from the merged counts; ``None`` without inferences, the string
``"inf"`` in the last bucket), ``minutes`` (rows read). Counts are exact integers.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

from .aggregate import LATENCY_BUCKETS_MS, MinuteAggregate, latency_quantile_ms

__all__ = ["side_summary", "summarise"]

MINUTE = 60


def side_summary(rows: Iterable[MinuteAggregate]) -> dict[str, Any]:
    """The counts of ``rows`` merged (see the module docstring)."""
    rows = list(rows)
    out: dict[str, Any] = {"minutes": len(rows), "inferences": 0, "errors": 0, "feedback": 0, "feedback_wrong": 0,
                           "conf_sum": 0.0, "conf_n": 0}
    latency = [0] * len(LATENCY_BUCKETS_MS)
    for r in rows:
        out["inferences"] += r.count
        out["errors"] += r.errors
        out["feedback"] += r.feedback_n
        out["feedback_wrong"] += r.feedback_wrong
        out["conf_sum"] += r.conf_sum
        out["conf_n"] += r.conf_n
        for i, c in enumerate(r.latency_counts[: len(latency)]):
            latency[i] += c
    p95 = latency_quantile_ms(rows, 0.95)
    out["latency_counts"] = latency
    out["p95_ms"] = "inf" if p95 is not None and math.isinf(p95) else p95
    out["mean_confidence"] = out["conf_sum"] / out["conf_n"] if out["conf_n"] else None
    return out


def summarise(
    rows: Sequence[MinuteAggregate], model: str, active: str | None, previous: str | None,
    activated_at: float | None, baseline_minutes: int,
) -> dict[str, Any]:
    """One model's live summary from its stored ``rows`` (all versions; see the module docstring)."""
    out: dict[str, Any] = {"model": model, "version": active, "previous_version": previous,
                           "activated_at": activated_at, "baseline_minutes": baseline_minutes}
    if active is None or activated_at is None:
        out.update(new=side_summary([]), baseline=side_summary([]),
                   problem="no active version with an activation time")
        return out
    start = math.floor(activated_at / MINUTE) * MINUTE
    out["new"] = side_summary(r for r in rows if r.version == active and r.minute >= start)
    lo = start - baseline_minutes * MINUTE
    out["baseline"] = side_summary(
        r for r in rows if previous is not None and r.version == previous and lo <= r.minute < start + MINUTE)
    return out

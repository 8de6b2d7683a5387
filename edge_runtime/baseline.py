"""Drift baseline of a model's training data (``baseline.json``), the format the telemetry side reads.

Release side only (numpy). One function computes it for the demo trainer (``scripts/train_demo_models.py``) and
for ``edge-release publish``, so the format has one owner. Per feature: a subsample of at most 1000 values
(``sample``), ten quantile bins (``bin_edges``, 11 strictly increasing edges, outer ones at +-1e9) with the
fraction of values in each (``bin_fractions``), ``mean`` and ``std``. Features: per-image pixel mean and pixel
std (defined in :mod:`edge_runtime.features`), and the model's confidence (max softmax probability) on
its training data. See ``docs/DESIGN.md``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .features import FEATURES, batch_statistics

__all__ = ["SEED_BASELINE_SUBSAMPLE", "feature_summary", "make_baseline"]

#: the subsample seed every baseline uses (reproducible baselines, identical to the committed demo ones)
SEED_BASELINE_SUBSAMPLE = 7


def feature_summary(values: Any, seed: int = SEED_BASELINE_SUBSAMPLE) -> dict[str, Any]:
    """Sample, decile bins and moments of one feature's values over the training data."""
    v = np.asarray(values, np.float64)
    n = len(v)
    if n == 0 or not np.all(np.isfinite(v)):
        raise ValueError("a baseline feature needs at least one value, all finite")
    idx = np.sort(np.random.default_rng(seed).choice(n, size=min(n, 1000), replace=False))
    edges = np.round(np.quantile(v, np.linspace(0.0, 1.0, 11)), 9)
    edges[0], edges[-1] = -1e9, 1e9
    for i in range(2, 10):
        # Ties (saturated or int8-quantized confidences) would give equal edges: keep them strictly
        # increasing; the extra bins then hold fraction 0.
        if edges[i] <= edges[i - 1]:
            edges[i] = round(edges[i - 1] + 1e-9, 9)
    counts, _ = np.histogram(v, bins=edges)
    assert counts.sum() == n
    return {
        "sample": [round(float(x), 6) for x in v[idx]],
        "bin_edges": [float(e) for e in edges],
        "bin_fractions": [float(c) / n for c in counts],
        "mean": round(float(v.mean()), 6),
        "std": round(float(v.std()), 6),
    }


def make_baseline(images: Any, outputs: Any) -> dict[str, Any]:
    """The baseline of ``images`` (the training inputs) and ``outputs`` (the model's probabilities on them)."""
    per_input = batch_statistics(images)
    return {
        "n_samples": len(images),
        "features": {name: feature_summary(per_input[name], SEED_BASELINE_SUBSAMPLE) for name in FEATURES},
        "confidence": feature_summary(np.asarray(outputs).max(axis=1), SEED_BASELINE_SUBSAMPLE),
    }

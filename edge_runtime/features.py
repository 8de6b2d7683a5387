"""The input features drift is measured on: their names and their one definition (numpy only).

A feature is a number per input, computed in the model's float domain over all of the input's values:

- ``pixel_mean``: the mean of the values;
- ``pixel_std``: their population standard deviation (``ddof=0``).

Two functions compute them, one per side, and both live here so the definition has one owner:
:func:`batch_statistics` for a training set (the release side writes ``baseline.json`` with it, see
:mod:`edge_runtime.baseline`) and :func:`input_statistics` for one live input (the serving path records it, see
:mod:`edge_runtime.serve`; it is the hot path, so it uses one sum and one dot product). They agree to within
float64 rounding (tests/unit/test_features.py holds them to 1e-9, also where the variance is tiny next to the
squared mean and the fast formula would cancel).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = ["FEATURES", "batch_statistics", "input_statistics"]

#: the input statistics this runtime can record, by the name a baseline gives them
FEATURES: tuple[str, ...] = ("pixel_mean", "pixel_std")


def batch_statistics(images: Any) -> dict[str, np.ndarray]:
    """The :data:`FEATURES` of each input of ``images`` (first axis: the inputs), as float64 arrays."""
    flat = np.asarray(images).reshape(len(images), -1).astype(np.float64)
    return {"pixel_mean": flat.mean(axis=1), "pixel_std": flat.std(axis=1)}


def input_statistics(x: np.ndarray) -> dict[str, float]:
    """The :data:`FEATURES` of one input: mean and standard deviation of its values, from one sum and one dot
    product in float64 (a float32 dot product would cost ~1e-7 of relative precision); where the variance is
    small next to the squared mean (cancellation would cost precision) the standard deviation is computed
    exactly instead."""
    r = x.reshape(-1).astype(np.float64, copy=False)
    n = r.size
    mean = float(np.add.reduce(r)) / n
    var = float(np.dot(r, r)) / n - mean * mean
    std = math.sqrt(var) if var > 1e-3 * mean * mean else float(r.std())
    return {"pixel_mean": mean, "pixel_std": std}

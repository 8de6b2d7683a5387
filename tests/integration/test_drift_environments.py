"""The drift statistics in each device environment: scipy (the `monitor` extra) imports and agrees with numpy.

Marked ``tflite_runtime`` so that `make test` runs it again in ``.venv-tflite``, where numpy is < 2: the
scipy that pip resolves there (``scipy>=1.10`` with ``numpy<2``) must import and compute the same KS test.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edge_runtime import drift

pytestmark = pytest.mark.tflite_runtime

BASELINE = Path(__file__).resolve().parents[2] / "demo" / "models" / "defect-classifier" / "1.1.0" / "baseline.json"


def test_scipy_of_the_monitor_extra_imports_with_this_numpy_and_ks_runs() -> None:
    assert drift.ks_available(), (
        f"scipy does not import next to numpy {np.__version__}: install the runtime with its monitor extra "
        "(pip install -e '.[monitor]')"
    )
    doc = json.loads(BASELINE.read_text(encoding="utf-8"))
    good, _ = drift.parse_baseline(doc)
    sample = good["pixel_mean"].sample
    report = drift.evaluate_baseline(doc, values={"pixel_mean": sample + 0.5 * sample.std(), "pixel_std": sample})
    by = {f["feature"]: f for f in report["findings"]}
    assert by["pixel_mean"]["verdict"] == "drift"
    assert by["pixel_mean"]["ks_statistic"] is not None
    assert by["pixel_std"]["verdict"] == "drift"  # pixel_mean values are nothing like pixel_std's
    assert report["drifted"] == ["pixel_mean", "pixel_std"]

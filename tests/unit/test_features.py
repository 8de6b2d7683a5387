"""The drift features have one definition: the batch form (baseline.json) and the one-input form (serving)."""

from __future__ import annotations

import numpy as np
import pytest

from edge_runtime.features import FEATURES, batch_statistics, input_statistics


@pytest.mark.parametrize(
    ("offset", "scale"),
    [(0.0, 1.0), (0.5, 0.2), (1e3, 1e-3), (-7.0, 3.0), (0.0, 0.0), (255.0, 0.0)],
    ids=["unit", "image", "cancellation", "negative", "all-zero", "constant"],
)
def test_one_input_and_batch_forms_agree(offset: float, scale: float) -> None:
    rng = np.random.default_rng(11)
    images = (offset + scale * rng.standard_normal((25, 28, 28))).astype(np.float32)
    batch = batch_statistics(images)
    assert set(batch) == set(FEATURES)
    for i, image in enumerate(images):
        one = input_statistics(image)
        assert set(one) == set(FEATURES)
        for name in FEATURES:
            assert one[name] == pytest.approx(float(batch[name][i]), rel=1e-9, abs=1e-9), (name, i)


def test_batch_statistics_are_per_input_over_all_values() -> None:
    images = np.array([[[0.0, 1.0], [2.0, 3.0]], [[4.0, 4.0], [4.0, 4.0]]])
    batch = batch_statistics(images)
    assert batch["pixel_mean"].tolist() == [1.5, 4.0]
    assert batch["pixel_std"].tolist() == pytest.approx([np.sqrt(1.25), 0.0])

"""Synthetic demo inputs: the generator the demo models were trained on, and field scenarios that shift it.

numpy only (no TensorFlow): the workload simulator feeds these to real TFLite inference on the local fleet,
and ``scripts/train_demo_models.py`` trains the demo models and builds their baselines
(``edge_runtime.baseline``) on :func:`make_images` itself, so the simulator's clean inputs are, by
construction, what the models and their ``baseline.json`` expect (``tests/unit/test_synthetic.py``
regenerates the committed golden inputs and baselines bit for bit).

Images: float32 ``[n, 32, 32, 1]`` in [0, 1], a brightness gradient, optional periodic stripes and pixel
noise; label 1 ("defect") images carry one thin bright or dark scratch, label 0 ("good") do not. Labels
are the ground truth for feedback.

Scenarios (:data:`SCENARIOS`, or a :class:`Scenario` of your own) transform the clean images after they
are made, with their own random stream, so every scenario of one seed shows the same scenes and labels:

* ``clean``: no change (no drift).
* ``winter``: darker scenes, every pixel ``+ brightness`` (-0.12, about one standard deviation of the
  training set's ``pixel_mean``), clipped to [0, 1]: the ``pixel_mean`` feature drifts.
* ``noise``: a degraded sensor, Gaussian pixel noise of ``noise_std`` (0.08) added, clipped: ``pixel_std``
  drifts.

Which inputs flag drift is tested with :mod:`edge_runtime.drift` against every demo baseline: the shifted
scenarios are flagged, the clean one is not.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

__all__ = [
    "IMG",
    "LABELS",
    "SCENARIOS",
    "SEED_HELDOUT_DATA",
    "SEED_TRAIN_DATA",
    "Scenario",
    "generate",
    "make_images",
    "scenario",
    "stream",
]

IMG = 32
LABELS = ("good", "defect")
#: the seeds of the demo models' training and held-out sets (scripts/train_demo_models.py)
SEED_TRAIN_DATA = 20261123
SEED_HELDOUT_DATA = 20261124

Images = npt.NDArray[np.float32]
Labels = npt.NDArray[np.int64]


def make_images(n: int, seed: int) -> tuple[Images, Labels]:
    """Deterministic synthetic dataset: float32 [n, 32, 32, 1] in [0, 1], int64 labels [n] (half of each).

    The demo models' training data is ``make_images(4000, SEED_TRAIN_DATA)``; any other seed draws new
    images of the same distribution. About 0.4 ms per image.
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:IMG, 0:IMG].astype(np.float64)
    images = np.empty((n, IMG, IMG, 1), np.float32)
    labels = np.zeros(n, np.int64)
    labels[n // 2 :] = 1
    rng.shuffle(labels)
    for i in range(n):
        base = rng.uniform(0.3, 0.7)
        gx, gy = rng.uniform(-0.3, 0.3, 2) / IMG
        img = base + gx * (xx - IMG / 2) + gy * (yy - IMG / 2)
        if rng.random() < 0.7:  # periodic stripes (full-length, unlike a scratch)
            theta = rng.uniform(0, np.pi)
            freq = rng.uniform(0.15, 0.6)
            phase = rng.uniform(0, 2 * np.pi)
            img = img + rng.uniform(0.02, 0.12) * np.sin(freq * (np.cos(theta) * xx + np.sin(theta) * yy) + phase)
        img = img + rng.normal(0.0, rng.uniform(0.03, 0.07), (IMG, IMG))
        if labels[i] == 1:  # thin scratch: anti-aliased line segment
            length = rng.uniform(8, 20)
            theta = rng.uniform(0, np.pi)
            cx, cy = rng.uniform(6, IMG - 6, 2)
            dx, dy = np.cos(theta) * length / 2, np.sin(theta) * length / 2
            x0, y0, vx, vy = cx - dx, cy - dy, 2 * dx, 2 * dy
            t = np.clip(((xx - x0) * vx + (yy - y0) * vy) / (vx * vx + vy * vy), 0.0, 1.0)
            dist = np.hypot(xx - (x0 + t * vx), yy - (y0 + t * vy))
            amp = rng.uniform(0.16, 0.4) * rng.choice([-1.0, 1.0])
            width = rng.uniform(0.7, 1.2)
            img = img + amp * np.clip(1.0 - dist / width, 0.0, 1.0)
        images[i, :, :, 0] = np.clip(img, 0.0, 1.0)
    return images, labels


@dataclass(frozen=True)
class Scenario:
    """A field condition applied to clean images: ``clip(image + brightness + N(0, noise_std), 0, 1)``."""

    name: str
    #: added to every pixel (negative: darker)
    brightness: float = 0.0
    #: standard deviation of the Gaussian noise added to every pixel (0: none)
    noise_std: float = 0.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.brightness) and -1.0 <= self.brightness <= 1.0):
            raise ValueError(f"scenario {self.name!r}: brightness must be in [-1, 1], got {self.brightness!r}")
        if not (math.isfinite(self.noise_std) and 0.0 <= self.noise_std <= 1.0):
            raise ValueError(f"scenario {self.name!r}: noise_std must be in [0, 1], got {self.noise_std!r}")

    def apply(self, images: Images, seed: int) -> Images:
        """The images under this scenario (a new array; ``seed`` drives the noise, apart from the scenes)."""
        out = np.asarray(images, np.float32)
        if self.brightness == 0.0 and self.noise_std == 0.0:
            return out.copy()
        shifted = out.astype(np.float64) + self.brightness
        if self.noise_std > 0.0:
            # Its own stream (seed, 1): the scenes of the seed stay the scenes every scenario shows.
            shifted += np.random.default_rng([seed, 1]).normal(0.0, self.noise_std, out.shape)
        return np.clip(shifted, 0.0, 1.0).astype(np.float32)


#: the simulator's named scenarios (issue 9 section 5): no drift, brightness shift, sensor noise
SCENARIOS: dict[str, Scenario] = {
    "clean": Scenario("clean"),
    "winter": Scenario("winter", brightness=-0.12),
    "noise": Scenario("noise", noise_std=0.08),
}


def scenario(name_or_scenario: str | Scenario, **overrides: float) -> Scenario:
    """A named scenario (optionally with ``brightness`` / ``noise_std`` changed), or the one given."""
    if isinstance(name_or_scenario, Scenario):
        base = name_or_scenario
    elif name_or_scenario in SCENARIOS:
        base = SCENARIOS[name_or_scenario]
    else:
        raise ValueError(f"unknown scenario {name_or_scenario!r}; known: {', '.join(sorted(SCENARIOS))}")
    unknown = set(overrides) - {"brightness", "noise_std"}
    if unknown:
        raise ValueError(f"unknown scenario setting(s) {sorted(unknown)}; known: brightness, noise_std")
    if not overrides:
        return base
    return Scenario(base.name, overrides.get("brightness", base.brightness), overrides.get("noise_std", base.noise_std))


def generate(n: int, seed: int, which: str | Scenario = "clean") -> tuple[Images, Labels]:
    """``n`` images and their true labels under a scenario; deterministic for ``seed``.

    Use a seed other than :data:`SEED_TRAIN_DATA` for inputs the models have not been trained on.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    sc = scenario(which)
    images, labels = make_images(n, seed)
    return sc.apply(images, seed), labels


def stream(seed: int, which: str | Scenario = "clean", batch: int = 256) -> Iterator[tuple[Images, int]]:
    """An endless stream of ``(image [32, 32, 1], true label)`` under a scenario, made ``batch`` at a time
    (batch ``k`` from a seed derived from ``[seed, k]``), for a simulator that draws one input per inference."""
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    sc = scenario(which)
    k = 0
    while True:
        sub = int(np.random.SeedSequence([seed, k]).generate_state(1)[0])
        images, labels = make_images(batch, sub)
        images = sc.apply(images, sub)
        for img, lab in zip(images, labels, strict=True):
            yield img, int(lab)
        k += 1

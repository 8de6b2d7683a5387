"""Write the demo's data sets as .npz files (``x`` float32 images, ``y`` int64 labels) for `edge-release publish`.

    python scripts/demo_data.py --out .state/demo-data

Writes ``train.npz`` (the 4000 training images 1.1.0 was trained on), ``train-small.npz`` (the first 10%, what
1.0.0 was trained on) and ``heldout.npz`` (the 1000 held-out images every demo model is evaluated on). The
generator is the trainer's own (``scripts/train_demo_models.py``, numpy only; TensorFlow is not imported), so
the sets are exactly the ones the committed demo models and baselines were made from.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import train_demo_models as demo


def write_demo_data(out: Path) -> dict[str, Path]:
    """Generate the demo data sets into ``out`` (deterministic; about a second)."""
    out.mkdir(parents=True, exist_ok=True)
    x_train, y_train, x_held, y_held = demo.datasets()
    n_small = int(demo.N_TRAIN * demo.SMALL_FRACTION)
    sets = {"train": (x_train, y_train), "train-small": (x_train[:n_small], y_train[:n_small]),
            "heldout": (x_held, y_held)}
    paths = {}
    for name, (x, y) in sets.items():
        paths[name] = out / f"{name}.npz"
        with paths[name].open("wb") as fh:
            np.savez(fh, x=x.astype(np.float32), y=y.astype(np.int64))
    return paths


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / ".state" / "demo-data")
    args = ap.parse_args()
    for name, path in write_demo_data(args.out).items():
        print(f"{name:12} {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""A release that passes its golden smoke test but is worse on live data (for the live canary gate).

Derived from committed files only (no TensorFlow): the demo's defect-classifier **1.0.0** weights (10 % of the
training data, held-out accuracy 0.899) with their own golden samples and baseline, released as a *newer*
version. Its smoke test passes (the golden outputs are its own, 16/16 labels agree), but on the generator's
live distribution it is about 5 points worse than 1.1.0 (0.948) and less confident: the golden samples say
nothing about that, the live gate does.
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
WEIGHTS = REPO / "demo" / "models" / "defect-classifier" / "1.0.0"

DESCRIPTION = ("LIVE REGRESSION (demo/tests only): the 1.0.0 weights (10% of the training data) released as a newer "
               "version; passes its golden smoke test, about 5 points worse than 1.1.0 on live data.")


def release_dir(out: Path, version: str = "1.6.0", counter: int = 5) -> Path:
    """Write the release directory of the regression as ``out/defect-classifier/<version>``."""
    rel = out / "defect-classifier" / version
    rel.mkdir(parents=True, exist_ok=True)
    for name in ("model.tflite", "golden.npz", "baseline.json", "labels.txt"):
        shutil.copyfile(WEIGHTS / name, rel / name)
    doc = json.loads((WEIGHTS / "release.json").read_text())
    doc.update(version=version, release_counter=counter, description=DESCRIPTION)
    (rel / "release.json").write_text(json.dumps(doc, indent=2) + "\n")
    return rel


def build(registry: Path, key: Path, work: Path, version: str = "1.6.0", counter: int = 5) -> dict[str, object]:
    """Sign the regression into ``registry`` with ``key``; its catalogue entry (bundle, digest, counter)."""
    from edge_runtime.bundle import read_envelope
    from edge_runtime.manifest import Manifest
    from edge_runtime.release_cli import main as release

    rel = release_dir(work, version, counter)
    target = registry / "defect-classifier" / f"{version}.edgebundle"
    target.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.redirect_stdout(io.StringIO()):
        rc = release(["build", "--release-dir", str(rel), "--key", str(key), "-o", str(target),
                      "--created", "2026-11-01T00:00:00Z", "--expires-in-days", "3650"])
    if rc:
        raise RuntimeError(f"building the regression {version} failed (exit {rc})")
    m = Manifest.from_signed(read_envelope(target).signed)
    return {"bundle": f"defect-classifier/{version}.edgebundle", "digest": m.digest, "release_counter": counter}


def catalogue_entry(version: str, entry: dict[str, object]) -> str:
    """The models.yaml lines of ``entry`` under ``defect-classifier.versions``."""
    return (f'      "{version}":\n        bundle: {entry["bundle"]}\n        digest: "{entry["digest"]}"\n'
            f'        release_counter: {entry["release_counter"]}\n')

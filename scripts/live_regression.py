"""A release that passes its golden smoke test but is worse on live data, and the live traffic that shows it.

The one owner of the live canary gate's story, used by `make demo` (scripts/demo.py, act 7) and by
tests/ansible/test_live_gate_playbook.py:

* :func:`build` -- derived from committed files only (no TensorFlow): the demo's defect-classifier **1.0.0**
  weights (10 % of the training data, held-out accuracy 0.899) with their own golden samples and baseline,
  released as a *newer* version (1.6.0, counter 5). Its smoke test passes (the golden outputs are its own, 16/16
  labels agree), but on the generator's live distribution it is about 5 points worse than 1.1.0 (0.948) and
  less confident: the golden samples say nothing about that, the live gate does.
* :func:`with_regression` -- a models.yaml text with its catalogue entry, a group pinned to it and (optionally)
  that group's ``rollout.live_gate`` (:data:`LIVE_GATE`).
* :func:`baseline_traffic` -- live traffic of the version before the change, stamped in the past (the gate's
  baseline: the same device's previous version over ``baseline_minutes`` before the activation).
* :class:`CanaryTraffic` -- the workload simulator in a background thread of the caller: as soon as a device
  runs the new version (committed, not pending), it gets ten simulated minutes of live traffic with ground
  truth while the wave bakes. A thread, not a process: whatever ends the caller (failure, Ctrl-C) leaves nothing
  running; ``with`` stops and joins it.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import shutil
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Any

REPO = Path(__file__).resolve().parents[1]
WEIGHTS = REPO / "demo" / "models" / "defect-classifier" / "1.0.0"
MODEL = "defect-classifier"
VERSION = "1.6.0"
COUNTER = 5

DESCRIPTION = ("LIVE REGRESSION (demo/tests only): the 1.0.0 weights (10% of the training data) released as a newer "
               "version; passes its golden smoke test, about 5 points worse than 1.1.0 on live data.")

#: the group's live gate in the demo and the test: bake at most 90 s, judge on 300 inferences with 100 of them
#: with ground truth on both sides (the defaults for the limits: +2 points error rate halts)
LIVE_GATE = """      live_gate:
        bake_seconds: 90
        poll_seconds: 2
        min_samples: 300
        min_feedback: 100
        baseline_minutes: 60
"""


def release_dir(out: Path, version: str = VERSION, counter: int = COUNTER) -> Path:
    """Write the release directory of the regression as ``out/defect-classifier/<version>``."""
    rel = out / MODEL / version
    rel.mkdir(parents=True, exist_ok=True)
    for name in ("model.tflite", "golden.npz", "baseline.json", "labels.txt"):
        shutil.copyfile(WEIGHTS / name, rel / name)
    doc = json.loads((WEIGHTS / "release.json").read_text())
    doc.update(version=version, release_counter=counter, description=DESCRIPTION)
    (rel / "release.json").write_text(json.dumps(doc, indent=2) + "\n")
    return rel


def build(registry: Path, key: Path, work: Path, version: str = VERSION, counter: int = COUNTER) -> dict[str, object]:
    """Sign the regression into ``registry`` with ``key``; its catalogue entry (bundle, digest, counter).

    The creation time is fixed, so the digest is the same on every build (a rebuild replaces the bundle)."""
    from edge_runtime.bundle import read_envelope
    from edge_runtime.manifest import Manifest
    from edge_runtime.release_cli import main as release

    rel = release_dir(work, version, counter)
    target = registry / MODEL / f"{version}.edgebundle"
    target.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.redirect_stdout(io.StringIO()):
        rc = release(["build", "--release-dir", str(rel), "--key", str(key), "-o", str(target),
                      "--created", "2026-11-01T00:00:00Z", "--expires-in-days", "3650"])
    if rc:
        raise RuntimeError(f"building the regression {version} failed (exit {rc})")
    m = Manifest.from_signed(read_envelope(target).signed)
    return {"bundle": f"{MODEL}/{version}.edgebundle", "digest": m.digest, "release_counter": counter}


def catalogue_entry(version: str, entry: dict[str, object]) -> str:
    """The models.yaml lines of ``entry`` under ``defect-classifier.versions``."""
    return (f'      "{version}":\n        bundle: {entry["bundle"]}\n        digest: "{entry["digest"]}"\n'
            f'        release_counter: {entry["release_counter"]}\n')


def with_regression(text: str, entry: dict[str, object], *, group: str, pin: str,
                    live_gate: bool, version: str = VERSION) -> str:
    """``text`` (a models.yaml laid out as the committed one) with the regression's catalogue entry, ``group``
    pinned to ``pin`` and, with ``live_gate``, :data:`LIVE_GATE` in the group's rollout."""
    def sub(pattern: str, repl: Any, what: str) -> str:
        out, n = re.subn(pattern, repl, text, count=1)
        if n != 1:
            raise ValueError(f"models.yaml: cannot place {what} (layout differs from the committed file)")
        return out

    text = sub(rf"(?m)^(  {MODEL}:\n    versions:\n)", lambda m: m.group(1) + catalogue_entry(version, entry),
               f"the catalogue entry of {version}")
    text = sub(rf'(?ms)^(  {group}:\n    models:\n      {MODEL}: )"[^"\n]*"', lambda m: f'{m.group(1)}"{pin}"',
               f"the pin of {group}")
    if live_gate:
        text = sub(rf"(?ms)^(  {group}:\n.*?      health_gate:\n(?:        [^\n]*\n)*)",
                   lambda m: m.group(1) + LIVE_GATE, f"the live gate of {group}")
    return text


def baseline_traffic(roots: list[Path], *, minutes: int = 20, rate: int = 30) -> dict[str, Any]:
    """``minutes`` of clean live traffic with ground truth on each device's active version, ending five
    minutes ago (inside the gate's ``baseline_minutes`` before the next activation)."""
    from edge_runtime.workload import DeviceLoad, simulate

    return simulate([DeviceLoad(r, "clean", seed=3) for r in roots], minutes=minutes, rate=rate, feedback=1.0,
                    monitor=False, start=time.time() - (minutes + 5) * 60)


def _runs(root: Path, version: str) -> bool:
    p = root / "models" / MODEL / "state.json"
    try:
        state = json.loads(p.read_text())
    except (OSError, ValueError):
        return False
    return bool(state.get("active") == version and not state.get("pending"))


class CanaryTraffic:
    """``with CanaryTraffic(roots):`` -- every device of ``roots`` that comes to run ``version`` gets ten simulated
    minutes of clean live traffic with ground truth on it (real inference, in a thread of this process).

    ``traffic``: per device name, the simulator's report (or the exception it raised)."""

    def __init__(self, roots: list[Path], version: str = VERSION, *, minutes: int = 10, rate: int = 60) -> None:
        self.roots, self.version, self.minutes, self.rate = roots, version, minutes, rate
        self.traffic: dict[str, Any] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._drive, name="canary-traffic", daemon=True)

    def _drive(self) -> None:
        from edge_runtime.workload import DeviceLoad, simulate

        while not self._stop.is_set():
            for root in self.roots:
                if root.name not in self.traffic and _runs(root, self.version):
                    try:
                        self.traffic[root.name] = simulate(
                            [DeviceLoad(root, "clean", seed=7)], minutes=self.minutes, rate=self.rate, feedback=1.0,
                            monitor=False)["devices"][0]
                    except Exception as exc:  # reported to the caller, who decides
                        self.traffic[root.name] = exc
            self._stop.wait(0.2)

    def __enter__(self) -> CanaryTraffic:
        self._thread.start()
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self._stop.set()
        self._thread.join(timeout=60)  # a simulation in progress ends within seconds; daemon: never blocks exit

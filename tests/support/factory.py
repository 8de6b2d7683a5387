"""Build real signed bundles from the committed demo models, and device roots to install them on."""

from __future__ import annotations

import contextlib
import io
import json
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_runtime.device import Device
from edge_runtime.release_cli import main as release_main

from .keys import KeyPair, make_keypair

REPO = Path(__file__).resolve().parents[2]
DEMO_MODELS = REPO / "demo" / "models"
#: real but faulty models for the fault tests (scripts/train_demo_models.py --fault-models):
#: defect-classifier 1.4.0 never returns from an invoke, 1.5.0 outputs NaN
FAULT_MODELS = REPO / "demo" / "fault-models"
MODEL = "defect-classifier"
CREATED = "2026-11-01T00:00:00Z"


def release_dir(version: str, model: str = MODEL) -> Path:
    d = DEMO_MODELS / model / version
    return d if d.is_dir() else FAULT_MODELS / model / version


def build(version: str, out: Path, keys: list[KeyPair], *extra: str, model: str = MODEL) -> Path:
    """Build a bundle with the real `edge-release build` command."""
    args = [
        "build",
        "--release-dir",
        str(release_dir(version, model)),
        "-o",
        str(out),
        "--created",
        CREATED,
        "--expires-in-days",
        "3650",
    ]
    for k in keys:
        args += ["--key", str(k.private_path)]
    with contextlib.redirect_stdout(io.StringIO()):
        rc = release_main([*args, *extra])
    assert rc == 0, f"edge-release build failed for {model} {version}"
    return out


@dataclass
class Release:
    """Keys and the standard bundles, built once per test session."""

    directory: Path
    keys: list[KeyPair]
    stranger: KeyPair

    def bundle(self, version: str, model: str = MODEL) -> Path:
        out = self.directory / f"{model}-{version}.edgebundle"
        if not out.exists():
            build(version, out, self.keys[:1], model=model)
        return out

    def custom(
        self, name: str, version: str, *extra: str, keys: list[KeyPair] | None = None, model: str = MODEL
    ) -> Path:
        out = self.directory / name
        return build(version, out, self.keys[:1] if keys is None else keys, *extra, model=model)

    def device(self, root: Path, *, threshold: int = 1, trusted: int = 1, **kw: object) -> Device:
        dev = Device(root)
        dev.init([k.public_path for k in self.keys[:trusted]], threshold=threshold, **kw)  # type: ignore[arg-type]
        return dev


def release_json(*args: str) -> dict[str, Any]:
    """Run `edge-release --json ARGS...` in-process; return its JSON output (the command must succeed)."""
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = release_main(["--json", *args])
    out: dict[str, Any] = json.loads(buf.getvalue())
    assert rc == 0, out
    return out


def make_release(directory: Path) -> Release:
    keys = [make_keypair(directory / "keys", f"release-{i}") for i in range(3)]
    return Release(directory, keys, make_keypair(directory / "keys", "stranger"))


def rewrite_bundle(
    src: Path,
    dst: Path,
    edit: Callable[[str, bytes], bytes | None],
    extra: list[tuple[tarfile.TarInfo, bytes]] | None = None,
) -> Path:
    """Copy a bundle member by member; ``edit`` may change a member's bytes or drop it (None)."""
    with tarfile.open(src, "r:") as tin, tarfile.open(dst, "w", format=tarfile.PAX_FORMAT) as tout:
        for m in tin.getmembers():
            f = tin.extractfile(m)
            data = f.read() if f else b""
            new = edit(m.name, data)
            if new is None:
                continue
            info = tarfile.TarInfo(m.name)
            info.size = len(new)
            info.mode = 0o644
            tout.addfile(info, io.BytesIO(new))
        for info, data in extra or []:
            tout.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return dst


def snapshot(root: Path) -> dict[str, object]:
    """Everything a test needs to prove 'nothing on the device changed'."""
    out: dict[str, object] = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        if rel in ("lock",) or rel.startswith(("facts/", "downloads/")):
            continue
        if p.is_symlink():
            out[rel] = ("link", str(p.readlink()))
        elif p.is_file():
            out[rel] = ("file", p.read_bytes())
        else:
            out[rel] = ("dir",)
    return out


def state(root: Path, model: str = MODEL) -> dict[str, object]:
    return json.loads((root / "models" / model / "state.json").read_text())

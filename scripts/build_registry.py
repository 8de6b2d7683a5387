"""Build the demo registry: sign every committed demo model with a demo key made on the spot.

    python scripts/build_registry.py [--out .state/registry] [--keys .state/demo-keys]

The demo key is NOT FOR PRODUCTION: it is created on this machine, lives in the ignored ``.state/``
folder and is named so. Bundles use a fixed creation time, so their manifest digests are reproducible
and ``models.yaml`` can pin them (the signature differs per key, the signed digest does not).
Prints one line per bundle, or JSON with ``--json`` (model, version, bundle, digest, size, counter).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "demo" / "models"
CREATED = "2026-11-01T00:00:00Z"
VALID_DAYS = "3650"
KEY_NAME = "demo-NOT-FOR-PRODUCTION"


def ensure_demo_key(keys_dir: Path) -> tuple[Path, Path]:
    from edge_runtime.keys import generate_keypair

    priv, pub = keys_dir / f"{KEY_NAME}.key", keys_dir / f"{KEY_NAME}.pub"
    if not priv.exists():
        keys_dir.mkdir(parents=True, exist_ok=True)
        generate_keypair(priv, pub)
    return priv, pub


def build_registry(out: Path, keys_dir: Path) -> list[dict[str, object]]:
    from edge_runtime.bundle import read_envelope
    from edge_runtime.manifest import Manifest
    from edge_runtime.release_cli import main as release

    priv, _pub = ensure_demo_key(keys_dir)
    rows = []
    for rel in sorted(DEMO.glob("*/*/release.json")):
        model, version = rel.parent.parent.name, rel.parent.name
        target = out / model / f"{version}.edgebundle"
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.exists():  # digests are reproducible, so an existing bundle is kept
            with contextlib.redirect_stdout(io.StringIO()):
                rc = release(["build", "--release-dir", str(rel.parent), "--key", str(priv), "-o", str(target),
                              "--created", CREATED, "--expires-in-days", VALID_DAYS])
            if rc:
                raise SystemExit(f"building {model} {version} failed")
        m = Manifest.from_signed(read_envelope(target).signed)
        rows.append({"model": model, "version": version, "bundle": f"{model}/{version}.edgebundle",
                     "digest": m.digest, "size": target.stat().st_size, "release_counter": m.release_counter})
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=REPO / ".state" / "registry")
    ap.add_argument("--keys", type=Path, default=REPO / ".state" / "demo-keys")
    ap.add_argument("--rebuild", action="store_true", help="re-sign every bundle")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if args.rebuild and args.out.exists():
        for p in args.out.glob("*/*.edgebundle"):
            p.unlink()
    rows = build_registry(args.out, args.keys)
    if args.json:
        json.dump(rows, sys.stdout, indent=1)
        print()
    else:
        print(f"demo registry {args.out} (signed with {KEY_NAME}: NOT FOR PRODUCTION)")
        for r in rows:
            print(f"  {r['model']:24} {r['version']:8} counter {r['release_counter']:<3} {r['digest']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Build a device wheelhouse for a device platform: the edge_runtime wheel and binary wheels of its dependencies.

    python scripts/wheelhouse.py --machine aarch64 --out .state/wheelhouse-aarch64 [--python-version 3.11]
    (make wheelhouse MACHINE=aarch64)

Then point the devices of that platform at it (inventory: ``edge_runtime_wheelhouse: .../wheelhouse-aarch64``):
the role finds the edge_runtime wheel there and builds nothing. Dependencies come as binary wheels only
(``pip download --only-binary=:all: --platform ... --python-version ...``), at the versions of
``constraints/device-<machine>.txt`` (the tested ones); a dependency without a wheel for the platform fails here,
on the controller, naming it, never on a device.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import tomllib

REPO = Path(__file__).resolve().parents[1]
#: pip platform tags per machine, newest first (numpy, scipy and cryptography ship manylinux_2_28 wheels; others
#: manylinux2014 = manylinux_2_17). pip matches a tag only when it is listed, so every accepted one is.
PLATFORMS = {
    "x86_64": ["manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64"],
    "aarch64": ["manylinux_2_28_aarch64", "manylinux_2_27_aarch64", "manylinux_2_17_aarch64",
                "manylinux2014_aarch64"],
}


def requirements(extras: list[str]) -> list[str]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    reqs = list(project["dependencies"])
    for extra in extras:
        if extra not in project["optional-dependencies"]:
            known = sorted(project["optional-dependencies"])
            raise SystemExit(f"error: unknown extra {extra!r} (pyproject.toml has {known})")
        reqs += project["optional-dependencies"][extra]
    return reqs


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--machine", choices=sorted(PLATFORMS), required=True)
    p.add_argument("--python-version", default="3.11", help="the devices' Python (default 3.11)")
    p.add_argument("--extras", default="litert,monitor", help="edge-runtime extras (default litert,monitor)")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    constraints = REPO / "constraints" / f"device-{args.machine}.txt"
    args.out.mkdir(parents=True, exist_ok=True)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    # the project itself: a pure-Python wheel, built here
    subprocess.run([*pip, "wheel", "--no-deps", "--wheel-dir", str(args.out), str(REPO)], check=True)
    platforms = [a for tag in PLATFORMS[args.machine] for a in ("--platform", tag)]
    download = [*pip, "download", "--only-binary=:all:", *platforms, "--python-version", args.python_version,
                "--constraint", str(constraints), "--dest", str(args.out),
                *requirements([e for e in args.extras.split(",") if e])]
    proc = subprocess.run(download, check=False)
    if proc.returncode:
        print(f"error: a dependency has no wheel for {args.machine} / Python {args.python_version} at the version of "
              f"{constraints.relative_to(REPO)} (see pip's message above)", file=sys.stderr)
        return proc.returncode
    wheels = sorted(w.name for w in args.out.glob("*.whl"))
    print(f"{len(wheels)} wheel(s) in {args.out}:\n  " + "\n  ".join(wheels))
    return 0


if __name__ == "__main__":
    sys.exit(main())

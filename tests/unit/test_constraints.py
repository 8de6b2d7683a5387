"""The device wheelhouse constraints are the versions the tests run with (this environment), for every package of
edge-runtime[litert,monitor]'s dependency closure, so a device installs what was tested."""

from __future__ import annotations

import importlib.metadata as md
import re
from pathlib import Path

import pytest
from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parents[2]


def norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pins(path: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line.startswith("-c "):
            out.update(pins(path.parent / line[3:].strip()))
        elif line:
            name, _, version = line.partition("==")
            assert version, f"{path.name}: {line!r} is not an exact pin"
            out[norm(name)] = version
    return out


def closure(name: str, extras: tuple[str, ...] = ()) -> dict[str, str]:
    seen: dict[str, str] = {}

    def walk(dist_name: str, extras: tuple[str, ...]) -> None:
        try:
            dist = md.distribution(dist_name)
        except md.PackageNotFoundError:
            return  # a marker-excluded or optional dependency that is not installed
        key = norm(dist_name)
        if key in seen:
            return
        seen[key] = dist.version
        for text in dist.requires or []:
            req = Requirement(text)
            if req.marker and not any(req.marker.evaluate({"extra": e}) for e in (*extras, "")):
                continue
            walk(req.name, ())

    walk(name, extras)
    seen.pop(norm(name))
    return seen


def test_x86_64_constraints_pin_the_tested_closure() -> None:
    tested = closure("edge-runtime", ("litert", "monitor"))
    if "ai-edge-litert" not in tested:
        pytest.skip("the litert extra is not installed in this environment")
    pinned = pins(REPO / "constraints" / "device-x86_64.txt")
    missing = sorted(set(tested) - set(pinned))
    assert not missing, f"not pinned in constraints/device*.txt: {missing}"
    differ = {n: (pinned[n], v) for n, v in tested.items() if pinned[n] != v}
    assert not differ, f"pinned vs tested: {differ} (update constraints/device.txt to what the tests ran with)"


def test_every_machine_pins_its_backend_over_the_shared_file() -> None:
    shared = pins(REPO / "constraints" / "device.txt")
    assert "ai-edge-litert" not in shared
    for machine in ("x86_64", "aarch64"):
        own = pins(REPO / "constraints" / f"device-{machine}.txt")
        assert "ai-edge-litert" in own, machine
        assert {k: v for k, v in own.items() if k != "ai-edge-litert"} == shared

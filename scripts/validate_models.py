#!/usr/bin/env python3
"""Validate models.yaml against the inventory (and registry) and print the rollout plan.

The same checks as the ``edgeml.fleet.desired_state`` action plugin, for local use and CI::

    python scripts/validate_models.py [models.yaml] [--inventory inventory/local] [--no-registry] [--json]

The inventory's groups come from ``ansible-inventory -i INV --list``. Exit status 0 when the file is
valid (the plan summary, or with ``--json`` the plan, goes to stdout), 1 otherwise (the error, as
``file:line:column: problem (hint: fix)``, goes to stderr; under GitHub Actions also as an annotation).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "collections"))

from ansible_collections.edgeml.fleet.plugins.module_utils.desired_state import (  # noqa: E402
    DesiredStateError,
    build_plan,
)


def _display(path: Path) -> str:
    """``path`` relative to the working directory when it is below it (for clickable messages)."""
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def inventory_groups(inventory: str) -> dict[str, list[str]]:
    """Ansible's ``groups`` magic variable for ``inventory``: every group with all hosts below it."""
    exe = Path(sys.executable).with_name("ansible-inventory")
    cmd = str(exe) if exe.exists() else shutil.which("ansible-inventory")
    if cmd is None:
        raise RuntimeError("ansible-inventory not found; install ansible-core (make venv)")
    proc = subprocess.run([cmd, "-i", inventory, "--list"], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"ansible-inventory -i {inventory} --list failed:\n{proc.stderr.strip()}")
    data: dict[str, Any] = json.loads(proc.stdout)
    children: dict[str, list[str]] = {}
    direct: dict[str, list[str]] = {}
    for name, body in data.items():
        if name == "_meta" or not isinstance(body, dict):
            continue
        direct[name] = list(body.get("hosts", []))
        children[name] = list(body.get("children", []))
        for child in children[name]:
            direct.setdefault(child, [])
            children.setdefault(child, [])

    def hosts_below(group: str, seen: frozenset[str]) -> list[str]:
        out = list(direct.get(group, []))
        for child in children.get(group, []):
            if child not in seen:
                out.extend(hosts_below(child, seen | {child}))
        return out

    return {g: sorted(set(hosts_below(g, frozenset({g})))) for g in direct}


def summary(plan: dict[str, Any]) -> str:
    """The plan as a table: one row per group, host, model (hosts in wave order)."""
    rows = [("GROUP", "HOST", "WAVE", "MODEL", "VERSION")]
    for gname, group in plan["groups"].items():
        if not group["waves"]:
            rows.append((gname, "-", "-", "-", "-"))
        for number, wave in enumerate(group["waves"], start=1):
            for host in wave:
                for model, entry in plan["hosts"][host]["models"].items():
                    rows.append((gname, host, str(number), model, entry["version"]))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    lines.append(
        f"\n{len(plan['hosts'])} host(s) in {len(plan['groups'])} group(s), up to {plan['max_wave']} wave(s); "
        f"registry {plan['registry']}"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("models", nargs="?", type=Path, default=REPO / "models.yaml", help="default: models.yaml")
    parser.add_argument("--inventory", "-i", default=str(REPO / "inventory" / "local"), help="default: inventory/local")
    parser.add_argument("--no-registry", action="store_true", help="do not look bundles up in the registry")
    parser.add_argument("--json", action="store_true", help="print the plan as JSON instead of the summary")
    args = parser.parse_args(argv)

    try:
        groups = inventory_groups(args.inventory)
    except (RuntimeError, json.JSONDecodeError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    try:
        plan = build_plan(_display(args.models), groups, check_registry=not args.no_registry)
    except DesiredStateError as exc:
        print(exc, file=sys.stderr)
        if os.environ.get("GITHUB_ACTIONS") == "true":
            where = f"file={exc.file}" + (f",line={exc.line},col={exc.column}" if exc.line else "")
            text = exc.problem + (f" (hint: {exc.hint})" if exc.hint else "")
            print(f"::error {where}::{text}", file=sys.stderr)
        return 1
    if args.json:
        json.dump(plan, sys.stdout, indent=2, sort_keys=True)
        sys.stdout.write("\n")
    else:
        print(summary(plan))
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Validate models.yaml against the inventory, the registry and the devices' trusted keys; print the plan.

The same function as the ``edgeml.fleet.desired_state`` action plugin that ``playbooks/validate.yml`` (and so
every deploy) runs, with the same inputs read from the inventory, for local use and CI::

    python scripts/validate_models.py [models.yaml] [--inventory inventory/local] [--no-registry] [--json]
                                      [--trusted-key PEM ... [--threshold N]]

Inputs: the inventory's groups, and per device the trusted key files and threshold the ``edge_runtime``
role will give it (``edge_runtime_trusted_keys`` / ``edge_runtime_threshold``, templated as a playbook in
``playbooks/`` would see them). Every key file must be a public key; every planned bundle must verify
with the keys of the devices that would install it (local bundles in full). ``--no-registry`` skips the
registry and the bundles (the key files are still checked).

Exit status 0 when the file is valid (the plan summary, or with ``--json`` the plan, goes to stdout), 1
otherwise (the error, as ``file:line:column: problem (hint: fix)``, goes to stderr; under GitHub Actions
also as an annotation).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "collections"))

from ansible_collections.edgeml.fleet.plugins.plugin_utils.desired_state import (  # noqa: E402
    DEVICE_GROUP,
    DesiredStateError,
    Trust,
    validate,
)
from ansible_collections.edgeml.fleet.plugins.plugin_utils.registry import (  # noqa: E402
    KEYS_VAR,
    ROOT_VAR,
    THRESHOLD_VAR,
    device_trust,
)


def _display(path: Path) -> str:
    """``path`` relative to the working directory when it is below it (for clickable messages)."""
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def read_inventory(
    inventory: str, default_keys: list[str] | None = None, default_threshold: int = 1,
    playbook_dir: Path = REPO / "playbooks",
) -> tuple[dict[str, list[str]], Callable[[str], Trust]]:
    """Ansible's ``groups`` for ``inventory``, and a host's trust as a playbook in ``playbooks/`` sees it.

    A host without its own ``edge_runtime_trusted_keys`` / ``edge_runtime_threshold`` gets ``default_keys`` /
    ``default_threshold`` (what validate.yml's ``trusted_keys`` / ``threshold`` are to the action plugin).
    The trust function is asked only about devices (planned hosts and the ``edge_devices`` group).
    """
    from ansible.errors import AnsibleError
    from ansible.inventory.manager import InventoryManager
    from ansible.parsing.dataloader import DataLoader
    from ansible.template import Templar
    from ansible.vars.manager import VariableManager

    loader = DataLoader()
    loader.set_basedir(str(playbook_dir))
    try:
        inv = InventoryManager(loader=loader, sources=[inventory])
    except AnsibleError as exc:
        raise RuntimeError(f"inventory {inventory}: {exc}") from None
    if not inv.hosts:
        raise RuntimeError(f"inventory {inventory} has no hosts (or cannot be parsed)")
    variables = VariableManager(loader=loader, inventory=inv)
    groups = {g: sorted(hosts) for g, hosts in inv.get_groups_dict().items()}

    def trust(host: str) -> Trust:
        try:
            hv = dict(variables.get_vars(host=inv.get_host(host), include_hostvars=False))
            hv["playbook_dir"] = str(playbook_dir)
            templar = Templar(loader=loader, variables=hv)
            keys = templar.template(hv[KEYS_VAR]) if KEYS_VAR in hv else list(default_keys or [])
            threshold = templar.template(hv[THRESHOLD_VAR]) if THRESHOLD_VAR in hv else default_threshold
            roots = templar.template(hv[ROOT_VAR]) if ROOT_VAR in hv else []
        except AnsibleError as exc:
            raise DesiredStateError(host, 0, 0, f"cannot read {KEYS_VAR}: {exc}") from None
        return device_trust(host, keys, threshold, lambda p: p if os.path.isabs(p) else str(playbook_dir / p), roots)

    return groups, trust


#: the last deploy or rollback report is read for "from" only up to this size (a hostile or huge file is ignored)
MAX_REPORT_BYTES = 16 * 1024 * 1024


def last_reported(reports_dir: Path) -> tuple[dict[tuple[str, str], str | None], str]:
    """(device, model) -> the version the last report (``reports/latest.json``) says it runs, and a note.

    Validation contacts no device; "from" is what the devices last reported to a deploy or rollback. A missing,
    unreadable or oversized report gives no "from" (shown as ``?``), with the reason in the note.
    """
    path = reports_dir / "latest.json"
    try:
        with path.open("rb") as fh:
            data = fh.read(MAX_REPORT_BYTES + 1)
    except FileNotFoundError:
        return {}, f"from: no report yet ({path}); run a deploy, or `make plan` for the devices' current state"
    except OSError as exc:
        return {}, f"from: {path} cannot be read ({exc.strerror})"
    if len(data) > MAX_REPORT_BYTES:
        return {}, f"from: {path} is larger than {MAX_REPORT_BYTES} bytes; ignored"
    try:
        report = json.loads(data)
        rows = report["rows"]
        out = {(str(r["device"]), str(r["model"])): (None if r.get("reported") is None else str(r["reported"]))
               for r in rows}
    except (ValueError, KeyError, TypeError):
        return {}, f"from: {path} is not a deploy report; ignored"
    return out, f"from: as last reported in {path} ({report.get('generated_at', 'time unknown')})"


def summary(plan: dict[str, Any], reported: dict[tuple[str, str], str | None] | None = None, note: str = "") -> str:
    """The plan as a table: one row per group, host, model (hosts in wave order), from -> to."""
    reported = reported or {}
    rows = [("GROUP", "HOST", "WAVE", "MODEL", "FROM", "", "TO")]
    for gname, group in plan["groups"].items():
        if not group["waves"]:
            rows.append((gname, "-", "-", "-", "-", "", "-"))
        for number, wave in enumerate(group["waves"], start=1):
            for host in wave:
                for model, entry in plan["hosts"][host]["models"].items():
                    was = reported.get((host, model), "?")
                    rows.append((gname, host, str(number), model, was or "-",
                                 "=" if was == entry["version"] else "->", entry["version"]))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    lines.append(
        f"\n{len(plan['hosts'])} host(s) in {len(plan['groups'])} group(s), up to {plan['max_wave']} wave(s); "
        f"registry {plan['registry']}; {len(plan.get('verified', []))} bundle verification(s) with the devices' "
        "trusted keys"
    )
    if note:
        lines.append(note + " (- = nothing installed, ? = unknown)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("models", nargs="?", type=Path, default=REPO / "models.yaml", help="default: models.yaml")
    parser.add_argument("--inventory", "-i", default=str(REPO / "inventory" / "local"), help="default: inventory/local")
    parser.add_argument(
        "--no-registry", action="store_true", help="do not read the registry (no digest or signature checks)"
    )
    parser.add_argument("--json", action="store_true", help="print the plan as JSON instead of the summary")
    parser.add_argument("--playbook-dir", type=Path, default=REPO / "playbooks",
                        help="what {{ playbook_dir }} is in the inventory's paths (default: playbooks)")
    parser.add_argument("--reports", type=Path, default=REPO / "reports",
                        help="where the last deploy report is, for 'from' (default: reports)")
    parser.add_argument(
        "--trusted-key", action="append", default=[], metavar="PEM",
        help=f"public key file trusted by devices without their own {KEYS_VAR} (repeatable)",
    )
    parser.add_argument(
        "--threshold", type=int, default=1, help=f"signatures needed on devices without their own {THRESHOLD_VAR}"
    )
    args = parser.parse_args(argv)

    try:
        groups, trust = read_inventory(args.inventory, [str(Path(k).resolve()) for k in args.trusted_key],
                                       args.threshold, args.playbook_dir.resolve())
    except (RuntimeError, OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    try:
        plan = validate(_display(args.models), groups, check_registry=not args.no_registry, trust=trust,
                        devices=groups.get(DEVICE_GROUP, ()))
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
        print(summary(plan, *last_reported(args.reports)))
    return 0


if __name__ == "__main__":
    sys.exit(main())

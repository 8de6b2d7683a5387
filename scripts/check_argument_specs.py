"""Fail when a role's meta/argument_specs.yml options differ from its defaults/main.yml variables.

    python scripts/check_argument_specs.py [roles_dir]

The idea of prometheus-community/ansible's ``lint_arguments_spec.sh``, in Python: every public knob in
``defaults/`` is documented (type, description) in the argument spec of the ``main`` entry point, and
the spec names no variable that has no default. Also checks that each option has a description and that
a spec ``default`` equals the value in ``defaults/main.yml``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def check_role(role: Path) -> list[str]:
    problems: list[str] = []
    defaults_file = role / "defaults" / "main.yml"
    spec_file = role / "meta" / "argument_specs.yml"
    defaults = yaml.safe_load(defaults_file.read_text()) if defaults_file.is_file() else {}
    if not spec_file.is_file():
        return [f"{role.name}: meta/argument_specs.yml is missing"]
    spec = yaml.safe_load(spec_file.read_text()) or {}
    options = (((spec.get("argument_specs") or {}).get("main") or {}).get("options")) or {}
    defaults = defaults or {}
    for name in sorted(set(defaults) - set(options)):
        problems.append(f"{role.name}: {name} is in defaults/main.yml but not in meta/argument_specs.yml")
    for name in sorted(set(options) - set(defaults)):
        problems.append(f"{role.name}: {name} is in meta/argument_specs.yml but not in defaults/main.yml")
    for name in sorted(set(options) & set(defaults)):
        opt = options[name] or {}
        if not opt.get("description"):
            problems.append(f"{role.name}: {name} has no description in meta/argument_specs.yml")
        if not opt.get("type"):
            problems.append(f"{role.name}: {name} has no type in meta/argument_specs.yml")
        if "default" in opt and opt["default"] != defaults[name]:
            problems.append(
                f"{role.name}: {name} defaults to {defaults[name]!r} in defaults/main.yml "
                f"but {opt['default']!r} in meta/argument_specs.yml"
            )
    return problems


def main(argv: list[str]) -> int:
    roles_dir = Path(argv[1]) if len(argv) > 1 else REPO / "collections/ansible_collections/edgeml/fleet/roles"
    roles = sorted(p for p in roles_dir.iterdir() if (p / "tasks").is_dir())
    problems = [p for role in roles for p in check_role(role)]
    for p in problems:
        print(p, file=sys.stderr)
    if not problems:
        print(f"argument specs match defaults in {len(roles)} role(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))

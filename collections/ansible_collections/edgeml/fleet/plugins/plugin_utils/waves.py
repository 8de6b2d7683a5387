# Copyright (c) edgeml maintainers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Rollout waves: parse a group's wave list, check it, and split the group's devices into waves.

Controller-only, pure Python. See :func:`resolve_waves` and :func:`wave_order` for the rules.

:data:`MAX_WAVES` is the one place that says how many waves a deploy runs: ``playbooks/deploy.yml`` has
exactly that many wave plays (a unit test keeps them equal) and the validator refuses a plan that
needs more, before anything touches a device.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from typing import Any

from ansible_collections.edgeml.fleet.plugins.plugin_utils.models_yaml import SourceMap, YamlPath, dotted, kind

__all__ = [
    "DEFAULT_WAVES",
    "MAX_WAVES",
    "check_waves",
    "parse_wave",
    "resolve_waves",
    "wave_item_problem",
    "wave_order",
]

#: waves of a group without ``rollout.waves``: one canary, then the rest
DEFAULT_WAVES: tuple[int | str, ...] = (1, "100%")
#: wave plays in playbooks/deploy.yml; a plan needing more is refused by the validator
MAX_WAVES = 5

_PERCENT = re.compile(r"^(\d+)%$")


def wave_item_problem(value: Any) -> tuple[str, str]:
    """Why ``value`` is not a wave (problem, hint); only called for values that are not."""
    hint = "use a device count (1, 2, ...) or a whole percentage of the group ('1%'..'100%')"
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return f"wave {value!r} is {kind(value)}, not a device count or a percentage", hint
    if isinstance(value, float):
        return f"wave {value!r} is not a whole number of devices", hint
    if isinstance(value, int):
        return f"wave {value!r} is not a positive device count", hint
    m = _PERCENT.match(value.strip())
    if not m:
        return f"wave {value!r} is neither a device count nor a percentage like '50%'", hint
    pct = int(m.group(1))
    if pct == 0:
        return f"wave {value!r} covers no devices", hint
    if pct > 100:
        return f"wave {value!r} is more than the whole group", hint
    return f"wave {value!r} is not written as a whole percentage like '50%'", hint


def parse_wave(value: Any) -> tuple[str, int]:
    """``("count", n)`` or ``("percent", p)``; raises ValueError(problem, hint) otherwise."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return "count", value
    if isinstance(value, str):
        m = _PERCENT.match(value)
        if m and m.group(1) == str(int(m.group(1))) and 1 <= int(m.group(1)) <= 100:
            return "percent", int(m.group(1))
    raise ValueError(*wave_item_problem(value))


def resolve_waves(spec: Sequence[int | str], hosts: Sequence[str]) -> list[list[str]]:
    """Split ``hosts`` (already in wave order) into waves according to ``spec``.

    Targets are cumulative; a percentage rounds up (in integers, exactly) and is at least one device; a
    count is capped at the group size; a target already reached adds nothing; empty waves are dropped;
    devices the last target leaves out form one more, final wave.
    """
    n = len(hosts)
    waves: list[list[str]] = []
    done = 0
    for item in spec:
        wave_kind, amount = parse_wave(item)
        target = min(n, amount) if wave_kind == "count" else min(n, max(1, -(-amount * n // 100)))  # ceil, in integers
        if target > done:
            waves.append(list(hosts[done:target]))
            done = target
    if done < n:
        waves.append(list(hosts[done:]))
    return waves


def wave_order(group: str, pins: Mapping[str, str], hosts: Sequence[str]) -> list[str]:
    """Hosts of ``group`` in rollout order: by ``sha256(f"{group}/{pins}/{host}")``.

    ``pins`` is rendered as the sorted ``model=version`` list joined by ``,``. The versions are part of
    the key so that every promotion picks another canary.
    """
    pin_text = ",".join(f"{m}={v}" for m, v in sorted(pins.items()))

    def key(host: str) -> tuple[str, str]:
        return hashlib.sha256(f"{group}/{pin_text}/{host}".encode()).hexdigest(), host

    return sorted(set(hosts), key=key)


def check_waves(spec: Sequence[Any], path: YamlPath, smap: SourceMap) -> None:
    """Each wave parses; counts do not decrease, nor do percentages."""
    last: dict[str, tuple[int, int]] = {}  # kind -> (amount, index)
    for i, item in enumerate(spec):
        try:
            wave_kind, amount = parse_wave(item)
        except ValueError as exc:
            problem, hint = exc.args
            raise smap.error((*path, i), f"{dotted((*path, i))}: {problem}", hint) from None
        if wave_kind in last and amount < last[wave_kind][0]:
            j = last[wave_kind][1]
            raise smap.error(
                (*path, i),
                f"wave {i + 1} ({item!r}) covers less than wave {j + 1} ({spec[j]!r}, line {smap.line((*path, j))})",
                "waves are cumulative targets and must not decrease",
            )
        last[wave_kind] = (amount, i)

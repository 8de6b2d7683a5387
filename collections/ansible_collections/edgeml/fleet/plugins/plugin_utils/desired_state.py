# Copyright (c) edgeml maintainers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Desired fleet state (``models.yaml``): the one validation, and the rollout plan it produces.

Controller-only. :func:`validate` is what both the action plugin ``edgeml.fleet.desired_state`` (run by
``playbooks/validate.yml`` before any device is touched) and ``scripts/validate_models.py`` (``make
validate``, CI) call, so a file that passes locally passes the deploy's validation and vice versa.

Every problem is raised as :class:`DesiredStateError`, which names the file, the 1-based line and
column of the offending YAML node, the problem and a hint, e.g.
``models.yaml:14:7: defect-classifier 1.2.0 is not in the catalogue (hint: available versions: 1.0.0, 1.1.0)``.
Checks run in this order and the first failure is raised:

1. the file itself (size, encoding, BOM, YAML syntax, anchors/aliases, duplicate keys): ``models_yaml``;
2. the JSON Schema ``schemas/models.schema.json`` (with the runtime's version pattern): ``models_schema``;
3. the catalogue (versions parse with the runtime's parser, release counters increase);
4. groups (in the inventory, pins in the catalogue, waves): ``waves``;
5. devices pinned to two versions of one model;
6. the trusted keys of every device (public keys only, see ``trusted_keys``), before any registry read;
7. the registry (bundle present; manifest digest / name / version / release counter / size): ``registry``;
8. the wave count against the deploy's wave plays (:data:`waves.MAX_WAVES`);
9. the planned bundles' signatures with the keys and threshold of each device that would install them
   (local bundles in full): ``registry``.

Decisions (the contract with the deploy playbooks; see :func:`validate` for the plan layout):

* **Rollout defaults.** An omitted ``rollout`` (or key in it) means ``waves: [1, "100%"]``,
  ``max_fail_percent: 0`` and ``health_gate: {require_smoke_pass: true}``. In the plan every health
  gate key is present; thresholds that were not given are ``None`` (no gate).
* **Waves** are cumulative targets: ``"50%"`` means that after this wave up to half of the group has
  been updated. A percentage is rounded up and covers at least one device; a count larger than the
  group covers the group. Written waves must not decrease (counts against counts, percentages against
  percentages); when counts and percentages are mixed, a wave whose target is already reached for
  this group size adds nothing. Waves that add no device are dropped, and if the last wave does not
  cover the whole group the remaining devices form one more, final wave. Wave numbers in the plan
  are 1-based and contiguous.
* **Wave order** of a group's devices is by ``sha256(f"{group}/{pins}/{host}")`` where ``pins`` is
  the group's sorted ``model=version`` list: independent of the inventory order, identical on every
  run for the same ``models.yaml`` (an interrupted rollout resumes with the same waves), and every
  promotion picks a different canary.
* **Devices in several groups** are allowed as long as no two groups pin different versions of one
  model. Such a device gets the union of the pins and is rolled out once, in the waves (and under
  the policy) of its *rollout group*: the first of its pinning groups by name.
* **Devices in no pinned group** get no entry in ``plan["hosts"]``: ``models.yaml`` never removes a
  model, and a device without desired state is left alone.
* **Registry check** covers every catalogue version (they are the rollback targets), not only the
  pinned ones; **signatures** are verified for what the plan would install, with the keys of the devices
  that would install it (``trust``), so ``make validate`` refuses what the deploy would refuse.
"""

from __future__ import annotations

import difflib
import itertools
import os
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any

from ansible_collections.edgeml.fleet.plugins.plugin_utils.live_gate import live_gate_policy
from ansible_collections.edgeml.fleet.plugins.plugin_utils.models_schema import find_schema, validate_schema
from ansible_collections.edgeml.fleet.plugins.plugin_utils.models_yaml import (
    DEFAULT_MODELS_LIMITS,
    DesiredStateError,
    ModelsLimits,
    SourceMap,
    YamlPath,
    load_yaml,
)
from ansible_collections.edgeml.fleet.plugins.plugin_utils.registry import (
    Trust,
    bundle_source,
    check_trust,
    registry_location,
    verify_planned,
)
from ansible_collections.edgeml.fleet.plugins.plugin_utils.registry import (
    check_registry as registry_check,
)
from ansible_collections.edgeml.fleet.plugins.plugin_utils.waves import (
    DEFAULT_WAVES,
    MAX_WAVES,
    check_waves,
    resolve_waves,
    wave_order,
)

__all__ = [
    "DEFAULT_HEALTH_GATE",
    "DEFAULT_MAX_FAIL_PERCENT",
    "DEFAULT_WAVES",
    "DEVICE_GROUP",
    "IMPLICIT_GROUPS",
    "MAX_WAVES",
    "DesiredStateError",
    "SourceMap",
    "Trust",
    "build_plan",
    "load_yaml",
    "resolve_waves",
    "validate",
    "wave_order",
]

#: Ansible's implicit groups; never part of the desired state
IMPLICIT_GROUPS = frozenset({"all", "ungrouped"})
#: the inventory group whose hosts playbooks/deploy.yml gives the edge_runtime role (and so its trusted keys)
DEVICE_GROUP = "edge_devices"

DEFAULT_MAX_FAIL_PERCENT = 0
DEFAULT_HEALTH_GATE: dict[str, Any] = {
    "require_smoke_pass": True,
    "max_p95_latency_ms": None,
    "max_error_rate_increase": None,
    "min_mean_confidence": None,
}


def _precedence(text: str) -> tuple[Any, ...]:
    """Semantic-version precedence from the runtime's parser (build metadata ignored)."""
    from edge_runtime.manifest import Version

    v = Version.parse(text)
    return (v.major, v.minor, v.patch, 0 if v.pre else 1, v.pre)


def _check_catalogue(data: Mapping[str, Any], smap: SourceMap) -> None:
    """Versions parse; a higher version has a higher release counter; no two versions are equal."""
    from edge_runtime.errors import EdgeRuntimeError

    for name, model in data["models"].items():
        ranked: list[tuple[tuple[Any, ...], str]] = []
        for vtext in model["versions"]:
            vpath = ("models", name, "versions", vtext)
            try:
                ranked.append((_precedence(vtext), vtext))
            except EdgeRuntimeError as exc:
                raise smap.error(vpath, exc.message, exc.hint, key=True) from None
        ranked.sort(key=lambda r: r[0])
        for (pa, va), (pb, vb) in itertools.pairwise(ranked):
            a = model["versions"][va]["release_counter"]
            b = model["versions"][vb]["release_counter"]
            if pa == pb:
                raise smap.error(
                    ("models", name, "versions", vb),
                    f"{name} {vb} and {va} (line {smap.line(('models', name, 'versions', va), key=True)}) "
                    "differ only in build metadata",
                    "give the release its own MAJOR.MINOR.PATCH",
                    key=True,
                )
            if b <= a:
                line_a = smap.line(("models", name, "versions", va, "release_counter"))
                raise smap.error(
                    ("models", name, "versions", vb, "release_counter"),
                    f"{name} {vb} has release_counter {b}, not higher than {va}'s {a} (line {line_a})",
                    "a higher version needs a higher release_counter (devices refuse to go back to a lower one)",
                )


def _policy(rollout: Mapping[str, Any]) -> dict[str, Any]:
    gate = dict(DEFAULT_HEALTH_GATE)
    gate.update(rollout.get("health_gate", {}))
    policy = {
        "waves": list(rollout.get("waves", DEFAULT_WAVES)),
        "max_fail_percent": rollout.get("max_fail_percent", DEFAULT_MAX_FAIL_PERCENT),
        "health_gate": gate,
    }
    if "live_gate" in rollout:  # the live canary gate, with its defaults (plugin_utils/live_gate.py owns them)
        policy["live_gate"] = live_gate_policy(rollout["live_gate"])
    return policy


def _close(name: str, choices: Sequence[str]) -> str:
    near = difflib.get_close_matches(name, choices, n=1)
    return f"did you mean {near[0]!r}? " if near else ""


def build_plan(path: str, groups: Mapping[str, Sequence[str]], check_registry: bool = True) -> dict[str, Any]:
    """:func:`validate` without signature verification and without the wave limit (planning only)."""
    return validate(path, groups, check_registry=check_registry, trust=None, max_waves=None)


def validate(
    path: str,
    groups: Mapping[str, Sequence[str]],
    *,
    check_registry: bool = True,
    trust: Trust | Mapping[str, Trust] | Callable[[str], Trust] | None = None,
    devices: Collection[str] = (),
    full_verify: bool = True,
    max_waves: int | None = MAX_WAVES,
    limits: ModelsLimits = DEFAULT_MODELS_LIMITS,
) -> dict[str, Any]:
    """Validate ``models.yaml`` at ``path`` against the inventory and return the rollout plan.

    ``groups`` is Ansible's ``groups`` magic variable (group name -> host names); ``all`` and
    ``ungrouped`` are ignored. With ``check_registry`` every catalogue bundle is looked up in the
    registry (a directory, or an http(s) server from which only the manifest is read).

    ``trust`` is what the devices trust: one :class:`Trust` for all, one per host (a mapping: every entry is
    checked; a planned host without one is an error), or a function of the host name (asked for the planned
    hosts and ``devices``, the hosts that get the runtime role and so its keys). When given, every such key
    file must be a public key (checked even without a registry check) and, with ``check_registry``, every
    planned bundle must verify with the keys and threshold of each device that would install it (local
    bundles in full when ``full_verify``).
    ``max_waves`` (default: the deploy's wave plays) refuses a plan that needs more waves; ``None`` skips.

    The plan (JSON-serialisable, the contract with the deploy playbooks)::

        {"models_file": "/abs/models.yaml",
         "registry": "/abs/registry/dir" | "https://...",
         "hosts": {"dev-a1": {"groups": ["line_a"],          # pinning groups holding the host
                              "rollout_group": "line_a",     # first of them by name
                              "wave": 1,                     # 1-based, in the rollout group
                              "models": {"defect-classifier": {"version": "1.1.0", "digest": "sha256:..",
                                          "release_counter": 2,
                                          "size": 123,             # bytes; None if unknown (see below)
                                          "source": "/abs/path/or/URL/of/bundle"}}}},
         "groups": {"line_a": {"hosts": [...],     # hosts this group rolls out, sorted by name
                               "waves": [["dev-a3"], ["dev-a1", "dev-a2"]],
                               "pins": {"defect-classifier": {"version": "1.1.0", "line": 37}},
                               "policy": {"waves": [1, "100%"], "max_fail_percent": 0,
                                          "health_gate": {"require_smoke_pass": True,
                                                          "max_p95_latency_ms": None,
                                                          "max_error_rate_increase": None,
                                                          "min_mean_confidence": None}}}},
         "max_wave": 2,
         "catalogue": {"defect-classifier": {"1.1.0": "sha256:.."}}}   # model -> version -> digest

    ``size`` is the catalogue's ``size`` if given, else the size the registry reported during the
    registry check, else ``None`` (``check_registry=False`` and no ``size`` in ``models.yaml``).

    Raises :class:`DesiredStateError` for the first problem found.
    """
    data, smap = load_yaml(path, limits)
    try:
        schema_path = find_schema(path)
    except FileNotFoundError as exc:
        raise DesiredStateError(path, 0, 0, str(exc)) from None
    validate_schema(data, smap, schema_path)
    _check_catalogue(data, smap)

    models: dict[str, Any] = data["models"]
    desired: dict[str, Any] = data["groups"]
    inventory = {str(g): sorted({str(h) for h in hosts}) for g, hosts in groups.items() if g not in IMPLICIT_GROUPS}

    for gname, group in desired.items():
        gpath: YamlPath = ("groups", gname)
        if gname in IMPLICIT_GROUPS:
            raise smap.error(
                gpath, f"{gname!r} is an implicit inventory group and cannot be pinned", "pin real groups", key=True
            )
        if gname not in inventory:
            known = ", ".join(sorted(inventory)) or "none"
            raise smap.error(
                gpath,
                f"group {gname!r} is not in the inventory",
                f"{_close(gname, sorted(inventory))}inventory groups: {known}",
                key=True,
            )
        for model, vtext in group["models"].items():
            if model not in models:
                catalogue = ", ".join(sorted(models)) or "(empty)"
                raise smap.error(
                    (*gpath, "models", model),
                    f"model {model!r} is not in the catalogue",
                    f"{_close(model, sorted(models))}add it under 'models:'; catalogue: {catalogue}",
                    key=True,
                )
            available = models[model]["versions"]
            if vtext not in available:
                listed = ", ".join(sorted(available, key=_precedence))
                raise smap.error(
                    (*gpath, "models", model),
                    f"{model} {vtext} is not in the catalogue",
                    f"available versions: {listed}",
                )
        rollout = group.get("rollout", {})
        check_waves(rollout.get("waves", DEFAULT_WAVES), (*gpath, "rollout", "waves"), smap)

    # Which groups pin each host, and the union of their pins (one version per model per device).
    pinning: dict[str, list[str]] = {}
    for gname in sorted(desired):
        for host in inventory[gname]:
            pinning.setdefault(host, []).append(gname)
    host_pins: dict[str, dict[str, tuple[str, str]]] = {}
    for host in sorted(pinning):
        merged: dict[str, tuple[str, str]] = {}
        for gname in pinning[host]:
            for model, vtext in desired[gname]["models"].items():
                if model in merged and merged[model][0] != vtext:
                    other_v, other_g = merged[model]
                    line_other = smap.line(("groups", other_g, "models", model))
                    both = len(set(inventory[other_g]) & set(inventory[gname])) - 1
                    more = f" (and {both} more device(s) in both groups)" if both else ""
                    raise smap.error(
                        ("groups", gname, "models", model),
                        f"device {host!r}{more} gets two versions of {model}: {other_v} from group {other_g} "
                        f"(line {line_other}) and {vtext} from group {gname} "
                        f"(line {smap.line(('groups', gname, 'models', model))})",
                        "a device runs one version of a model: pin the same version in both groups, "
                        "or keep the device in one of them",
                    )
                merged[model] = (vtext, gname)
        host_pins[host] = merged

    # Every device's keys (planned or not: the runtime role sends them to every device) before any registry
    # read: a private key listed as trusted is refused first, whatever else is wrong.
    trust_of: dict[str, Trust] | None = None
    if trust is not None:
        trust_of = _trust_of(trust, host_pins, path)
        if isinstance(trust, Trust):
            check_trust(trust_of)
        elif isinstance(trust, Mapping):
            check_trust({**trust, **trust_of})
        else:
            check_trust({**{h: trust(h) for h in sorted(set(devices))}, **trust_of})

    registry = registry_location(path, data["registry"])
    measured = registry_check(data, registry, smap) if check_registry else {}

    plan_groups: dict[str, Any] = {}
    wave_of: dict[str, int] = {}
    for gname in sorted(desired):
        members = [h for h in inventory[gname] if pinning[h][0] == gname]
        policy = _policy(desired[gname].get("rollout", {}))
        waves = resolve_waves(policy["waves"], wave_order(gname, desired[gname]["models"], members))
        for number, wave in enumerate(waves, start=1):
            for host in wave:
                wave_of[host] = number
        plan_groups[gname] = {"hosts": sorted(members), "waves": waves, "policy": policy,
                              # where each pin is written (rollback.yml names the line to revert)
                              "pins": {m: {"version": v, "line": smap.line(("groups", gname, "models", m))}
                                       for m, v in desired[gname]["models"].items()}}

    plan_hosts: dict[str, Any] = {}
    for host in sorted(host_pins):
        entries: dict[str, Any] = {}
        for model in sorted(host_pins[host]):
            vtext = host_pins[host][model][0]
            entry = models[model]["versions"][vtext]
            entries[model] = {
                "version": vtext,
                "digest": entry["digest"],
                "release_counter": entry["release_counter"],
                "size": entry.get("size", measured.get((model, vtext))),
                "source": bundle_source(registry, entry["bundle"]),
            }
        plan_hosts[host] = {
            "groups": list(pinning[host]),
            "rollout_group": pinning[host][0],
            "wave": wave_of[host],
            "models": entries,
        }

    plan: dict[str, Any] = {
        "models_file": os.path.abspath(path),
        "registry": registry,
        "hosts": plan_hosts,
        "groups": plan_groups,
        "max_wave": max((len(g["waves"]) for g in plan_groups.values()), default=0),
        # every catalogued version's digest, so a rollback can name the exact pin that keeps it
        "catalogue": {m: {v: e["digest"] for v, e in spec["versions"].items()} for m, spec in models.items()},
        # health.yml's settings as written (schema-checked); plugin_utils/health.py policy() adds the defaults
        "health": dict(data.get("health") or {}),
    }
    _check_wave_count(plan, smap, max_waves)
    plan["verified"] = []
    if trust_of is not None and check_registry:
        plan["verified"] = verify_planned(plan, trust_of, smap, full=full_verify)
    return plan


def _trust_of(
    trust: Trust | Mapping[str, Trust] | Callable[[str], Trust], hosts: Mapping[str, Any], path: str
) -> dict[str, Trust]:
    if isinstance(trust, Trust):
        return dict.fromkeys(hosts, trust)
    if not isinstance(trust, Mapping):
        return {h: trust(h) for h in hosts}
    missing = sorted(set(hosts) - set(trust))
    if missing:
        raise DesiredStateError(path, 0, 0, f"no trusted keys known for planned device(s) {', '.join(missing)}",
                                "set edge_runtime_trusted_keys for them in the inventory")
    return {h: trust[h] for h in hosts}


def _check_wave_count(plan: Mapping[str, Any], smap: SourceMap, max_waves: int | None) -> None:
    """A plan needing more waves than the deploy runs is refused at the group that needs the most."""
    if max_waves is None or plan["max_wave"] <= max_waves:
        return
    worst = max(sorted(plan["groups"]), key=lambda g: len(plan["groups"][g]["waves"]))
    per_group = ", ".join(f"{g}: {len(v['waves'])}" for g, v in sorted(plan["groups"].items()))
    raise smap.error(
        ("groups", worst, "rollout", "waves"),
        f"the rollout needs {plan['max_wave']} waves ({per_group}); a deploy runs at most {max_waves}",
        "merge waves in this group's rollout policy (e.g. [1, '50%', '100%'])",
    )

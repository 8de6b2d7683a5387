# Copyright (c) edgeml maintainers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Filters of the rollout playbooks; the logic lives in ``plugin_utils/rollout.py``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ansible_collections.edgeml.fleet.plugins.plugin_utils import rollout
from ansible_collections.edgeml.fleet.plugins.plugin_utils.hostvars import results, results_and_twins, twins


def edge_device_result(registered: Mapping[str, Any], plan_entry: Mapping[str, Any], check_mode: bool = False) -> Any:
    """``{{ __edge_model_install | edgeml.fleet.edge_device_result(edge_device_plan, ansible_check_mode) }}``."""
    return rollout.device_result(registered, plan_entry, bool(check_mode))


def edge_wave_gate(
    plan: Mapping[str, Any], wave: int, hostvars: Mapping[str, Any], halted: Any = None, decisions: Any = None,
    check_mode: bool = False,
) -> Any:
    """``{{ edge_plan | edgeml.fleet.edge_wave_gate(1, hostvars, edge_gate.halted, edge_gate.decisions,
    ansible_check_mode) }}``."""
    results = results_and_twins(plan, hostvars)[0]
    return rollout.wave_gate(plan, int(wave), results, halted, list(decisions or []), bool(check_mode))


def edge_bake_plan(plan: Mapping[str, Any], wave: int, hostvars: Mapping[str, Any], halted: Any = None) -> Any:
    """``{{ edge_plan | edgeml.fleet.edge_bake_plan(1, hostvars, edge_gate.halted) }}``: the devices of wave 1
    that bake and how (``plugin_utils/live_gate.py``)."""
    import time

    from ansible_collections.edgeml.fleet.plugins.plugin_utils.live_gate import bake_plan

    results = results_and_twins(plan, hostvars)[0]
    return bake_plan(plan, int(wave), results, dict(halted or {}), time.time())


def edge_bake_ready(read: Mapping[str, Any], spec: Mapping[str, Any]) -> bool:
    """``until: __edge_bake | edgeml.fleet.edge_bake_ready(edge_bake_spec)``: enough live samples to judge, or
    the bake's deadline (the controller's clock) has passed."""
    import time

    from ansible_collections.edgeml.fleet.plugins.plugin_utils.live_gate import bake_ready

    return bake_ready(read, spec, time.time())


def edge_live_gate(plan: Mapping[str, Any], wave: int, hostvars: Mapping[str, Any], gate: Mapping[str, Any],
                   bake: Mapping[str, Any]) -> Any:
    """``{{ edge_plan | edgeml.fleet.edge_live_gate(1, hostvars, edge_gate, edge_bake) }}``: the live gate of
    wave 1 over the bake reads of this run (``plugin_utils/live_gate.py``)."""
    from ansible_collections.edgeml.fleet.plugins.plugin_utils.live_gate import live_wave_gate

    run_id = plan.get("run_id")
    reads = {}
    for h in bake.get("hosts") or []:
        try:
            read = hostvars[h].get("__edge_bake")
        except KeyError:
            continue
        # fresh only: the read of this run (its twin echoes the run id)
        if isinstance(read, Mapping) and run_id and (read.get("facts") or {}).get("run_id") == run_id:
            reads[h] = read
    return live_wave_gate(plan, int(wave), reads, gate, bake)


def edge_plan_subset(plan: Mapping[str, Any], hosts: Any) -> Any:
    """The plan of a ``--limit`` run.

    ``{{ edge_plan | edgeml.fleet.edge_plan_subset(query('inventory_hostnames', ansible_limit)) }}``
    """
    return rollout.plan_subset(plan, list(hosts))


def edge_converge_targets(plan: Mapping[str, Any], hostvars: Mapping[str, Any]) -> Any:
    """``{{ edge_plan | edgeml.fleet.edge_converge_targets(hostvars) }}``: ``[{host, wave}]`` not in sync."""
    return rollout.converge_targets(plan, twins(plan, hostvars))


def edge_bundles_to_push(plan_entry: Mapping[str, Any], twin: Any = None) -> Any:
    """``{{ edge_model_plan | edgeml.fleet.edge_bundles_to_push(ansible_facts.edge_runtime) }}``: the models
    to copy to the device (``push_src`` set, the pinned build not already active by this run's twin)."""
    return rollout.bundles_to_push(plan_entry, twin)


def edge_converge_waves(plan: Mapping[str, Any], hostvars: Mapping[str, Any]) -> Any:
    """``{{ edge_plan | edgeml.fleet.edge_converge_waves(hostvars) }}``: ``{wave: [hosts]}`` not in sync."""
    return rollout.converge_waves(plan, twins(plan, hostvars))


def edge_wave_hosts(localhost: Any, wave: Any) -> Any:
    """``{{ hostvars['localhost'] | edgeml.fleet.edge_wave_hosts(2) }}``: the devices wave 2 converges (out of sync,
    group not halted), from localhost's ``edge_plan``, ``edge_converge_waves`` and ``edge_gate``; none when
    localhost has not planned (the play then targets nothing)."""
    lh = localhost if isinstance(localhost, Mapping) else {}
    plan, waves, gate = lh.get("edge_plan"), lh.get("edge_converge_waves"), lh.get("edge_gate")
    if not isinstance(plan, Mapping) or not isinstance(waves, Mapping):
        return []
    halted = (gate or {}).get("halted") if isinstance(gate, Mapping) else None
    return rollout.wave_hosts(plan, waves, wave, halted if isinstance(halted, Mapping) else {})


def edge_check_hosts(localhost: Any, wave: Any, hostvars: Mapping[str, Any]) -> Any:
    """``{{ hostvars['localhost'] | edgeml.fleet.edge_check_hosts(2, hostvars) }}``: the devices of wave 2 whose
    result of this run asks for the post-install health check (``needs_check``: a pinned version active but not
    checked, an install that did not record its check)."""
    hosts = edge_wave_hosts(localhost, wave)
    if not hosts:
        return []
    plan = rollout.plan_subset(localhost["edge_plan"], hosts)
    found = results(plan, hostvars)
    return [h for h in hosts if isinstance(found.get(h), Mapping) and found[h].get("needs_check")]


def edge_mark_rolled_back(result: Mapping[str, Any], registered: Mapping[str, Any], reason: str) -> Any:
    """``{{ edge_model_result | edgeml.fleet.edge_mark_rolled_back(__edge_model_rollback, reason) }}``."""
    return rollout.mark_rolled_back(result, registered, reason)


def edge_mark_checked(result: Mapping[str, Any], registered: Mapping[str, Any]) -> Any:
    """``{{ edge_model_result | edgeml.fleet.edge_mark_checked(__edge_model_check) }}``."""
    return rollout.mark_checked(result, registered)


class FilterModule:
    """Rollout filters of edgeml.fleet."""

    def filters(self) -> dict[str, Any]:
        return {
            "edge_device_result": edge_device_result,
            "edge_wave_gate": edge_wave_gate,
            "edge_bake_plan": edge_bake_plan,
            "edge_bake_ready": edge_bake_ready,
            "edge_live_gate": edge_live_gate,
            "edge_converge_targets": edge_converge_targets,
            "edge_bundles_to_push": edge_bundles_to_push,
            "edge_converge_waves": edge_converge_waves,
            "edge_wave_hosts": edge_wave_hosts,
            "edge_check_hosts": edge_check_hosts,
            "edge_plan_subset": edge_plan_subset,
            "edge_mark_rolled_back": edge_mark_rolled_back,
            "edge_mark_checked": edge_mark_checked,
        }

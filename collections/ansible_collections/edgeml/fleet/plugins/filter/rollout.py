# Copyright (c) edgeml maintainers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Filters of the rollout playbooks; the logic lives in ``plugin_utils/rollout.py``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ansible_collections.edgeml.fleet.plugins.plugin_utils import rollout
from ansible_collections.edgeml.fleet.plugins.plugin_utils.hostvars import results_and_twins, twins


def edge_device_result(registered: Mapping[str, Any], plan_entry: Mapping[str, Any], check_mode: bool = False) -> Any:
    """``{{ __edge_model_install | edgeml.fleet.edge_device_result(edge_device_plan, ansible_check_mode) }}``."""
    return rollout.device_result(registered, plan_entry, bool(check_mode))


def edge_wave_gate(
    plan: Mapping[str, Any], wave: int, hostvars: Mapping[str, Any], halted: Any = None, decisions: Any = None
) -> Any:
    """``{{ edge_plan | edgeml.fleet.edge_wave_gate(1, hostvars, edge_gate.halted, edge_gate.decisions) }}``."""
    results = results_and_twins(plan, hostvars)[0]
    return rollout.wave_gate(plan, int(wave), results, halted, list(decisions or []))


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
            "edge_converge_targets": edge_converge_targets,
            "edge_bundles_to_push": edge_bundles_to_push,
            "edge_converge_waves": edge_converge_waves,
            "edge_plan_subset": edge_plan_subset,
            "edge_mark_rolled_back": edge_mark_rolled_back,
            "edge_mark_checked": edge_mark_checked,
        }

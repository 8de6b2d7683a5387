# Copyright (c) edgeml maintainers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Controller side: read what the devices of a plan reported in this run out of ``hostvars``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ansible_collections.edgeml.fleet.plugins.module_utils import rollout

TWIN = "ansible_facts.edge_runtime"
RESULT = "edge_model_result"


def per_host(hostvars: Mapping[str, Any], hosts: Any, var: str) -> dict[str, Any]:
    """Host -> value of ``var`` (``edge_model_result`` or the twin), for the hosts that have it."""
    out = {}
    for h in hosts:
        try:
            hv = hostvars[h]
        except KeyError:
            continue
        val = (hv.get("ansible_facts") or {}).get("edge_runtime") if var == TWIN else hv.get(var)
        if val is not None:
            out[h] = val
    return out


def twins(plan: Mapping[str, Any], hostvars: Mapping[str, Any]) -> dict[str, Any]:
    """Host -> device twin reported in this run, for the planned hosts."""
    return per_host(hostvars, plan.get("hosts", {}), TWIN)


def results_and_twins(plan: Mapping[str, Any], hostvars: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Per planned host its result of this run (or ``unchanged`` from an in-sync twin), and the twins."""
    facts = twins(plan, hostvars)
    results = rollout.effective_results(plan, per_host(hostvars, plan.get("hosts", {}), RESULT), facts)
    return results, facts

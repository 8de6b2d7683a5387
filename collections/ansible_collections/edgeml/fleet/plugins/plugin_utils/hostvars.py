# Copyright (c) edgeml maintainers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Controller side: read what the devices of a plan answered IN THIS RUN out of ``hostvars``.

Fresh state only. ``hostvars`` also holds what this run did not hear: facts loaded from a fact cache
(``ANSIBLE_CACHE_PLUGIN``, the way AWX keeps facts), or left by an earlier play of a longer run. Every
device-side module of the collection echoes the run id the controller sent (``run_id``) in the twin it
returns, and ``edge_model_result`` carries the run id of the plan it was made for; a value whose run id is
not the plan's (``plan.run_id``, generated once per run with the fleet lock) is ignored here, so the device
counts as not having answered: unknown, targeted, gated as a failure and reported as unreachable, never
"unchanged". A plan without a run id (made outside ``deploy.yml``) finds nothing fresh.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ansible_collections.edgeml.fleet.plugins.plugin_utils import rollout

TWIN = "ansible_facts.edge_runtime"
RESULT = "edge_model_result"
#: the registered loop of the converge task (roles/edge_model/tasks/install.yml)
INSTALL = "__edge_model_install"


def per_host(hostvars: Mapping[str, Any], hosts: Any, var: str, run_id: str | None) -> dict[str, Any]:
    """Host -> value of ``var`` (``edge_model_result`` or the twin) answered in run ``run_id``."""
    out: dict[str, Any] = {}
    if not run_id:
        return out
    for h in hosts:
        try:
            hv = hostvars[h]
        except KeyError:
            continue
        val = (hv.get("ansible_facts") or {}).get("edge_runtime") if var == TWIN else hv.get(var)
        if isinstance(val, Mapping) and val.get("run_id") == run_id:
            out[h] = val
    return out


def installed_result(hv: Mapping[str, Any], entry: Mapping[str, Any], run_id: str, check_mode: bool) -> Any:
    """A device's ``edge_model_result`` read from its converge task's registered loop, when it published none.

    deploy.yml's wave plays run the converge task alone on each device (no per-device bookkeeping task): the
    result is decided here, on the controller, by the same function the role's ``verify.yml`` uses
    (``rollout.device_result``). Fresh only: every item of the loop must be a model entry planned for this run
    (``device_plan`` stamps each with the run id); anything else (no loop, an earlier run's) is no answer.
    """
    reg = hv.get(INSTALL)
    if not isinstance(reg, Mapping):
        return None
    items = reg.get("results")
    if not isinstance(items, list) or not items:
        return None
    for it in items:
        value = (it.get("item") or {}).get("value") if isinstance(it, Mapping) and isinstance(it.get("item"), Mapping) \
            else None
        if not isinstance(value, Mapping) or value.get("run_id") != run_id:
            return None
    return rollout.device_result(reg, {**entry, "run_id": run_id}, check_mode)


def results(plan: Mapping[str, Any], hostvars: Mapping[str, Any]) -> dict[str, Any]:
    """Host -> ``edge_model_result`` of this run: the one a device published (``verify.yml``, the handlers that
    record a health check or a rollback), else the one its converge loop of this run gives. One ``hostvars``
    lookup per host (each one builds the host's variables)."""
    run_id = plan.get("run_id")
    out: dict[str, Any] = {}
    if not run_id:
        return out
    check_mode = bool(plan.get("check_mode", False))
    for h, entry in (plan.get("hosts") or {}).items():
        try:
            hv = hostvars[h]
        except KeyError:
            continue
        published = hv.get(RESULT)
        if isinstance(published, Mapping) and published.get("run_id") == run_id:
            out[h] = published
            continue
        derived = installed_result(hv, entry if isinstance(entry, Mapping) else {}, run_id, check_mode)
        if derived is not None:
            out[h] = derived
    return out


def twins(plan: Mapping[str, Any], hostvars: Mapping[str, Any]) -> dict[str, Any]:
    """Host -> device twin reported in this run, for the planned hosts."""
    return per_host(hostvars, plan.get("hosts", {}), TWIN, plan.get("run_id"))


def results_and_twins(plan: Mapping[str, Any], hostvars: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Per planned host its result of this run (or ``unchanged`` from an in-sync twin), and the twins."""
    facts = twins(plan, hostvars)
    return rollout.effective_results(plan, results(plan, hostvars), facts), facts


SETUP = "__edge_runtime_setup"


def with_setup_platform(
    plan: Mapping[str, Any], hostvars: Mapping[str, Any], facts: Mapping[str, Any]
) -> dict[str, Any]:
    """``facts`` with each twin's ``platform`` taken from this run's runtime setup (role ``edge_runtime``, registered
    as ``__edge_runtime_setup``) where it answered: the setup module reports the architecture the device is
    configured with after this run (in check mode: the one it would be, also for a device not set up yet), which a
    later module's twin of an unconfigured device cannot know. Fresh answers only (the plan's run id)."""
    setups = {}
    run_id = plan.get("run_id")
    for h in facts:
        try:
            reg = hostvars[h].get(SETUP)
        except KeyError:
            continue
        twin = ((reg or {}).get("ansible_facts") or {}).get("edge_runtime") if isinstance(reg, Mapping) else None
        if isinstance(twin, Mapping) and run_id and twin.get("run_id") == run_id and \
                isinstance(twin.get("platform"), Mapping):
            setups[h] = twin["platform"]
    return {h: ({**t, "platform": setups[h]} if h in setups and isinstance(t, Mapping) else t)
            for h, t in facts.items()}

# Copyright (c) edgeml maintainers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""The plan of ONE run, per device, decided once on the controller.

``edgeml.fleet.desired_state`` validates ``models.yaml`` and plans the whole fleet (pins, rollout groups,
waves). This module turns that into the plan of this run:

* the devices of this run: Ansible's own inventory resolution of the play pattern under ``--limit`` in
  every form Ansible accepts (names, groups, patterns, ``@file``, ``!negation``, ``&intersection``,
  ``~regex``; ``InventoryManager.subset`` + ``get_hosts``, not a re-parse of the string); the plan keeps
  its waves (membership does not depend on the limit) and lists the planned devices left out;
* per device (``edge_device_plan``, bound by every device play of ``deploy.yml``): its pins, rollout
  group, wave, the run id the device must echo, the models its runtime may run, and how each bundle gets
  there: ``transfer`` push (the controller copies the file-registry bundle to ``push_dir`` on the device
  and the device installs from that copy) or pull (the device reads the source itself: a URL, or a path
  it can see on a local connection). Push vs pull and every path are decided here, not in Jinja.

Transfer per device, from its host variables: ``edge_model_transfer`` (``auto`` default, ``push``,
``pull``); ``auto`` pulls on a local connection (``ansible_connection`` ``local``) and pushes otherwise.
URL sources are always pulled (downloaded by the device).
"""

from __future__ import annotations

import posixpath
from collections.abc import Mapping
from typing import Any

TRANSFERS = ("auto", "push", "pull")
LOCAL_CONNECTIONS = ("local", "ansible.builtin.local")
DEFAULT_ROOT = "/var/lib/edge-runtime"  # == edge_runtime.device.DEFAULT_ROOT and the edge_runtime role default


class PlanError(ValueError):
    """The run cannot be planned (a bad limit or setting); the message names the problem and the fix."""


def run_hosts(groups: Mapping[str, list[str]], pattern: str, limit: str | None) -> list[str]:
    """The hosts a play over ``pattern`` runs on under ``--limit limit``: Ansible's own resolution."""
    from ansible.errors import AnsibleError
    from ansible.inventory.manager import InventoryManager
    from ansible.parsing.dataloader import DataLoader

    manager = InventoryManager(DataLoader(), parse=False)
    for group, hosts in groups.items():
        manager.add_group(group)
        for host in hosts:
            manager.add_host(host, group=group)
    try:
        manager.subset(limit)
        return sorted(h.name for h in manager.get_hosts(pattern=pattern))
    except AnsibleError as exc:
        raise PlanError(f"--limit {limit!r}: {exc.message} (nothing was changed)") from None


def _transfer(name: str, hostvars: Mapping[str, Any]) -> str:
    want = str(hostvars.get("edge_model_transfer") or "auto")
    if want not in TRANSFERS:
        raise PlanError(f"{name}: edge_model_transfer={want!r} must be one of {', '.join(TRANSFERS)}")
    if want != "auto":
        return want
    connection = str(hostvars.get("ansible_connection") or "ssh")
    return "pull" if connection in LOCAL_CONNECTIONS else "push"


def device_plan(host: str, entry: Mapping[str, Any], run_id: str, hostvars: Mapping[str, Any]) -> dict[str, Any]:
    """``edge_device_plan`` of one device: its plan entry plus run id, allowed models and transfer paths."""
    transfer = _transfer(host, hostvars)
    root = str(hostvars.get("edge_runtime_root") or DEFAULT_ROOT)
    push_dir = posixpath.join(root, "downloads")
    models: dict[str, Any] = {}
    pushes = False
    for name, pin in sorted((entry.get("models") or {}).items()):
        src = str(pin.get("source") or "")
        is_url = src.startswith(("http://", "https://"))
        push = transfer == "push" and not is_url
        pushes = pushes or push
        models[name] = {
            **pin,
            # what the device's module reads: its pushed copy, or the source itself
            "source": posixpath.join(push_dir, f"{name}-{pin.get('version')}.edgebundle") if push else src,
            "registry_source": src,
            # the controller file to copy to the device first (push), else None
            "push_src": src if push else None,
            # the run this entry was planned for: the converge task loops over these entries, so every item of
            # its registered result names its run (plugin_utils/hostvars.py reads only this run's results)
            "run_id": run_id,
        }
    return {
        **{k: v for k, v in entry.items() if k != "models"},
        # how the runtime gets onto the device (the edge_runtime role's edge_runtime_install_method, whose
        # default is preinstalled): deploy.yml runs the venv install only on the devices that use it
        "runtime_install": "venv" if hostvars.get("edge_runtime_install_method") == "venv" else "preinstalled",
        "run_id": run_id,
        "models": models,
        "allowed_models": sorted(models),
        "transfer": "push" if pushes else "pull",
        "push_dir": push_dir if pushes else None,
    }


def plan_run(
    plan: Mapping[str, Any],
    run_id: str,
    groups: Mapping[str, list[str]],
    hostvars: Mapping[str, Any],
    *,
    pattern: str = "edge_devices",
    limit: str | None = None,
    check_mode: bool = False,
) -> dict[str, Any]:
    """The plan of this run (``plan`` restricted to the run's devices, with the run id) and each device's plan.

    Returns ``{"plan": ..., "devices": {host: edge_device_plan}, "venv_hosts": [...]}`` for every device of
    the run (planned or not); ``plan["run_hosts"]`` lists them, and the devices' play compares it with
    ``ansible_play_hosts_all``; ``venv_hosts`` are those whose runtime is installed into a venv by the role.
    """
    from ansible_collections.edgeml.fleet.plugins.plugin_utils.rollout import plan_subset

    hosts = run_hosts(groups, pattern, limit)
    planned = plan.get("hosts") or {}
    if limit is not None and planned and not set(hosts) & set(planned):
        raise PlanError(
            f"--limit {limit!r} leaves none of the {len(planned)} planned devices in this run, so it would "
            "converge nothing; nothing was changed (hint: check the pattern or the @file; the devices of "
            f"{pattern} are named in the inventory)"
        )
    out = plan_subset(plan, hosts) if limit is not None else {**plan, "excluded": []}
    entries = out.get("hosts") or {}
    # every device of the run gets a plan: one without pins runs no model (its runtime allows none)
    devices = {h: device_plan(h, entries.get(h) or {}, run_id, hostvars.get(h) or {}) for h in hosts}
    out["hosts"] = {h: {**e, "run_id": run_id} for h, e in (out.get("hosts") or {}).items()}
    # check_mode: how the devices' results of this run are read (a change is "would_change", not "installed")
    out.update(run_id=run_id, run_hosts=hosts, limit=limit, check_mode=bool(check_mode))
    venv = [h for h in hosts if devices[h]["runtime_install"] == "venv"]
    return {"plan": out, "devices": devices, "venv_hosts": venv}

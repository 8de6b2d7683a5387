# Copyright (c) edgeml maintainers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Action plugin ``edgeml.fleet.fleet_health``: judge every device's health snapshot of this run, write the reports.

Runs entirely on the controller. See the documentation in ``plugins/modules/fleet_health.py``; the decision is
``plugin_utils/health.py``, the files are ``edge_runtime.health_report``.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ansible_collections.edgeml.fleet.plugins.plugin_utils import fleet_lock
from ansible_collections.edgeml.fleet.plugins.plugin_utils.controller_action import ControllerAction
from ansible_collections.edgeml.fleet.plugins.plugin_utils.health import fleet_health

ARGUMENT_SPEC: dict[str, Any] = {
    "plan": {"type": "dict", "required": True},
    "run_id": {"type": "str", "required": True},
    "dest": {"type": "path", "required": True},
    "var": {"type": "str", "default": "edge_health"},
    "lock_dir": {"type": "path"},
    "fleet": {"type": "str"},
    "write": {"type": "bool", "default": True},
}


def snapshots(hostvars: Mapping[str, Any], hosts: Any, var: str,
              run_id: str) -> tuple[dict[str, Any], dict[str, str]]:
    """Host -> the snapshot it answered IN THIS RUN (a registered ``var`` whose ``health.run_id`` is ours), and
    host -> why there is none, where this run's task said (unreachable, the module failed)."""
    out: dict[str, Any] = {}
    why: dict[str, str] = {}
    for h in hosts:
        try:
            reg = hostvars[h].get(var)
        except KeyError:
            continue
        if not isinstance(reg, Mapping):
            continue
        snap = reg.get("health") if not reg.get("failed") else None
        if isinstance(snap, Mapping) and snap.get("run_id") == run_id:
            out[h] = snap
        elif reg.get("unreachable") or reg.get("failed"):
            why[h] = ("unreachable: " if reg.get("unreachable") else "failed: ") + str(reg.get("msg") or "")[:300]
    return out, why


class ActionModule(ControllerAction):
    """Decide each device's status, check the limits, write JSON, Markdown and HTML, append the history."""

    ARGUMENT_SPEC = ARGUMENT_SPEC
    _VALID_ARGS = frozenset(ARGUMENT_SPEC)

    def act(self, args: dict[str, Any], task_vars: dict[str, Any], result: dict[str, Any]) -> None:
        plan = args["plan"]
        snaps, why = snapshots(task_vars.get("hostvars", {}), plan.get("hosts", {}), args["var"], args["run_id"])
        report = fleet_health(plan, snaps, args["run_id"], why)
        report["generated_at"] = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        report["check_mode"] = bool(self._task.check_mode)
        # health never takes the fleet lock (read-only; it must not wait for a rollout); it says when one runs
        if args.get("lock_dir"):
            sources = [str(s) for s in task_vars.get("ansible_inventory_sources") or []]
            try:
                fleet = args.get("fleet") or fleet_lock.fleet_name(sources)
                st = fleet_lock.status(fleet_lock.lock_path(args["lock_dir"], fleet))
                holder = st.get("holder") or {}
                if st.get("held") and holder:
                    report["deploy_in_progress"] = (f"{holder.get('playbook')} run {holder.get('run_id')} holds the "
                                                    f"fleet lock since {holder.get('started_at')}: devices may be "
                                                    "mid-rollout")
            except fleet_lock.FleetLockError as exc:
                report["deploy_in_progress"] = f"fleet lock unreadable: {exc}"
        files: list[str] = []
        if args["write"] and not self._task.check_mode:
            from edge_runtime.health_report import write_reports

            try:
                out = write_reports(Path(args["dest"]), report)
            except OSError as exc:
                result.update(failed=True, msg=f"cannot write the health report into {args['dest']}: {exc} "
                              "(hint: set edge_reports_dir to a writable directory)")
                return
            files = out["files"]
            if out["warnings"]:
                result["warnings"] = out["warnings"]
        c = report["counts"]
        lines = [f"{d['device']}: {d['status']}" + (f" - {'; '.join(d['reasons'])[:300]}" if d["reasons"] else "")
                 for d in report["devices"] if d["status"] != "in_sync"]
        lines.append(f"{report['total']} devices: " + ", ".join(f"{n} {s}" for s, n in c.items()))
        lines += [f"LIMIT EXCEEDED: {b['message']}" for b in report["breaches"]]
        result.update(report=report, files=files, summary="\n".join(lines))

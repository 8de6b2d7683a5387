# Copyright (c) edgeml maintainers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Controller side of ``playbooks/rollback.yml``: what to roll back, the outcome per device, the report.

The rollback's target is explicit, so a second run with the same arguments changes nothing:

* without ``to``, each device rolls back **from the version models.yaml pins** for it (the version the
  deploy rolled out) to its previous committed version. A device that does not run the pinned version
  (already rolled back, or never upgraded) is left alone and reported ``unchanged`` with the reason. The
  device-side guard is the module's own: ``edgeml.fleet.edge_model state=rolled_back version=<pin>`` does
  nothing when the pin is not active.
* with ``to``, every targeted device activates that version (kept on the device); a device already running
  it is ``unchanged``.

After the rollback ``models.yaml`` still pins the version rolled back from, so the next deploy would roll
the devices forward again: :func:`pin_warnings` names the file, line and the one-line change that keeps the
rollback. Pure functions over plain data; the filters in ``filter/rollback.py`` and the ``fleet_report``
action call them.
"""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Iterable, Mapping
from typing import Any

from ansible_collections.edgeml.fleet.plugins.plugin_utils import rollout
from ansible_collections.edgeml.fleet.plugins.plugin_utils.device_plan import PlanError, run_hosts

#: results of a rollback run that are not problems
OK_RESULTS = ("rolled_back", "unchanged", "would_change")


#: the longest reason (``edge_rollback_why``) a report keeps
MAX_WHY_CHARS = 4000


def rollback_plan(
    plan: Mapping[str, Any], targets: Iterable[str], models: Iterable[str] | None = None, to: str | None = None,
    run_id: str | None = None, why: str | None = None,
) -> dict[str, Any]:
    """Resolve a rollback request once, on the controller.

    ``targets`` are the inventory hosts the request matched, ``models`` the models to roll back (default:
    every model pinned for a target), ``to`` the explicit target version (default: the previous committed
    version on each device, rolling back from the pin). Returns ``problems`` (refusals; nothing may run when
    there is one), ``steps`` (host → ``[{"model", "from", "to"}]``), ``plan`` (the deploy plan restricted to
    the targets and the selected models, for the report; ``excluded`` lists the planned devices not targeted)
    and ``unplanned`` (targets no group pins).

    ``run_id`` (the fleet lock's id of this run) is stamped on the plan and each device entry: the devices
    echo it, and the report counts only answers that carry it (``plugin_utils/hostvars.py``). Without one
    (no lock taken), a fresh id is made here. ``why`` (``edge_rollback_why``: e.g. the alert receiver's alert
    name and values) is kept in the plan and the report, at most :data:`MAX_WHY_CHARS` characters.
    """
    hosts: Mapping[str, Any] = plan.get("hosts") or {}
    wanted = sorted(set(targets))
    planned = [h for h in wanted if h in hosts]
    pinned = sorted({m for h in planned for m in (hosts[h].get("models") or {})})
    chosen = sorted(set(models or [])) or pinned
    to = str(to).strip() if to not in (None, "") else None
    problems: list[str] = []
    if not wanted:
        problems.append("the rollback targets match no device (hint: a group, a host or a pattern of edge_devices, "
                        "e.g. -e edge_rollback_targets=line_a)")
    elif not planned:
        problems.append(f"no group of models.yaml pins a model for {', '.join(wanted)}: nothing to roll back")
    unknown = sorted(set(chosen) - set(pinned))
    if planned and unknown:
        problems.append(f"model(s) {', '.join(unknown)} not pinned for any target device (pinned: "
                        f"{', '.join(pinned) or 'none'}); fix edge_rollback_models")
    if to is not None and len(chosen) > 1:
        problems.append(f"edge_rollback_to={to} names one version, but the targets run {len(chosen)} models "
                        f"({', '.join(chosen)}): choose one with edge_rollback_models")
    steps: dict[str, list[dict[str, Any]]] = {}
    for host in planned:
        pins = hosts[host].get("models") or {}
        steps[host] = [{"model": m, "from": None if to else pins[m]["version"], "to": to}
                       for m in chosen if m in pins]
    subset = rollout.plan_subset(plan, [h for h in planned if steps[h]])
    run_id = run_id or time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + secrets.token_hex(4)
    subset["run_id"] = run_id
    why = str(why).strip() if why not in (None, "") else None
    if why:
        subset["why"] = why[:MAX_WHY_CHARS]
    subset["hosts"] = {h: {**e, "run_id": run_id,
                           "models": {m: p for m, p in (e.get("models") or {}).items() if m in chosen}}
                       for h, e in subset["hosts"].items()}
    return {"problems": problems, "steps": steps, "plan": subset, "to": to, "models": chosen,
            "unplanned": [h for h in wanted if h not in hosts]}


def rollback_request(
    plan: Mapping[str, Any], groups: Mapping[str, list[str]], pattern: str, limit: str | None = None,
    models: Iterable[str] | None = None, to: str | None = None, run_id: str | None = None, why: str | None = None,
) -> dict[str, Any]:
    """:func:`rollback_plan` of the devices that ``pattern`` (``edge_rollback_targets``) names under ``--limit``.

    Both are resolved by Ansible's own inventory code (``device_plan.run_hosts``: names, groups, patterns,
    ``@file``, ``!``, ``&``, ``~regex``), restricted to ``edge_devices``. A pattern or limit Ansible cannot
    resolve is a refusal, like an empty one.
    """
    try:
        hosts = run_hosts(groups, pattern, limit)
    except PlanError as exc:
        out = rollback_plan(plan, [], models, to, run_id, why)
        out["problems"] = [f"edge_rollback_targets {pattern!r}: {exc}"]
        return out
    devices = set(groups.get("edge_devices") or [])
    return rollback_plan(plan, [h for h in hosts if h in devices], models, to, run_id, why)


def _step(item: Mapping[str, Any]) -> Mapping[str, Any]:
    """The rollback step (``{"model", "from", "to"}``) of one registered loop item."""
    step = item.get("item")
    return step if isinstance(step, Mapping) else {}


def _item_outcome(item: Mapping[str, Any], pin: str | None, check_mode: bool) -> dict[str, Any]:
    step = _step(item)
    src, to = step.get("from"), step.get("to")
    active, previous = item.get("active"), item.get("previous")
    if item.get("unreachable"):
        status, reason = "unreachable", str(item.get("msg") or "unreachable").strip()
    elif item.get("failed") or item.get("skipped"):
        status, reason = "failed", str(item.get("msg") or "the rollback did not run").strip()
    elif item.get("changed"):
        status = "would_change" if check_mode else "rolled_back"
        if check_mode:
            reason = f"would roll back from {previous} to {active}"
        else:
            reason = f"rolled back from {previous} to {active} (operator rollback)"
    elif to:
        status, reason = "unchanged", f"{to} is already active"
    else:
        status, reason = "unchanged", f"runs {active or 'nothing'}, not the pinned {src}: nothing to roll back"
    degraded = item.get("degraded_reason") if item.get("degraded") else None
    if degraded and "DEGRADED" not in reason:  # the runtime could not reach the target: it says where it is
        reason = f"{reason}; DEGRADED: {degraded}"
    return {"desired": pin, "previous": previous, "active": active, "status": status, "reason": reason,
            "error": item.get("error"), "degraded": degraded}


def rollback_result(
    registered: Mapping[str, Any], entry: Mapping[str, Any], check_mode: bool = False
) -> dict[str, Any]:
    """The registered ``edge_model state=rolled_back`` loop of one device → its ``edge_model_result``."""
    pins = entry.get("models") or {}
    models: dict[str, Any] = {}
    for item in registered.get("results") or []:
        name = str(_step(item).get("model") or "?")
        models[name] = _item_outcome(item, (pins.get(name) or {}).get("version"), check_mode)
    if not models and (registered.get("unreachable") or registered.get("failed")):
        why = str(registered.get("msg") or "no answer").strip()
        status = "unreachable" if registered.get("unreachable") else "failed"
        models = {m: {"desired": p.get("version"), "status": status, "reason": why} for m, p in pins.items()}
    statuses = [m["status"] for m in models.values()] or ["unchanged"]
    status = min(statuses, key=lambda s: rollout.SEVERITY.index(s) if s in rollout.SEVERITY else -1)
    return {
        "status": status,
        "ok": all(s in OK_RESULTS for s in statuses),
        "changed": any(s in ("rolled_back", "would_change") for s in statuses),
        "group": entry.get("rollout_group"),
        "wave": entry.get("wave"),
        "run_id": entry.get("run_id"),
        "reason": "; ".join(f"{n}: {m['reason']}" for n, m in models.items() if m["status"] not in OK_RESULTS),
        "models": models,
    }


def _display_path(path: str) -> str:
    """``models.yaml`` relative to the working directory when it lies below it, else absolute."""
    try:
        rel = os.path.relpath(path)
    except ValueError:
        return path
    return path if rel.startswith("..") else rel


def pin_warnings(plan: Mapping[str, Any], rows: Iterable[Mapping[str, Any]],
                 facts: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Where models.yaml still pins a version the devices no longer run, with the one-line change to make.

    One warning per pinning group and model: the line of the pin, the version pinned, which devices run
    what now, and ``fix`` (the line to write). The digest comes from the plan's catalogue; a version that
    is not in the catalogue must be added there first (the devices' reported digest is given).
    """
    hosts: Mapping[str, Any] = plan.get("hosts") or {}
    groups: Mapping[str, Any] = plan.get("groups") or {}
    catalogue: Mapping[str, Any] = plan.get("catalogue") or {}
    file = _display_path(str(plan.get("models_file") or "models.yaml"))
    with_lines = any("pins" in g for g in groups.values())  # plans from before the pins field: no line
    found: dict[tuple[str, str], dict[str, Any]] = {}
    for row in rows:
        host, model = str(row.get("device")), str(row.get("model"))
        now, pin = row.get("reported"), row.get("desired")
        if not now or now == pin or host not in hosts:
            continue
        pinning = [g for g in hosts[host].get("groups") or [] if model in ((groups.get(g) or {}).get("pins") or {})]
        for group in pinning if with_lines else [hosts[host].get("rollout_group")]:
            where = ((groups.get(group) or {}).get("pins") or {}).get(model)
            w = found.setdefault((str(group), str(model)), {
                "group": group, "model": model, "pinned": pin, "line": (where or {}).get("line"),
                "file": file, "running": {}})
            w["running"].setdefault(now, []).append(host)
    out = []
    for (group, model), w in sorted(found.items()):
        at = f"{w['file']}:{w['line']}" if w["line"] else f"{w['file']} (groups.{group}.models.{model})"
        running: dict[str, list[str]] = w["running"]
        who = "; ".join(f"{', '.join(sorted(hs))} now run{'s' if len(hs) == 1 else ''} {v}"
                        for v, hs in sorted(running.items()))
        head = (f"{at} still pins {group} {model} {w['pinned']}, but {who}: the next deploy would roll "
                f"{'it' if sum(map(len, running.values())) == 1 else 'them'} forward to {w['pinned']} again.")
        if len(running) > 1:
            fix = None
            tail = " The devices run different versions: pin the one to keep (and roll the others to it)."
        else:
            (version, devs), = running.items()
            digest = (catalogue.get(model) or {}).get(version)
            fix = f'{model}: "{version}"'
            if digest:
                tail = f' To keep the rollback, change it to "{version}" (digest {digest}): {fix}'
            else:
                reported = ((((facts.get(devs[0]) or {}).get("models") or {}).get(model)) or {}).get("digest")
                tail = (f" To keep the rollback, add {model} {version} to the catalogue of {w['file']} (digest "
                        f"reported by the device: {reported or 'unknown'}) and pin it: {fix}")
        out.append({**w, "fix": fix, "message": head + tail})
    return out


def finish_report(report: dict[str, Any], plan: Mapping[str, Any], facts: Mapping[str, Any]) -> dict[str, Any]:
    """Turn ``rollout.fleet_report`` of a rollback run into the rollback report.

    A rollback's success is ``rolled_back`` (or ``unchanged`` on a rerun); problems are the other results.
    Adds ``pin_warnings`` (see :func:`pin_warnings`).
    """
    rows = report.get("rows") or []
    problems = [r for r in rows if r.get("result") not in OK_RESULTS]
    report.update(problems=problems, failed=bool(problems), pin_warnings=pin_warnings(plan, rows, facts))
    if plan.get("why"):
        report["why"] = str(plan["why"])
    return report


def markdown_tail(report: Mapping[str, Any]) -> str:
    """The rollback report's extra section (after ``rollout.report_markdown``)."""
    warnings = report.get("pin_warnings") or []
    lines = ["## Why", "", str(report["why"]), ""] if report.get("why") else []
    if not warnings:
        return "\n".join(lines) + "\n" if lines else ""
    lines += ["## models.yaml still pins the versions rolled back from", ""]
    lines += [f"- {w['message']}" for w in warnings]
    return "\n".join(lines) + "\n"


def summary_lines(report: Mapping[str, Any], kind: str) -> list[str]:
    """The run's readable summary: one line per device and model, then the models.yaml warnings."""
    rows = report.get("rows") or []
    if kind == "rollback":
        lines = [f"{r['device']} | {r['model']} | now {r['reported'] or '-'} | models.yaml {r['desired']} | "
                 f"{r['result']} | {r['reason']}" for r in rows]
        if report.get("why"):
            lines.insert(0, f"why: {report['why']}")
    else:
        lines = [f"{r['device']} | {r['model']} | {r['reported'] or '-'} | {r['desired']} | {r['wave']} | "
                 f"{r['result']}" for r in rows]
    counts = report.get("counts") or {}
    lines.append("totals: " + (", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "no device"))
    if report.get("excluded"):
        lines.append(f"left alone: {', '.join(report['excluded'])}")
    lines += [f"WARNING: {w['message']}" for w in report.get("pin_warnings") or []]
    return lines

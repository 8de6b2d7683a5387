# Copyright (c) edgeml maintainers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Controller-side rollout logic: classify device results, gate waves, build the deploy report.

Pure functions over plain data (no Ansible objects), so they are unit-testable; the filter plugin
``edgeml.fleet.rollout`` exposes them to the playbooks. The install decision comes from the project's
``edge_runtime`` package (a controller requirement of the collection), imported where it is used: loading the
filters (``ansible-doc``, any playbook) does not need it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

#: worst first: the host's status is the worst status of its models. ``unverified``: the pinned version is
#: active but no passed post-install health check is recorded for it (the device is not counted healthy).
SEVERITY = ("unreachable", "quarantined", "rolled_back", "failed", "unverified", "installed", "would_change",
            "unchanged")
UNVERIFIED_REASON = "{v} is active but no passed post-install health check is recorded for it on this device"


def classify_item(item: Mapping[str, Any], check_mode: bool) -> dict[str, Any]:
    """One registered ``edgeml.fleet.edge_model`` result (a loop item) → the model's outcome."""
    plan = item.get("item", {}).get("value", {}) if isinstance(item.get("item"), Mapping) else {}
    smoke = item.get("smoke") or {}
    if item.get("unreachable"):
        status = "unreachable"
    elif item.get("quarantined"):
        status = "quarantined"
    elif item.get("rolled_back"):
        status = "rolled_back"
    elif item.get("failed"):
        status = "failed"
    elif item.get("changed"):
        status = "would_change" if check_mode else "installed"
    elif item.get("healthy") is False:
        # the pinned version is active (no-op), but its health check is not recorded: checked in this run
        status = "would_change" if check_mode else "unverified"
    else:
        status = "unchanged"
    reason = item.get("reason") or item.get("msg") or ""
    if status in ("failed", "quarantined", "unreachable") and item.get("msg"):
        reason = item["msg"]
    if status == "unreachable":
        reason = "no answer from this device in this run" + (f": {reason}" if reason else "")
    if status in ("unverified", "would_change") and item.get("healthy") is False:
        reason = UNVERIFIED_REASON.format(v=plan.get("version")) + (
            "; the health check would run" if check_mode else "; checking it now")
    degraded = item.get("degraded_reason") if item.get("degraded") else None
    if degraded and "DEGRADED" not in str(reason):  # a rollback that could not reach its target says so
        reason = f"{reason}; DEGRADED: {degraded}" if reason else f"DEGRADED: {degraded}"
    return {
        "desired": plan.get("version"),
        "previous": item.get("previous"),
        "active": item.get("active"),
        "status": status,
        "reason": str(reason).strip(),
        "error": item.get("error"),
        "degraded": degraded,
        "smoke_passed": smoke.get("passed") if smoke else None,
        "p95_ms": smoke.get("p95_ms") if smoke else None,
        "label_agreement": smoke.get("label_agreement") if smoke else None,
        "mean_confidence": smoke.get("mean_confidence") if smoke else None,
        "previous_label_agreement": (item.get("previous_smoke") or {}).get("label_agreement"),
        # an install that recorded its post-install check itself (staged smoke test, then the active files
        # verified after the swap: Device._verify_and_commit) needs no second check in this run
        **({"check_passed": True, "check_p95_ms": smoke.get("p95_ms")}
           if status == "installed" and item.get("checked") is True else {}),
    }


def device_result(registered: Mapping[str, Any], plan_entry: Mapping[str, Any], check_mode: bool) -> dict[str, Any]:
    """The registered loop of one device → ``edge_model_result`` (worst model status wins)."""
    items = registered.get("results") or []
    models = {}
    for it in items:
        name = (it.get("item") or {}).get("key") or it.get("model") or "?"
        models[name] = classify_item(it, check_mode)
    if not items and registered.get("unreachable"):
        models = {m: {"desired": v.get("version"), "status": "unreachable", "reason": registered.get("msg", "")}
                  for m, v in (plan_entry.get("models") or {}).items()}
    statuses = [m["status"] for m in models.values()] or ["unchanged"]
    status = min(statuses, key=SEVERITY.index)
    reasons = [f"{n}: {m['reason']}" for n, m in models.items() if m["status"] == status and m.get("reason")]
    check = sorted(n for n, m in models.items()
                   if m["status"] == "unverified" or (m["status"] == "installed" and m.get("check_passed") is not True))
    return {
        "status": status,
        "ok": status in ("installed", "would_change", "unchanged"),
        "changed": any(m["status"] in ("installed", "would_change") for m in models.values()),
        # the role's post-install health check (handler, state: tested) runs for these models: unverified ones
        # and installs that did not record their check (an older runtime on the device)
        "needs_check": bool(check),
        "check_models": check,
        "group": plan_entry.get("rollout_group"),
        "wave": plan_entry.get("wave"),
        "run_id": plan_entry.get("run_id"),
        "reason": "; ".join(reasons),
        "models": models,
    }


def plan_subset(plan: Mapping[str, Any], hosts: Any) -> dict[str, Any]:
    """The plan restricted to ``hosts`` (the devices of a run limited with ``--limit``).

    Wave membership is kept (a wave's hosts are filtered, never renumbered), so the canary of a group is
    the same with or without a limit; ``excluded`` lists the planned devices this run leaves alone.
    """
    keep = set(hosts)
    out = dict(plan)
    out["hosts"] = {h: e for h, e in (plan.get("hosts") or {}).items() if h in keep}
    out["groups"] = {
        g: {**v, "hosts": [h for h in v.get("hosts", []) if h in keep],
            "waves": [[h for h in wave if h in keep] for wave in v.get("waves", [])]}
        for g, v in (plan.get("groups") or {}).items()
    }
    out["excluded"] = sorted(set(plan.get("hosts") or {}) - keep)
    return out


def plan_pin(name: str, want: Mapping[str, Any], entry: Mapping[str, Any]) -> Any:
    """The runtime's :class:`edge_runtime.decision.Pin` of one model of a device's plan ``entry``."""
    from edge_runtime.decision import Pin  # the project's runtime package, imported when used (see module doc)

    counter = want.get("release_counter")
    return Pin(str(name), str(want.get("version")), str(want.get("digest")),
               counter if isinstance(counter, int) and not isinstance(counter, bool) else None,
               bool(entry.get("allow_quarantined", False)))


def twin_in_sync(entry: Mapping[str, Any], twin: Mapping[str, Any] | None) -> bool:
    """True when a device's twin says it runs every pinned model of its plan ``entry``, healthy.

    Per model, the runtime's own install decision (``edge_runtime.decision.decide``, which the runtime and
    ``edgeml.fleet.edge_model`` also ask) on the twin's copy of the state file is a no-op, and the runtime
    recorded a passed post-install health check for the version (``decision.healthy``). Such a device needs
    no converge run. Anything else (no twin, a corrupt state file, a pending operation, another version or
    digest, a quarantined pin, an unchecked or degraded version) is converged, where the runtime decides.
    ``twin`` must be this run's answer (see ``plugin_utils/hostvars.py``); the caller filters stale ones.
    """
    from edge_runtime.decision import decide, healthy

    models = (twin or {}).get("models")
    if not isinstance(models, Mapping):
        return False
    for name, want in (entry.get("models") or {}).items():
        got = models.get(name)
        if decide(got, plan_pin(name, want, entry)).action != "noop" or not healthy(got, str(want.get("version"))):
            return False
    return True


def bundles_to_push(entry: Mapping[str, Any], twin: Any) -> list[dict[str, Any]]:
    """The models of one device's plan ``entry`` whose file-registry bundle must be copied to the device.

    Every model with a ``push_src``, except those for which this run's twin (its ``run_id`` is the plan's)
    says the runtime's install decision is a no-op: the pinned build is already active, so the runtime will
    not read the bundle (an unchecked version is re-checked from its installed files). A twin from another
    run, or none, pushes everything: the device decides on what it has. ``[{key, value}]`` as ``dict2items``.
    """
    from edge_runtime.decision import decide

    run_id = entry.get("run_id")
    fresh = isinstance(twin, Mapping) and bool(run_id) and twin.get("run_id") == run_id
    models = twin.get("models") if fresh and isinstance(twin, Mapping) else None
    out = []
    for name, want in (entry.get("models") or {}).items():
        if not isinstance(want, Mapping) or not want.get("push_src"):
            continue
        if isinstance(models, Mapping) and decide(models.get(name), plan_pin(name, want, entry)).action == "noop":
            continue
        out.append({"key": name, "value": dict(want)})
    return out


def converge_targets(plan: Mapping[str, Any], facts: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Planned devices that must run the converge step, with their wave: all but those in sync.

    ``facts`` maps host → ``ansible_facts.edge_runtime`` as reported in this run (missing = the device
    did not report: it is targeted, and a device that cannot be reached then fails its wave's gate).
    """
    return [
        {"host": host, "wave": entry.get("wave")}
        for host, entry in sorted((plan.get("hosts") or {}).items())
        if not twin_in_sync(entry, facts.get(host))
    ]


def converge_waves(plan: Mapping[str, Any], facts: Mapping[str, Any]) -> dict[str, list[str]]:
    """:func:`converge_targets` by wave: ``{"1": [hosts...], ...}`` (string keys: a wave play looks its own up;
    a wave without devices is absent)."""
    waves: dict[str, list[str]] = {}
    for target in converge_targets(plan, facts):
        waves.setdefault(str(target["wave"]), []).append(target["host"])
    return waves


def wave_hosts(plan: Mapping[str, Any], waves: Mapping[str, Any], wave: Any, halted: Mapping[str, Any]) -> list[str]:
    """The devices wave ``wave`` converges now: its devices out of sync (``converge_waves``) except those of a
    rollout group that an earlier wave's gate halted."""
    entries = plan.get("hosts") or {}
    hosts = waves.get(str(wave)) or []
    return [h for h in hosts if (entries.get(h) or {}).get("rollout_group") not in halted]


def twin_result(entry: Mapping[str, Any], twin: Mapping[str, Any]) -> dict[str, Any]:
    """``edge_model_result`` of a device that was in sync and therefore not converged in this run."""
    models = {
        name: {
            "desired": want.get("version"),
            "previous": (twin["models"].get(name) or {}).get("previous_version"),
            "active": want.get("version"),
            "status": "unchanged",
            "reason": "already active and health-checked (reported by the device in this run)",
            "check_passed": True,
        }
        for name, want in (entry.get("models") or {}).items()
    }
    return {"status": "unchanged", "ok": True, "changed": False, "group": entry.get("rollout_group"),
            "wave": entry.get("wave"), "run_id": entry.get("run_id"), "reason": "", "models": models}


def require_checked(result: Mapping[str, Any]) -> dict[str, Any]:
    """A device's result with every model installed in this run but not health-checked marked ``unverified``.

    A device counts as healthy for a version only when the runtime recorded a passed post-install check
    for it (``mark_checked`` sets ``check_passed``). The device's own status stays ``installed`` so that
    the gate of a failed wave still rolls it back.
    """
    models = {k: dict(v) for k, v in (result.get("models") or {}).items()}
    missing = [n for n, m in models.items() if m.get("status") == "installed" and m.get("check_passed") is not True]
    if not missing:
        return dict(result)
    for n in missing:
        models[n].update(status="unverified", reason=UNVERIFIED_REASON.format(v=models[n].get("desired"))
                         + " (the post-install check did not run or did not pass)")
    reason = "; ".join(f"{n}: {models[n]['reason']}" for n in missing)
    return {**result, "models": models, "ok": False, "reason": reason}


def effective_results(
    plan: Mapping[str, Any], results: Mapping[str, Any], facts: Mapping[str, Any]
) -> dict[str, Any]:
    """Per planned host: its ``edge_model_result`` of this run, or the in-sync result from its twin.

    ``results`` and ``facts`` must hold only this run's answers (``plugin_utils/hostvars.py`` filters by run
    id): a host with neither has no entry, which the gate counts as a failure and the report as unreachable.
    """
    out = {h: require_checked(r) for h, r in results.items()}
    for host, entry in (plan.get("hosts") or {}).items():
        if host not in out and twin_in_sync(entry, facts.get(host)):
            out[host] = twin_result(entry, facts[host])
    return out


def _host_failure(result: Mapping[str, Any] | None, gate: Mapping[str, Any]) -> str | None:
    """Why one device fails the health gate, or None when it passes (exact: ``plugin_utils/gates.py``)."""
    from ansible_collections.edgeml.fleet.plugins.plugin_utils.gates import host_failure

    return host_failure(result, gate)


def wave_gate(
    plan: Mapping[str, Any], wave: int, results: Mapping[str, Any], halted: Mapping[str, Any] | None,
    decisions: list[Any] | None = None, check_mode: bool = False,
) -> dict[str, Any]:
    """Evaluate wave ``wave`` of every rollout group (exact arithmetic: ``plugin_utils/gates.py``).

    ``decisions`` are the gate decisions of the earlier waves of this run; the result's ``decisions`` adds this
    wave's (group, wave, failed/devices, fail percent, limit, passed, the health gate and the measurements it
    read), so the report and the history can say why every wave went on or stopped. ``check_mode``: the gate is not
    evaluated and halts nothing (``plugin_utils/gates.py``)."""
    from ansible_collections.edgeml.fleet.plugins.plugin_utils.gates import wave_gate as exact_wave_gate

    gate = exact_wave_gate(plan, wave, results, halted, check_mode)
    gate["decisions"] = [*(decisions or []), *({"group": g, **r} for g, r in sorted(gate["report"].items()))]
    return gate


def fleet_report(
    plan: Mapping[str, Any], results: Mapping[str, Any], facts: Mapping[str, Any], halted: Mapping[str, Any] | None
) -> dict[str, Any]:
    """Per device and model: desired vs reported version (the twin), wave, result and reason."""
    halted = halted or {}
    rows = []
    for host, entry in sorted((plan.get("hosts") or {}).items()):
        res = results.get(host)
        twin = ((facts.get(host) or {}).get("models")) or {}
        group = entry.get("rollout_group")
        for model, want in sorted((entry.get("models") or {}).items()):
            m = ((res or {}).get("models") or {}).get(model)
            if m is not None:
                status, reason = m["status"], m.get("reason", "")
            elif group in halted and entry.get("wave", 0) > halted[group]["wave"]:
                status, reason = "skipped_halted", f"{group} halted at wave {halted[group]['wave']}"
            else:
                status, reason = "unreachable", ("no answer from this device in this run (unreachable, or failed "
                                                 "before it answered); cached or earlier state is not used")
            reported = (twin.get(model) or {}).get("active_version") if twin else None
            if reported is None and m is not None:
                reported = m.get("active")
            rows.append({"device": host, "group": group, "wave": entry.get("wave"), "model": model,
                         "desired": want.get("version"), "reported": reported,
                         "previous": m.get("previous") if m else None, "result": status, "reason": reason})
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["result"]] = counts.get(r["result"], 0) + 1
    problems = [r for r in rows if r["result"] not in ("unchanged", "installed", "would_change")]
    return {"rows": rows, "counts": counts, "halted": dict(halted), "problems": problems,
            "excluded": list(plan.get("excluded") or []),
            "failed": bool(halted) or any(r["result"] in ("quarantined", "failed", "unreachable", "unverified")
                                          for r in rows)}


def report_markdown(report: Mapping[str, Any], title: str) -> str:
    """The report as a Markdown table for people."""
    lines = [f"# {title}", ""]
    for group, h in sorted(report["halted"].items()):
        lines.append(f"- **{group} HALTED** {h['reason']}")
    if report["halted"]:
        lines.append("")
    lines += ["| device | group | wave | model | desired | reported | result | reason |",
              "|---|---|---|---|---|---|---|---|"]
    for r in report["rows"]:
        reason = str(r["reason"]).replace("|", "\\|").replace("\n", " ")
        lines.append(f"| {r['device']} | {r['group']} | {r['wave']} | {r['model']} | {r['desired']} | "
                     f"{r['reported'] or '-'} | {r['result']} | {reason} |")
    lines += ["", "Totals: " + ", ".join(f"{k} {v}" for k, v in sorted(report["counts"].items()))]
    if report.get("excluded"):
        lines += ["", f"Not in this run (--limit), left alone: {', '.join(report['excluded'])}"]
    lines.append("")
    return "\n".join(lines)


def mark_rolled_back(result: Mapping[str, Any], registered: Mapping[str, Any], reason: str) -> dict[str, Any]:
    """Record a gate rollback (the handler's registered loop) in a device's ``edge_model_result``."""
    out = dict(result)
    models = {k: dict(v) for k, v in (result.get("models") or {}).items()}
    for it in registered.get("results") or []:
        name = (it.get("item") or {}).get("key")
        if name in models:
            if it.get("failed"):
                models[name].update(status="failed", reason=f"{reason}; rollback failed: {it.get('msg')}")
            else:
                models[name].update(status="rolled_back", active=it.get("active"), reason=reason)
    out["models"] = models
    statuses = [m["status"] for m in models.values()] or ["unchanged"]
    out["status"] = min(statuses, key=SEVERITY.index)
    out["ok"] = False
    out["reason"] = reason
    return out


def mark_checked(result: Mapping[str, Any], registered: Mapping[str, Any]) -> dict[str, Any]:
    """Record the post-install health check (the handler's registered loop) in ``edge_model_result``.

    A model whose check failed (files no longer verify, smoke test failed: the runtime rolled it back and
    quarantined it; or the check could not run) turns the device's result into a failure for the gate.
    """
    out = dict(result)
    models = {k: dict(v) for k, v in (result.get("models") or {}).items()}
    for it in registered.get("results") or []:
        name = (it.get("item") or {}).get("key")
        if name not in models:
            continue
        smoke = it.get("smoke") or {}
        if it.get("rolled_back"):
            models[name].update(status="rolled_back", active=it.get("active"), reason=str(it.get("msg", "")).strip(),
                                check_passed=False)
        elif it.get("failed") or it.get("unreachable"):
            models[name].update(status="unreachable" if it.get("unreachable") else "failed", check_passed=False,
                                reason=f"post-install check did not run: {str(it.get('msg', '')).strip()}")
        else:
            models[name].update(check_passed=smoke.get("passed"), check_p95_ms=smoke.get("p95_ms"))
            if models[name]["status"] == "unverified" and smoke.get("passed") is True:
                models[name].update(status="unchanged", reason="already active; its health check passed in this run")
    out["models"] = models
    out["needs_check"] = False
    out["check_models"] = []
    statuses = [m["status"] for m in models.values()] or ["unchanged"]
    out["status"] = min(statuses, key=SEVERITY.index)
    out["ok"] = out["status"] in ("installed", "would_change", "unchanged")
    if not out["ok"]:
        out["reason"] = "; ".join(f"{n}: {m['reason']}" for n, m in models.items() if m["status"] == out["status"])
    return out

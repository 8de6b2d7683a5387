# Copyright (c) edgeml maintainers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""The pull-request plan: what a deploy of this ``models.yaml`` would do, per group and device, and why.

Controller-only, pure functions over plain data. ``make plan`` runs ``playbooks/deploy.yml --check``: the same
validation (``desired_state``), run plan (``device_plan``) and device twins as a real deploy; its summary calls
``edgeml.fleet.fleet_report kind=plan``, which builds this report and writes ``plan.json`` and ``plan.md``.

Every decision here is asked of its one owner, never re-made:

* from -> to and the action: the runtime's install decision (``edge_runtime.decision.decide``, also used by the
  device and by ``rollout.twin_in_sync``) on the twin the device reported in this run;
* schema, bundle present, signature and digest: ``desired_state`` (the run stops before this report when any
  fails; a bundle verified with the device's trusted keys is listed in the plan's ``verified``);
* expiry: the signed manifest's ``expires`` against the time of the plan (the device refuses an expired one);
* downgrade and quarantine: the install decision's refusal codes (``downgrade``, ``quarantined``), from the
  device's own state as its twin reports it;
* compatibility (architecture, TFLite backend, input contract): the runtime's own decision
  (``edge_runtime.compat.incompatibility``, which ``trust.check_install_policy`` raises at install) on the twin's
  ``platform`` facts and the signed manifest the controller verified; "not evaluated" when the device did not
  answer, its twin has no platform facts or the manifest was not read in this run. An incompatible device is
  planned as ``refuse incompatible``: the device refuses it at install with the same reason.

Health gates need an install and a smoke test: in a plan they are always "not evaluated", never passed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

from ansible_collections.edgeml.fleet.plugins.plugin_utils.rollout import plan_pin

__all__ = ["NOT_EVALUATED", "plan_markdown", "plan_report"]

NOT_EVALUATED = "not evaluated"
#: decision codes that are a check failing (the device would refuse the pin)
_REFUSALS = {"downgrade": "downgrade", "quarantined": "quarantined"}


def _check(result: str, detail: str = "") -> dict[str, str]:
    return {"result": result, "detail": detail}


def _verified_for(verified: Sequence[Mapping[str, Any]]) -> dict[tuple[str, str], Mapping[str, Any]]:
    """(device, bundle source) -> the verification that covered it."""
    out: dict[tuple[str, str], Mapping[str, Any]] = {}
    for item in verified:
        for host in item.get("devices") or []:
            out[(str(host), str(item.get("source")))] = item
    return out


def _expiry(item: Mapping[str, Any] | None, now: datetime) -> dict[str, str]:
    if not item or not item.get("expires"):
        return _check(NOT_EVALUATED, "the bundle's manifest was not read in this run")
    try:
        expires = datetime.fromisoformat(str(item["expires"]))
    except ValueError:
        return _check("failed", f"unreadable expiry {item['expires']!r}")
    if expires.tzinfo is None:
        expires = expires.replace(tzinfo=timezone.utc)
    if now >= expires:
        return _check("failed", f"the signed manifest expired at {expires.isoformat()}; the device would refuse it")
    return _check("passed", f"expires {expires.isoformat()}")


def _compatibility(name: str, want: Mapping[str, Any], item: Mapping[str, Any] | None,
                   twin: Any) -> dict[str, str]:
    """The compatibility check of one model on one device: the runtime's decision, never a second rule."""
    from edge_runtime.compat import incompatibility, traits_from_twin

    if not isinstance(twin, Mapping):
        return _check(NOT_EVALUATED, "no twin from this device in this run")
    if not item or not isinstance(item.get("architectures"), list) or not isinstance(item.get("backends"), list):
        return _check(NOT_EVALUATED, "the bundle's manifest was not read in this run")
    traits = traits_from_twin(twin)
    if isinstance(traits, str):
        return _check(NOT_EVALUATED, traits)
    declared = item.get("input")
    declared = declared if isinstance(declared, Mapping) else {}
    why = incompatibility(name, str(want.get("version")), item["architectures"], item["backends"],
                          declared.get("shape"), declared.get("dtype"), architecture=traits.architecture,
                          device_backends=traits.backends, input_contract=traits.inputs.get(name))
    if why is not None:
        return _check("failed", why.message())
    usable = [b for b in traits.backends if b in item["backends"]]
    return _check("passed", f"{traits.architecture} with backend {', '.join(usable)}"
                  + (f", input {list(traits.inputs[name][0])} {traits.inputs[name][1]}" if name in traits.inputs
                     else ""))


def plan_report(
    plan: Mapping[str, Any], facts: Mapping[str, Any], answered: set[str] | frozenset[str],
    verified: Sequence[Mapping[str, Any]] = (), now: datetime | None = None,
) -> dict[str, Any]:
    """The plan of a check-mode deploy.

    ``plan`` is this run's plan (``device_plan``'s); ``verified`` is ``desired_state``'s list of the bundles it
    verified with the devices' trusted keys (``verify_bundles``); ``facts`` maps host ->
    the twin it reported in this run (``plugin_utils/hostvars.py`` already dropped stale ones); ``answered`` is the
    set of devices that answered in this run (a device without a twin is unknown: reported as unreachable).
    """
    from edge_runtime.decision import decide

    now = now or datetime.now(timezone.utc)
    by_device = _verified_for(verified)
    rows: list[dict[str, Any]] = []
    for host, entry in sorted((plan.get("hosts") or {}).items()):
        twin = facts.get(host) if host in answered else None
        models = (twin or {}).get("models") if isinstance(twin, Mapping) else None
        for name, want in sorted((entry.get("models") or {}).items()):
            item = by_device.get((host, str(want.get("source"))))
            checks: dict[str, dict[str, str]] = {
                "schema": _check("passed", "models.yaml against schemas/models.schema.json and the catalogue"),
                "bundle_present": _check("passed", str(want.get("source"))),
                "signature_digest": (
                    _check("passed", f"{item.get('keys')} trusted key(s), threshold {item.get('threshold')}, "
                           f"digest {want.get('digest')}"
                           + (f", {item['files']} file(s) verified" if item.get("files") else ""))
                    if item else _check(NOT_EVALUATED, "not verified in this run (validation without verify_bundles)")
                ),
                "expiry": _expiry(item, now),
                "compatibility": _compatibility(name, want, item, twin),
                "gate": _check(NOT_EVALUATED, "health gates need an install and a smoke test; check mode has neither"),
            }
            if not isinstance(models, Mapping):
                action, code, reason, current = "unknown", "unreachable", (
                    "no answer from this device in this run; its state is unknown"), None
                checks["downgrade"] = _check(NOT_EVALUATED, "no twin from this device")
                checks["quarantined"] = _check(NOT_EVALUATED, "no twin from this device")
            else:
                got = models.get(name)
                decision = decide(got, plan_pin(name, want, entry))
                action, code, reason = decision.action, decision.code, decision.reason
                current = (got or {}).get("active_version") if isinstance(got, Mapping) else None
                for check, refusal in _REFUSALS.items():
                    checks[check] = (_check("failed", reason) if code == refusal else _check("passed"))
            if checks["expiry"]["result"] == "failed" and action == "install":
                action, code, reason = "refuse", "expired", checks["expiry"]["detail"]
            elif checks["compatibility"]["result"] == "failed" and action == "install":
                action, code, reason = "refuse", "incompatible", checks["compatibility"]["detail"]
            size = want.get("size")
            moves = action == "install" and code != "kept_version"
            rows.append({
                "device": host, "group": entry.get("rollout_group"), "wave": entry.get("wave"), "model": name,
                "from": current, "to": want.get("version"), "action": action, "code": code, "reason": reason,
                "bytes": (size if isinstance(size, int) else None) if moves else 0,
                "checks": checks,
            })
    groups: dict[str, dict[str, Any]] = {}
    for r in rows:
        g = groups.setdefault(str(r["group"]), {"devices": set(), "waves": set(), "install": 0, "noop": 0,
                                                "refuse": 0, "unknown": 0, "bytes": 0, "bytes_unknown": 0})
        g["devices"].add(r["device"])
        g["waves"].add(r["wave"])
        g[r["action"]] = g.get(r["action"], 0) + 1
        if r["bytes"] is None:
            g["bytes_unknown"] += 1
        else:
            g["bytes"] += r["bytes"]
    group_rows = {
        name: {**g, "devices": len(g["devices"]), "waves": sorted(w for w in g["waves"] if w is not None),
               "policy": ((plan.get("groups") or {}).get(name) or {}).get("policy"),
               "gate": NOT_EVALUATED}
        for name, g in sorted(groups.items())
    }
    blocked = [r for r in rows if r["action"] in ("refuse", "unknown")]
    return {
        "kind": "plan",
        "generated_at": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "models_file": plan.get("models_file"),
        "run_hosts": list(plan.get("run_hosts") or []),
        "excluded": list(plan.get("excluded") or []),
        "rows": rows,
        "groups": group_rows,
        "totals": {
            "devices": len({r["device"] for r in rows}),
            "install": sum(1 for r in rows if r["action"] == "install"),
            "noop": sum(1 for r in rows if r["action"] == "noop"),
            "refuse": sum(1 for r in rows if r["action"] == "refuse"),
            "unknown": sum(1 for r in rows if r["action"] == "unknown"),
            "bytes": sum(r["bytes"] or 0 for r in rows),
        },
        "blocked": blocked,
        # The pull request's verdict: red when the deploy after the merge would refuse a device (incompatible,
        # signature, quarantined, downgrade...): that deploy fails its run, so the plan must not pass. Devices
        # that did not answer fail the check run through the deploy report, as they fail the deploy.
        "failed": any(r["action"] == "refuse" for r in rows),
    }


def _fmt_bytes(n: int | None) -> str:
    if n is None:
        return "?"
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{int(size)} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"  # pragma: no cover


def _cell(text: Any) -> str:
    return str(text if text is not None else "-").replace("|", "\\|").replace("\n", " ")


_CHECKS = (
    "schema", "bundle_present", "signature_digest", "expiry", "compatibility", "downgrade", "quarantined", "gate",
)
_MARK = {"passed": "ok", "failed": "FAILED", NOT_EVALUATED: "n/e"}


def plan_markdown(report: Mapping[str, Any]) -> str:
    """The plan for a pull request: per group, then per device, from -> to, wave, bytes and every check."""
    t = report["totals"]
    lines = [f"# Deploy plan {report['generated_at']}", "",
             f"{t['devices']} device(s): {t['install']} install, {t['noop']} already at the pin, "
             f"{t['refuse']} would be refused, {t['unknown']} unknown (no answer); {_fmt_bytes(t['bytes'])} to move.",
             "Health gates are **not evaluated** in a plan: they need an install and a smoke test.", ""]
    if report.get("blocked"):
        lines += ["## Would not converge", ""]
        lines += [f"- **{r['device']}** {r['model']} {r['to']}: {r['code']}: {r['reason']}" for r in report["blocked"]]
        lines.append("")
    lines += ["## Groups", "", "| group | devices | waves | install | at pin | refused | unknown | bytes | gate |",
              "|---|---|---|---|---|---|---|---|---|"]
    for name, g in report["groups"].items():
        unknown_bytes = f" (+{g['bytes_unknown']} of unknown size)" if g["bytes_unknown"] else ""
        lines.append(f"| {name} | {g['devices']} | {', '.join(map(str, g['waves']))} | {g['install']} | {g['noop']} | "
                     f"{g['refuse']} | {g['unknown']} | {_fmt_bytes(g['bytes'])}{unknown_bytes} | {g['gate']} |")
    lines += ["", "## Devices", "",
              "| device | group | wave | model | from | to | action | bytes | " + " | ".join(_CHECKS) + " |",
              "|---|---|---|---|---|---|---|---|" + "---|" * len(_CHECKS)]
    for r in report["rows"]:
        marks = " | ".join(_MARK.get(r["checks"][c]["result"], r["checks"][c]["result"]) for c in _CHECKS)
        lines.append(f"| {r['device']} | {r['group']} | {r['wave']} | {r['model']} | {_cell(r['from'])} | {r['to']} | "
                     f"{r['action']} ({r['code']}) | {_fmt_bytes(r['bytes'])} | {marks} |")
    lines += ["", "ok = passed, FAILED = the device would refuse, n/e = not evaluated (see plan.json for each "
              "check's detail)."]
    if report.get("excluded"):
        lines += ["", f"Not in this run (--limit), left alone: {', '.join(report['excluded'])}"]
    lines.append("")
    return "\n".join(lines)

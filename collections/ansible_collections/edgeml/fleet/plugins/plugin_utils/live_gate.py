# Copyright (c) edgeml maintainers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""The live canary gate: after a wave installs it bakes, and its devices' live telemetry decides, exactly.

Controller-only, pure functions over plain data; ``playbooks/_wave.yml`` calls them through the
``edgeml.fleet.rollout`` filters (``edge_bake_plan``, ``edge_bake_ready``, ``edge_live_gate``). The
golden-sample smoke gate (``gates.py``) stays the first line: only a wave that passed it bakes.

**Baseline (decided here, once):** the same device's previous committed version over the ``baseline_minutes``
before the new version's activation (``edge_runtime.telemetry.live``). Not the group's not-yet-upgraded
devices: the last wave has none, a control group differs in its inputs (line, light, sensor) while the same
device's inputs do not, and it costs no read of any other device. A first install has no previous version, so
no baseline: its verdict is ``insufficient_data``.

**Error rate:** against ground truth (``feedback_wrong / feedback``) when both the new version and the
baseline have at least ``min_feedback`` inferences with feedback; otherwise the inference failure rate
(``errors / inferences``). The basis is reported per device (``basis``: ``ground_truth`` or
``inference_failures``).

**Verdict** per device and model, in this order:

1. ``insufficient_data`` when the new version or the baseline has fewer than ``min_samples`` inferences, or the
   device's telemetry could not be read. ``on_insufficient_data: halt`` (the default, fail closed) counts it as a
   failure; ``extend`` bakes up to ``extend_seconds`` longer for the samples to arrive, then counts it as a
   failure if they still have not.
2. ``halt`` when any limit is reached. Every limit of ``live_gate`` is a **halt-at** value: the gate halts when
   the measured value is **greater than or equal to** it (the field rule "halt at +2 percentage points":
   exactly +2 points halts, anything below passes), compared in exact decimal arithmetic (``gates.exact``):

   ================================== ==========================================================================
   ``halt_at_error_rate_increase``     new error rate - baseline error rate >= limit (default 0.02 = 2 points)
   ``halt_at_inference_error_increase`` new failure rate - baseline failure rate >= limit (default 0.01)
   ``halt_at_p95_latency_ratio``       new p95 / baseline p95 >= limit (default 3.0; p95s are latency-bucket
                                       upper bounds, so a ratio moves in steps of 2-2.5x: 3.0 halts when the p95
                                       rose two buckets or more)
   ``halt_at_confidence_drop``         baseline mean top-1 confidence - new mean >= limit (default 0.05)
   ================================== ==========================================================================

3. ``pass`` otherwise.

A wave of a group fails the live gate like the smoke gate: when the devices that did not pass, as a share of the
wave, exceed the group's ``max_fail_percent`` (``failed * 100 > max_fail_percent * devices``). The group then
halts and the wave's installed devices roll back, exactly as after a failed smoke gate.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from fractions import Fraction
from typing import Any

from ansible_collections.edgeml.fleet.plugins.plugin_utils.gates import exact, show_pair

__all__ = ["DEFAULT_LIVE_GATE", "bake_plan", "bake_ready", "device_verdict", "live_gate_policy", "live_wave_gate",
           "model_verdict"]

#: documented defaults of a group's ``rollout.live_gate`` (schemas/models.schema.json says the same)
DEFAULT_LIVE_GATE: dict[str, Any] = {
    "bake_seconds": 0,
    "poll_seconds": 10,
    "min_samples": 200,
    "min_feedback": 100,
    "baseline_minutes": 60,
    "halt_at_error_rate_increase": 0.02,
    "halt_at_inference_error_increase": 0.01,
    "halt_at_p95_latency_ratio": 3.0,
    "halt_at_confidence_drop": 0.05,
    "on_insufficient_data": "halt",
    "extend_seconds": None,
}


def live_gate_policy(given: Mapping[str, Any] | None) -> dict[str, Any]:
    """``given`` (a group's ``rollout.live_gate``, validated by the schema) over the defaults."""
    out = {**DEFAULT_LIVE_GATE, **dict(given or {})}
    if out["extend_seconds"] is None:
        out["extend_seconds"] = out["bake_seconds"]
    return out


def _policy(plan: Mapping[str, Any], group: str) -> dict[str, Any]:
    g = (plan.get("groups") or {}).get(group) or {}
    return live_gate_policy((g.get("policy") or {}).get("live_gate"))


# ------------------------------------------------------------------------------------------------ bake plan


def bake_plan(
    plan: Mapping[str, Any], wave: int, results: Mapping[str, Any], halted: Mapping[str, Any], now: float = 0.0
) -> dict[str, Any]:
    """Which devices of wave ``wave`` bake, and how: ``{"wave", "hosts", "devices": {host: spec}}``.

    A device bakes when its group has a bake time (``bake_seconds > 0``), did not halt (the smoke gate came
    first) and the device installed a model in this run. ``spec``: the installed ``models`` and the
    ``versions`` this run installed (the telemetry of any other version is not this run's), ``retries`` and
    ``delay`` of the poll (one read per check; about ``bake_seconds``, plus ``extend_seconds`` under
    ``on_insufficient_data: extend``), ``min_samples``, ``baseline_minutes`` and ``deadline`` (``now`` + that
    time, seconds since the epoch on the controller: a device whose reads start late -- more devices in the
    wave than forks, so the poll loops of later devices start when earlier ones end -- stops polling at the
    deadline after one read instead of baking its full time again). No device: nothing is read.
    """
    devices: dict[str, Any] = {}
    for group, g in sorted((plan.get("groups") or {}).items()):
        waves = g.get("waves") or []
        if group in halted or wave > len(waves):
            continue
        pol = _policy(plan, group)
        bake = exact(pol["bake_seconds"])
        if bake <= 0:
            continue
        total = bake + (exact(pol["extend_seconds"]) if pol["on_insufficient_data"] == "extend" else 0)
        poll = min(exact(pol["poll_seconds"]), total)
        for h in waves[wave - 1]:
            installed = {n: m for n, m in (((results.get(h) or {}).get("models")) or {}).items()
                         if m.get("status") == "installed"}
            models = sorted(installed)
            if models:
                devices[h] = {"group": group, "models": models,
                              "versions": {n: installed[n].get("desired") for n in models},
                              "retries": max(1, math.ceil(total / poll)),
                              "delay": float(poll), "deadline": now + float(total), "min_samples": pol["min_samples"],
                              "baseline_minutes": pol["baseline_minutes"], "bake_seconds": pol["bake_seconds"]}
    return {"wave": wave, "hosts": sorted(devices), "devices": devices}


def bake_ready(read: Mapping[str, Any], spec: Mapping[str, Any], now: float | None = None) -> bool:
    """Stop polling ``read`` (the registered ``edge_model_info`` result): every baked model's new version and
    baseline have ``min_samples`` inferences, or its telemetry cannot be read (waiting would not help), or
    (``now`` given) the bake's ``deadline`` has passed."""
    if now is not None and isinstance(spec.get("deadline"), (int, float)) and now >= spec["deadline"]:
        return True
    tel = read.get("telemetry")
    if not isinstance(tel, Mapping):
        return False
    n = int(spec.get("min_samples", DEFAULT_LIVE_GATE["min_samples"]))
    for name in spec.get("models") or []:
        s = tel.get(name)
        if not isinstance(s, Mapping):
            return False
        if s.get("problem") or _replaced(s, (spec.get("versions") or {}).get(name)):
            continue  # waiting would not help
        if _count(s, "new", "inferences") < n or _count(s, "baseline", "inferences") < n:
            return False
    return True


# ------------------------------------------------------------------------------------------------ verdict


def _count(s: Mapping[str, Any], side: str, key: str) -> int:
    v = (s.get(side) or {}).get(key)
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        return 0
    return v


def _rate(num: int, den: int) -> Fraction:
    return Fraction(num, den) if den else Fraction(0)


def _p95(side: Mapping[str, Any]) -> Fraction | float | None:
    v = side.get("p95_ms")
    if v == "inf":
        return math.inf
    return None if v is None else exact(v)


def _pts(x: Fraction) -> str:
    """A rate in percent for people: exact when it has at most 2 decimals, else rounded to 2 (``~``)."""
    pct = x * 100
    text = f"{float(pct):.2f}".rstrip("0").rstrip(".")
    return text if Fraction(text) == pct else "~" + text


def _replaced(s: Mapping[str, Any], expected: Any) -> bool:
    """The summary is of another version than ``expected`` (the one this run installed), when one is expected."""
    return expected is not None and s.get("version") != expected


def model_verdict(s: Mapping[str, Any] | None, policy: Mapping[str, Any], expected: str | None = None
                  ) -> dict[str, Any]:
    """The verdict on one model of one device from its live summary ``s`` (see the module docstring).

    ``expected``: the version this run installed. A summary of another active version (the device rolled it back
    during the bake, or something replaced it) is not this version's telemetry: ``halt``, never a pass on the
    numbers of whatever runs now. Returns ``verdict`` (``pass``, ``halt``, ``insufficient_data``), ``reasons``
    and the ``numbers`` it was made on (rates and means as floats for people and JSON; the comparison itself is
    exact)."""
    pol = live_gate_policy(policy)
    if not isinstance(s, Mapping):
        return {"verdict": "insufficient_data", "reasons": ["no live telemetry read from this device in this run"],
                "numbers": {}}
    if s.get("problem"):
        return {"verdict": "insufficient_data", "reasons": [str(s["problem"])], "numbers": {}}
    if _replaced(s, expected):
        return {"verdict": "halt", "numbers": {"version": s.get("version"), "expected_version": expected},
                "reasons": [f"{expected} (installed in this run) is no longer active on the device "
                            f"({str(s.get('version') or 'no version')[:80]} is): rolled back or replaced during "
                            "the bake"]}
    new, base = s.get("new") or {}, s.get("baseline") or {}
    n_new, n_base = _count(s, "new", "inferences"), _count(s, "baseline", "inferences")
    f_new, f_base = _count(s, "new", "feedback"), _count(s, "baseline", "feedback")
    min_n, min_f = int(pol["min_samples"]), int(pol["min_feedback"])
    basis = "ground_truth" if f_new >= min_f and f_base >= min_f else "inference_failures"
    numbers: dict[str, Any] = {"version": s.get("version"), "baseline_version": s.get("previous_version"),
                               "inferences": n_new, "baseline_inferences": n_base, "feedback": f_new,
                               "baseline_feedback": f_base, "basis": basis}
    if n_new < min_n or n_base < min_n:
        what = [] if n_new >= min_n else [f"{n_new} inferences of {s.get('version')} since its activation"]
        if n_base < min_n:
            what.append(f"{n_base} of the baseline {s.get('previous_version') or '(no previous version)'}")
        return {"verdict": "insufficient_data", "numbers": numbers,
                "reasons": [f"{' and '.join(what)}; the gate needs {min_n} each (min_samples)"]}
    impossible = [f"{what}: {p}" for what, side in (("new version", "new"), ("baseline", "baseline"))
                  if (p := _impossible(s, side))]
    if impossible:
        return {"verdict": "halt", "numbers": numbers,
                "reasons": [f"unusable measurement (broken or forged telemetry): {'; '.join(impossible)}"]}
    try:
        if basis == "ground_truth":
            er_new = _rate(_count(s, "new", "feedback_wrong"), f_new)
            er_base = _rate(_count(s, "baseline", "feedback_wrong"), f_base)
        else:
            er_new = _rate(_count(s, "new", "errors"), n_new)
            er_base = _rate(_count(s, "baseline", "errors"), n_base)
        fail_new = _rate(_count(s, "new", "errors"), n_new)
        fail_base = _rate(_count(s, "baseline", "errors"), n_base)
        checks: list[tuple[str, Fraction | float, Fraction, str]] = []
        checks.append(("error_rate_increase", er_new - er_base, exact(pol["halt_at_error_rate_increase"]),
                       f"error rate ({basis.replace('_', ' ')}) {_pts(er_base)}% -> {_pts(er_new)}%"))
        checks.append(("inference_error_increase", fail_new - fail_base,
                       exact(pol["halt_at_inference_error_increase"]),
                       f"inference failures {_pts(fail_base)}% -> {_pts(fail_new)}%"))
        p_new, p_base = _p95(new), _p95(base)
        ratio: Fraction | float | None = None
        if p_new is not None and p_base is not None:
            if math.isinf(p_base):
                ratio = Fraction(1) if math.isinf(p_new) else Fraction(0)
            elif math.isinf(p_new):
                ratio = math.inf
            elif p_base > 0:
                ratio = Fraction(p_new) / Fraction(p_base)
        if ratio is not None:
            checks.append(("p95_latency_ratio", ratio, exact(pol["halt_at_p95_latency_ratio"]),
                           f"p95 latency {base.get('p95_ms')} ms -> {new.get('p95_ms')} ms"))
        c_new = _mean(new)
        c_base = _mean(base)
        if c_base is not None and c_new is not None:
            checks.append(("confidence_drop", c_base - c_new, exact(pol["halt_at_confidence_drop"]),
                           f"mean confidence {_show4(c_base)} -> {_show4(c_new)}"))
        elif c_base is not None:
            checks.append(("confidence_drop", Fraction(1), exact(pol["halt_at_confidence_drop"]),
                           "no confidence of the new version (no successful inference)"))
    except (ValueError, ZeroDivisionError) as exc:
        return {"verdict": "halt", "numbers": numbers, "reasons": [f"unusable measurement or limit: {exc}"]}
    numbers.update(error_rate=float(er_new), baseline_error_rate=float(er_base),
                   inference_error_rate=float(fail_new), baseline_inference_error_rate=float(fail_base),
                   p95_ms=new.get("p95_ms"), baseline_p95_ms=base.get("p95_ms"),
                   mean_confidence=None if c_new is None else float(c_new),
                   baseline_mean_confidence=None if c_base is None else float(c_base))
    reasons = []
    for name, value, limit, text in checks:
        if value >= limit:
            shown = "inf" if isinstance(value, float) else _value_text(name, value, limit)
            reasons.append(f"{text}: {name.replace('_', ' ')} {shown} >= halt at {_value_text(name, limit, limit)}")
    return {"verdict": "halt" if reasons else "pass", "numbers": numbers, "reasons": reasons}


def _impossible(s: Mapping[str, Any], side: str) -> str | None:
    """What no real telemetry can say about one side (a part larger than its whole, a confidence outside [0, 1],
    a p95 latency of 0 ms or less: it is a bucket's upper bound, all above 0), or None. Such numbers would turn
    a comparison around -- a baseline with more errors than inferences lets any new error rate pass -- so the
    gate fails closed on them."""
    for part, whole in (("errors", "inferences"), ("feedback", "inferences"), ("feedback_wrong", "feedback"),
                        ("conf_n", "inferences")):
        if _count(s, side, part) > _count(s, side, whole):
            return f"{_count(s, side, part)} {part} of {_count(s, side, whole)} {whole}"
    raw = s.get(side) or {}
    conf_n = _count(s, side, "conf_n")
    try:
        conf_sum = exact(raw.get("conf_sum", 0))
        p95 = _p95(raw)
    except ValueError:
        return None  # not a number at all: reported as unusable below
    if conf_n and not 0 <= conf_sum <= conf_n:
        return f"confidence sum {float(conf_sum):g} over {conf_n} inferences is outside [0, 1] per inference"
    if p95 is not None and p95 <= 0:  # the lowest latency bucket's bound is above 0; a baseline of 0 hid the check
        return f"p95 latency {float(p95):g} ms"
    return None


def _value_text(name: str, value: Fraction, limit: Fraction) -> str:
    if name.endswith("increase"):
        return f"{show_pair(value * 100, limit * 100)[0]} points"
    return show_pair(value, limit)[0]


def _show4(x: Fraction) -> str:
    return f"{float(x):.4f}"


def _mean(side: Mapping[str, Any]) -> Fraction | None:
    n = side.get("conf_n")
    if isinstance(n, bool) or not isinstance(n, int) or n <= 0:
        return None
    return exact(side.get("conf_sum")) / n


def device_verdict(
    read: Mapping[str, Any] | None, spec: Mapping[str, Any], policy: Mapping[str, Any]
) -> dict[str, Any]:
    """Every baked model of one device: ``verdict`` (the worst: halt > insufficient_data > pass), ``models``,
    ``failure`` (why the device fails the live gate, or None) and ``reads`` (checks made)."""
    pol = live_gate_policy(policy)
    tel = (read or {}).get("telemetry") if isinstance(read, Mapping) else None
    if not isinstance(tel, Mapping):
        msg = str((read or {}).get("msg") or "") if isinstance(read, Mapping) else ""
        why = "no live telemetry read from this device in this run" + (f" ({msg.strip()[:300]})" if msg else "")
        models = {n: {"verdict": "insufficient_data", "reasons": [why], "numbers": {}}
                  for n in spec.get("models") or []}
    else:
        models = {n: model_verdict(tel.get(n), pol, (spec.get("versions") or {}).get(n))
                  for n in spec.get("models") or []}
    order = ("halt", "insufficient_data", "pass")
    verdict = min((m["verdict"] for m in models.values()), key=order.index, default="insufficient_data")
    failure = None
    if verdict != "pass":
        failure = "; ".join(f"{n}: live gate {m['verdict']}: {'; '.join(m['reasons'])}"
                            for n, m in sorted(models.items()) if m["verdict"] != "pass")
    reads = 0
    if isinstance(read, Mapping):
        reads = read.get("attempts", 1)
        # ansible-core reports attempts = retries (not retries + 1) when the until loop ran out: every one of
        # the retries + 1 checks was made
        if read.get("failed") and reads == spec.get("retries") and not bake_ready(read, spec):
            reads += 1
    return {"verdict": verdict, "models": models, "failure": failure, "reads": reads}


def live_wave_gate(
    plan: Mapping[str, Any], wave: int, reads: Mapping[str, Any], gate: Mapping[str, Any], bake: Mapping[str, Any]
) -> dict[str, Any]:
    """The live gate of wave ``wave``: ``gate`` (``edge_gate`` after the smoke gate) with the groups the live
    telemetry halts added to ``halted``, their installed devices to ``rollback_hosts`` and one decision per
    baked group (``kind: live``, per device verdict and numbers) to ``decisions``."""
    halted = dict(gate.get("halted") or {})
    rollback = set(gate.get("rollback_hosts") or [])
    decisions = list(gate.get("decisions") or [])
    devices = bake.get("devices") or {}
    by_group: dict[str, list[str]] = {}
    for h, spec in sorted(devices.items()):
        by_group.setdefault(spec["group"], []).append(h)
    for group, hosts in sorted(by_group.items()):
        pol = _policy(plan, group)
        verdicts = {h: device_verdict(reads.get(h), devices[h], pol) for h in hosts}
        failures = {h: v["failure"] for h, v in verdicts.items() if v["failure"]}
        wave_hosts = list(((plan.get("groups") or {}).get(group) or {}).get("waves", [[]] * wave)[wave - 1])
        raw_limit = ((plan["groups"][group].get("policy") or {}).get("max_fail_percent", 0))
        size = len(wave_hosts) or len(hosts)
        pct = Fraction(100 * len(failures), size)
        passed = pct <= exact(raw_limit)
        decisions.append({"group": group, "wave": wave, "kind": "live", "hosts": hosts, "failed": len(failures),
                          "devices": size, "fail_percent": round(float(pct), 2), "max_fail_percent": raw_limit,
                          "passed": passed, "live_gate": pol, "failures": failures,
                          "verdicts": {h: {"verdict": v["verdict"], "reads": v["reads"],
                                           "models": v["models"]} for h, v in verdicts.items()}})
        if not passed:
            shown, lim = show_pair(pct, exact(raw_limit))
            halted[group] = {"wave": wave, "gate": "live",
                             "reason": f"wave {wave} live gate: {len(failures)}/{size} device(s) failed ({shown}% > "
                             f"{lim}% allowed): " + "; ".join(f"{h}: {w}" for h, w in sorted(failures.items()))}
            rollback.update(hosts)
    return {**gate, "halted": halted, "rollback_hosts": sorted(rollback), "decisions": decisions}

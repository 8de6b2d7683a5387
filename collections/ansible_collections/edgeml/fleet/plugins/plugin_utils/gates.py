# Copyright (c) edgeml maintainers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""The wave health gate, in exact arithmetic.

Controller-only, pure functions over plain data (``plugin_utils/rollout.py`` and the ``edgeml.fleet.rollout``
filters call them). Every threshold comparison is exact: each number is taken as the decimal it was written
or reported as (an int as is; a float as its shortest round-trip decimal, ``repr``, which is what JSON and YAML
carry; a decimal string as written) and turned into a :class:`fractions.Fraction`, and all arithmetic is on
fractions. So ``1.0 - 0.98`` is exactly ``0.02`` and an increase of exactly the limit passes.

Inclusive or strict, as ``schemas/models.schema.json`` says for each key:

========================== ============================== ==========================================
key                        passes when                     fails when
========================== ============================== ==========================================
``require_smoke_pass``     the smoke test passed           it did not, or no result was reported
``max_p95_latency_ms``     p95 <= limit                    p95 > limit, or no p95 was reported
``max_error_rate_increase`` increase <= limit              increase > limit, or no new agreement
``min_mean_confidence``    confidence >= limit             confidence < limit, or none was reported
``max_fail_percent``       failed / wave <= limit %        failed / wave > limit % (the group halts)
========================== ============================== ==========================================

The error-rate increase is ``previous label agreement - new label agreement`` (error rate = 1 - label
agreement on the bundle's golden samples, both measured by the smoke test on the same device); a first
install has no previous agreement and nothing to compare. Unchanged devices were gated when they were
installed. A measurement the device did not report while its gate is set fails the gate: unknown is
never healthy. Messages show both numbers with as many decimals as it takes to tell them apart.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from fractions import Fraction
from typing import Any

__all__ = ["NOT_EVALUATED", "exact", "host_failure", "show_pair", "wave_gate"]

#: most decimals a message shows (values closer than this to the limit are shown with this many)
_MAX_PLACES = 30
#: largest decimal exponent accepted from a string (a double's range is about 1e-324..1e308)
_MAX_EXPONENT = 400


def exact(value: Any) -> Fraction:
    """``value`` as the exact decimal it was written as; ``ValueError`` for anything that is not a finite number."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is a boolean, not a number")
    if isinstance(value, (int, Fraction)):
        return Fraction(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{value!r} is not a finite number")
        return Fraction(Decimal(repr(value)))
    if isinstance(value, (str, Decimal)):
        try:
            d = Decimal(value.strip()) if isinstance(value, str) else value
        except InvalidOperation:
            raise ValueError(f"{value!r} is not a number") from None
        if not d.is_finite():
            raise ValueError(f"{value!r} is not a finite number")
        if abs(d.adjusted()) > _MAX_EXPONENT:  # a float's range; "1e999999" would cost a million-digit integer
            raise ValueError(f"{str(value)[:40]!r} is out of range for a measurement")
        return Fraction(d)
    raise ValueError(f"{value!r} is {type(value).__name__}, not a number")


def _decimals(x: Fraction) -> int | None:
    """Decimal places ``x`` needs to be written exactly, or None when it has no finite decimal form."""
    den = x.denominator
    twos = fives = 0
    while den % 2 == 0:
        den //= 2
        twos += 1
    while den % 5 == 0:
        den //= 5
        fives += 1
    return max(twos, fives) if den == 1 else None


def _fmt(x: Fraction, places: int) -> str:
    """``x`` rounded (half to even, exactly) to ``places`` decimals."""
    n = round(x * 10**places)
    digits = str(abs(n)).rjust(places + 1, "0")
    text = digits[:-places] + "." + digits[-places:] if places else digits
    return ("-" if n < 0 else "") + text


def _text(x: Fraction) -> str:
    places = _decimals(x)
    return _fmt(x, places if places is not None and places <= _MAX_PLACES else _MAX_PLACES)


def show_pair(value: Fraction, limit: Fraction) -> tuple[str, str]:
    """``value`` and ``limit`` as text, each exact when it has a short decimal form; a value without one
    gets as many decimals as it takes to differ from the limit, so two different numbers never read the
    same ("12% > 12%" cannot happen)."""
    shown_limit = _text(limit)
    places = _decimals(value)
    if places is not None and places <= _MAX_PLACES:
        return _fmt(value, places), shown_limit
    p = max(1, len(shown_limit.partition(".")[2]))
    while p < _MAX_PLACES and Fraction(Decimal(_fmt(value, p))) == exact(shown_limit):
        p += 1
    return _fmt(value, p), shown_limit


def _measure(m: Mapping[str, Any], key: str) -> Fraction | None:
    value = m.get(key)
    if value is None:
        return None
    return exact(value)


def host_failure(result: Mapping[str, Any] | None, gate: Mapping[str, Any]) -> str | None:
    """Why one device fails the health gate, or None when it passes (see the module docstring)."""
    if result is None:
        return "no result (unreachable or failed before converging)"
    if not result.get("ok"):
        return f"{result.get('status')}: {result.get('reason')}"
    for name, m in sorted((result.get("models") or {}).items()):
        if m.get("status") != "installed":
            continue  # unchanged devices were gated when they were installed; check mode has no smoke test
        why = _model_failure(m, gate)
        if why:
            return f"{name}: {why}"
    return None


def _model_failure(m: Mapping[str, Any], gate: Mapping[str, Any]) -> str | None:
    if gate.get("require_smoke_pass", True) and m.get("smoke_passed") is not True:
        return "smoke test did not pass" if m.get("smoke_passed") is False else "no smoke test result reported"
    try:
        max_p95 = gate.get("max_p95_latency_ms")
        if max_p95 is not None:
            limit, p95 = exact(max_p95), _measure(m, "p95_ms")
            if p95 is None:
                return "no smoke p95 latency reported (gate max_p95_latency_ms is set)"
            if p95 > limit:
                shown, lim = show_pair(p95, limit)
                return f"smoke p95 latency {shown} ms > gate {lim} ms"
        max_inc = gate.get("max_error_rate_increase")
        if max_inc is not None:
            limit = exact(max_inc)
            new, old = _measure(m, "label_agreement"), _measure(m, "previous_label_agreement")
            if old is not None:  # a first install has nothing to compare with
                if new is None:
                    return "no golden-set label agreement reported (gate max_error_rate_increase is set)"
                increase = old - new
                if increase > limit:
                    shown, lim = show_pair(increase * 100, limit * 100)
                    before, after = show_pair(old * 100, new * 100)
                    return (f"golden-set error rate rose by {shown} percentage points > gate {lim} "
                            f"(label agreement {before}% -> {after}%)")
        min_conf = gate.get("min_mean_confidence")
        if min_conf is not None:
            limit, conf = exact(min_conf), _measure(m, "mean_confidence")
            if conf is None:
                return "no mean confidence reported (gate min_mean_confidence is set)"
            if conf < limit:
                shown, lim = show_pair(conf, limit)
                return f"mean confidence {shown} < gate {lim}"
    except ValueError as exc:
        return f"unusable measurement or gate value: {exc}"
    return None


#: what a device reported about each model it installed in this run: the numbers a gate decision was made on
_MEASURED = ("smoke_passed", "p95_ms", "label_agreement", "previous_label_agreement", "mean_confidence")


def _measurements(hosts: list[str], results: Mapping[str, Any]) -> dict[str, Any]:
    """Per device and installed model, the measurements the gate read (for the audit trail)."""
    out: dict[str, Any] = {}
    for h in hosts:
        models = ((results.get(h) or {}).get("models") or {})
        got = {name: {k: m.get(k) for k in _MEASURED if m.get(k) is not None}
               for name, m in sorted(models.items()) if m.get("status") == "installed"}
        if got:
            out[h] = got
    return out


#: what a check-mode gate line says: nothing was installed, so there is nothing to gate (never "passed")
NOT_EVALUATED = "not evaluated (check mode installs nothing, so there is nothing to gate)"


def _unanswered(hosts: list[str], results: Mapping[str, Any]) -> dict[str, str]:
    """The devices of ``hosts`` that gave no answer in this run (no result, or an unreachable one), and why."""
    out: dict[str, str] = {}
    for h in hosts:
        r = results.get(h)
        if r is None:
            out[h] = "no answer from this device in this run"
        elif r.get("status") == "unreachable":
            out[h] = str(r.get("reason") or "no answer from this device in this run")
    return out


def wave_gate(
    plan: Mapping[str, Any], wave: int, results: Mapping[str, Any], halted: Mapping[str, Any] | None,
    check_mode: bool = False,
) -> dict[str, Any]:
    """Evaluate wave ``wave`` of every rollout group.

    ``results`` maps host -> ``edge_model_result`` (missing = no result). Returns ``halted`` (the groups
    halted so far, with the wave and reason), ``report`` (per group of this wave) and ``rollback_hosts``
    (devices of a failed wave that installed the new version and must be rolled back). A wave passes when
    ``failed * 100 <= max_fail_percent * devices`` (exact).

    ``check_mode``: nothing was installed, so there is no smoke test, latency or failure rate to gate: the gate
    is **not evaluated** (``passed`` None), never halts a group and rolls nothing back, so a plan goes on to show
    every following wave. The devices that did not answer are listed per group (``unreachable``) all the same.
    Every group's ``line`` is the one sentence the playbook shows for it.
    """
    halted = dict(halted or {})
    report: dict[str, Any] = {}
    rollback: list[str] = []
    for group, g in sorted((plan.get("groups") or {}).items()):
        waves = g.get("waves") or []
        if group in halted or wave > len(waves):
            continue
        hosts = list(waves[wave - 1])
        policy = g.get("policy") or {}
        gate = policy.get("health_gate") or {}
        raw_limit = policy.get("max_fail_percent", 0)
        unanswered = _unanswered(hosts, results)
        if check_mode:
            line = f"{group} wave {wave}: {len(hosts)} device(s), max {raw_limit}% failed: {NOT_EVALUATED}"
            if unanswered:
                line += f"; unreachable: {', '.join(sorted(unanswered))}"
            report[group] = {"wave": wave, "hosts": hosts, "failures": {}, "failed": 0, "devices": len(hosts),
                             "fail_percent": None, "max_fail_percent": raw_limit, "passed": None,
                             "evaluated": False, "unreachable": unanswered, "health_gate": dict(gate),
                             "measurements": {}, "line": line}
            continue
        failures = {h: why for h in hosts if (why := host_failure(results.get(h), gate))}
        try:
            limit = exact(raw_limit)
        except ValueError as exc:
            limit, failures = Fraction(0), {**failures, "(policy)": f"max_fail_percent unusable: {exc}"}
        pct = Fraction(100 * len(failures), len(hosts)) if hosts else Fraction(0)
        passed = pct <= limit
        head = f"{group} wave {wave}: {len(failures)}/{len(hosts)} failed, max {raw_limit}%: "
        report[group] = {"wave": wave, "hosts": hosts, "failures": failures, "failed": len(failures),
                         "devices": len(hosts), "fail_percent": round(float(pct), 2),
                         "max_fail_percent": raw_limit, "passed": passed, "evaluated": True,
                         "unreachable": unanswered, "health_gate": dict(gate),
                         "measurements": _measurements(hosts, results), "line": head + "passed"}
        if not passed:
            shown, lim = show_pair(pct, limit)
            halted[group] = {
                "wave": wave,
                "reason": f"wave {wave}: {len(failures)}/{len(hosts)} device(s) failed ({shown}% > {lim}% allowed): "
                + "; ".join(f"{h}: {w}" for h, w in sorted(failures.items())),
            }
            report[group]["line"] = head + "HALTED: " + halted[group]["reason"]
            rollback += [h for h in hosts if (results.get(h) or {}).get("status") == "installed"]
    return {"halted": halted, "report": report, "rollback_hosts": sorted(rollback)}

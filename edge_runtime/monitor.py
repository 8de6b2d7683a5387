"""The device-side monitor's rules: pure functions over per-minute aggregates, with the time passed in.

Nothing here reads a file, the clock or the store: :func:`evaluate` gets the rows
(:class:`~edge_runtime.telemetry.aggregate.MinuteAggregate`), the active version, when it was activated and
``now`` (seconds since the epoch), and returns findings. ``edge_runtime._monitor_run`` does the I/O (store,
device lock, self-rollback, facts) and ``edge-runtime monitor`` is its command. The settings and their
defaults live in :class:`MonitorConfig` (the ``monitor`` section of the device's ``config.json``).

Which minutes count (every rule)
--------------------------------
* Only rows of the *active* version of the model, and only minutes **since that version was activated**:
  a minute counts when its stamp is at or after the minute of activation (the runtime records
  ``activated_at`` on install, operator rollback and self-rollback) **and** after the last minute of any
  other version of the model in the rows (so a version rolled back to never inherits its own minutes from
  before the version it replaced, even where the activation time is unknown).
* Only **complete** minutes count: ``minute + 60 <= now``. The minute in progress is still changing.
* A row stamped **in the future** (``minute >= now`` rounded down to the minute, plus 60: the clock went
  backwards after it was written, or it was written while the clock ran ahead) never counts; it is reported
  as a ``clock`` finding and counts once the clock has passed it. An activation time in the future (the clock
  went back after the install) is reported the same way and nothing counts until the clock reaches it.
* **Consecutive means consecutive minute stamps** (each exactly 60 s after the one before). Every minute
  stamp is one minute however many rows carry it (duplicate rows are merged, and reported), so a clock
  stepped backwards that writes into minutes that already exist never makes a minute count twice.
* Rows the store returns are untrusted: a row that is not a valid aggregate (stamp not a whole minute,
  negative or inconsistent counts, a confidence sum outside ``[0, conf_n]`` or not finite) is ignored and
  reported (``rows`` finding); an ignored minute is a missing minute.
* At most ``lookback_minutes`` (default 24 h) before ``now`` are read.

The confidence rule (the field's rule; action ``rollback`` by default)
----------------------------------------------------------------------
A minute is **low** when at least ``min_inferences`` successful inferences (inferences with a top-1
confidence: ``conf_n``; an inference error has no confidence) were recorded in it and their mean top-1
confidence is **strictly below** ``confidence_threshold`` (``conf_sum / conf_n < 0.75``; exactly 0.75 is
not low). It is **healthy** when it has enough inferences and the mean is at or above the threshold, and
**insufficient** when it has fewer than ``min_inferences`` (a minute without a row has none).

The rule is **breached** when ``confidence_minutes`` (5) consecutive minute stamps since the activation are
all low. An insufficient minute **breaks the run** exactly as a healthy one does; it is not skipped.
Why: skipping would let five low minutes spread over hours of near-silence (a night shift with a handful
of inferences) add up to "five consecutive minutes", so a device would roll back on evidence the rule
never meant; a rollback quarantines a version on the device, so the rule must only fire on what it says.
The price: a device whose traffic hovers at the minimum may not fire at all; ``min_inferences`` is
configurable for such devices. A run that was complete at any time since the activation (inside the
lookback) breaches the rule, even if confidence recovered since: a monitor that ran late (the timer
missed, the device lock was busy) must not lose a breach.

The error rules (action ``report`` by default)
----------------------------------------------
* **Inference errors**: over the last ``error_window_minutes`` complete minutes since the activation, with
  at least ``error_min_inferences`` inferences, ``errors / count > error_rate_max`` (strictly above; equal
  passes).
* **Wrong against ground truth** (where the application attached feedback): over the last
  ``wrong_window_minutes`` complete minutes since the activation, with at least ``wrong_min_feedback``
  inferences that got feedback, ``feedback_wrong / feedback_n > wrong_rate_max`` (strictly above).

Fewer inferences (feedback) than the minimum → ``insufficient_data``, never a breach nor healthy. Both are
``report`` by default: an inference error can be the application's (an input of the wrong shape) and a
rise in wrong answers can be the world changing; a rollback would quarantine a good version on the
device. A device config can make either ``rollback``.

Data drift (report only)
------------------------
Per feature of the active version's ``baseline.json``, over the counted minutes of the last
``window_minutes`` of :class:`~edge_runtime._drift_config.DriftConfig` (the owner of the drift thresholds
and window; ``config.json`` ``drift``, the bundle's baseline ``drift`` object): :mod:`edge_runtime.drift`
judges PSI on the merged histograms and KS on the store's reservoir samples since the window's start, and
one ``drift`` finding reports the verdict (``drift``, ``ok``, ``insufficient_data``, ``invalid_baseline``,
``invalid_data``) with every feature's numbers. It never rolls back (a drift is a property of the inputs:
the previous version sees the same inputs); ``drift_action`` is ``report`` or ``off``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .errors import ConfigError, quote_untrusted
from .telemetry.aggregate import MinuteAggregate

if TYPE_CHECKING:
    from ._drift_config import DriftConfig

__all__ = [
    "ACTIONS",
    "DriftInput",
    "Evaluation",
    "Finding",
    "MonitorConfig",
    "confidence_rule",
    "drift_rule",
    "evaluate",
    "minute_floor",
    "rate_rule",
    "rollback_reason",
    "select_minutes",
]

#: what a breached rule does: roll the device back to its previous version, only report it, or nothing
ACTIONS = ("rollback", "report", "off")
MINUTE = 60


@dataclass(frozen=True)
class MonitorConfig:
    """Every threshold, window and action of the monitor, with its default (``config.json`` ``"monitor"``).

    Thresholds are compared exactly as documented in :mod:`edge_runtime.monitor`: the confidence threshold
    strictly (a mean equal to it is healthy), the rate maxima strictly (a rate equal to the maximum passes),
    every minimum count inclusively (a minute with exactly ``min_inferences`` counts).
    """

    #: a minute is low when its mean top-1 confidence is below this (strictly)
    confidence_threshold: float = 0.75
    #: consecutive low minutes that breach the confidence rule
    confidence_minutes: int = 5
    #: successful inferences a minute needs to be judged at all (fewer: insufficient, breaks a run)
    min_inferences: int = 20
    #: what a breach of the confidence rule does
    confidence_action: str = "rollback"
    #: inference errors (exceptions, non-finite outputs) per inference above which the error rule breaches
    error_rate_max: float = 0.05
    #: inferences the error window needs to be judged
    error_min_inferences: int = 100
    #: complete minutes (since the activation) the error rule looks at
    error_window_minutes: int = 10
    error_action: str = "report"
    #: wrong answers per inference with ground truth above which the wrong-answer rule breaches
    wrong_rate_max: float = 0.25
    #: inferences with feedback the window needs to be judged
    wrong_min_feedback: int = 50
    wrong_window_minutes: int = 60
    wrong_action: str = "report"
    #: ``report`` or ``off`` (a drift never rolls back: the previous version sees the same inputs); its
    #: thresholds and window are :class:`~edge_runtime._drift_config.DriftConfig`'s (``config.json`` ``drift``)
    drift_action: str = "report"
    #: how far back the monitor reads (minutes); bounds its work
    lookback_minutes: int = 1440
    #: seconds a self-rollback waits for the device lock (an install holding it) before reporting ``busy``
    lock_wait_s: float = 20.0

    def __post_init__(self) -> None:
        problems: list[str] = []
        for name in ("confidence_threshold", "error_rate_max", "wrong_rate_max"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not (math.isfinite(v) and 0 <= v <= 1):
                problems.append(f"{name} must be a number in [0, 1], got {quote_untrusted(v, 40)}")
        for name in (
            "confidence_minutes", "min_inferences", "error_min_inferences", "error_window_minutes",
            "wrong_min_feedback", "wrong_window_minutes", "lookback_minutes",
        ):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                problems.append(f"{name} must be an integer >= 1, got {quote_untrusted(v, 40)}")
        v = self.lock_wait_s
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not (math.isfinite(v) and 0 <= v <= 3600):
            problems.append(f"lock_wait_s must be a number of seconds in [0, 3600], got {quote_untrusted(v, 40)}")
        for name in ("confidence_action", "error_action", "wrong_action"):
            if getattr(self, name) not in ACTIONS:
                got = quote_untrusted(getattr(self, name))
                problems.append(f"{name} must be one of {', '.join(ACTIONS)}, got {got}")
        if self.drift_action not in ("report", "off"):
            problems.append(f"drift_action must be report or off, got {quote_untrusted(self.drift_action)}")
        if not problems and self.lookback_minutes < max(
            self.confidence_minutes, self.error_window_minutes, self.wrong_window_minutes
        ):
            problems.append("lookback_minutes must cover the longest rule window")
        if problems:
            raise ConfigError(
                "invalid monitor settings: " + "; ".join(problems),
                hint="fix the 'monitor' section of config.json (or `init --monitor-setting KEY=VALUE`)",
            )

    @classmethod
    def from_mapping(cls, doc: Mapping[str, Any] | None, what: str = "monitor settings") -> MonitorConfig:
        """The defaults with ``doc``'s overrides; unknown keys and wrong types are a :class:`ConfigError`."""
        if doc is None:
            return cls()
        hint = "fix the 'monitor' section of config.json (or `init --monitor-setting KEY=VALUE`)"
        if not isinstance(doc, Mapping):
            raise ConfigError(f"{what} must be an object, got {type(doc).__name__}", hint=hint)
        known = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(str(k) for k in doc if k not in known)
        if unknown:
            raise ConfigError(
                f"unknown {what}: {', '.join(quote_untrusted(k, 40) for k in unknown)}",
                hint=f"{hint}; known monitor settings: {', '.join(sorted(known))}",
            )
        changes: dict[str, Any] = {}
        for key, value in doc.items():
            want = known[key].type
            ok = (
                isinstance(value, str) if want == "str"
                else isinstance(value, int) and not isinstance(value, bool) if want == "int"
                else isinstance(value, (int, float)) and not isinstance(value, bool)
            )
            if not ok:
                raise ConfigError(f"{what}: {key} must be {want}, got {quote_untrusted(value, 40)}", hint=hint)
            changes[key] = float(value) if want == "float" else value
        return cls(**changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class Finding:
    """One rule's verdict for one model (or a note about the input, e.g. a clock that went backwards)."""

    #: ``confidence``, ``errors``, ``wrong``, ``drift``, ``clock``, ``rows``, ``rollback``
    rule: str
    model: str
    version: str | None
    #: ``ok``, ``breach``, ``insufficient_data``, ``off``, ``drift``, ``ignored``, and for ``rollback``:
    #: ``rolled_back``, ``cannot_roll_back``, ``busy``, ``changed``
    status: str
    #: what the breach does: ``rollback``, ``report`` or ``none``
    action: str
    #: one line for a person, with the numbers
    message: str
    #: the numbers, for a machine
    evidence: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class Evaluation:
    """All findings for one model's active version; ``rollback`` is the breach that asks for a rollback."""

    model: str
    version: str | None
    findings: list[Finding]
    rollback: Finding | None = None
    #: the minute from which rows counted (None: nothing could count)
    since: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "version": self.version,
            "since": self.since,
            "rollback": self.rollback.to_dict() if self.rollback else None,
            "findings": [f.to_dict() for f in self.findings],
        }


def minute_floor(t: float) -> int:
    """The start of the minute ``t`` (seconds since the epoch) falls in."""
    return math.floor(t) // MINUTE * MINUTE


def _row_problem(r: MinuteAggregate) -> str | None:
    """Why a row is not a valid aggregate, or None."""
    ints = (r.minute, r.count, r.errors, r.conf_n, r.feedback_n, r.feedback_wrong)
    if not all(isinstance(x, int) and not isinstance(x, bool) for x in ints):
        return "a count or the minute is not an integer"
    if r.minute % MINUTE:
        return f"minute {r.minute} is not the start of a minute"
    if min(ints[1:]) < 0:
        return "a negative count"
    if r.errors > r.count or r.conf_n > r.count:
        return f"errors ({r.errors}) or confidences ({r.conf_n}) exceed the inferences ({r.count})"
    if r.feedback_wrong > r.feedback_n:
        return f"more wrong answers ({r.feedback_wrong}) than feedback ({r.feedback_n})"
    s = r.conf_sum
    if isinstance(s, bool) or not isinstance(s, (int, float)) or not math.isfinite(s):
        return "the confidence sum is not a finite number"
    # a mean confidence is in [0, 1]; the float sum of conf_n values in [0, 1] may round a hair above conf_n
    if s < 0 or s > r.conf_n * (1 + 1e-9):
        return f"the confidence sum {s!r} is outside [0, {r.conf_n}]"
    return None


@dataclass
class _Minutes:
    """The rows of the active version that count, one merged row per minute stamp, and what was left out."""

    rows: dict[int, MinuteAggregate]
    since: int | None
    future: list[int]
    invalid: list[str]
    duplicates: int


def select_minutes(
    rows: Iterable[MinuteAggregate], model: str, version: str, activated_at: float | None, now: float,
    lookback_minutes: int,
) -> _Minutes:
    """Apply "which minutes count" (module docstring) to the store's rows of one model."""
    now_minute = minute_floor(now)
    oldest = now_minute - lookback_minutes * MINUTE
    since = oldest if activated_at is None else max(oldest, minute_floor(activated_at))
    mine: dict[int, MinuteAggregate] = {}
    future: list[int] = []
    invalid: list[str] = []
    duplicates = 0
    other_last: int | None = None
    for r in rows:
        if r.model != model:
            continue
        why = _row_problem(r)
        if why is not None:
            invalid.append(f"{r.version} minute {r.minute!r}: {why}")
            continue
        if r.version != version:
            # another version's rows, even future ones: when the clock is in doubt nothing counts
            other_last = r.minute if other_last is None else max(other_last, r.minute)
        if r.minute > now_minute:
            future.append(r.minute)
            continue
        if r.version != version:
            continue
        if r.minute in mine:
            duplicates += 1
            mine[r.minute] = _merged(mine[r.minute], r)
        else:
            mine[r.minute] = r
    if other_last is not None:
        since = max(since, other_last + MINUTE)
    counted = {m: r for m, r in mine.items() if since <= m and m + MINUTE <= now}
    return _Minutes(counted, since, sorted(future), invalid, duplicates)


def _merged(a: MinuteAggregate, b: MinuteAggregate) -> MinuteAggregate:
    """Two rows of the same minute as one (their counts and sums added)."""
    return MinuteAggregate(
        a.model, a.version, a.minute, a.count + b.count, a.errors + b.errors, a.conf_sum + b.conf_sum,
        a.conf_n + b.conf_n, a.feedback_n + b.feedback_n, a.feedback_wrong + b.feedback_wrong,
    )


def _below(value: float, threshold: float) -> str:
    """``value`` printed with as few decimals as show it is below ``threshold`` (0.7499 is not "0.75")."""
    for digits in range(2, 18):
        text = f"{value:.{digits}f}"
        if float(text) < threshold or digits == 17:
            return text
    return repr(value)  # pragma: no cover


def _num(value: float) -> str:
    return f"{value:g}"


def confidence_rule(minutes: Mapping[int, MinuteAggregate], cfg: MonitorConfig, model: str, version: str) -> Finding:
    """The confidence rule over the counted minutes (module docstring: low / healthy / insufficient)."""
    thr, need, min_n = cfg.confidence_threshold, cfg.confidence_minutes, cfg.min_inferences
    what = f"mean confidence < {_num(thr)} for {need} consecutive minutes (min {min_n} inferences/min)"
    if cfg.confidence_action == "off":
        return Finding("confidence", model, version, "off", "none", "confidence rule is off")
    run: list[int] = []
    breach: list[int] | None = None
    prev: int | None = None
    low = healthy = insufficient = 0
    for m in sorted(minutes):
        r = minutes[m]
        if prev is not None and m != prev + MINUTE:
            run = []  # a minute without a row in between: it had no inferences
        prev = m
        if r.conf_n < min_n:
            insufficient += 1
            run = []
        elif r.conf_sum / r.conf_n < thr:
            low += 1
            run.append(m)
            if len(run) >= need:
                breach = run[-need:]  # the latest complete run is the one reported
        else:
            healthy += 1
            run = []
    evidence: dict[str, Any] = {
        "threshold": thr, "minutes_required": need, "min_inferences": min_n,
        "minutes_low": low, "minutes_healthy": healthy, "minutes_insufficient": insufficient,
        "current_run": len(run),
    }
    if breach is not None:
        sel = [minutes[m] for m in breach]
        mean = sum(r.conf_sum for r in sel) / sum(r.conf_n for r in sel)
        evidence.update(
            mean_confidence=mean, run_start=breach[0], run_end=breach[-1] + MINUTE,
            per_minute=[{"minute": r.minute, "n": r.conf_n, "mean": r.conf_sum / r.conf_n} for r in sel],
            min_n=min(r.conf_n for r in sel),
        )
        message = (
            f"mean confidence {_below(mean, thr)} < {_num(thr)} for {need} consecutive minutes "
            f"(min {min_n} inferences/min)"
        )
        return Finding("confidence", model, version, "breach", cfg.confidence_action, message, evidence)
    if low + healthy == 0:
        return Finding(
            "confidence", model, version, "insufficient_data", "none",
            f"no minute with at least {min_n} inferences since the activation; rule: {what}", evidence,
        )
    return Finding(
        "confidence", model, version, "ok", "none",
        f"{len(run)} consecutive low minute(s) now (breach at {need}); rule: {what}", evidence,
    )


def rate_rule(
    minutes: Mapping[int, MinuteAggregate], now: float, *, rule: str, model: str, version: str, window: int,
    minimum: int, maximum: float, action: str,
) -> Finding:
    """``errors/count`` (rule ``errors``) or ``feedback_wrong/feedback_n`` (rule ``wrong``) over the last
    ``window`` complete minutes: breach when the rate is strictly above ``maximum`` with at least
    ``minimum`` inferences (feedback)."""
    if action == "off":
        return Finding(rule, model, version, "off", "none", f"{rule} rule is off")
    end = minute_floor(now)
    start = end - window * MINUTE
    sel = [r for m, r in minutes.items() if start <= m < end]
    if rule == "errors":
        n, bad, noun, bad_noun = sum(r.count for r in sel), sum(r.errors for r in sel), "inferences", "errors"
    else:
        n, bad = sum(r.feedback_n for r in sel), sum(r.feedback_wrong for r in sel)
        noun, bad_noun = "inferences with ground truth", "wrong"
    evidence: dict[str, Any] = {
        "window_minutes": window, "window_start": start, "window_end": end, "n": n, "bad": bad,
        "max_rate": maximum, "min_n": minimum,
    }
    if n < minimum:
        return Finding(
            rule, model, version, "insufficient_data", "none",
            f"{n} {noun} in the last {window} minutes (need {minimum})", evidence,
        )
    rate = bad / n
    evidence["rate"] = rate
    if rate > maximum:
        return Finding(
            rule, model, version, "breach", action,
            f"{bad_noun} rate {rate:.4g} > {_num(maximum)} over the last {window} minutes ({bad} of {n} {noun})",
            evidence,
        )
    return Finding(
        rule, model, version, "ok", "none",
        f"{bad_noun} rate {rate:.4g} <= {_num(maximum)} over the last {window} minutes ({bad} of {n} {noun})",
        evidence,
    )


@dataclass
class DriftInput:
    """What the drift rule needs besides the minutes: the baseline and settings of the active version, and
    the live samples (the store's reservoir of a feature since a minute; may raise an EdgeRuntimeError)."""

    #: the version's ``baseline.json`` document as read (untrusted; None when the bundle has none)
    baseline: Any
    config: DriftConfig
    samples: Callable[[str, int], Any]


def drift_rule(
    minutes: Mapping[int, MinuteAggregate], now: float, since: int | None, inp: DriftInput, *, model: str,
    version: str, action: str,
) -> Finding:
    """Data drift of the active version over the counted minutes of the drift window (module docstring)."""
    if action == "off":
        return Finding("drift", model, version, "off", "none", "drift rule is off")
    from .drift import evaluate_aggregates, parse_baseline
    from .errors import EdgeRuntimeError

    window = inp.config.window_minutes
    end = minute_floor(now)
    start = end - window * MINUTE if since is None else max(end - window * MINUTE, since)
    rows = [r for m, r in minutes.items() if start <= m < end]
    try:
        features = sorted(parse_baseline(inp.baseline)[0])
    except EdgeRuntimeError:
        features = []  # evaluate_aggregates reports the document
    try:
        samples = {name: inp.samples(name, start) for name in features}
    except EdgeRuntimeError as exc:
        return Finding("drift", model, version, "error", "none", f"drift not evaluated: {exc.message}", {})
    report = evaluate_aggregates(inp.baseline, rows, samples=samples, config=inp.config)
    verdict = str(report["verdict"])
    per = [
        {k: f.get(k) for k in ("feature", "verdict", "n", "n_ks", "psi", "ks_statistic", "p_value", "reason")}
        for f in report["findings"]
    ]
    evidence = {"window_minutes": window, "window_start": start, "window_end": end, "verdict": verdict,
                "drifted": report["drifted"], "features": per, "skipped_minutes": report.get("skipped_minutes")}
    what = f"over the last {window} minutes"
    if verdict == "drift":
        reasons = "; ".join(str(f["reason"]) for f in per if f["verdict"] == "drift")
        return Finding("drift", model, version, "drift", action, f"data drift {what}: {reasons}", evidence)
    reasons = "; ".join(str(f["reason"]) for f in per) or "no feature"
    return Finding("drift", model, version, verdict, "none", f"{verdict} {what}: {reasons}", evidence)


def evaluate(
    model: str,
    version: str,
    activated_at: float | None,
    rows: Sequence[MinuteAggregate],
    now: float,
    cfg: MonitorConfig,
    *,
    drift: DriftInput | None = None,
) -> Evaluation:
    """Every rule for the active ``version`` of ``model`` at time ``now``; the first breach whose action is
    ``rollback`` (in the order confidence, errors, wrong) is the evaluation's ``rollback``.

    ``activated_at``: when the version became active (seconds since the epoch), None when unknown (then the
    data boundary and the lookback alone bound the minutes). ``drift``: the baseline, settings and samples
    of the drift rule (None: the drift rule is not evaluated).
    """
    sel = select_minutes(rows, model, version, activated_at, now, cfg.lookback_minutes)
    findings: list[Finding] = []
    now_minute = minute_floor(now)
    if activated_at is not None and minute_floor(activated_at) > now_minute:
        findings.append(Finding(
            "clock", model, version, "ignored", "none",
            f"{version} was activated {activated_at - now:.0f} s in the future of this clock (the clock went "
            "backwards?); no minute counts until the clock reaches the activation",
            {"activated_at": activated_at, "now": now},
        ))
    if sel.future:
        findings.append(Finding(
            "clock", model, version, "ignored", "none",
            f"{len(sel.future)} minute row(s) stamped up to {sel.future[-1] - now_minute} s in the future (the "
            "clock went backwards?); ignored until the clock reaches them",
            {"future_rows": len(sel.future), "latest": sel.future[-1], "now": now},
        ))
    if sel.invalid or sel.duplicates:
        findings.append(Finding(
            "rows", model, version, "ignored", "none",
            (f"{len(sel.invalid)} invalid row(s) ignored (first: {sel.invalid[0]})" if sel.invalid else "")
            + ("; " if sel.invalid and sel.duplicates else "")
            + (f"{sel.duplicates} duplicate minute row(s) merged" if sel.duplicates else ""),
            {"invalid": sel.invalid[:5], "invalid_rows": len(sel.invalid), "duplicates": sel.duplicates},
        ))
    conf = confidence_rule(sel.rows, cfg, model, version)
    if conf.status != "off":
        # the newest complete minute, for a gauge (edge_runtime.metrics): its mean only with enough inferences
        last = now_minute - MINUTE
        r = sel.rows.get(last)
        n = r.conf_n if r is not None else 0
        conf.evidence.update(last_minute=last, last_n=n,
                             last_mean=r.conf_sum / n if r is not None and n >= cfg.min_inferences else None)
    findings.append(conf)
    findings.append(rate_rule(
        sel.rows, now, rule="errors", model=model, version=version, window=cfg.error_window_minutes,
        minimum=cfg.error_min_inferences, maximum=cfg.error_rate_max, action=cfg.error_action,
    ))
    findings.append(rate_rule(
        sel.rows, now, rule="wrong", model=model, version=version, window=cfg.wrong_window_minutes,
        minimum=cfg.wrong_min_feedback, maximum=cfg.wrong_rate_max, action=cfg.wrong_action,
    ))
    if drift is not None:
        findings.append(drift_rule(sel.rows, now, sel.since, drift, model=model, version=version,
                                   action=cfg.drift_action))
    rollback = next((f for f in findings if f.status == "breach" and f.action == "rollback"), None)
    return Evaluation(model, version, findings, rollback, sel.since)


def rollback_reason(finding: Finding) -> str:
    """The reason recorded with a self-rollback: ``self-rollback: <the breach, with its numbers>``."""
    return f"self-rollback: {finding.message}"

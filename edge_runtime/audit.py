"""The audit trail: release and deploy decisions as JSON + Markdown reports, and one append-only history.

Controller / release side only (never on a device). Two things live under the reports directory:

* ``releases/<model>-<version>-<time>.json`` and ``.md``: one report per ``edge-release publish`` run, refused
  ones included (who signed, what changed where, the gate decision with its numbers).
* ``history/events.jsonl``: **the** history of the fleet, one JSON object per line, appended by every release
  (``edge-release publish``) and every deploy and rollback (``edgeml.fleet.fleet_report``). Other tools extend
  it by appending events of their own ``kind``; readers skip kinds they do not know.

History format (``HISTORY_SCHEMA`` 1), one line per event::

    {"schema": 1, "at": "2026-12-03T05:40:00Z", "kind": "release" | "deploy" | "rollback" | ...,
     "subject": "defect-classifier 1.1.0", "summary": "one line for a person", "data": {...kind specific...},
     "reports": ["reports/releases/....json", ...]}

Why JSON lines and not SQLite: the history is written by a few tools a few times a day and read by people and
CI, so it must be appendable without a schema migration, readable with ``grep``/``jq``, diffable, and safe as a
CI artifact; an append under ``flock`` with ``O_APPEND`` + ``fsync`` is atomic per line on a local file system.
A reader tolerates a torn last line (a crash mid-append) and reports it instead of failing. Queries:
``history/history.db`` (:mod:`edge_runtime.history`) mirrors every line into SQLite, as an index of this
journal (rebuildable from it), beside the per-device rows of the health runs.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterator, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

__all__ = ["HISTORY_SCHEMA", "append_event", "fleet_event", "gates_markdown", "history_path", "parse_event",
           "read_events", "release_markdown", "write_release_report"]

HISTORY_SCHEMA = 1
#: an event line longer than this is refused (a report belongs in its own file; the history only points to it)
MAX_EVENT_BYTES = 256 * 1024


def history_path(reports_dir: Path) -> Path:
    return Path(reports_dir) / "history" / "events.jsonl"


def _stamp(now: datetime) -> str:
    return now.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def append_event(reports_dir: Path, kind: str, subject: str, summary: str, data: Mapping[str, Any],
                 reports: list[str] | None = None, now: datetime | None = None) -> dict[str, Any]:
    """Append one event to the history (created on first use); return it. Atomic per line, durable on return."""
    event = {"schema": HISTORY_SCHEMA, "at": _stamp(now or datetime.now(timezone.utc)), "kind": kind,
             "subject": subject, "summary": summary, "data": dict(data), "reports": list(reports or [])}
    line = (json.dumps(event, sort_keys=True, ensure_ascii=False, allow_nan=False, default=str) + "\n").encode()
    if len(line) > MAX_EVENT_BYTES:
        raise ValueError(f"history event of {len(line)} bytes is larger than {MAX_EVENT_BYTES}")
    path = history_path(reports_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)
    return event


def read_events(reports_dir: Path, kind: str | None = None) -> Iterator[dict[str, Any]]:
    """The history's events, oldest first; a line that is not a schema-1 event (a torn last line) is yielded as
    ``{"kind": "unreadable", "line": N}`` so a reader sees it instead of failing."""
    path = history_path(reports_dir)
    if not path.exists():
        return
    with path.open("rb") as fh:
        for n, raw in enumerate(fh, 1):
            event = parse_event(raw) or {"kind": "unreadable", "line": n}
            if kind is None or event.get("kind") == kind:
                yield event


def parse_event(raw: bytes) -> dict[str, Any] | None:
    """One history line as an event, or None when it is not a schema-1 event (torn, edited, foreign)."""
    try:
        event = json.loads(raw)
    except ValueError:
        return None
    return event if isinstance(event, dict) and event.get("schema") == HISTORY_SCHEMA else None


def release_markdown(r: Mapping[str, Any]) -> str:
    """The release report for a person: decision, gate numbers, what changed where, who signed."""
    g = r["gate"]
    ev = r["evaluation"]
    lines = [f"# Release {r['model']} {r['version']}: {r['decision'].upper()}", ""]
    if r.get("reason"):
        lines += [f"**Why:** {r['reason']}", ""]
    lines += ["| | |", "|---|---|",
              f"| gate | held-out accuracy >= {g['min']:.4f}: **{'passed' if g['passed'] else 'FAILED'}** "
              f"(margin {g['margin']:+.4f}) |",
              f"| held-out accuracy | {g['value']:.4f} ({ev['correct']}/{ev['n']}) |",
              "| per class | " + ", ".join(f"{k} {v:.4f}" for k, v in ev["per_class_accuracy"].items()) + " |"]
    prev = r.get("previous")
    if prev:
        lines.append(f"| previous ({prev['version']}) | {prev['accuracy']:.4f} "
                     f"({g['value'] - prev['accuracy']:+.4f}) |")
    lines.append(f"| model | {r.get('source') or '?'} |")
    if r.get("digest"):
        lines += [f"| bundle | `{r['bundle']}` ({r['registry_result']}) |",
                  f"| manifest digest | `{r['digest']}` |",
                  f"| release counter | {r['release_counter']} |",
                  "| signed by | " + ", ".join(f"`{k[:16]}`" for k in r["signed_by"])
                  + (f" (trust root version {r['trust_root_version']})" if r.get("trust_root_version") else "")
                  + " |"]
    if r.get("branch"):
        pins = ", ".join(f"{grp}: {old} -> {r['version']}" for grp, old in r["pins"].items()) or "catalogue only"
        lines += [f"| models.yaml | branch `{r['branch']}` ({r['commit'][:12]}): {pins} |"]
    return "\n".join(lines) + "\n"


def write_release_report(reports_dir: Path, result: Mapping[str, Any], now: datetime) -> list[str]:
    """Write ``releases/<model>-<version>-<time>.json`` and ``.md`` and append the release to the history."""
    from ._fsutil import atomic_write_bytes

    stamp = now.astimezone(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    d = Path(reports_dir) / "releases"
    d.mkdir(parents=True, exist_ok=True)
    base = d / f"{result['model']}-{result['version']}-{stamp}"
    files = [str(base.with_name(base.name + ".json")), str(base.with_name(base.name + ".md"))]
    atomic_write_bytes(Path(files[0]), (json.dumps(result, indent=2, sort_keys=True, default=str) + "\n").encode())
    atomic_write_bytes(Path(files[1]), release_markdown(result).encode())
    g = result["gate"]
    summary = (f"{result['decision']}: accuracy {g['value']:.4f} vs gate {g['min']:.4f} ({g['margin']:+.4f})"
               + (f", signed by {', '.join(k[:16] for k in result['signed_by'])}" if result.get("signed_by") else "")
               + (f", branch {result['branch']}" if result.get("branch") else ""))
    append_event(reports_dir, "release", f"{result['model']} {result['version']}", summary,
                 {k: result.get(k) for k in ("decision", "gate", "evaluation", "previous", "digest", "bundle",
                                             "signed_by", "trust_root_version", "branch", "commit", "pins",
                                             "release_counter", "reason")},
                 files, now)
    return files


#: device results that changed what a device runs (the rest is unchanged, skipped or planned only)
_CHANGED = ("installed", "rolled_back", "quarantined", "failed")


def fleet_event(kind: str, report: Mapping[str, Any], plan: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """The history entry of a deploy or rollback report (``edgeml.fleet.fleet_report``): a summary line and its
    data: counts, every halted group with the gate's reason (the numbers are in it), every device that changed
    or failed with the manifest digest it was given (join with the ``release`` event by digest for the signers),
    and every rollback or quarantine with its reason."""
    hosts = plan.get("hosts") or {}
    changes, problems = [], []
    for row in report.get("rows") or []:
        want = ((hosts.get(row["device"]) or {}).get("models") or {}).get(row["model"]) or {}
        entry = {"device": row["device"], "group": row.get("group"), "wave": row.get("wave"), "model": row["model"],
                 "desired": row.get("desired"), "reported": row.get("reported"), "previous": row.get("previous"),
                 "digest": want.get("digest"), "result": row["result"], "reason": row.get("reason") or ""}
        if row["result"] in _CHANGED:
            changes.append(entry)
        if row["result"] not in ("unchanged", "installed", "would_change"):
            problems.append(entry)
    counts = dict(report.get("counts") or {})
    halted = {g: dict(h) for g, h in (report.get("halted") or {}).items()}
    summary = (f"{kind} {'FAILED' if report.get('failed') else 'ok'}: "
               + ", ".join(f"{n} {r}" for r, n in sorted(counts.items()))
               + "".join(f"; {g} halted at wave {h.get('wave')}: {h.get('reason')}" for g, h in sorted(halted.items())))
    data = {"failed": bool(report.get("failed")), "counts": counts, "halted": halted, "changes": changes,
            "problems": problems, "excluded": list(report.get("excluded") or []),
            "gates": list(report.get("gates") or [])}
    return summary[:2000], data


def _live_cell(host: str, v: Mapping[str, Any]) -> str:
    """One device of a live gate decision for the Markdown table (the JSON has every number)."""
    parts = []
    for model, m in sorted((v.get("models") or {}).items()):
        n = m.get("numbers") or {}
        text = f"{host} {model} {m.get('verdict')}"
        if n.get("error_rate") is not None:
            text += (f" (error rate {n.get('basis')} {100 * n['baseline_error_rate']:.2f}% -> "
                     f"{100 * n['error_rate']:.2f}%, n={n.get('inferences')}/{n.get('baseline_inferences')}")
            if n.get("mean_confidence") is not None and n.get("baseline_mean_confidence") is not None:
                text += f", confidence {n['baseline_mean_confidence']:.3f} -> {n['mean_confidence']:.3f}"
            text += f", p95 {n.get('baseline_p95_ms')} -> {n.get('p95_ms')} ms)"
        parts.append(text.replace("|", "/"))
    return "; ".join(parts) or f"{host} -"


def gates_markdown(gates: list[Mapping[str, Any]]) -> str:
    """The run's wave gate decisions as a Markdown section (empty without any)."""
    if not gates:
        return ""
    lines = ["", "## Gate decisions", "", "| group | wave | failed | limit | decision | health gate |",
             "|---|---|---|---|---|---|"]
    for g in gates:
        rule = ", ".join(f"{k} {v}" for k, v in sorted((g.get("health_gate") or {}).items())) or "-"
        if g.get("kind") == "live":  # the live canary gate: each baked device's verdict with its numbers
            rule = "live: " + "; ".join(_live_cell(h, v) for h, v in sorted((g.get("verdicts") or {}).items()))
        lines.append(f"| {g.get('group')} | {g.get('wave')} | {g.get('failed')}/{g.get('devices')} "
                     f"({g.get('fail_percent')}%) | {g.get('max_fail_percent')}% | "
                     f"{'passed' if g.get('passed') else 'HALTED'} | {rule} |")
    return "\n".join(lines) + "\n"

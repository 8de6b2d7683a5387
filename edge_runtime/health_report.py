"""The health report of ``playbooks/health.yml`` as files people and machines read (controller side only).

One run writes one set, ``health-<run id>.{json,md,html}``, and ``health-latest.{json,md,html}`` (the deploy and
rollback reports own ``latest.{json,md}``: a health run from cron must not replace the report of the last
deploy), each atomically:

* JSON for machines, valid against ``schemas/health-report.schema.json`` (tested with jsonschema);
* Markdown for a pull-request comment or CI job summary: what is wrong and where first, details after, at
  most :data:`MD_MAX_BYTES` (GitHub's comment limit is 65,536 characters);
* a self-contained HTML dashboard: charts drawn by matplotlib as inline SVG. No JavaScript, no network, no
  external file: it opens anywhere, offline, and cannot raise console errors. Why not plotly: its offline
  bundle alone is 4.8 MB (plotly 7.1), which leaves nothing of the 5 MB budget for 10,000 devices; the charts
  here are aggregates and the worst devices, which static SVG shows well (tooltips: SVG ``<title>``).
"""

from __future__ import annotations

import gc
import html
import io
import json
import re
import sqlite3
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["MD_MAX_BYTES", "SCHEMA_NAME", "html_report", "markdown", "write_reports"]

SCHEMA_NAME = "health-report.schema.json"
MD_MAX_BYTES = 60_000
#: devices drawn individually in the per-device charts (the worst ones); the rest are in the tables/JSON
WORST_DEVICES = 10
STATUS_ORDER = ("unknown", "rolled_back", "degraded", "out_of_sync", "in_sync")
COLORS = {"in_sync": "#2e7d32", "out_of_sync": "#f9a825", "degraded": "#ef6c00", "rolled_back": "#c62828",
          "unknown": "#616161"}


def _label(status: str) -> str:
    return status.replace("_", " ")


_MD_SPECIAL = re.compile(r"([\\`*\[\]<>|~!&#$])")


def _md(x: Any, limit: int = 400) -> str:
    """Untrusted text (device names, device-reported versions and reasons) as inert Markdown inline text: one
    line, no control characters, every character Markdown/GitHub gives a meaning to (table ``|``, code, emphasis,
    links and images, HTML, math ``$``, entities) backslash-escaped, and ``@`` kept from mentioning anyone."""
    text = "".join(ch if ch.isprintable() else " " for ch in " ".join(str(x).split()))[:limit]
    return _MD_SPECIAL.sub(r"\\\1", text).replace("@", "@\u200b")


def markdown(report: Mapping[str, Any]) -> str:
    """The report for a person: verdict, broken limits, the problem devices by status; then versions and details.
    Every name, version and reason in it goes through :func:`_md` (a PR comment must not be injectable)."""
    c = report["counts"]
    head = [f"# Fleet health {_md(report['run_id'])}: {'FAILED' if report['failed'] else 'OK'}", "",
            f"**{report['total']} devices**: " + ", ".join(f"{c[s]} {_label(s)}" for s in reversed(STATUS_ORDER)), ""]
    for b in report["breaches"]:
        head.append(f"- **limit exceeded**: {_md(b['message'])}")
    if report["unreachable"]:
        head.append(f"- **unreachable ({len(report['unreachable'])})**: "
                    + ", ".join(_md(h, 200) for h in report["unreachable"][:50])
                    + (" ..." if len(report["unreachable"]) > 50 else ""))
    if report.get("deploy_in_progress"):
        head.append(f"- note: {_md(report['deploy_in_progress'])}")
    body: list[str] = []
    bad = [d for d in report["devices"] if d["status"] != "in_sync"]
    bad.sort(key=lambda d: (STATUS_ORDER.index(d["status"]), d["device"]))
    if bad:
        body += ["", "## What is wrong, where", "", "| device | group | status | why |", "|---|---|---|---|"]
        for d in bad:
            body.append(f"| {_md(d['device'], 200)} | {_md(d['group'], 200)} | **{_label(d['status'])}** | "
                        f"{_md('; '.join(d['reasons']))} |")
    body += ["", "## Versions per group", "", "| group | model | versions (devices) |", "|---|---|---|"]
    for g, models in sorted(report["versions"].items()):
        for m, vs in sorted(models.items()):
            body.append(f"| {_md(g, 200)} | {_md(m, 200)} | "
                        + ", ".join(f"{_md(v, 100)}: {n}" for v, n in sorted(vs.items())) + " |")
    body += ["", "## Devices", "",
             "| device | status | model | desired | reported | p95 ms | confidence | inferences |",
             "|---|---|---|---|---|---|---|---|"]
    for d in sorted(report["devices"], key=lambda d: (STATUS_ORDER.index(d["status"]), d["device"])):
        for m in d["models"]:
            t = m.get("telemetry") or {}
            body.append(f"| {_md(d['device'], 200)} | {_label(d['status'])} | {_md(m['model'], 200)} | "
                        f"{_md(m['desired'], 100)} | {_md(m['reported'] or '-', 100)} | "
                        f"{_fmt(t.get('p95_latency_ms'))} | {_fmt(t.get('mean_confidence'))} "
                        f"| {t.get('inferences', '-') if t else '-'} |")
    text = "\n".join(head)
    for line in body:
        if len(text.encode()) + len(line.encode()) + 200 > MD_MAX_BYTES:
            text += f"\n\n... cut at {MD_MAX_BYTES // 1000} kB: the full list is in the JSON and HTML report."
            break
        text += "\n" + line
    return text + "\n"


def _fmt(x: Any) -> str:
    return "-" if x is None else (f"{x:.3f}" if isinstance(x, float) else str(x))


# ------------------------------------------------------------------------------------------------ HTML ----


#: the root element matplotlib's SVG backend writes: size in points and a viewBox of the whole figure
_SVG_ROOT = re.compile(r'<svg ([^>]*?)width="([\d.]+)pt" height="([\d.]+)pt" viewBox="0 0 [\d.]+ [\d.]+"')
#: matplotlib's default margin around a tight bounding box (rcParams["savefig.pad_inches"])
_PAD_INCHES = 0.1


def _svg(fig: Any) -> str:
    """The figure as an ``<svg>`` element cropped to its tight bounding box, drawn once.

    ``savefig(bbox_inches="tight")`` draws a figure twice (a dry run to find the box, then the drawing). Here
    the figure is drawn once; the box is measured with the renderer of that drawing (its text layout is cached)
    and the SVG's viewBox is set to it: the same size and picture as the tight variant, ~30 % less drawing CPU."""
    boxes: list[Any] = []
    cid = fig.canvas.mpl_connect("draw_event", lambda ev: boxes.append(fig.get_tightbbox(ev.renderer)))
    buf = io.StringIO()
    fig.savefig(buf, format="svg")
    fig.canvas.mpl_disconnect(cid)
    text = buf.getvalue()
    text = text[text.index("<svg"):]
    start, end = text.find("<metadata>"), text.find("</metadata>")
    text = text[:start] + text[end + len("</metadata>"):] if 0 <= start < end else text
    root = _SVG_ROOT.match(text)
    if not boxes or root is None:  # not what this matplotlib writes: the whole figure, uncropped
        return text
    box = boxes[-1].padded(_PAD_INCHES)  # inches; the SVG backend draws at 72 dpi, y downwards
    x0, y0, w, h = box.x0 * 72, float(root.group(3)) - box.y1 * 72, box.width * 72, box.height * 72
    return (f'{text[:root.start()]}<svg {root.group(1)}width="{w:.2f}pt" height="{h:.2f}pt" '
            f'viewBox="{x0:.2f} {y0:.2f} {w:.2f} {h:.2f}"{text[root.end():]}')


def _worst(report: Mapping[str, Any], key: str, reverse: bool) -> list[Mapping[str, Any]]:
    def value(d: Mapping[str, Any]) -> float | None:
        vals = [float(v) for m in d["models"] if isinstance(v := (m.get("telemetry") or {}).get(key), (int, float))]
        return (max(vals) if reverse else min(vals)) if vals else None

    scored = [(v, d) for d in report["devices"] if (v := value(d)) is not None]
    scored.sort(key=lambda p: p[0], reverse=reverse)
    return [d for _, d in scored[:WORST_DEVICES]]


def _charts(report: Mapping[str, Any], trend: Mapping[str, Any], deploy: Mapping[str, Any] | None) -> dict[str, str]:
    import matplotlib

    # parse_math off: labels carry device-reported versions and names; "$\\x$" would be parsed as mathtext (and a
    # malformed one raise, losing the whole dashboard)
    matplotlib.rcParams.update({"svg.fonttype": "none", "font.size": 9, "svg.hashsalt": "edgeml",
                                "text.parse_math": False})
    from datetime import datetime, timezone

    # Figure objects without pyplot: no backend machinery, no global figure registry (cheaper to import, and
    # nothing to close); savefig(format="svg") uses the SVG backend
    from matplotlib.figure import Figure

    def subplots(*shape: int, figsize: tuple[float, float]) -> tuple[Any, Any]:
        fig = Figure(figsize=figsize)
        return fig, fig.subplots(*shape)

    charts: dict[str, str] = {}
    # 1. versions per group
    fig, ax = subplots(figsize=(7, 0.5 + 0.45 * max(1, sum(len(m) for m in report["versions"].values()))))
    y = 0
    ticks = []
    for g, models in sorted(report["versions"].items()):
        for m, vs in sorted(models.items()):
            left = 0
            for v, n in sorted(vs.items()):
                bar = ax.barh(y, n, left=left, label=v)
                bar[0].set_gid(f"{g}-{m}-{v}")
                ax.text(left + n / 2, y, f"{v} ({n})", ha="center", va="center", fontsize=8)
                left += n
            ticks.append(f"{g} / {m}")
            y += 1
    ax.set_yticks(range(len(ticks)), ticks)
    ax.set_xlabel("devices")
    ax.set_title("Versions per group (reported)")
    charts["versions"] = _svg(fig)
    # 2. sync status: this run and the trend across runs
    fig, (a1, a2) = subplots(1, 2, figsize=(10, 3))
    sts = list(reversed(STATUS_ORDER))
    a1.bar([_label(s) for s in sts], [report["counts"][s] for s in sts], color=[COLORS[s] for s in sts])
    a1.set_title(f"Status now ({report['total']} devices)")
    a1.tick_params(axis="x", labelrotation=20)
    runs = list(trend.get("runs") or [])
    if runs:
        xs = list(range(len(runs)))
        for s in sts:
            a2.plot(xs, [r[s] for r in runs], marker="o", ms=3, color=COLORS[s], label=_label(s))
        a2.set_xticks(xs[:: max(1, len(xs) // 6)], [r["at"][5:16] for r in runs][:: max(1, len(xs) // 6)],
                      rotation=20)
        a2.legend(fontsize=7)
    a2.set_title(f"Status over the last {len(runs)} runs")
    charts["status"] = _svg(fig)
    # 3 + 4. latency and confidence per device over time (worst devices, per minute of this run's window)
    for key, title, reverse, idx in (("p95_latency_ms", "p95 latency (ms)", True, 3),
                                     ("mean_confidence", "mean top-1 confidence", False, 2)):
        fig, ax = subplots(figsize=(10, 3.2))
        for d in _worst(report, key, reverse):
            for m in d["models"]:
                series = (m.get("telemetry") or {}).get("series") or []
                pts: list[tuple[Any, float]] = [(datetime.fromtimestamp(p[0], timezone.utc), p[idx]) for p in series
                                                if p[idx] is not None]
                if pts:
                    ax.plot([p[0] for p in pts], [p[1] for p in pts], marker=".", lw=1,
                            label=f"{d['device']} {m['model']}")
        hist = trend.get("devices") or {}
        if not ax.lines and hist:  # no per-minute series: the numbers across health runs
            for dev, runs_of in hist.items():
                ax.plot([p["at"][5:16] for p in runs_of], [p[key] for p in runs_of], marker="o", label=dev)
        ax.set_title(f"{title} per device over time ({WORST_DEVICES} worst devices)")
        if ax.lines:
            ax.legend(fontsize=7, ncol=2)
        else:
            ax.text(0.5, 0.5, "no telemetry in the window", ha="center", transform=ax.transAxes)
        fig.autofmt_xdate()
        charts["latency" if idx == 3 else "confidence"] = _svg(fig)
    # 5. drift per feature: devices drifting and the largest PSI per feature
    per: dict[str, list[float]] = {}
    drifting: dict[str, int] = {}
    for d in report["devices"]:
        for dr in d.get("drift") or ():
            for f in dr.get("features") or ():
                name = f"{dr['model']}:{f.get('feature')}"
                if isinstance(f.get("psi"), (int, float)):
                    per.setdefault(name, []).append(float(f["psi"]))
                drifting[name] = drifting.get(name, 0) + (f.get("verdict") == "drift")
    fig, ax = subplots(figsize=(10, 3))
    names = sorted(set(per) | set(drifting))
    if names:
        ax.bar(names, [drifting.get(n, 0) for n in names], color="#ef6c00", label="devices with drift")
        ax2 = ax.twinx()
        ax2.plot(names, [max(per.get(n, [0])) for n in names], "o", color="#1565c0", label="max PSI")
        ax2.set_ylabel("max PSI")
        ax.set_ylabel("devices with drift")
        ax.legend(loc="upper left", fontsize=7)
    else:
        ax.text(0.5, 0.5, "no drift evaluation reported", ha="center", transform=ax.transAxes)
    ax.set_title("Data drift per feature")
    charts["drift"] = _svg(fig)
    # 6. gate decisions of the last deploy
    fig, ax = subplots(figsize=(10, 3))
    if deploy:
        data = deploy.get("data") or {}
        counts = data.get("counts") or {}
        ax.bar(list(counts), list(counts.values()), color="#1565c0")
        halted = data.get("halted") or {}
        ax.set_title(f"Last {deploy.get('kind')} ({deploy.get('at')}): results"
                     + (f"; HALTED: {', '.join(sorted(halted))}" if halted else "; no group halted"))
    else:
        ax.text(0.5, 0.5, "no deploy in the history", ha="center", transform=ax.transAxes)
        ax.set_title("Gate decisions of the last deploy")
    charts["gates"] = _svg(fig)
    return charts


CSS = """body{font-family:sans-serif;margin:1.5em;color:#222}table{border-collapse:collapse;font-size:13px}
td,th{border:1px solid #ccc;padding:2px 6px;text-align:left}.bad{color:#c62828;font-weight:bold}
figure{margin:1em 0}svg{max-width:100%;height:auto}"""


def html_report(report: Mapping[str, Any], trend: Mapping[str, Any], deploy: Mapping[str, Any] | None) -> str:
    """The dashboard: verdict and problems first, then one ``<figure class="chart">`` (inline SVG) per chart."""
    e = html.escape
    c = report["counts"]
    parts = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>Fleet health {e(report['run_id'])}"
             f"</title><style>{CSS}</style></head><body>",
             f"<h1>Fleet health {e(report['run_id'])}: <span class='{'bad' if report['failed'] else ''}'>"
             f"{'FAILED' if report['failed'] else 'OK'}</span></h1>",
             "<p>" + ", ".join(f"{c[s]} {_label(s)}" for s in reversed(STATUS_ORDER)) + f" of {report['total']}</p>"]
    if report["breaches"]:
        parts.append("<ul>" + "".join(f"<li class='bad'>{e(b['message'])}</li>" for b in report["breaches"]) + "</ul>")
    if report["unreachable"]:
        parts.append(f"<p><b>Unreachable ({len(report['unreachable'])}):</b> "
                     + e(", ".join(report["unreachable"][:200])) + "</p>")
    # matplotlib's import and drawing allocate a few hundred thousand objects: with the cyclic garbage collector on,
    # each of its ~170 full passes would also walk the caller's heap (an Ansible worker's: ~10 % of the charts' CPU).
    # It is off for that burst; the figures' cycles are collected when it is back on.
    was_on = gc.isenabled()
    gc.disable()
    try:
        charts = _charts(report, trend, deploy)
    finally:
        if was_on:
            gc.enable()
    for key, svg in charts.items():
        parts.append(f"<figure class='chart' id='chart-{key}'>{svg}</figure>")
    bad = sorted((d for d in report["devices"] if d["status"] != "in_sync"),
                 key=lambda d: (STATUS_ORDER.index(d["status"]), d["device"]))
    parts.append(f"<h2>Devices not in sync ({len(bad)})</h2><table><tr><th>device</th><th>group</th><th>status</th>"
                 "<th>why</th></tr>")
    for d in bad[:2000]:
        parts.append(f"<tr><td>{e(d['device'])}</td><td>{e(str(d['group']))}</td><td>{_label(d['status'])}</td>"
                     f"<td>{e('; '.join(d['reasons'])[:300])}</td></tr>")
    parts.append("</table>" + ("<p>... the rest is in the JSON report.</p>" if len(bad) > 2000 else ""))
    parts.append("</body></html>\n")
    return "".join(parts)


def _atomic(path: Path, text: str) -> None:
    from ._fsutil import atomic_write_bytes

    atomic_write_bytes(path, text.encode("utf-8"))


def write_reports(dest: Path | str, report: Mapping[str, Any], *, history: bool = True) -> dict[str, Any]:
    """Write the run's set and ``health-latest.*`` into ``dest``; append the run to the history (journal event
    and SQLite rows) first so the dashboard shows this run in its trend. Returns ``{files, warnings}``."""
    from .audit import append_event

    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    warnings: list[str] = []
    c = report["counts"]
    summary = (f"health {'FAILED' if report['failed'] else 'ok'}: "
               + ", ".join(f"{c[s]} {s}" for s in reversed(STATUS_ORDER))
               + "".join(f"; {b['message']}" for b in report["breaches"]))
    trend: dict[str, Any] = {"runs": [], "devices": {}}
    deploy = None
    base = f"health-{report['run_id']}"
    files = [str(dest / f"{base}.{ext}") for ext in ("json", "md", "html")]
    if history:
        from . import history as hist

        try:
            append_event(dest, "health", report["run_id"], summary[:2000],
                         {"failed": report["failed"], "counts": dict(c), "breaches": list(report["breaches"]),
                          "unreachable": list(report["unreachable"])[:1000]}, files)
            hist.record_health(dest, report, str(report.get("generated_at") or ""), summary[:2000])
            worst = {d["device"] for d in _worst(report, "p95_latency_ms", True) + _worst(report, "mean_confidence",
                                                                                          False)}
            trend = hist.health_trend(dest, devices=sorted(worst))
            last = hist.deploy_events(dest)
            deploy = last[0] if last else None
        except (OSError, ValueError, sqlite3.Error, hist.HistoryError) as exc:
            warnings.append(f"history not updated: {exc}")
    # compact: the JSON is for machines (10,000 devices: ~14 MB instead of ~19 MB indented); jq pretty-prints it
    as_json = json.dumps(report, separators=(",", ":"), sort_keys=True, allow_nan=False) + "\n"
    texts = {"json": as_json, "md": markdown(report), "html": html_report(report, trend, deploy)}
    for ext, text in texts.items():
        _atomic(dest / f"{base}.{ext}", text)
        _atomic(dest / f"health-latest.{ext}", text)
    return {"files": files + [str(dest / f"health-latest.{ext}") for ext in texts], "warnings": warnings}

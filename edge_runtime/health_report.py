"""The health report of ``playbooks/health.yml`` as files people and machines read (controller side only).

One run writes one set, ``health-<run id>.{json,md,html}``, and ``health-latest.{json,md,html}`` (the deploy and
rollback reports own ``latest.{json,md}``: a health run from cron must not replace the report of the last
deploy), each atomically:

* JSON for machines, valid against ``schemas/health-report.schema.json`` (tested with jsonschema);
* Markdown for a pull-request comment or CI job summary: what is wrong and where first, details after, at
  most :data:`MD_MAX_BYTES` (GitHub's comment limit is 65,536 characters);
* a self-contained HTML dashboard: charts drawn by pygal as inline SVG. No JavaScript, no network, no
  external file: it opens anywhere, offline, and cannot raise console errors. Why not plotly: its offline
  bundle alone is 4.8 MB (plotly 7.1), which leaves nothing of the 5 MB budget for 10,000 devices; the charts
  here are aggregates and the worst devices, which static SVG shows well. Why pygal and not matplotlib (used
  before): the same charts for ~0.1 CPU-s instead of ~0.75 (matplotlib's import alone ~0.45), which was most of
  a small fleet's ``health.yml``.
"""

from __future__ import annotations

import html
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


def _worst(report: Mapping[str, Any], key: str, reverse: bool) -> list[Mapping[str, Any]]:
    def value(d: Mapping[str, Any]) -> float | None:
        vals = [float(v) for m in d["models"] if isinstance(v := (m.get("telemetry") or {}).get(key), (int, float))]
        return (max(vals) if reverse else min(vals)) if vals else None

    scored = [(v, d) for d in report["devices"] if (v := value(d)) is not None]
    scored.sort(key=lambda p: p[0], reverse=reverse)
    return [d for _, d in scored[:WORST_DEVICES]]


def _axis_label(x: Any) -> str:
    """A chart's value label: integers as they are, other numbers to 4 significant digits."""
    if isinstance(x, float) and not x.is_integer():
        return f"{x:.4g}"
    return str(int(x)) if isinstance(x, (int, float)) else str(x)


def _render(chart: Any, key: str) -> str:
    """One chart as an inline ``<svg>`` element, built from pygal's element tree: its ``<script>`` (pygal always
    writes its config for its tooltips, with every label in it, even with ``js=[]``) and comments (they carry the
    date) are removed from the tree, not cut out of text, so no label can end them early; the random chart id
    becomes a stable one (the same data gives the same file). Text is serialized escaped by ElementTree."""
    import xml.etree.ElementTree as ET

    root = chart.render_tree()
    for parent in root.iter():
        for child in list(parent):
            if child.tag is ET.Comment or (isinstance(child.tag, str) and child.tag.rsplit("}", 1)[-1] == "script"):
                parent.remove(child)
    svg = ET.tostring(root, encoding="unicode")
    old = root.get("id")
    return svg.replace(old, f"edge-chart-{key}") if old and old.startswith("chart-") else svg


def _charts(report: Mapping[str, Any], trend: Mapping[str, Any], deploy: Mapping[str, Any] | None) -> dict[str, str]:
    """The dashboard's charts, drawn by pygal as static SVG (no JavaScript: ``js=[]``). Every label is
    device-reported text (names, versions, features): pygal writes it as XML text, escaped, never markup."""
    from datetime import datetime, timezone

    import pygal
    from pygal.style import Style

    def style(colors: tuple[str, ...] = ()) -> Any:
        return Style(background="white", plot_background="white", font_family="sans-serif", label_font_size=11,
                     major_label_font_size=11, legend_font_size=11, title_font_size=14, value_font_size=10,
                     **({"colors": colors} if colors else {}))

    def chart(kind: Any, title: str, *, height: int = 300, colors: tuple[str, ...] = (), **opts: Any) -> Any:
        # truncate_*=-1: device names and versions are shown whole; no_data_text: an empty chart says why
        # at most ~6 y labels, 4 significant digits: a narrow range (confidence 0.800-0.803) stays readable
        return kind(js=[], disable_xml_declaration=True, width=900, height=height, title=title,
                    style=style(colors), truncate_legend=-1, truncate_label=-1, legend_at_bottom=True,
                    value_formatter=_axis_label, y_labels_major_count=6, show_minor_y_labels=False, **opts)

    charts: dict[str, str] = {}
    # 1. versions per group: one bar per group and model, a segment per reported version
    rows = [(g, m, vs) for g, models in sorted(report["versions"].items()) for m, vs in sorted(models.items())]
    versions = sorted({v for _, _, vs in rows for v in vs})
    c = chart(pygal.HorizontalStackedBar, "Versions per group (reported)", height=140 + 34 * max(1, len(rows)),
              print_values=True, no_data_text="no device reported a version")
    c.x_labels = [f"{g} / {m}" for g, m, _ in rows]
    for v in versions:
        c.add(v, [vs.get(v) for _, _, vs in rows])
    charts["versions"] = _render(c, "versions")
    # 2. sync status now, and 3. across the last health runs
    sts = list(reversed(STATUS_ORDER))
    c = chart(pygal.Bar, f"Status now ({report['total']} devices)", colors=tuple(COLORS[s] for s in sts),
              print_values=True)
    c.x_labels = ["devices"]
    for st in sts:
        c.add(_label(st), [report["counts"][st]])
    charts["status"] = _render(c, "status")
    runs = list(trend.get("runs") or [])
    c = chart(pygal.Line, f"Status over the last {len(runs)} runs", colors=tuple(COLORS[s] for s in sts),
              x_label_rotation=20, show_minor_x_labels=False, no_data_text="no earlier health run in the history")
    c.x_labels = [str(r.get("at", ""))[5:16] for r in runs]
    c.x_labels_major = c.x_labels[:: max(1, len(runs) // 6)]
    for st in sts:
        c.add(_label(st), [r.get(st) for r in runs] if runs else [])
    charts["trend"] = _render(c, "trend")
    # 4 + 5. latency and confidence per device over time (worst devices, per minute of this run's window)
    for key, title, reverse, idx in (("p95_latency_ms", "p95 latency (ms)", True, 3),
                                     ("mean_confidence", "mean top-1 confidence", False, 2)):
        lines: list[tuple[str, list[tuple[Any, float]]]] = []
        for d in _worst(report, key, reverse):
            for m in d["models"]:
                series = (m.get("telemetry") or {}).get("series") or []
                pts = [(datetime.fromtimestamp(p[0], timezone.utc), float(p[idx])) for p in series
                       if isinstance(p[idx], (int, float))]
                if pts:
                    lines.append((f"{d['device']} {m['model']}", pts))
        name = "latency" if idx == 3 else "confidence"
        ctitle = f"{title} per device over time ({WORST_DEVICES} worst devices)"
        hist = trend.get("devices") or {}
        if lines or not hist:
            c = chart(pygal.DateTimeLine, ctitle, x_label_rotation=20, no_data_text="no telemetry in the window",
                      x_value_formatter=lambda t: t.strftime("%H:%M"))
            for label, pts in lines:
                c.add(label, pts)
        else:  # no per-minute series: the numbers across health runs
            c = chart(pygal.Line, ctitle, x_label_rotation=20)
            ats = sorted({p["at"] for runs_of in hist.values() for p in runs_of})
            c.x_labels = [a[5:16] for a in ats]
            for dev, runs_of in hist.items():
                by_at = {p["at"]: p.get(key) for p in runs_of}
                c.add(dev, [by_at.get(a) for a in ats])
        charts[name] = _render(c, name)
    # 6. drift per feature: devices drifting and the largest PSI per feature
    per: dict[str, list[float]] = {}
    drifting: dict[str, int] = {}
    for d in report["devices"]:
        for dr in d.get("drift") or ():
            for f in dr.get("features") or ():
                fname = f"{dr['model']}:{f.get('feature')}"
                if isinstance(f.get("psi"), (int, float)):
                    per.setdefault(fname, []).append(float(f["psi"]))
                drifting[fname] = drifting.get(fname, 0) + (f.get("verdict") == "drift")
    names = sorted(set(per) | set(drifting))
    c = chart(pygal.Bar, "Data drift per feature", colors=("#ef6c00", "#1565c0"), x_label_rotation=20,
              no_data_text="no drift evaluation reported")
    c.x_labels = names
    if names:
        c.add("devices with drift", [drifting.get(n, 0) for n in names])
        c.add("max PSI (right axis)", [max(per[n]) if per.get(n) else None for n in names], secondary=True)
    charts["drift"] = _render(c, "drift")
    # 7. results of the last deploy
    if deploy:
        data = deploy.get("data") or {}
        counts = data.get("counts") or {}
        halted = data.get("halted") or {}
        title = (f"Last {deploy.get('kind')} ({deploy.get('at')}): results"
                 + (f"; HALTED: {', '.join(sorted(halted))}" if halted else "; no group halted"))
    else:
        counts, title = {}, "Gate decisions of the last deploy"
    c = chart(pygal.Bar, title, colors=("#1565c0",), print_values=True, show_legend=False,
              no_data_text="no deploy in the history")
    c.x_labels = [str(k) for k in counts]
    if counts:
        c.add("devices", [v if isinstance(v, (int, float)) else None for v in counts.values()])
    charts["gates"] = _render(c, "gates")
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
    charts = _charts(report, trend, deploy)
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

"""Prometheus metrics of a device, rendered from its facts document: Prometheus and Ansible never disagree.

One owner: :func:`render` turns the facts :func:`edge_runtime.facts.collect_facts` returns (the document the
runtime writes to ``<root>/facts/edge_runtime.fact`` and Ansible reads) into the Prometheus text exposition
format; :meth:`edge_runtime.device.Device.write_facts` writes both, every time facts are written (every
install, rollback, check, ``facts`` command and every monitor run). Nothing here measures anything itself.

Where: the device config's ``metrics`` object (``init --metrics-setting textfile_dir=...``, the role's
``edge_runtime_metrics_textfile_dir``): ``textfile_dir`` is node_exporter's textfile-collector directory
(Debian's ``prometheus-node-exporter`` reads ``/var/lib/prometheus/node-exporter``); unset (the default),
no metrics file is written. The file is ``edge_runtime-<device>.prom``, replaced atomically (temp file
``.tmp-*`` which node_exporter ignores, fsync, rename in the same directory, fsync of the directory).

Labels: every sample carries ``device`` (``metrics.device``, the role sets the inventory name; default the
host name). Decision: node_exporter's textfile collector adds no label of its own and Prometheus's
``instance`` is the scrape address (``host:9100``), which is not the name the inventory, ``models.yaml``
and the alert receiver use; several simulated devices also share one host's node_exporter. So the device
label is always there, and the controller's desired-version metric (:func:`render_desired`) joins on it.

Unknown is absent: a value the facts do not have (``null``) produces no sample, never a 0.
Names follow the Prometheus rules (``edge_`` prefix, base units in the name, ``_total`` only on counters)
and ``promtool check metrics`` accepts the output (tests/unit/test_metrics.py).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import ConfigError, quote_untrusted

__all__ = [
    "DEFAULT_TEXTFILE_DIR",
    "DESIRED_FILE",
    "METRIC_HELP",
    "MetricsConfig",
    "metrics_file_name",
    "render",
    "render_desired",
    "write_textfile",
]

#: where Debian's prometheus-node-exporter reads textfiles (its --collector.textfile.directory default)
DEFAULT_TEXTFILE_DIR = "/var/lib/prometheus/node-exporter"
#: the controller's file of desired versions (written by playbooks through fleet_report)
DESIRED_FILE = "edge_desired.prom"
#: label values are bounded: a hostile fact never makes a huge line
MAX_LABEL_CHARS = 256
_NAME_SAFE = re.compile(r"[^A-Za-z0-9_.-]")

#: every metric family: (type, help). One place, so every file renders the same HELP (node_exporter merges
#: families across files and refuses a family whose HELP differs between them).
METRIC_HELP: dict[str, tuple[str, str]] = {
    "edge_metrics_written_timestamp_seconds": (
        "gauge", "When the device last wrote its facts and these metrics (Unix time)."),
    "edge_runtime_info": ("gauge", "The edge-runtime version on the device (always 1)."),
    "edge_model_info": ("gauge", "The active version of each model and its state (always 1; version empty when none)."),
    "edge_model_degraded": ("gauge", "1 when the model is degraded (a rollback target did not verify), else 0."),
    "edge_model_release_number": ("gauge", "Release counter (monotonic release number) of the active version."),
    "edge_model_quarantined_versions": ("gauge", "Versions of the model quarantined on the device."),
    "edge_model_smoke_latency_p95_seconds": ("gauge", "p95 latency of the active version's smoke test."),
    "edge_model_last_self_rollback_timestamp_seconds": (
        "gauge", "When the device last rolled the model back by itself (monitor rule), Unix time."),
    "edge_monitor_last_run_timestamp_seconds": ("gauge", "When the device-side monitor last evaluated (its clock)."),
    "edge_monitor_rolled_back": ("gauge", "Models the last monitor run rolled back."),
    "edge_monitor_finding": ("gauge", "A monitor finding that is not ok (always 1), by rule and status."),
    "edge_model_confidence_mean_ratio": (
        "gauge", "Mean top-1 confidence in the newest complete minute (absent below the minimum inferences)."),
    "edge_model_confidence_threshold_ratio": ("gauge", "The device's confidence rule threshold."),
    "edge_model_confidence_low_run_seconds": (
        "gauge", "Length of the current run of consecutive low-confidence minutes the monitor counts."),
    "edge_model_inference_error_ratio": (
        "gauge", "Inference errors per inference over the monitor's error window (absent with too few)."),
    "edge_model_inference_error_baseline_ratio": ("gauge", "The device's error rule maximum (the baseline)."),
    "edge_model_wrong_ratio": (
        "gauge", "Wrong answers per inference with ground truth over the monitor's window (absent with too few)."),
    "edge_model_wrong_baseline_ratio": ("gauge", "The device's wrong-answer rule maximum (the baseline)."),
    "edge_model_drift_detected": ("gauge", "1 when the monitor's drift verdict is drift, 0 when ok."),
    "edge_model_drift_psi": ("gauge", "Population stability index of a feature over the drift window."),
    "edge_model_drift_ks_statistic": ("gauge", "KS statistic (CDF gap) of a feature over the drift window."),
    "edge_telemetry_store_size_bytes": ("gauge", "Bytes the telemetry database takes (file plus WAL)."),
    "edge_telemetry_store_max_bytes": ("gauge", "The telemetry store's size cap."),
    "edge_telemetry_recorded_total": ("counter", "Inferences recorded by the telemetry writer process."),
    "edge_telemetry_dropped_total": ("counter", "Telemetry records dropped (full disk, locked database, backlog)."),
    "edge_telemetry_healthy": ("gauge", "1 when the telemetry store reports no error, 0 otherwise."),
    "edge_device_uptime_seconds": ("gauge", "Seconds since the device booted."),
    "edge_device_disk_free_bytes": ("gauge", "Free bytes on the file system of the device root."),
    "edge_device_disk_size_bytes": ("gauge", "Size of the file system of the device root."),
    "edge_device_memory_available_bytes": ("gauge", "Memory available on the device."),
    "edge_device_temperature_celsius": ("gauge", "Hottest thermal zone of the device."),
    "edge_trust_root_version": ("gauge", "Version of the trust root the device holds (0: key list)."),
    "edge_desired_model_info": (
        "gauge", "The version models.yaml pins for each device and model (always 1; written by the controller)."),
}


@dataclass(frozen=True)
class MetricsConfig:
    """The ``metrics`` object of ``config.json``: where the textfile goes (None: off) and the device label."""

    textfile_dir: str | None = None
    device: str | None = None

    @classmethod
    def from_mapping(cls, doc: Mapping[str, Any] | None, what: str = "metrics settings") -> MetricsConfig:
        hint = "fix the 'metrics' section of config.json (or `init --metrics-setting textfile_dir=/var/lib/...`)"
        if doc is None:
            return cls()
        if not isinstance(doc, Mapping):
            raise ConfigError(f"{what} must be an object, got {type(doc).__name__}", hint=hint)
        unknown = sorted(str(k) for k in doc if k not in ("textfile_dir", "device"))
        if unknown:
            raise ConfigError(f"unknown {what}: {', '.join(quote_untrusted(k, 40) for k in unknown)}",
                              hint=f"{hint}; known: device, textfile_dir")
        d, dev = doc.get("textfile_dir"), doc.get("device")
        if d is not None and (not isinstance(d, str) or not d.startswith("/") or "\x00" in d or len(d) > 4096):
            raise ConfigError(f"{what}: textfile_dir must be an absolute path, got {quote_untrusted(d, 60)}",
                              hint=f"{hint}; e.g. {DEFAULT_TEXTFILE_DIR}")
        if dev is not None and (not isinstance(dev, str) or not 1 <= len(dev) <= 128
                                or not dev.isprintable() or dev != dev.strip()):
            raise ConfigError(f"{what}: device must be 1-128 printable characters, got {quote_untrusted(dev, 60)}",
                              hint=f"{hint}; the role sets it to the inventory name")
        return cls(textfile_dir=d, device=dev)


def metrics_file_name(device: str) -> str:
    """``edge_runtime-<device>.prom``; characters a file name should not carry become ``_``."""
    return f"edge_runtime-{_NAME_SAFE.sub('_', device)[:128]}.prom"


def _escape_label(value: str) -> str:
    value = value[:MAX_LABEL_CHARS]
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _value(v: Any) -> str | None:
    """The sample value, or None when the fact is not a number (unknown: no sample)."""
    if isinstance(v, bool):
        return "1" if v else "0"
    if not isinstance(v, (int, float)):
        return None
    if isinstance(v, float) and math.isnan(v):
        return None
    if isinstance(v, float) and math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    return repr(v) if isinstance(v, float) else str(v)


def _number(v: Any) -> float | None:
    """A finite number (not a bool), else None."""
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        return None
    return float(v)


def _epoch(iso: Any) -> float | None:
    """The runtime's ``2026-12-03T05:00:00Z`` as Unix time; None if not one (one parser: the monitor's)."""
    from ._monitor_record import parse_time as parse

    return parse(iso)


class _Out:
    """Samples grouped by family, rendered in the order the families were first used."""

    def __init__(self, base: Mapping[str, str]) -> None:
        self.base = dict(base)
        self.families: dict[str, list[str]] = {}

    def add(self, name: str, value: Any, **labels: Any) -> None:
        text = _value(value)
        if text is None:
            return
        merged = {**self.base, **{k: "" if v is None else str(v) for k, v in labels.items()}}
        pairs = ",".join(f'{k}="{_escape_label(v)}"' for k, v in merged.items())
        line = f"{name}{{{pairs}}} {text}" if pairs else f"{name} {text}"
        family = self.families.setdefault(name, [])
        if line.rsplit(" ", 1)[0] not in {x.rsplit(" ", 1)[0] for x in family}:  # one sample per label set
            family.append(line)

    def text(self) -> str:
        out: list[str] = []
        for name, lines in self.families.items():
            kind, help_text = METRIC_HELP[name]
            out += [f"# HELP {name} {_escape_help(help_text)}", f"# TYPE {name} {kind}", *lines]
        return "\n".join(out) + "\n" if out else ""


def _d(x: Any) -> Mapping[str, Any]:
    return x if isinstance(x, Mapping) else {}


def render(facts: Mapping[str, Any], device: str | None = None) -> str:
    """The metrics of one device from its facts document (untrusted: every field is checked for its type)."""
    system = _d(facts.get("system"))
    name = device or system.get("hostname")
    out = _Out({"device": str(name) if isinstance(name, str) and name else "unknown"})
    out.add("edge_metrics_written_timestamp_seconds", _epoch(facts.get("collected_at")))
    if isinstance(facts.get("runtime_version"), str):
        out.add("edge_runtime_info", 1, runtime_version=facts["runtime_version"])
    monitor = _d(facts.get("monitor"))
    mon_models = _d(monitor.get("models"))
    for model, m in sorted(_d(facts.get("models")).items()):
        m = _d(m)
        active = m.get("active_version") if isinstance(m.get("active_version"), str) else ""
        out.add("edge_model_info", 1, model=model, version=active, state=m.get("state"))
        if "degraded_reason" in m:
            out.add("edge_model_degraded", m.get("degraded_reason") is not None, model=model)
        out.add("edge_model_release_number", m.get("release_counter"), model=model)
        bad = m.get("bad_versions")
        if isinstance(bad, list):
            out.add("edge_model_quarantined_versions", len(bad), model=model)
        p95 = _number(m.get("smoke_p95_ms"))
        if p95 is not None:
            out.add("edge_model_smoke_latency_p95_seconds", p95 / 1000.0, model=model)
        if m.get("last_op") == "self_rollback" and m.get("last_result") == "rolled_back":
            out.add("edge_model_last_self_rollback_timestamp_seconds", _epoch(m.get("last_time")), model=model,
                    from_version=m.get("last_version"))
    out.add("edge_monitor_last_run_timestamp_seconds", _epoch(monitor.get("evaluated_at")))
    out.add("edge_monitor_rolled_back", monitor.get("rolled_back"))
    models = _d(facts.get("models"))
    for model, mm in sorted(mon_models.items()):
        # fresh facts only: numbers about a version that is no longer active (a rollback since the monitor
        # ran) are left out until the monitor evaluates the active one
        active = _d(models.get(model)).get("active_version")
        _monitor_model(out, str(model), _d(mm), numbers=_d(mm).get("version") == active)
    tel = _d(facts.get("telemetry"))
    out.add("edge_telemetry_store_size_bytes", tel.get("size_bytes"))
    out.add("edge_telemetry_store_max_bytes", tel.get("max_bytes"))
    out.add("edge_telemetry_recorded_total", tel.get("recorded"))
    out.add("edge_telemetry_dropped_total", tel.get("dropped"))
    if tel.get("state") in ("ok", "error", "unknown"):
        out.add("edge_telemetry_healthy", tel.get("state") == "ok")
    out.add("edge_device_uptime_seconds", system.get("uptime_s"))
    disk = _d(system.get("disk"))
    out.add("edge_device_disk_free_bytes", disk.get("free_bytes"))
    out.add("edge_device_disk_size_bytes", disk.get("total_bytes"))
    out.add("edge_device_memory_available_bytes", _d(system.get("memory")).get("available_bytes"))
    out.add("edge_device_temperature_celsius", system.get("temperature_c"))
    out.add("edge_trust_root_version", _d(facts.get("trust")).get("root_version"))
    return out.text()


def _monitor_model(out: _Out, model: str, mm: Mapping[str, Any], *, numbers: bool) -> None:
    """One model's monitor section: its non-ok findings and, when ``numbers``, the numbers of the last run."""
    version = mm.get("version") if isinstance(mm.get("version"), str) else ""
    findings = mm.get("findings")
    for f in findings if isinstance(findings, list) else []:
        f = _d(f)
        if isinstance(f.get("rule"), str) and isinstance(f.get("status"), str):
            out.add("edge_monitor_finding", 1, model=model, version=version, rule=f["rule"], status=f["status"])
    n = _d(mm.get("numbers")) if numbers else {}
    labels = {"model": model, "version": version}
    out.add("edge_model_confidence_mean_ratio", n.get("confidence_mean"), **labels)
    out.add("edge_model_confidence_threshold_ratio", n.get("confidence_threshold"), **labels)
    low = _number(n.get("confidence_low_minutes"))
    if low is not None:
        out.add("edge_model_confidence_low_run_seconds", low * 60, **labels)
    out.add("edge_model_inference_error_ratio", n.get("error_rate"), **labels)
    out.add("edge_model_inference_error_baseline_ratio", n.get("error_rate_max"), **labels)
    out.add("edge_model_wrong_ratio", n.get("wrong_rate"), **labels)
    out.add("edge_model_wrong_baseline_ratio", n.get("wrong_rate_max"), **labels)
    if n.get("drift") in ("drift", "ok"):
        out.add("edge_model_drift_detected", n.get("drift") == "drift", **labels)
    for feature, fv in sorted(_d(n.get("drift_features")).items()):
        fv = _d(fv)
        out.add("edge_model_drift_psi", fv.get("psi"), feature=feature, **labels)
        out.add("edge_model_drift_ks_statistic", fv.get("ks_statistic"), feature=feature, **labels)


def render_desired(hosts: Mapping[str, Any]) -> str:
    """``edge_desired_model_info{device, group, model, version} 1`` for every device and pinned model.

    ``hosts``: the ``hosts`` of the deploy plan (``desired_state``): device -> ``{"rollout_group", "models":
    {model: {"version"}}}``. The controller writes this file next to its own node_exporter's textfiles, so the
    out-of-sync rule compares what ``models.yaml`` pins with what each device reports.
    """
    out = _Out({})
    for device, entry in sorted(hosts.items()):
        e = _d(entry)
        for model, pin in sorted(_d(e.get("models")).items()):
            version = _d(pin).get("version")
            if isinstance(version, str):
                out.add("edge_desired_model_info", 1, device=device, group=e.get("rollout_group"), model=model,
                        version=version)
    return out.text()


def write_textfile(directory: Path, name: str, text: str) -> Path:
    """Replace ``directory/name`` with ``text`` atomically (temp file, fsync, rename, fsync of the directory).

    The temp file is ``.tmp-<name>.<random>`` in the same directory: node_exporter reads only ``*.prom``, so
    a scrape sees the old file or the new one, never a half-written one. A missing directory is created.
    """
    from ._fsutil import atomic_write_bytes

    target = Path(directory) / name
    target.parent.mkdir(parents=True, exist_ok=True)  # like the facts file's directory
    atomic_write_bytes(target, text.encode("utf-8"))
    return target

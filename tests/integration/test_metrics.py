"""Prometheus textfile metrics rendered from the facts (edge_runtime.metrics) on real device roots.

The metrics file is written with the facts, by every operation and every monitor run, atomically, and it
says exactly what the facts say (it is rendered from the same document). ``promtool check metrics`` (Debian's
prometheus package) lints every rendering; without promtool those checks skip, saying so.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from edge_runtime._monitor_run import run_once
from edge_runtime.cli import main as cli
from edge_runtime.device import Device
from edge_runtime.errors import ConfigError
from edge_runtime.metrics import MetricsConfig, metrics_file_name, render, render_desired
from edge_runtime.monitor import minute_floor
from edge_runtime.telemetry._status import db_path
from edge_runtime.telemetry.store import TelemetryStore
from tests.support.attacks import clone_device, installed_device
from tests.support.factory import MODEL, Release

PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool missing: install Debian's prometheus package (`make system-deps` as root)"
)
SAMPLE = re.compile(r'^(?P<name>[a-z_]+)\{(?P<labels>.*)\} (?P<value>\S+)$')


def promtool_check(text: str) -> None:
    assert PROMTOOL is not None
    p = subprocess.run([PROMTOOL, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30,
                       check=False)
    assert p.returncode == 0, (p.stdout, p.stderr, text)
    assert not p.stdout.strip(), p.stdout
    assert not p.stderr.strip(), p.stderr


def samples(text: str, name: str) -> dict[str, float]:
    """``{labels: value}`` of one metric family."""
    out = {}
    for line in text.splitlines():
        m = SAMPLE.match(line)
        if m and m["name"] == name:
            out[m["labels"]] = float(m["value"])
    return out


@pytest.fixture(scope="module")
def template(release: Release, tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("metrics-templates")
    return installed_device(release, base / "two", [release.bundle("1.0.0"), release.bundle("1.1.0")]).root


@pytest.fixture
def device(template: Path, tmp_path: Path) -> Device:
    dev = clone_device(template, tmp_path / "dev")
    cfg = json.loads((dev.root / "config.json").read_text())
    cfg["metrics"] = {"textfile_dir": str(tmp_path / "textfiles"), "device": "dev-a1"}
    (tmp_path / "textfiles").mkdir()
    (dev.root / "config.json").write_text(json.dumps(cfg))
    return dev


def record_minute(dev: Device, version: str, minute: int, mean: float, n: int) -> None:
    store = TelemetryStore(db_path(dev.root), dev.config.telemetry_config())
    for j in range(n):
        store.record(MODEL, version, minute + 1 + j * 0.5, 0.004, True, "ok", mean)
    store.close()


def prom(dev: Device) -> str:
    return (Path(dev.config.metrics_config().textfile_dir or "") / metrics_file_name("dev-a1")).read_text()


@needs_promtool
def test_a_monitor_run_writes_metrics_that_say_what_the_facts_say(device: Device) -> None:
    start = minute_floor(1_900_000_000)  # after the activation: the clock is injected
    record_minute(device, "1.1.0", start, 0.6, 20)
    run_once(device, now=start + 61)
    text = prom(device)
    promtool_check(text)
    facts = json.loads(device.facts_file.read_text())
    assert text == render(facts, "dev-a1"), "the metrics are not the facts file rendered"
    assert samples(text, "edge_model_confidence_mean_ratio") == {
        f'device="dev-a1",model="{MODEL}",version="1.1.0"': pytest.approx(0.6)}
    assert samples(text, "edge_model_confidence_threshold_ratio") == {
        f'device="dev-a1",model="{MODEL}",version="1.1.0"': 0.75}
    assert samples(text, "edge_model_info") == {f'device="dev-a1",model="{MODEL}",version="1.1.0",state="committed"': 1}
    assert samples(text, "edge_monitor_last_run_timestamp_seconds") == {'device="dev-a1"': start + 61}
    written = samples(text, "edge_metrics_written_timestamp_seconds")['device="dev-a1"']
    assert abs(written - device.facts_file.stat().st_mtime) < 5
    assert not list(device.facts_file.parent.parent.parent.rglob(".tmp-*")), "a temp file was left"
    # a rollback since: the numbers were about 1.1.0, which is no longer active (fresh facts only)
    device.rollback(MODEL)
    text = prom(device)
    assert samples(text, "edge_model_confidence_mean_ratio") == {}
    assert samples(text, "edge_model_info") == {f'device="dev-a1",model="{MODEL}",version="1.0.0",state="committed"': 1}


def test_a_minute_below_the_minimum_has_no_confidence_sample_and_at_the_minimum_has_one(device: Device) -> None:
    start = minute_floor(1_900_000_000)
    record_minute(device, "1.1.0", start, 0.6, 19)  # min_inferences 20: one short
    run_once(device, now=start + 61)
    assert samples(prom(device), "edge_model_confidence_mean_ratio") == {}
    record_minute(device, "1.1.0", start + 60, 0.7, 20)  # exactly the minimum
    run_once(device, now=start + 121)
    assert list(samples(prom(device), "edge_model_confidence_mean_ratio").values()) == [pytest.approx(0.7)]
    run_once(device, now=start + 181)  # the newest complete minute has no inference: unknown, not the old value
    assert samples(prom(device), "edge_model_confidence_mean_ratio") == {}


def test_every_facts_write_rewrites_the_metrics_and_a_failed_write_is_a_warning(device: Device, tmp_path: Path) -> None:
    r = device.rollback(MODEL)
    assert r.active == "1.0.0"
    assert samples(prom(device), "edge_model_info") == {
        f'device="dev-a1",model="{MODEL}",version="1.0.0",state="committed"': 1}
    cfg = json.loads((device.root / "config.json").read_text())
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    cfg["metrics"]["textfile_dir"] = str(blocker)
    (device.root / "config.json").write_text(json.dumps(cfg))
    device.warnings.clear()
    facts = device.write_facts()
    assert facts["models"][MODEL]["active_version"] == "1.0.0"
    assert any("metrics not written" in w for w in device.warnings), device.warnings
    assert json.loads(device.facts_file.read_text())["models"][MODEL]["active_version"] == "1.0.0"


@needs_promtool
def test_hostile_fact_values_are_escaped_and_unknowns_are_absent() -> None:
    facts = {
        "collected_at": "2026-12-03T05:00:00Z", "runtime_version": 'x"\\\ny',
        "models": {'m"\\\n': {"active_version": None, "state": "corrupt", "release_counter": "7",
                               "smoke_p95_ms": float("nan"), "bad_versions": ["1", "2"], "degraded_reason": "r"},
                   "m": {"active_version": "1"}},
        "monitor": {"models": {"m": {"version": "1", "findings": [{"rule": "confidence", "status": "breach"}],
                                     "numbers": {"confidence_mean": True, "error_rate": 0.06,
                                                 "drift": "drift", "drift_features": {"f\n": {"psi": 0.3}}}}}},
        "telemetry": {"state": "error", "recorded": 5, "dropped": None},
        "system": {"hostname": "h", "disk": "not a mapping", "temperature_c": float("inf")},
    }
    text = render(facts, 'dev "1"')
    promtool_check(text)
    assert 'model="m\\"\\\\\\n"' in text
    assert 'device="dev \\"1\\""' in text
    assert "edge_model_release_number" not in text  # a string is not a number: unknown
    assert "edge_model_smoke_latency_p95_seconds" not in text  # NaN: unknown
    assert "edge_telemetry_dropped_total" not in text
    assert samples(text, "edge_model_quarantined_versions") == {'device="dev \\"1\\"",model="m\\"\\\\\\n"': 2}
    assert samples(text, "edge_model_degraded")
    assert samples(text, "edge_telemetry_healthy") == {'device="dev \\"1\\""': 0}
    assert samples(text, "edge_model_drift_detected") == {'device="dev \\"1\\"",model="m",version="1"': 1}
    long = render({"models": {"m" * 10_000: {}}}, "d")
    assert max(len(line) for line in long.splitlines()) < 1000


@needs_promtool
def test_the_controllers_desired_versions_render_and_lint() -> None:
    text = render_desired({"dev-a1": {"rollout_group": "line_a", "models": {MODEL: {"version": "1.1.0"}}},
                           "dev-x": {"rollout_group": "lab", "models": {"m": {"version": None}}}})
    promtool_check(text)
    assert samples(text, "edge_desired_model_info") == {
        f'device="dev-a1",group="line_a",model="{MODEL}",version="1.1.0"': 1}


@pytest.mark.parametrize(("doc", "problem"), [
    ({"textfile_dir": "relative/dir"}, "absolute path"),
    ({"textfile_dir": "/ok", "device": "a\nb"}, "printable"),
    ({"textfile_dir": "/ok", "device": ""}, "printable"),
    ({"textfile_dir": "/ok", "colour": "red"}, "unknown metrics settings"),
    ({"textfile_dir": 5}, "absolute path"),
])
def test_bad_metrics_settings_are_refused_naming_them(doc: dict[str, object], problem: str) -> None:
    with pytest.raises(ConfigError, match=problem):
        MetricsConfig.from_mapping(doc)


def test_init_stores_metrics_settings_and_refuses_a_bad_one(device: Device, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    key = next(device.trust_dir.glob("*.pub.pem"))
    before = (device.root / "config.json").read_bytes()
    assert cli(["--root", str(device.root), "init", "--trusted-key", str(key),
                "--metrics-setting", "textfile_dir=relative"]) == 2
    assert "absolute path" in capsys.readouterr().err
    assert (device.root / "config.json").read_bytes() == before
    assert cli(["--root", str(device.root), "init", "--trusted-key", str(key),
                "--metrics-setting", f"textfile_dir={tmp_path}/tf2", "--metrics-setting", "device=dev-b1"]) == 0
    assert json.loads((device.root / "config.json").read_text())["metrics"] == {
        "textfile_dir": f"{tmp_path}/tf2", "device": "dev-b1"}
    assert (tmp_path / "tf2" / "edge_runtime-dev-b1.prom").exists()

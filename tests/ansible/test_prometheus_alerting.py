"""Prometheus alerting end to end with the real stack on 127.0.0.1, started and stopped by the test.

A simulated fleet (local-connection devices in a tmp dir) runs real inference through the workload simulator;
its monitor runs write the textfile metrics (edge_runtime.metrics) that Debian's node_exporter serves; Debian's
Prometheus scrapes them every second and evaluates prometheus/rules/edge.rules.yml (a copy with `for:` cut to
2 s); Debian's Alertmanager (prometheus/alertmanager.example.yml with this test's URL, token and short timers)
sends the firing alerts to the project's receiver (scripts/alert_receiver.py, a real process), which runs
playbooks/rollback.yml for each device's group through ansible-runner. Two alerts in one stack run: the
headline rule, mean confidence below 0.75 (dev-b1 runs the live regression 1.6.0 -- the 1.0.0 weights -- on a
scrambled sensor readout, real inference at a mean confidence of about 0.72) rolls line_b back to 1.1.0, and
the error-rate rule (dev-a1's sensor drops frames) rolls line_a back. The test ends with both groups rolled
back, the lab untouched, and each rollback report naming its alert and value.

Every port is a free one on 127.0.0.1, every wait has a deadline, every process is killed in teardown (its
whole process group). Skips, saying which, when a Debian package is missing.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from edge_runtime.audit import read_events
from edge_runtime.device import Device
from edge_runtime.workload import DeviceLoad, simulate
from scripts import live_regression
from tests.ansible.test_fleet_playbooks import REPO, Fleet, new_fleet

pytest.importorskip("ansible_runner")

pytestmark = pytest.mark.slow

BINARIES = {"prometheus": "prometheus", "prometheus-alertmanager": "prometheus-alertmanager",
            "prometheus-node-exporter": "prometheus-node-exporter"}
MISSING = [pkg for pkg, binary in BINARIES.items() if shutil.which(binary) is None]
if MISSING:
    pytest.skip(f"Debian package(s) missing: {', '.join(MISSING)} (`make system-deps` installs them as root)",
                allow_module_level=True)

MODEL = "defect-classifier"
LINE_A = ["dev-a1", "dev-a2"]
TOKEN = "test-token-" + "0123456789abcdef" * 2
INVENTORY = {"edge_devices": {
    "vars": {"ansible_connection": "local", "ansible_python_interpreter": "{{ ansible_playbook_python }}"},
    "children": {"line_a": {"hosts": dict.fromkeys(LINE_A)}, "line_b": {"hosts": {"dev-b1": None}},
                 "lab": {"hosts": {"dev-l1": None}}}}}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(what: str, check: Callable[[], Any], deadline_s: float, procs: dict[str, Any]) -> Any:
    """``check()`` until truthy (exceptions count as not yet), at most ``deadline_s``; a process that died or the
    deadline fails the test with the logs."""
    end = time.monotonic() + deadline_s
    while True:
        with contextlib.suppress(OSError, ValueError, urllib.error.URLError):
            if result := check():
                return result
        dead = {n: p.returncode for n, (p, _) in procs.items() if p.poll() is not None}
        if dead or time.monotonic() > end:
            logs = {n: Path(log).read_text()[-2000:] for n, (_, log) in procs.items()}
            pytest.fail(f"{what}: {'processes ended ' + str(dead) if dead else f'not within {deadline_s} s'}; "
                        f"logs: {json.dumps(logs, indent=1)}")
        time.sleep(0.25)


def http(url: str, token: str | None = None, body: bytes | None = None, headers: dict[str, str] | None = None,
         method: str | None = None) -> tuple[int, Any]:
    req = urllib.request.Request(url, data=body, method=method, headers=dict(headers or {}))
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            raw = r.read()
            status = r.status
    except urllib.error.HTTPError as e:
        raw, status = e.read(), e.code
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw.decode("utf-8", "replace")


@contextlib.contextmanager
def processes(base: Path) -> Iterator[Callable[[str, list[str]], None]]:
    """Start named processes in their own process groups; kill every group on exit (TERM, then KILL)."""
    procs: dict[str, Any] = {}

    def start(name: str, argv: list[str]) -> None:
        log = base / f"{name}.log"
        fh = log.open("wb")
        procs[name] = (subprocess.Popen(argv, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                        start_new_session=True, cwd=base), log)
        fh.close()

    start.procs = procs  # type: ignore[attr-defined]
    try:
        yield start
    finally:
        for p, _ in procs.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGTERM)
        end = time.monotonic() + 5
        for p, _ in procs.values():
            try:
                p.wait(timeout=max(0.1, end - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGKILL)
                p.wait(timeout=5)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGKILL)  # anything the group left behind (ansible-playbook)


def make_device(fleet: Fleet, name: str, versions: list[str]) -> Device:
    dev = Device(fleet.root / name)
    dev.init([fleet.keys / "demo-NOT-FOR-PRODUCTION.pub"])
    for v in versions:
        r = dev.install(str(fleet.registry / MODEL / f"{v}.edgebundle"))
        assert r.ok, r
    return dev


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    base = tmp_path_factory.mktemp("alerting")
    fleet = new_fleet(base)
    # line_b runs the live regression 1.6.0 (1.1.0 kept): low confidence on scrambled inputs
    entry = live_regression.build(fleet.registry, fleet.keys / "demo-NOT-FOR-PRODUCTION.key", base / "rel")
    fleet.write_models({"line_a": "1.1.0"})
    fleet.models.write_text(live_regression.with_regression(fleet.models.read_text(), entry, group="line_b",
                                                            pin="1.6.0", live_gate=False))
    inventory = base / "inventory.yml"
    inventory.write_text(yaml.safe_dump(INVENTORY))
    textfiles = base / "textfiles"
    for name in LINE_A:
        make_device(fleet, name, ["1.0.0", "1.1.0"])
    make_device(fleet, "dev-b1", ["1.1.0", "1.6.0"])
    # a deploy (a no-op but for dev-l1, which gets its first model): the role turns the devices' metrics on
    # (edge_runtime_metrics_textfile_dir, device label = inventory name) and the controller writes the pins
    r = fleet.run("deploy.yml", inventory=inventory, extravars={
        "edge_metrics_controller_textfile_dir": str(textfiles), "edge_runtime_metrics_textfile_dir": str(textfiles)})
    assert r.rc == 0, r.stdout.read()
    assert Device(fleet.root / "dev-a1").config.metrics == {"textfile_dir": str(textfiles), "device": "dev-a1"}
    assert (textfiles / "edge_runtime-dev-l1.prom").exists()
    desired = (textfiles / "edge_desired.prom").read_text()
    assert f'edge_desired_model_info{{device="dev-a1",group="line_a",model="{MODEL}",version="1.1.0"}} 1' in desired
    token_file = base / "token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o600)
    extra = base / "extravars.json"
    extra.write_text(json.dumps({
        "edge_runtime_root": str(fleet.root) + "/{{ inventory_hostname }}",
        "edge_runtime_trusted_keys": [str(fleet.keys / "demo-NOT-FOR-PRODUCTION.pub")],
        "edge_reports_dir": str(fleet.reports), "edge_lock_dir": str(base / "locks"),
    }))
    ports = {n: free_port() for n in ("node", "receiver", "alertmanager", "prometheus")}
    with processes(base) as start:
        procs = start.procs  # type: ignore[attr-defined]
        start("receiver", [sys.executable, str(REPO / "scripts" / "alert_receiver.py"),
                           "--listen", f"127.0.0.1:{ports['receiver']}", "--token-file", str(token_file),
                           "--inventory", str(inventory), "--models", str(fleet.models),
                           "--extra-vars-file", str(extra), "--data-dir", str(base / "receiver-runs"),
                           "--lock-wait", "30", "--playbook-timeout", "120", "--read-timeout", "1"])
        start("node", ["prometheus-node-exporter", f"--web.listen-address=127.0.0.1:{ports['node']}",
                       "--collector.disable-defaults", "--collector.textfile",
                       f"--collector.textfile.directory={textfiles}"])
        url = f"http://127.0.0.1:{ports['receiver']}"
        wait_for("receiver up", lambda: http(url + "/status", TOKEN)[0] == 200, 30, procs)
        yield {"base": base, "fleet": fleet, "ports": ports, "start": start, "procs": procs, "url": url,
               "token_file": token_file, "textfiles": textfiles}


def alert(name: str = "EdgeModelErrorRateHigh", status: str = "firing", **labels: str) -> dict[str, Any]:
    return {"status": status, "labels": {"alertname": name, "device": "dev-a1", "model": MODEL, "version": "1.1.0",
                                         **labels}, "annotations": {"summary": "s"}, "startsAt": "2026-01-01T00:00:00Z"}


def post(url: str, doc: Any, token: str | None = TOKEN, **kw: Any) -> tuple[int, Any]:
    body = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
    headers = {"Content-Type": "application/json", **kw.pop("headers", {})}
    return http(url + "/alerts", token, body, headers, **kw)


def test_the_receiver_refuses_hostile_requests_and_runs_nothing(stack: dict[str, Any]) -> None:
    url = stack["url"]
    good = {"version": "4", "alerts": [alert()]}
    assert post(url, good, token=None)[0] == 401
    assert post(url, good, token="x" * len(TOKEN))[0] == 401
    assert http(url + "/other", TOKEN, b"{}", {"Content-Type": "application/json"})[0] == 404
    assert post(url, good, headers={"Content-Type": "text/plain"})[0] == 415
    assert http(url + "/alerts", TOKEN, method="PUT", body=b"{}")[0] == 405
    assert post(url, b"x" * (256 * 1024 + 1))[0] == 413
    assert post(url, b'{"version": "4", "alerts": [NaN]}')[0] == 400
    assert post(url, b"[" * 100_000)[0] == 400
    assert post(url, {"version": "3", "alerts": [alert()]})[0] == 400
    assert post(url, {"version": "4", "alerts": [alert()] * 101})[0] == 400
    status, body = post(url, {"version": "4", "alerts": [alert("EdgeSomethingElse")]})
    assert status == 422
    assert "unknown alert name" in body["error"]
    status, body = post(url, {"version": "4", "alerts": [alert(device="dev-zz")]})
    assert status == 422
    assert "not a host of the inventory" in body["error"]
    status, body = post(url, {"version": "4", "alerts": [alert(group="line_b")]})
    assert status == 422
    assert "does not hold dev-a1" in body["error"]
    # one bad alert refuses the whole request: the valid first one does not run either
    assert post(url, {"version": "4", "alerts": [alert(), alert(device="x" * 5000)]})[0] == 400
    # report-only alerts and resolved notifications are acknowledged, nothing runs
    status, body = post(url, {"version": "4", "alerts": [alert("EdgeModelDataDrift"), alert(status="resolved")]})
    assert status == 202
    assert body["started"] == []
    assert http(url + "/status", TOKEN)[1] == {"runs": []}
    assert http(url + "/status")[0] == 401
    # a client that sends half a request is cut off at the read deadline (1 s here), not waited for
    with socket.create_connection(("127.0.0.1", stack["ports"]["receiver"]), timeout=10) as s:
        s.sendall(b"POST /alerts HTTP/1.1\r\nContent-Length: 10")
        t0 = time.monotonic()
        assert s.recv(1024) == b""
        assert time.monotonic() - t0 < 5


def metric(text: str, name: str, device: str, version: str) -> float:
    m = re.search(rf'^{name}\{{device="{device}",model="{MODEL}",version="{version}"\}} (\S+)$', text, re.M)
    assert m, text
    return float(m[1])


def rollback_reports(fleet: Fleet) -> dict[str, tuple[dict[str, Any], str]]:
    """Per rolled-back group: the JSON report of its rollback run and the Markdown, from the audit trail."""
    out = {}
    for event in read_events(fleet.reports):
        if event["kind"] != "rollback":
            continue
        paths = [Path(p) if Path(p).is_absolute() else fleet.reports / p for p in event["reports"]]
        doc = json.loads(next(p for p in paths if p.suffix == ".json").read_text())
        md = next(p for p in paths if p.suffix == ".md").read_text()
        for group in {r["group"] for r in doc["rows"]}:
            out[group] = (doc, md)
    return out


def test_firing_alerts_roll_the_devices_groups_back_and_the_reports_say_why(stack: dict[str, Any]) -> None:
    fleet, base, ports, start, procs = (stack[k] for k in ("fleet", "base", "ports", "start", "procs"))
    untouched = fleet.snapshot(["dev-l1"])
    # real inference; the monitor runs after each simulated minute and writes the facts and the metrics:
    # dev-a1's sensor drops frames (30 % NaN inputs -> error results), dev-a2 is clean; dev-b1's readout is
    # scrambled (the picture gone, drift features unchanged): 1.6.0 is unsure. Two minutes: the device's own
    # confidence rule (5 consecutive minutes) has not rolled it back; Prometheus's does.
    sim = simulate([DeviceLoad(fleet.root / "dev-a1", "errors"), DeviceLoad(fleet.root / "dev-a2", "clean"),
                    DeviceLoad(fleet.root / "dev-b1", "collapse")], minutes=2, rate=60, feedback=0.0)
    assert [d["versions"] for d in sim["devices"]] == [["1.1.0"], ["1.1.0"], ["1.6.0"]]
    rate = metric((stack["textfiles"] / "edge_runtime-dev-a1.prom").read_text(), "edge_model_inference_error_ratio",
                  "dev-a1", "1.1.0")
    assert rate > 0.05
    b1 = (stack["textfiles"] / "edge_runtime-dev-b1.prom").read_text()
    confidence = metric(b1, "edge_model_confidence_mean_ratio", "dev-b1", "1.6.0")
    assert confidence < metric(b1, "edge_model_confidence_threshold_ratio", "dev-b1", "1.6.0") == 0.75
    assert fleet.active("dev-b1") == "1.6.0"

    rules = yaml.safe_load((REPO / "prometheus" / "rules" / "edge.rules.yml").read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            if "for" in rule:
                rule["for"] = "2s"  # the test's shortened windows
    (base / "rules.yml").write_text(yaml.safe_dump(rules))
    am = yaml.safe_load((REPO / "prometheus" / "alertmanager.example.yml").read_text())
    am["route"].update(group_wait="1s", group_interval="1s", repeat_interval="1h")
    [hook] = next(r for r in am["receivers"] if r["name"] == "edge-rollback")["webhook_configs"]
    hook["url"] = f"{stack['url']}/alerts"
    hook["http_config"]["authorization"]["credentials_file"] = str(stack["token_file"])
    (base / "alertmanager.yml").write_text(yaml.safe_dump(am))
    (base / "prometheus.yml").write_text(yaml.safe_dump({
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(base / "rules.yml")],
        "alerting": {"alertmanagers": [{"static_configs": [{"targets": [f"127.0.0.1:{ports['alertmanager']}"]}]}]},
        "scrape_configs": [{"job_name": "edge-devices",
                            "static_configs": [{"targets": [f"127.0.0.1:{ports['node']}"]}]}],
    }))
    start("alertmanager", ["prometheus-alertmanager", f"--config.file={base / 'alertmanager.yml'}",
                           f"--storage.path={base / 'am-data'}",
                           f"--web.listen-address=127.0.0.1:{ports['alertmanager']}", "--cluster.listen-address="])
    start("prometheus", ["prometheus", f"--config.file={base / 'prometheus.yml'}",
                         f"--storage.tsdb.path={base / 'prom-data'}",
                         f"--web.listen-address=127.0.0.1:{ports['prometheus']}"])

    def finished_runs() -> Any:
        runs = http(stack["url"] + "/status", TOKEN)[1]["runs"]
        return runs if len(runs) == 2 and all(r["status"] != "running" for r in runs) else None

    runs = wait_for("a rollback of line_a and of line_b started by the alerts", finished_runs, 120, procs)
    assert sorted(r["group"] for r in runs) == ["line_a", "line_b"], runs
    assert all((r["rc"], r["status"]) == (0, "successful") for r in runs), runs
    assert all(fleet.active(h) == "1.0.0" for h in LINE_A)
    assert fleet.active("dev-b1") == "1.1.0"
    assert fleet.snapshot(["dev-l1"]) == untouched, "a device outside the alerting groups changed"
    reports = rollback_reports(fleet)

    # the headline rule: mean confidence below 0.75 rolled line_b back, and its report says so
    report, md = reports["line_b"]
    assert {r["device"]: r["result"] for r in report["rows"]} == {"dev-b1": "rolled_back"}
    why = report["why"]
    assert why.startswith("alert EdgeModelLowConfidence firing on dev-b1 (defect-classifier 1.6.0)"), why
    assert f"mean confidence {confidence:.4f} below the device's threshold" in why
    assert f"## Why\n\n{why}" in md

    # the error-rate rule rolled line_a back
    report, md = reports["line_a"]
    assert {r["device"]: r["result"] for r in report["rows"]} == dict.fromkeys(LINE_A, "rolled_back")
    why = report["why"]
    assert why.startswith("alert EdgeModelErrorRateHigh firing on dev-a1 (defect-classifier 1.1.0)"), why
    assert f"inference error rate {rate:.4f} above the device's baseline" in why
    assert "dev-a2" not in why  # its error rate is below the baseline
    assert f"## Why\n\n{why}" in md

    # models.yaml still pins 1.1.0 / 1.6.0: Prometheus now says the three devices are out of sync (nothing else)
    prom = f"http://127.0.0.1:{ports['prometheus']}/api/v1/alerts"

    def out_of_sync() -> Any:
        alerts = http(prom)[1]["data"]["alerts"]
        found = {a["labels"]["device"] for a in alerts
                 if a["labels"]["alertname"] == "EdgeDeviceOutOfSync" and a["state"] == "firing"}
        return found if found == {*LINE_A, "dev-b1"} else None

    assert wait_for("EdgeDeviceOutOfSync for line_a and line_b", out_of_sync, 30, procs) == {*LINE_A, "dev-b1"}

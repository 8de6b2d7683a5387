"""The main job on simulated fleets (`make demo`), told in eight acts.

The story runs on a fleet of its own (`.state/demo/fleet`, reports in `.state/demo/reports`) with its own
copies of models.yaml, so the repository's models.yaml and the default fleet are never out of step:

1. Deploy models.yaml as committed: 1.0.0 everywhere (int8 on the lab group).
2. Pull request: promote line_a to 1.1.0 (a one-line diff); the plan in check mode; merged, it rolls out in
   canary waves, each gated on health.
3. Pull request: line_b to the bad 1.2.0: the canary fails its smoke test, is rolled back and quarantined,
   the rollout of line_b halts; line_a and lab are untouched.
4. Operator rollback of line_a (`make rollback GROUP=line_a`): back to 1.0.0; the run names the models.yaml
   line that still pins 1.1.0 and the change that keeps the rollback.
5. Fleet health (`make health`): playbooks/health.yml reads every demo device once, read-only, and judges
   it: line_b's canary rolled back (1.2.0 quarantined), line_a out of sync with its pin; the run fails on the
   rolled-back device as a CI job would; the reports (health-latest.{md,html,json}) and the history.
6. Field telemetry: the workload simulator (edge_runtime.workload) runs real inference on every demo device
   for 10 simulated minutes (a few seconds), with the device-side monitor after each minute: darker scenes on
   dev-b1 and a noisy sensor on dev-l1 are reported as drift on exactly those two devices; on dev-a2 the
   confidence of 1.0.0 collapses and the device rolls itself back to its previous version, with the reason in
   `edge-runtime status` and its facts; dropped frames on dev-b3 are an error-rate finding.
7. Live canary gate: a release that passes its golden smoke test but is worse on live data (the 1.0.0 weights
   re-released as 1.6.0, scripts/live_regression.py) goes to line_a with `rollout.live_gate`. Its canary is
   first put back on 1.1.0 (`edge-runtime rollback --to 1.1.0`) with 20 minutes of live traffic, the baseline;
   then the workload simulator (a thread of the demo: nothing outlives it) drives the canary while its wave
   bakes; the live gate compares the canary's live numbers with its previous version's, halts line_a at wave 1
   and rolls the canary back to 1.1.0. The demo prints the gate's numbers, baseline vs new.
8. The default fleet (`.state/fleet`, used by `make plan`, `make deploy`, `make rollback`) is converged to
   the committed models.yaml, so after the demo `make plan` shows no change and a first one-line pull
   request changes only what it says.

The playbooks' output is compact (stdout callback ``edgeml.fleet.compact``: what changed, what failed, the
gate decisions and the run summary; nothing for skipped hosts). ``--verbose`` shows Ansible's default output.
The demo registry is signed with a demo key made here (NOT FOR PRODUCTION).
"""

from __future__ import annotations

import argparse
import difflib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
KEY_NAME = "demo-NOT-FOR-PRODUCTION"
T0 = time.monotonic()


def show(path: Path) -> str:
    """A path as a newcomer types it: relative to the repository when it is inside."""
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


def banner(text: str) -> None:
    print(f"\n== {text}  [{time.monotonic() - T0:.0f} s]", flush=True)


def promote(src: Path, dst: Path, group: str, model: str, version: str, registry: Path) -> None:
    """Write a copy of models.yaml with one group's pin changed, and show the one-line diff."""
    lines = src.read_text().splitlines(keepends=True)
    out, in_group, done = [], False, False
    for line in lines:
        if line.startswith(f"  {group}:"):
            in_group = True
        elif line.startswith("  ") and not line.startswith("   ") and in_group:
            in_group = False
        if in_group and not done and line.strip().startswith(f"{model}:"):
            indent = line[: len(line) - len(line.lstrip())]
            line = f'{indent}{model}: "{version}"\n'
            done = True
        out.append(line)
    if not done:
        raise SystemExit(f"demo: no pin for {model} in group {group}")
    # the copy lives elsewhere: pin the registry as an absolute path (relative paths follow the file)
    fixed = [f"registry: {registry}\n" if ln.startswith("registry:") else ln for ln in out]
    dst.write_text("".join(fixed))
    diff = [d for d in difflib.unified_diff(lines, out, "models.yaml", "models.yaml (pull request)", n=0)
            if not d.startswith("@@")]
    sys.stdout.writelines(diff)


class Runner:
    """Runs the playbooks with the venv's ansible-playbook (no activation needed).

    ``state`` is the repository's ``.state`` (the default) or, for tests, another directory: then the default
    fleet, its reports, the registry and the demo key live there too, and nothing of the repository changes.
    """

    def __init__(self, state: Path, verbose: bool) -> None:
        self.state, self.demo = state, state / "demo"
        self.own_state = state.resolve() != (REPO / ".state").resolve()
        self.env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), PATH=f"{BIN}:{os.environ['PATH']}")
        if not verbose:
            self.env.update(ANSIBLE_STDOUT_CALLBACK="edgeml.fleet.compact", ANSIBLE_NOCOLOR="1")

    def fleet_vars(self, base: Path, reports: Path) -> dict[str, Any]:
        extra: dict[str, Any] = {"edge_runtime_root": f"{base}/{{{{ inventory_hostname }}}}",
                                 "edge_reports_dir": str(reports)}
        if self.own_state:
            extra.update(edge_runtime_trusted_keys=[str(self.state / "demo-keys" / f"{KEY_NAME}.pub")],
                         edge_lock_dir=str(self.state / "locks"), edge_models_file=str(self.committed()))
        return extra

    def playbook(self, name: str, *extra: str, demo_fleet: bool = True, expect_ok: bool = True,
                 why: str = "the rollout of line_b halted") -> None:
        """``ansible-playbook playbooks/<name>``; on the demo's own fleet unless ``demo_fleet`` is False."""
        if demo_fleet:
            own = ["-e", json.dumps(self.fleet_vars(self.demo / "fleet", self.demo / "reports"))]
        elif self.own_state:
            own = ["-e", json.dumps(self.fleet_vars(self.state / "fleet", self.state / "reports"))]
        else:
            own = []  # exactly `make deploy`
        cmd = [str(BIN / "ansible-playbook"), f"playbooks/{name}", *extra]
        print("$ " + " ".join(c.replace(str(REPO) + "/", "") for c in cmd), flush=True)
        # the fleet's own variables first: an act's -e (its models.yaml) comes later and wins
        rc = subprocess.run([*cmd[:2], *own, *cmd[2:]], cwd=REPO, env=self.env, check=False).returncode
        if (rc == 0) != expect_ok:
            raise SystemExit(f"demo: ansible-playbook {name} exited {rc}, which this step did not expect")
        if not expect_ok:
            print(f"(ansible-playbook exited {rc}, as expected: {why})")

    def committed(self) -> Path:
        """models.yaml as committed, or (own state) a copy whose registry is this state's."""
        if not self.own_state:
            return REPO / "models.yaml"
        copy = self.state / "models.yaml"
        text = (REPO / "models.yaml").read_text()
        copy.write_text("".join(f"registry: {self.state / 'registry'}\n" if ln.startswith("registry:") else ln
                                for ln in text.splitlines(keepends=True)))
        return copy


#: act 5: the scenario of each demo device's inputs (every other device sees clean inputs)
FIELD = {"dev-b1": "winter", "dev-l1": "noise", "dev-a2": "collapse", "dev-b3": "errors"}
FIELD_MINUTES = 10


def field_telemetry(fleet: Path) -> None:
    """Act 5: the workload simulator on every demo device, the monitor after each simulated minute."""
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))  # the repository's edge_runtime, as the playbooks' devices use it
    from edge_runtime.workload import DeviceLoad, simulate

    banner(f"6. Field telemetry: real inference on every demo device for {FIELD_MINUTES} simulated minutes, "
           "the device-side monitor after each minute")
    hosts = sorted(p.name for p in fleet.iterdir() if (p / "config.json").exists())
    print("inputs: " + ", ".join(f"{h} {FIELD[h]}" for h in sorted(FIELD)) + "; every other device clean "
          "(edge_runtime/workload.py)")
    loads = [DeviceLoad(fleet / h, FIELD.get(h, "clean"), seed=i + 1) for i, h in enumerate(hosts)]
    rep = simulate(loads, minutes=FIELD_MINUTES, rate=60)
    print(f"{'DEVICE':8} {'INPUTS':9} {'VERSIONS':16} {'CONF':6} {'ERR':>4}  {'DRIFT':10} MONITOR")
    drifted: dict[str, list[str]] = {}
    for host, s in zip(hosts, rep["devices"], strict=True):
        last = json.loads((fleet / host / "monitor" / "last.json").read_text())
        model = next(iter(last["models"].values()))
        drift = next((f for f in model["findings"] if f["rule"] == "drift"), None)
        feats = (drift or {}).get("evidence", {}).get("drifted") or []
        if feats:
            drifted[host] = feats
        conf = [c for c in s["mean_confidence"].values() if c is not None]
        print(f"{host:8} {s['scenario']:9} {' -> '.join(s['versions']):16} {conf[-1] if conf else 0:.3f} "
              f"{s['errors']:>4}  {','.join(feats) or '-':10} {model['state']}")
    injected = {h for h, sc in FIELD.items() if sc in ("winter", "noise")}
    if set(drifted) != injected:
        raise SystemExit(f"demo: drift was reported on {sorted(drifted)}, injected on {sorted(injected)}")
    print(f"drift reported on exactly the devices it was injected on: {', '.join(sorted(drifted))}")
    collapsed = fleet / "dev-a2"
    print("$ edge-runtime --root .../dev-a2 status", flush=True)
    subprocess.run([str(BIN / "edge-runtime"), "--root", str(collapsed), "status"], check=True)
    facts = json.loads((collapsed / "facts" / "edge_runtime.fact").read_text())
    m = facts["models"]["defect-classifier"]
    print(f"facts of dev-a2: active_version {m['active_version']}, bad_versions {m['bad_versions']}, "
          f"last_op {m['last_op']}: {m['last_reason']}")


def fleet_health(run: Runner, models: Path) -> None:
    """Act 5: playbooks/health.yml on the demo fleet, read-only; it fails on the rolled-back canary of line_b."""
    banner("5. Fleet health (make health): every device read once, read-only, and judged; reports and history")
    copy = run.demo / "models-health.yaml"
    # the demo fleet has had no traffic yet (act 6 brings it): judged by the twin alone
    copy.write_text(models.read_text() + "health:\n  require_telemetry: false\n")
    print("models.yaml (the pins of act 3) + `health: {require_telemetry: false}`: no traffic yet, so the twin "
          "judges (docs/HEALTH.md)")
    run.playbook("health.yml", "-e", f"edge_models_file={copy}", expect_ok=False,
                 why="a device is rolled back, above health.max_rolled_back 0: CI would be red")
    reports = run.demo / "reports"
    doc = json.loads((reports / "health-latest.json").read_text())
    if not doc["failed"] or doc["counts"]["rolled_back"] != 1:  # the compact output above listed every device
        raise SystemExit(f"demo: expected health to fail on line_b's rolled-back canary; counts {doc['counts']}")
    print(f"reports: {show(reports)}/health-latest.md (what is wrong first), health-latest.html (the dashboard, "
          f"self-contained), health-latest.json; history: {show(reports)}/history/history.db")


def canary(group: str, pins: dict[str, str]) -> str:
    """Wave 1's device of ``group`` under ``pins`` (its first wave is one device), as the deploy orders them."""
    import yaml

    if str(REPO / "collections") not in sys.path:
        sys.path.insert(0, str(REPO / "collections"))
    from ansible_collections.edgeml.fleet.plugins.plugin_utils.waves import wave_order

    inventory = yaml.safe_load((REPO / "inventory" / "local" / "hosts.yml").read_text())
    return wave_order(group, pins, list(inventory["edge_devices"]["children"][group]["hosts"]))[0]


def live_gate(run: Runner, registry: Path, models: Path) -> None:
    """Act 7: the regression (smoke test passes, live data worse) halted at line_a's canary by the live gate."""
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    from scripts import live_regression  # the one owner of the regression and its traffic (the test uses it too)

    banner("7. Live canary gate: 1.6.0 passes its smoke test but is worse on live data; line_a bakes on live "
           "traffic")
    fleet, reports = run.demo / "fleet", run.demo / "reports"
    first = canary("line_a", {"defect-classifier": "1.6.0"})
    entry = live_regression.build(registry, run.state / "demo-keys" / f"{KEY_NAME}.key", run.demo / "regression")
    print(f"1.6.0 = the 1.0.0 weights re-released (counter 5), signed into {show(registry)} "
          "(scripts/live_regression.py)")
    # the baseline: the canary of 1.6.0 on 1.1.0 again (act 4 rolled line_a back to 1.0.0; 1.1.0 is kept there),
    # with 20 minutes of live traffic on it
    print(f"$ edge-runtime --root .../{first} rollback defect-classifier --to 1.1.0", flush=True)
    subprocess.run([str(BIN / "edge-runtime"), "--root", str(fleet / first), "rollback", "defect-classifier",
                    "--to", "1.1.0"], check=True)
    live_regression.baseline_traffic([fleet / first])
    print(f"{first} runs 1.1.0 with 20 minutes of clean live traffic (ground truth on every inference): the "
          "baseline")
    step = run.demo / "models-line_a-1.6.0-live-gate.yaml"
    step.write_text(live_regression.with_regression(models.read_text(), entry, group="line_a", pin="1.6.0",
                                                    live_gate=True))
    print("pull request: line_a to 1.6.0 (catalogue entry + pin), with\n" + live_regression.LIVE_GATE.rstrip())
    roots = sorted(p for p in fleet.iterdir() if p.name.startswith("dev-a"))
    print("workload simulator: started on line_a (drives each device once it runs 1.6.0)", flush=True)
    with live_regression.CanaryTraffic(roots) as traffic:
        run.playbook("deploy.yml", "--limit", "line_a,localhost", "-e", f"edge_models_file={step}",
                     expect_ok=False, why="the live gate halted line_a")
    print(f"workload simulator: stopped; it drove {', '.join(sorted(traffic.traffic)) or 'no device'}")
    failed = {h: t for h, t in traffic.traffic.items() if isinstance(t, Exception)}
    if failed:
        raise SystemExit(f"demo: the workload simulator failed: {failed}")
    report = json.loads((reports / "latest.json").read_text())
    live = [g for g in report["gates"] if g.get("kind") == "live" and g["group"] == "line_a"]
    halted = report.get("halted", {}).get("line_a") or {}
    rows = {r["device"]: r for r in report["rows"] if r["group"] == "line_a"}
    active = json.loads((fleet / first / "models" / "defect-classifier" / "state.json").read_text())["active"]
    if (len(live) != 1 or live[0]["wave"] != 1 or live[0]["passed"] or halted.get("gate") != "live"
            or list(traffic.traffic) != [first] or active != "1.1.0"):
        raise SystemExit(f"demo: expected the live gate to halt line_a at wave 1 on {first} and roll it back "
                         f"to 1.1.0; gates {live}, halted {halted}, {first} runs {active}")
    verdict = live[0]["verdicts"][first]
    n = verdict["models"]["defect-classifier"]["numbers"]

    def pct(x: Any) -> str:
        return "-" if x is None else f"{100 * x:.1f} %"

    def num(x: Any, fmt: str = ".3f") -> str:
        return "-" if x is None else format(x, fmt)

    print(f"live gate, line_a wave 1, {first}: {verdict['models']['defect-classifier']['verdict'].upper()} after "
          f"{verdict['reads']} read(s) of its live telemetry (the smoke gate had passed it)")
    print(f"  {'':22} {'baseline ' + str(n.get('baseline_version')):>16} {'new ' + str(n.get('version')):>12}")
    print(f"  {'inferences':22} {n.get('baseline_inferences', '-'):>16} {n.get('inferences', '-'):>12}")
    print(f"  {'error rate (' + str(n.get('basis')) + ')':22} {pct(n.get('baseline_error_rate')):>16} "
          f"{pct(n.get('error_rate')):>12}   halts at +2 points (halt_at_error_rate_increase)")
    print(f"  {'mean confidence':22} {num(n.get('baseline_mean_confidence')):>16} {num(n.get('mean_confidence')):>12}")
    print(f"  {'p95 latency ms':22} {num(n.get('baseline_p95_ms')):>16} {num(n.get('p95_ms')):>12}")
    print(f"{first} rolled back: runs 1.1.0 again; "
          + ", ".join(f"{h} {r['result']}" for h, r in sorted(rows.items()) if h != first)
          + f". Report: {show(reports)}/latest.md (Gate decisions)")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--verbose", action="store_true", help="Ansible's default output instead of the compact one")
    ap.add_argument("--state", type=Path, default=REPO / ".state",
                    help="where the fleets, registry, demo key and reports go (default: the repository's .state)")
    args = ap.parse_args(argv)
    run = Runner(args.state.resolve(), args.verbose)
    state, demo, registry = run.state, run.demo, run.state / "registry"

    banner("Set-up: the demo registry, signed with a demo key made here (NOT FOR PRODUCTION); a fresh demo fleet")
    subprocess.run([sys.executable, str(REPO / "scripts/build_registry.py"), "--out", str(registry),
                    "--keys", str(state / "demo-keys")], check=True)
    if demo.exists():
        subprocess.run(["chmod", "-R", "u+w", str(demo)], check=True)  # staged versions are read-only
        shutil.rmtree(demo)
    demo.mkdir(parents=True)
    print(f"demo fleet: {show(demo / 'fleet')}/<device>; reports: {show(demo / 'reports')}")

    banner("1. Deploy models.yaml as committed: defect-classifier 1.0.0 on line_a and line_b, int8 1.0.0 on lab")
    run.playbook("deploy.yml")

    banner("2. Pull request: promote line_a to 1.1.0 (a one-line diff); CI shows the plan (check mode)")
    step2 = demo / "models-line_a-1.1.0.yaml"
    promote(REPO / "models.yaml", step2, "line_a", "defect-classifier", "1.1.0", registry)
    run.playbook("deploy.yml", "--check", "-e", f"edge_models_file={step2}")
    banner("2b. Merged: the rollout runs in waves (1 canary, then 50%, then 100%), each gated on health")
    run.playbook("deploy.yml", "-e", f"edge_models_file={step2}")

    banner("3. Pull request: line_b to 1.2.0, signed but bad: the canary fails, is rolled back, line_b halts")
    step3 = demo / "models-line_b-1.2.0.yaml"
    promote(step2, step3, "line_b", "defect-classifier", "1.2.0", registry)
    run.playbook("deploy.yml", "-e", f"edge_models_file={step3}", expect_ok=False)

    banner("4. Operator rollback of line_a (make rollback GROUP=line_a): from the pinned 1.1.0 back to 1.0.0")
    run.playbook("rollback.yml", "-e", "edge_rollback_targets=line_a", "-e", f"edge_models_file={step3}")

    fleet_health(run, step3)

    field_telemetry(demo / "fleet")

    live_gate(run, registry, step3)

    banner(f"8. The default fleet ({show(state / 'fleet')}; make plan/deploy/rollback) runs models.yaml as committed")
    run.playbook("deploy.yml", demo_fleet=False)
    reports = state / "reports" if run.own_state else REPO / "reports"
    print(f"\nReports: {show(demo / 'reports')}/latest.md (the demo; act 7's halted rollout) and health-latest.html "
          f"(act 5), {show(reports)}/latest.md (the default fleet).\nNext: edit one line of models.yaml and run "
          f"`make plan`: only that group's devices change. ({time.monotonic() - T0:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

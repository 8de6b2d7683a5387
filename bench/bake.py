"""Live-gate bake benchmark: what a wave's bake adds to a deploy, against the configured bake time and reads.

    .venv/bin/python bench/bake.py [--devices 10] [--bake 20] [--poll 2] [--json] [--tmp-dir DIR] [--keep]

On three fresh local fleets of ``--devices`` devices (all in line_a, one wave of 100 %), each first deployed
with defect-classifier 1.0.0 and given 10 minutes of baseline traffic (the workload simulator: real
Predictor inference, stamped before the upgrade), the same upgrade to 1.1.0 is timed (plain
``ansible-playbook`` CLI, wall time; the fleet bench's callback records per-task wall time):

* ``no bake``: no ``live_gate`` (today's behaviour);
* ``bake, data ready``: ``live_gate`` with ``--bake`` / ``--poll``; the new version's live samples are already
  in each device's store when the bake starts (records of the new version stamped after its activation,
  written through the real telemetry store), so the first check decides: one read per device;
* ``bake, no data``: the same gate, no traffic for the new version: the bake polls until ``--bake`` has passed,
  then fails closed (``insufficient_data``), and the wave rolls back.

Then a no-op rerun of the ``data ready`` fleet (the gate configured, nothing installed). Goals:

1. the bake of ``no data`` (the wall time of its read task) <= bake time + checks x (one check's wall time,
   measured as the ``data ready`` read task), where checks = the reads each device answered (from the report);
2. ``data ready`` decides after one read per device (every device's ``reads`` is 1);
3. the no-op rerun and the ``no bake`` upgrade run no bake task at all (no extra task per device).

Progress goes to stderr; exit status 1 if a goal fails. Scratch files are removed unless ``--keep``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import yaml
from _bytecode import device_like_bytecode

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import fleet as fb

READ_TASK = "Read the live telemetry since the activation, once per check (read-only)"


def log(msg: str) -> None:
    fb.log(msg)


def write_models(tmp: Path, version: str, live_gate: dict[str, Any] | None) -> Path:
    data = yaml.safe_load((fb.REPO / "models.yaml").read_text(encoding="utf-8"))
    data["registry"] = str(tmp / "registry")
    rollout: dict[str, Any] = {"waves": ["100%"], "max_fail_percent": 0,
                               "health_gate": {"require_smoke_pass": True, "max_p95_latency_ms": 20.0}}
    if live_gate is not None:
        rollout["live_gate"] = live_gate
    data["groups"] = {"line_a": {"models": {"defect-classifier": version}, "rollout": rollout}}
    out = tmp / f"models-{version}-{'bake' if live_gate else 'nobake'}.yaml"
    out.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return out


def write_fleet(base: Path, n: int) -> tuple[Path, list[str]]:
    devices = [f"dev-a{i + 1:03d}" for i in range(n)]
    inv = {"edge_devices": {
        "vars": {"ansible_connection": "local", "ansible_python_interpreter": str(fb.PYTHON),
                 "edge_runtime_root": str(base / "roots") + "/{{ inventory_hostname }}"},
        "children": {"line_a": {"hosts": dict.fromkeys(devices)}}}}
    base.mkdir(parents=True)
    path = base / "hosts.yml"
    path.write_text("---\n" + yaml.safe_dump(inv, sort_keys=False), encoding="utf-8")
    return path, devices


def extra_vars(tmp: Path, base: Path, models: Path, name: str) -> Path:
    path = base / f"extra-{name}.yml"
    path.write_text(yaml.safe_dump({
        "edge_models_file": str(models), "edge_runtime_trusted_keys": [str(tmp / "keys" / f"{fb.KEY_NAME}.pub")],
        "edge_reports_dir": str(base / "reports"), "edge_lock_dir": str(base / "locks")}), encoding="utf-8")
    return path


def run(inv: Path, extra: Path, forks: int, base: Path, label: str, *, ok: bool = True) -> tuple[float, dict[str, Any]]:
    stats = base / f"{label}.json"
    argv = [str(fb.VENV_BIN / "ansible-playbook"), "-i", str(inv), "-f", str(forks), "-e", f"@{extra}",
            str(fb.REPO / "playbooks" / "deploy.yml")]
    if ok:
        dt, _ = fb.timed_run(argv, fb.env_for(stats), label, base / f"{label}.log")
    else:  # the fail-closed bake ends the run with a non-zero status, as it should
        import subprocess

        t0 = time.perf_counter()
        proc = subprocess.run(argv, cwd=fb.REPO, env=fb.env_for(stats), capture_output=True, text=True, check=False)
        dt = time.perf_counter() - t0
        (base / f"{label}.log").write_text(proc.stdout + proc.stderr, encoding="utf-8")
        if proc.returncode == 0:
            raise RuntimeError(f"{label}: expected the live gate to halt the wave ({base / label}.log)")
        log(f"  {label}: {dt:.1f} s (halted, as expected)")
    return dt, json.loads(stats.read_text(encoding="utf-8"))


def task_wall(doc: dict[str, Any], name: str) -> float | None:
    walls = [t["wall_s"] for t in doc["tasks"] if t.get("task") == name]
    return sum(walls) if walls else None


def seed_baseline(base: Path, devices: list[str]) -> None:
    from edge_runtime.workload import DeviceLoad, simulate

    simulate([DeviceLoad(base / "roots" / h, "clean", seed=i + 1) for i, h in enumerate(devices)], minutes=10,
             rate=30, feedback=1.0, monitor=False, start=time.time() - 15 * 60)


def seed_new_version(base: Path, devices: list[str], version: str, per_device: int) -> None:
    """Records of ``version`` stamped 5-10 minutes ahead (after its coming activation), through the real store,
    with the baseline's error rate and a p95 in the lowest latency bucket: the first check finds enough samples,
    and the verdict passes."""
    from edge_runtime.device import Device
    from edge_runtime.telemetry._status import db_path
    from edge_runtime.telemetry.store import TelemetryStore

    t0 = (int(time.time()) // 60 + 5) * 60
    for h in devices:
        root = base / "roots" / h
        store = TelemetryStore(db_path(root), Device(root).config.telemetry_config())
        try:
            for k in range(per_device):
                ts = t0 + k * 300 / per_device
                store.record("defect-classifier", version, ts, 0.04, True, "good", 0.95, {})
                store.feedback("defect-classifier", version, ts, wrong=k % 20 == 0)
            store.flush()
        finally:
            store.close()


def live_reads(base: Path) -> dict[str, int]:
    report = json.loads((base / "reports" / "latest.json").read_text(encoding="utf-8"))
    out: dict[str, int] = {}
    for g in report.get("gates") or []:
        if g.get("kind") == "live":
            out.update({h: v["reads"] for h, v in g["verdicts"].items()})
    return out


def scenario(tmp: Path, name: str, n: int, forks: int, live_gate: dict[str, Any] | None, data: bool,
             noop: bool = False) -> dict[str, Any]:
    base = tmp / name
    inv, devices = write_fleet(base, n)
    log(f"{name}: {n} devices")
    run(inv, extra_vars(tmp, base, write_models(tmp, "1.0.0", None), "setup"), forks, base, "setup")
    seed_baseline(base, devices)
    if data:
        seed_new_version(base, devices, "1.1.0", 300)
    upgrade = extra_vars(tmp, base, write_models(tmp, "1.1.0", live_gate), "upgrade")
    halts = live_gate is not None and not data
    dt, doc = run(inv, upgrade, forks, base, "upgrade", ok=not halts)
    out: dict[str, Any] = {"scenario": name, "devices": n, "deploy_s": round(dt, 2),
                           "read_task_s": task_wall(doc, READ_TASK), "reads_per_device": live_reads(base)}
    if noop:
        dt2, doc2 = run(inv, upgrade, forks, base, "noop-rerun")
        out["noop_s"] = round(dt2, 2)
        out["noop_read_task_s"] = task_wall(doc2, READ_TASK)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--devices", type=int, default=10)
    ap.add_argument("--bake", type=float, default=20.0, help="bake_seconds of the live gate (default 20)")
    ap.add_argument("--poll", type=float, default=2.0, help="poll_seconds (default 2)")
    ap.add_argument("--forks", type=int, default=fb.default_forks())
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--tmp-dir")
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args(argv)
    device_like_bytecode()
    tmp = fb.pick_tmp(args.tmp_dir)
    live = {"bake_seconds": args.bake, "poll_seconds": args.poll, "min_samples": 200, "min_feedback": 100}
    load_before = Path("/proc/loadavg").read_text().split()[:3]
    try:
        fb.build_registry(tmp)
        rows = [scenario(tmp, "no-bake", args.devices, args.forks, None, data=False),
                scenario(tmp, "bake-data-ready", args.devices, args.forks, live, data=True, noop=True),
                scenario(tmp, "bake-no-data", args.devices, args.forks, live, data=False)]
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            log(f"kept {tmp}")
    nobake, ready, nodata = rows
    one_check = ready["read_task_s"] or 0.0
    checks = max(nodata["reads_per_device"].values(), default=0)
    bound = args.bake + checks * one_check
    goals = {
        "bake <= bake time + checks x one check": {
            "value_s": nodata["read_task_s"], "bound_s": round(bound, 2), "checks": checks,
            "one_check_s": one_check, "pass": nodata["read_task_s"] is not None and nodata["read_task_s"] <= bound},
        "data ready: one read per device": {
            "reads": sorted(set(ready["reads_per_device"].values())),
            "pass": bool(ready["reads_per_device"]) and set(ready["reads_per_device"].values()) == {1}},
        "no bake task without a bake or on a no-op": {
            "no_bake": nobake["read_task_s"], "noop": ready.get("noop_read_task_s"),
            "pass": nobake["read_task_s"] is None and ready.get("noop_read_task_s") is None},
    }
    doc = {"bake_s": args.bake, "poll_s": args.poll, "devices": args.devices, "forks": args.forks, "rows": rows,
           "goals": goals, "load_before": load_before, "load_after": Path("/proc/loadavg").read_text().split()[:3]}
    if args.json:
        print(json.dumps(doc, indent=1))
    else:
        print(f"bake {args.bake:g} s, poll {args.poll:g} s, {args.devices} devices, forks {args.forks}; "
              f"load {' '.join(load_before)} -> {' '.join(doc['load_after'])}")
        print(f"{'scenario':18} {'deploy s':>9} {'read task s':>12} {'reads/device':>13}")
        for r in rows:
            reads = sorted(set(r["reads_per_device"].values()))
            print(f"{r['scenario']:18} {r['deploy_s']:9.1f} {r['read_task_s'] or 0:12.2f} {reads or '-'!s:>13}")
        print(f"no-op rerun with the gate configured: {ready['noop_s']:.1f} s, bake task: "
              f"{'none' if ready['noop_read_task_s'] is None else ready['noop_read_task_s']}")
        for name, g in goals.items():
            detail = {k: v for k, v in g.items() if k != "pass"}
            print(f"{'PASS' if g['pass'] else 'FAIL'}  {name}: {detail}")
    return 0 if all(g["pass"] for g in goals.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())

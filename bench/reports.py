"""Health benchmark: the reports for 10,000 devices, and playbooks/health.yml against ``ansible -m ping``.

    .venv/bin/python bench/reports.py [--devices 10000] [--sizes 10,50,200] [--repeat 3] [--json] [--skip-playbook]
                                      [--full-deploy]

1. Reports: the collected snapshots of ``--devices`` synthetic devices (tests/support/health_fleet.py: every
   status mixed in, a 10-point telemetry series per device, drift features) -> the status decision
   (plugin_utils/health.py ``fleet_health``) -> JSON + Markdown + HTML and the history (journal event + SQLite rows,
   with two earlier runs in it for the trend charts). Goal: decision + files < 10 s, HTML < 5 MB.
2. Playbook: per size N, on a local fleet made by bench/fleet.py's machinery, ``--repeat`` times
   ``ansible edge_devices -m ping`` then ``health.yml``, alternating, so a change of machine load hits both; the
   medians are compared. Goal: health.yml <= 1.5x ping. The fleet: deploy.yml installs a seed fleet of one device
   per group once (not timed), and every device of the N is a copy of its group's seed root (the installed
   runtime state; the one absolute path in it, the Ansible local facts file's, rewritten), so a 200-device fleet
   costs seconds to set up instead of a 200-device first deploy (``--full-deploy``: deploy.yml on every fleet, as
   before). Then fresh telemetry is recorded on every device through the runtime's store, and every health.yml
   run must find all N devices in sync (a bench whose devices were unknown would time other work).

Progress on stderr; exit status 1 if a goal fails. Scratch files are removed at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml
from _bytecode import device_like_bytecode

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "collections"), str(REPO / "bench")]

import fleet as fleet_bench  # noqa: E402  (bench/fleet.py: registry, inventory, ping, timed runs)

REPORT_GOAL_S = 10.0
HTML_GOAL_BYTES = 5_000_000
PLAYBOOK_GOAL = 1.5


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def bench_reports(n: int, tmp: Path) -> dict[str, Any]:
    from ansible_collections.edgeml.fleet.plugins.plugin_utils.health import fleet_health

    from edge_runtime.health_report import write_reports
    from tests.support.health_fleet import synthetic_fleet

    log(f"reports: {n} synthetic devices")
    plan, snaps = synthetic_fleet(n, seed=7)
    dest = tmp / "reports"
    for i in range(2):  # earlier runs: the trend charts have a history to draw (not timed)
        rep = fleet_health(plan, snaps, f"20261203T05{i:02d}00Z-0000000{i}")
        rep.update(generated_at=f"2026-12-03T05:{i:02d}:00Z", check_mode=False)
        write_reports(dest, rep)
    cpu0, t0 = time.process_time(), time.perf_counter()
    report = fleet_health(plan, snaps, "20261203T060000Z-00000002")
    report.update(generated_at="2026-12-03T06:00:00Z", check_mode=False)
    t_decide = time.perf_counter() - t0
    out = write_reports(dest, report)
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    if out["warnings"]:
        raise RuntimeError(f"report warnings: {out['warnings']}")
    sizes = {ext: (dest / f"health-latest.{ext}").stat().st_size for ext in ("json", "md", "html")}
    log(f"  decision {t_decide:.2f} s, everything {wall:.2f} s wall ({cpu:.2f} s CPU); html {sizes['html']} bytes")
    return {"devices": n, "decide_s": round(t_decide, 3), "total_s": round(wall, 3), "cpu_s": round(cpu, 3),
            "bytes": sizes, "counts": report["counts"],
            "pass": wall < REPORT_GOAL_S and sizes["html"] < HTML_GOAL_BYTES}


def record_telemetry(roots: Path) -> None:
    """Fresh telemetry on every device, through the runtime's store (as the inference API records it)."""
    from edge_runtime.telemetry._status import db_path
    from edge_runtime.telemetry.store import TelemetryStore

    now = time.time()
    for root in sorted(p for p in roots.iterdir() if p.is_dir()):
        model = next(iter(sorted(p.name for p in (root / "models").iterdir())))
        state = json.loads((root / "models" / model / "state.json").read_text())
        with TelemetryStore(db_path(root), clock=lambda: now) as store:
            for i in range(20):
                store.record(model, state["active"], now - 30 + i * 0.1, 2.0, True, "ok", 0.9)


def health(inv: Path, extra: Path, forks: int, base: Path, label: str, n: int) -> float:
    argv = [str(fleet_bench.VENV_BIN / "ansible-playbook"), "-i", str(inv), "-f", str(forks), "-e", f"@{extra}",
            str(REPO / "playbooks" / "health.yml")]
    dt, out = fleet_bench.timed_run(argv, fleet_bench.env_for(None), label, base / f"{label}.log")
    recap = fleet_bench.parse_recap(out)
    if any(r["changed"] for r in recap.values()):
        raise RuntimeError(f"health.yml changed something: {recap}")
    counts = json.loads((base / "reports" / "health-latest.json").read_text(encoding="utf-8"))["counts"]
    if counts.get("in_sync") != n:
        raise RuntimeError(f"health.yml did not find all {n} devices in sync: {counts} ({base / label}.log)")
    return dt


def seed_fleet(tmp: Path, models: Path, forks: int) -> Path:
    """One device per group, installed by deploy.yml (the first deploy, not timed); returns its directory."""
    base = tmp / "seed"
    inv = fleet_bench.write_fleet(base, len(fleet_bench.GROUPS))
    extra = fleet_bench.write_extra_vars(tmp, models, base)
    log("seed fleet: first deploy of one device per group (not timed)")
    fleet_bench.deploy(inv, extra, forks, base, "deploy")
    return base


def clone_fleet(seed: Path, base: Path, n: int) -> Path:
    """A fleet of N devices, each a copy of its group's seed device root (bench/fleet.py's host names start with
    ``dev-`` + the group's letter). The telemetry is left out (recorded fresh per device); the Ansible local facts
    file, the one file naming its root, is rewritten for the copy; the seed's reports (its deploy in the history)
    come along, so the dashboard draws the same charts as after a deploy."""
    inv: Path = fleet_bench.write_fleet(base, n)
    seeds = {p.name[:5]: p for p in (seed / "roots").iterdir() if p.is_dir()}
    hosts = [h for g in yaml.safe_load(inv.read_text(encoding="utf-8"))["edge_devices"]["children"].values()
             for h in g["hosts"]]
    for host in hosts:
        src, dst = seeds[host[:5]], base / "roots" / host
        shutil.copytree(src, dst, symlinks=True, ignore=shutil.ignore_patterns("telemetry"))
        facts = dst / "facts" / "edge_runtime.fact"
        if facts.exists():
            facts.write_text(facts.read_text(encoding="utf-8").replace(str(src), str(dst)), encoding="utf-8")
    shutil.copytree(seed / "reports", base / "reports")
    return inv


def bench_playbook(tmp: Path, models: Path, n: int, forks: int, repeat: int, seed: Path | None) -> dict[str, Any]:
    base = tmp / f"n{n}"
    if seed is None:
        inv = fleet_bench.write_fleet(base, n)
        extra = fleet_bench.write_extra_vars(tmp, models, base)
        log(f"N={n}: first deploy (not timed)")
        fleet_bench.deploy(inv, extra, forks, base, "deploy")
    else:
        log(f"N={n}: {n} copies of the seed devices")
        inv = clone_fleet(seed, base, n)
        extra = fleet_bench.write_extra_vars(tmp, models, base)
    record_telemetry(base / "roots")
    pings, runs, loads = [], [], [os.getloadavg()[0]]
    for i in range(repeat):
        pings.append(fleet_bench.ping(inv, forks, base, f"{i}"))
        runs.append(health(inv, extra, forks, base, f"health-{i}", n))
        loads.append(os.getloadavg()[0])  # the machine's load with every pair: a shared machine's figures vary
    ratio = statistics.median(runs) / statistics.median(pings)
    return {"n": n, "ping_s": [round(x, 2) for x in pings], "health_s": [round(x, 2) for x in runs],
            "load_1m": [round(x, 2) for x in loads], "ratio": round(ratio, 3), "pass": ratio <= PLAYBOOK_GOAL}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--devices", type=int, default=10_000, help="devices in the reports benchmark (default 10000)")
    ap.add_argument("--sizes", default="10,50,200", help="fleet sizes for health.yml vs ping (default 10,50,200)")
    ap.add_argument("--repeat", type=int, default=3, help="ping + health.yml pairs per size (default 3)")
    ap.add_argument("--forks", type=int, default=fleet_bench.default_forks())
    ap.add_argument("--skip-playbook", action="store_true", help="only the reports benchmark")
    ap.add_argument("--full-deploy", action="store_true",
                    help="deploy.yml on every fleet instead of copies of a deployed seed fleet (slow at N=200)")
    ap.add_argument("--json", action="store_true", help="print JSON instead of the table")
    args = ap.parse_args(argv)
    device_like_bytecode()
    tmp = Path(tempfile.mkdtemp(prefix="edge-health-bench-"))
    load0 = os.getloadavg()[0]
    result: dict[str, Any] = {"load_1m_before": load0, "cpus": os.cpu_count(), "forks": args.forks}
    try:
        result["reports"] = bench_reports(args.devices, tmp)
        result["playbook"] = []
        if not args.skip_playbook:
            fleet_bench.build_registry(tmp)
            models = fleet_bench.write_models(tmp)
            seed = None if args.full_deploy else seed_fleet(tmp, models, args.forks)
            result["fleet_setup"] = "deploy.yml per fleet" if args.full_deploy else "copies of a deployed seed fleet"
            for n in [int(x) for x in args.sizes.split(",") if x.strip()]:
                result["playbook"].append(bench_playbook(tmp, models, n, args.forks, args.repeat, seed))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    result["load_1m_after"] = os.getloadavg()[0]
    passed = result["reports"]["pass"] and all(r["pass"] for r in result["playbook"])
    result["all_passed"] = passed
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        r = result["reports"]
        print(f"reports for {r['devices']} devices: decision {r['decide_s']:.2f} s, decision + JSON + Markdown + HTML "
              f"+ history {r['total_s']:.2f} s wall, {r['cpu_s']:.2f} s CPU (goal < {REPORT_GOAL_S:.0f} s), "
              f"HTML {r['bytes']['html'] / 1e6:.2f} MB (goal < 5 MB), JSON {r['bytes']['json'] / 1e6:.2f} MB, "
              f"Markdown {r['bytes']['md'] / 1e3:.0f} kB: "
              f"{'PASS' if r['pass'] else 'FAIL'}")
        if result["playbook"]:
            print("\n| N | ping s (runs) | health.yml s (runs) | health/ping (medians) | goal <= 1.5 | load 1 min |")
            print("|---|---|---|---|---|---|")
            for p in result["playbook"]:
                print(f"| {p['n']} | {', '.join(map(str, p['ping_s']))} | {', '.join(map(str, p['health_s']))} | "
                      f"{p['ratio']:.2f}x | {'PASS' if p['pass'] else 'FAIL'} | "
                      f"{min(p['load_1m']):.1f}-{max(p['load_1m']):.1f} |")
        print(f"\n{result['cpus']} CPUs, forks {result['forks']}, load avg 1 min {load0:.2f} -> "
              f"{result['load_1m_after']:.2f}")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())

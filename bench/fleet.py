"""Fleet benchmark: playbooks/deploy.yml on generated local fleets, against ``ansible -m ping``.

    .venv/bin/python bench/fleet.py [--sizes 10,50,200] [--repeat 3] [--forks N] [--json] [--tmp-dir DIR] [--keep]

For every fleet size N, on a fresh fleet of N local-connection devices (groups line_a / line_b / lab,
as in inventory/local) and in the same run: ``ansible edge_devices -m ansible.builtin.ping``, the first
deploy, then ``--repeat`` times a no-op rerun (its PLAY RECAP must show changed=0 on every device)
followed by another ping. The no-op time is the median of the reruns, the ping time the median of all
pings (one before the first deploy, one after each rerun), so a change of machine load during the run
hits both sides; at N=10 a single run varies by +-15 % here. Goals:

1. no-op rerun <= 1.5x ping
2. first deploy <= (tasks per device host + 1) x ping, where "tasks per device host" counts the task
   results (not skipped) each device host got in the first deploy
3. t(200)/t(50) <= 4.4 for the first deploy and for the no-op rerun

Wall time is time.perf_counter around subprocess.run of the plain CLI (ANSIBLE_CONFIG=ansible.cfg, the
same forks for every command). A small aggregate callback (bench/fleet_callback/) records per-host task
results and per-task wall time, to tell device-side module runs from controller-side actions.
Progress goes to stderr. Exit status 1 if any goal fails. Every temp file is removed at the end.
"""

from __future__ import annotations

import argparse
import configparser
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml
from _bytecode import device_like_bytecode

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = REPO / ".venv" / "bin"
PYTHON = VENV_BIN / "python"
CFG = REPO / "ansible.cfg"
CALLBACK_DIR = Path(__file__).resolve().parent / "fleet_callback"
GROUPS = ("line_a", "line_b", "lab")
KEY_NAME = "demo-NOT-FOR-PRODUCTION"
# Actions that run on the controller only (action plugins that never ship a module to the device).
CONTROLLER_ACTIONS = {
    "ansible.builtin.set_fact", "ansible.builtin.assert", "ansible.builtin.debug", "ansible.builtin.group_by",
    "ansible.builtin.meta", "ansible.builtin.fail", "ansible.builtin.add_host", "ansible.builtin.include_vars",
    "ansible.builtin.set_stats", "ansible.builtin.validate_argument_spec", "edgeml.fleet.desired_state",
    "edgeml.fleet.fleet_report", "edgeml.fleet.role_arguments", "edgeml.fleet.fleet_lock", "edgeml.fleet.device_plan",
    "ansible.builtin.include_role",
    "ansible.builtin.include_tasks", "ansible.builtin.import_role", "ansible.builtin.import_tasks",
}
RECAP_RE = re.compile(r"^(\S+)\s*:\s*ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)"
                      r"(?:\s+skipped=(\d+))?(?:\s+rescued=(\d+))?(?:\s+ignored=(\d+))?", re.M)
T0 = time.monotonic()


def log(msg: str) -> None:
    print(f"[fleet {time.monotonic() - T0:6.1f}s] {msg}", file=sys.stderr, flush=True)


@dataclass
class Row:
    n: int
    ping_s: list[float]
    first_s: float
    noop_runs_s: list[float]
    tasks_per_host: float
    modules_per_host_first: float
    modules_per_host_noop: float
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def ping(self) -> float:
        return statistics.median(self.ping_s)

    @property
    def noop_s(self) -> float:
        return statistics.median(self.noop_runs_s)

    @property
    def noop_ratio(self) -> float:
        return self.noop_s / self.ping

    @property
    def first_ratio(self) -> float:
        return self.first_s / self.ping

    @property
    def first_bound(self) -> float:
        return self.tasks_per_host + 1

    @property
    def noop_pass(self) -> bool:
        return self.noop_ratio <= 1.5

    @property
    def first_pass(self) -> bool:
        return self.first_ratio <= self.first_bound


# ----------------------------------------------------------------------------- fleet set-up -------


def default_forks() -> int:
    cp = configparser.ConfigParser()
    cp.read(CFG)
    return cp.getint("defaults", "forks", fallback=5)


def build_registry(tmp: Path) -> None:
    log("building the registry once (scripts/build_registry.py)")
    subprocess.run([str(PYTHON), str(REPO / "scripts" / "build_registry.py"), "--out", str(tmp / "registry"),
                    "--keys", str(tmp / "keys")], check=True, stdout=subprocess.DEVNULL, cwd=REPO)


def write_models(tmp: Path) -> Path:
    data = yaml.safe_load((REPO / "models.yaml").read_text(encoding="utf-8"))
    data["registry"] = str(tmp / "registry")
    out = tmp / "models.yaml"
    out.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return out


def write_fleet(base: Path, n: int) -> Path:
    """inventory/local's shape with N hosts, dealt round-robin over the three groups."""
    hosts: dict[str, list[str]] = {g: [] for g in GROUPS}
    for i in range(n):
        g = GROUPS[i % len(GROUPS)]
        hosts[g].append(f"dev-{g[-1] if g != 'lab' else 'l'}{i + 1:03d}")
    inv = {
        "edge_devices": {
            "vars": {
                "ansible_connection": "local",
                "ansible_python_interpreter": str(PYTHON),
                "edge_runtime_root": str(base / "roots") + "/{{ inventory_hostname }}",
            },
            "children": {g: {"hosts": dict.fromkeys(hs)} for g, hs in hosts.items()},
        }
    }
    base.mkdir(parents=True)
    path = base / "hosts.yml"
    path.write_text("---\n" + yaml.safe_dump(inv, sort_keys=False), encoding="utf-8")
    return path


def write_extra_vars(tmp: Path, models: Path, base: Path) -> Path:
    extra = {
        "edge_models_file": str(models),
        # inventory/local/group_vars/all.yml points at .state/demo-keys; the bench fleet trusts its own key
        "edge_runtime_trusted_keys": [str(tmp / "keys" / f"{KEY_NAME}.pub")],
        # keep the deploy reports out of the repository's reports/ folder
        "edge_reports_dir": str(base / "reports"),
    }
    path = base / "extra.yml"
    path.write_text(yaml.safe_dump(extra), encoding="utf-8")
    return path


# ----------------------------------------------------------------------------- runs ---------------


def env_for(stats_out: Path | None) -> dict[str, str]:
    env = dict(os.environ, ANSIBLE_CONFIG=str(CFG), ANSIBLE_NOCOLOR="1", PYTHONUNBUFFERED="1")
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    if stats_out is not None:
        env.update(ANSIBLE_CALLBACK_PLUGINS=str(CALLBACK_DIR), ANSIBLE_CALLBACKS_ENABLED="fleet_bench",
                   FLEET_BENCH_OUT=str(stats_out))
    return env


def timed_run(argv: list[str], env: dict[str, str], what: str, log_file: Path) -> tuple[float, str]:
    t0 = time.perf_counter()
    proc = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, check=False)
    dt = time.perf_counter() - t0
    log_file.write_text(proc.stdout + proc.stderr, encoding="utf-8")
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-40:])
        raise RuntimeError(f"{what} failed with status {proc.returncode} ({log_file}):\n{tail}")
    log(f"  {what}: {dt:.1f} s")
    return dt, proc.stdout


def parse_recap(stdout: str) -> dict[str, dict[str, int]]:
    part = stdout[stdout.rfind("PLAY RECAP"):]
    keys = ("ok", "changed", "unreachable", "failed", "skipped", "rescued", "ignored")
    return {m.group(1): {k: int(v or 0) for k, v in zip(keys, m.groups()[1:], strict=True)}
            for m in RECAP_RE.finditer(part)}


def ping(inv: Path, forks: int, base: Path, label: str) -> float:
    argv = [str(VENV_BIN / "ansible"), "-i", str(inv), "edge_devices", "-m", "ansible.builtin.ping",
            "-f", str(forks), "-o"]
    dt, out = timed_run(argv, env_for(None), f"ping ({label})", base / f"ping-{label}.log")
    pongs = out.count('"pong"')
    return dt if pongs else float("nan")


def deploy(inv: Path, extra: Path, forks: int, base: Path, label: str) -> tuple[float, dict[str, Any], str]:
    stats = base / f"{label}.json"
    argv = [str(VENV_BIN / "ansible-playbook"), "-i", str(inv), "-f", str(forks), "-e", f"@{extra}",
            str(REPO / "playbooks" / "deploy.yml")]
    dt, out = timed_run(argv, env_for(stats), label, base / f"{label}.log")
    return dt, json.loads(stats.read_text(encoding="utf-8")), out


def is_module_run(r: dict[str, Any]) -> bool:
    return r["status"] != "skipped" and not r["delegated"] and r["action"] not in CONTROLLER_ACTIONS


def per_host(doc: dict[str, Any], devices: list[str]) -> dict[str, Any]:
    """Task results and device-side module runs per device host (loop items count one module run each)."""
    tasks = {h: [r for r in doc["hosts"].get(h, []) if r["status"] != "skipped"] for h in devices}
    modules = {h: sum(r["items"] if r["items"] is not None else 1 for r in rs if is_module_run(r))
               for h, rs in tasks.items()}
    which: Counter[str] = Counter()
    ctrl: Counter[str] = Counter()
    for rs in tasks.values():
        for r in rs:
            (which if is_module_run(r) else ctrl)[f"{r['action']}: {r['task']}"] += 1
    n = len(devices)
    return {
        "tasks_per_host": sum(len(rs) for rs in tasks.values()) / n,
        "tasks_per_host_min_max": [min(len(rs) for rs in tasks.values()), max(len(rs) for rs in tasks.values())],
        "modules_per_host": sum(modules.values()) / n,
        "device_module_tasks": dict(which),
        "controller_side_tasks": dict(ctrl),
    }


def slowest_tasks(doc: dict[str, Any], top: int = 8) -> list[dict[str, Any]]:
    tasks = [t for t in doc["tasks"] if t.get("task") is not None]
    tasks.sort(key=lambda t: -t["wall_s"])
    return [{"play": t["play"], "task": t["task"], "action": t["action"], "wall_s": t["wall_s"],
             "results": t["results"]} for t in tasks[:top]]


def bench_size(tmp: Path, models: Path, n: int, forks: int, repeat: int) -> Row:
    base = tmp / f"fleet-{n}"
    inv = write_fleet(base, n)
    extra = write_extra_vars(tmp, models, base)
    inv_hosts = yaml.safe_load(inv.read_text(encoding="utf-8"))["edge_devices"]["children"]
    devices = sorted(h for g in inv_hosts.values() for h in g["hosts"])
    log(f"N={n}: {len(devices)} devices, forks {forks}")
    pings = [ping(inv, forks, base, "before")]
    first_s, first_doc, first_out = deploy(inv, extra, forks, base, "first-deploy")
    first_recap = parse_recap(first_out)
    bad = [h for h in devices if h not in first_recap or first_recap[h]["failed"] or first_recap[h]["unreachable"]]
    if bad:
        raise RuntimeError(f"first deploy left {len(bad)} device(s) failed or unreachable: {bad[:5]}")
    # No-op reruns alternate with pings, so a change of machine load hits both; medians are compared.
    noops: list[float] = []
    for i in range(1, repeat + 1):
        noop_s, noop_doc, noop_out = deploy(inv, extra, forks, base, f"noop-rerun-{i}")
        recap = parse_recap(noop_out)
        changed = {h: recap.get(h, {}).get("changed") for h in devices if recap.get(h, {}).get("changed") != 0}
        if changed:
            raise RuntimeError(f"the no-op rerun is not a no-op: changed per device {dict(list(changed.items())[:5])}")
        noops.append(noop_s)
        pings.append(ping(inv, forks, base, f"after-{i}"))
    first = per_host(first_doc, devices)
    noop = per_host(noop_doc, devices)
    changed_first = Counter(first_recap[h]["changed"] for h in devices)
    return Row(
        n, pings, first_s, noops, first["tasks_per_host"], first["modules_per_host"], noop["modules_per_host"],
        {
            "first_deploy": {**first, "changed_per_host": dict(changed_first),
                             "slowest_tasks": slowest_tasks(first_doc), "callback_end_s": first_doc["end_s"]},
            "noop_rerun": {**noop, "recap_changed_all_zero": True,
                           "slowest_tasks": slowest_tasks(noop_doc), "callback_end_s": noop_doc["end_s"]},
        },
    )


# ----------------------------------------------------------------------------- output -------------


def table(rows: list[Row]) -> str:
    head = ("N", "ping s", "first s", "no-op s", "no-op/ping", "first/ping", "tasks/host", "modules/host",
            "goal: no-op<=1.5x", "goal: first<=(tasks+1)x")
    body = [
        (str(r.n), f"{r.ping:.1f}", f"{r.first_s:.1f}", f"{r.noop_s:.1f}", f"{r.noop_ratio:.2f}x",
         f"{r.first_ratio:.2f}x", f"{r.tasks_per_host:g}",
         f"{r.modules_per_host_first:g} / {r.modules_per_host_noop:g}",
         "PASS" if r.noop_pass else "FAIL", f"<= {r.first_bound:g}x {'PASS' if r.first_pass else 'FAIL'}")
        for r in rows
    ]
    widths = [max(len(x[i]) for x in [head, *body]) for i in range(len(head))]
    fmt = lambda r: "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()  # noqa: E731
    return "\n".join([fmt(head), fmt(tuple("-" * w for w in widths)), *(fmt(r) for r in body)])


def scaling(rows: list[Row], big: int = 200, small: int = 50) -> dict[str, Any] | None:
    by_n = {r.n: r for r in rows}
    if big not in by_n or small not in by_n:
        return None
    b, s = by_n[big], by_n[small]
    first, noop, png = b.first_s / s.first_s, b.noop_s / s.noop_s, b.ping / s.ping
    return {"big": big, "small": small, "first_deploy": first, "noop_rerun": noop, "ping": png,
            "target": 4.4, "first_pass": first <= 4.4, "noop_pass": noop <= 4.4}


def pick_tmp(arg: str | None) -> Path:
    base = Path(arg) if arg else Path(tempfile.gettempdir())
    base.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix="edge-fleet-bench-", dir=base))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="10,50,200", help="comma-separated fleet sizes (default 10,50,200)")
    ap.add_argument("--forks", type=int, default=default_forks(), help="forks for every command (ansible.cfg's)")
    ap.add_argument("--repeat", type=int, default=3,
                    help="no-op reruns per size, each followed by a ping; medians are compared (default 3)")
    ap.add_argument("--json", action="store_true", help="print JSON instead of the table")
    ap.add_argument("--tmp-dir", help="where scratch files go (default: the system temp dir)")
    ap.add_argument("--keep", action="store_true", help="keep the scratch dir (logs, per-run JSON)")
    args = ap.parse_args(argv)
    device_like_bytecode()
    sizes = [int(x) for x in args.sizes.split(",") if x.strip()]

    tmp = pick_tmp(args.tmp_dir)
    started = datetime.now(timezone.utc)
    load_before = os.getloadavg()
    log(f"scratch dir {tmp}; sizes {sizes}; forks {args.forks}; load average {load_before[0]:.2f}")
    rows: list[Row] = []
    try:
        build_registry(tmp)
        models = write_models(tmp)
        for n in sizes:
            rows.append(bench_size(tmp, models, n, args.forks, args.repeat))
    finally:
        if args.keep:
            log(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
            log(f"removed {tmp}")
    load_after = os.getloadavg()
    elapsed = time.monotonic() - T0
    scale = scaling(rows)
    passed = all(r.noop_pass and r.first_pass for r in rows) and (
        scale is None or (scale["first_pass"] and scale["noop_pass"]))
    versions = subprocess.run([str(VENV_BIN / "ansible"), "--version"], capture_output=True, text=True,
                              check=False).stdout.splitlines()[:1]
    if args.json:
        doc = {
            "started": started.isoformat(timespec="seconds"),
            "elapsed_s": round(elapsed, 1),
            "nproc": os.cpu_count(),
            "ansible": versions[0] if versions else "?",
            "forks": args.forks,
            "repeat": args.repeat,
            "load_average_1m": {"before": load_before[0], "after": load_after[0]},
            "all_passed": passed,
            "sizes": [
                {"n": r.n, "ping_s": r.ping, "ping_runs_s": r.ping_s, "first_deploy_s": r.first_s,
                 "noop_rerun_s": r.noop_s, "noop_runs_s": r.noop_runs_s,
                 "noop_over_ping": r.noop_ratio, "first_over_ping": r.first_ratio,
                 "tasks_per_host": r.tasks_per_host, "first_bound": r.first_bound,
                 "device_module_runs_per_host": {"first": r.modules_per_host_first, "noop": r.modules_per_host_noop},
                 "noop_pass": r.noop_pass, "first_pass": r.first_pass, "detail": r.detail}
                for r in rows
            ],
            "scaling": scale,
        }
        print(json.dumps(doc, indent=1))
    else:
        print(table(rows))
        if scale:
            print(f"\nt({scale['big']})/t({scale['small']}): first deploy {scale['first_deploy']:.2f} "
                  f"{'PASS' if scale['first_pass'] else 'FAIL'}, no-op rerun {scale['noop_rerun']:.2f} "
                  f"{'PASS' if scale['noop_pass'] else 'FAIL'} (target <= 4.4; ping {scale['ping']:.2f})")
        print(f"\n{started:%Y-%m-%d %H:%M} UTC, {os.cpu_count()} CPUs, forks {args.forks}; "
              f"load avg {load_before[0]:.2f} -> {load_after[0]:.2f}; {elapsed:.0f} s")
        print("modules/host = device-side module runs per device host, first deploy / no-op rerun")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())

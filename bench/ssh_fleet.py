"""SSH fleet benchmark: playbooks/deploy.yml over SSH against ping and a naive peer playbook, same devices, same run.

    .venv/bin/python bench/ssh_fleet.py [--sizes 10,50,100] [--forks N] [--json] [--keep]   (root)

For every size N, on a fresh SSH fleet of N devices (scripts/ssh_fleet.py: network namespaces, one sshd each,
the shared runtime image; groups line_a / line_b / lab, pins of models.yaml) and in this order:

1. ``ansible edge_devices -m ansible.builtin.ping``;
2. the naive peer deploy (bench/naive_deploy.yml: copy key, init, copy bundle, install, verify, smoke-test,
   status: one task per step) on fresh devices; then every device root is wiped;
3. the first deploy (deploy.yml) on the same, again fresh, devices;
4. a no-op rerun (its PLAY RECAP must show changed=0 on every device);
5. ``deploy.yml --check --diff``;
6. ping again (the ping time is the median of both).

Goals: no-op <= 1.5x ping with changed=0 everywhere; first deploy <= 3x ping and <= 0.5x the naive deploy;
t(100)/t(50) <= 2.2 (first deploy and no-op). Controller peak memory: the largest sum of the proportional
set size (Pss, shared pages split between the processes sharing them) of the command's process tree
(ansible, its forks, ssh clients), sampled every 0.2 s. Wall time: time.perf_counter around the plain CLI,
the same forks for every command. Progress goes to stderr; exit 1 if a goal fails.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml
from _bytecode import device_like_bytecode

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from scripts.ssh_fleet import Fleet, prerequisites  # noqa: E402

VENV_BIN = REPO / ".venv" / "bin"
CFG = REPO / "ansible.cfg"
KEY_NAME = "demo-NOT-FOR-PRODUCTION"
RECAP_RE = re.compile(r"^(\S+)\s*:\s*ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.M)
T0 = time.monotonic()


def log(msg: str) -> None:
    print(f"[ssh-bench {time.monotonic() - T0:6.1f}s] {msg}", file=sys.stderr, flush=True)


def _children() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                ppid = int((p / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            kids.setdefault(ppid, []).append(int(p.name))
    return kids


def _pss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def tree_pss_kib(root: int) -> int:
    kids = _children()
    todo, total = [root], 0
    while todo:
        pid = todo.pop()
        total += _pss_kib(pid)
        todo.extend(kids.get(pid, []))
    return total


@dataclass
class Result:
    seconds: float
    peak_mib: float
    recap: dict[str, tuple[int, int, int, int]]
    output: str


def timed(argv: list[str], what: str, log_file: Path, ok_rc: tuple[int, ...] = (0,)) -> Result:
    env = dict(os.environ, ANSIBLE_CONFIG=str(CFG), ANSIBLE_NOCOLOR="1", PYTHONUNBUFFERED="1")
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    peak = [0]
    t0 = time.perf_counter()
    with log_file.open("w") as out:
        proc = subprocess.Popen(argv, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
        done = threading.Event()

        def sample() -> None:
            while not done.wait(0.2):
                peak[0] = max(peak[0], tree_pss_kib(proc.pid))

        t = threading.Thread(target=sample, daemon=True)
        t.start()
        rc = proc.wait()
        done.set()
        t.join()
    dt = time.perf_counter() - t0
    text = log_file.read_text()
    if rc not in ok_rc:
        raise RuntimeError(f"{what} failed with status {rc} ({log_file}):\n" + "\n".join(text.splitlines()[-40:]))
    recap = {m.group(1): tuple(int(x) for x in m.groups()[1:]) for m in RECAP_RE.finditer(text)}
    log(f"  {what}: {dt:.1f} s, controller peak {peak[0] / 1024:.0f} MiB")
    return Result(dt, peak[0] / 1024, recap, text)  # type: ignore[arg-type]


@dataclass
class Row:
    n: int
    ping_s: list[float]
    naive: Result
    first: Result
    noop: Result
    check: Result
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def ping(self) -> float:
        return statistics.median(self.ping_s)

    def goals(self) -> dict[str, tuple[float, float, bool]]:
        """name -> (value, limit, pass)."""
        noop, first, vs_naive = self.noop.seconds / self.ping, self.first.seconds / self.ping, \
            self.first.seconds / self.naive.seconds
        return {"noop/ping": (noop, 1.5, noop <= 1.5), "first/ping": (first, 3.0, first <= 3.0),
                "first/naive": (vs_naive, 0.5, vs_naive <= 0.5)}


def wipe_roots(fleet: Fleet) -> None:
    """Fresh devices again: empty every device root (the runtime image and sshd stay)."""
    for d in fleet.devices:
        root = fleet.root(d.host)
        for p in root.iterdir():
            shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()


def bench_size(tmp: Path, n: int, forks: int) -> Row:
    base = tmp / f"n{n}"
    base.mkdir()
    fleet = Fleet(base / "fleet")
    try:
        fleet.up(n, prefix=None, subnet=None, control_persist="30s",
                 trusted_key=tmp / "keys" / f"{KEY_NAME}.pub", log=log)
        inv = str(fleet.inventory)
        extra = base / "extra.yml"
        extra.write_text(yaml.safe_dump({
            "edge_models_file": str(tmp / "models.yaml"), "edge_reports_dir": str(base / "reports"),
            "edge_lock_dir": str(base / "locks"), "edge_runtime_trusted_keys": [str(tmp / "keys" / f"{KEY_NAME}.pub")],
            "naive_models_file": str(tmp / "models.yaml"), "naive_key": str(tmp / "keys" / f"{KEY_NAME}.pub")}))
        common = ["-i", inv, "-f", str(forks)]
        ping = [str(VENV_BIN / "ansible"), *common, "edge_devices", "-m", "ansible.builtin.ping", "-o"]
        play = [str(VENV_BIN / "ansible-playbook"), *common, "-e", f"@{extra}"]
        devices = [d.host for d in fleet.devices]
        log(f"N={n}: {len(devices)} devices, forks {forks}")
        pings = [timed(ping, "ping", base / "ping-1.log").seconds]
        naive = timed([*play, str(REPO / "bench" / "naive_deploy.yml")], "naive deploy", base / "naive.log")
        wipe_roots(fleet)
        fleet.close_masters()  # the deploy starts without the naive run's open connections, as ping did
        first = timed([*play, str(REPO / "playbooks" / "deploy.yml")], "first deploy", base / "first.log")
        bad = [h for h in devices if first.recap.get(h, (0, 0, 1, 1))[2:] != (0, 0)]
        if bad:
            raise RuntimeError(f"first deploy left {len(bad)} device(s) failed or unreachable: {bad[:5]}")
        noop = timed([*play, str(REPO / "playbooks" / "deploy.yml")], "no-op rerun", base / "noop.log")
        changed = {h: noop.recap.get(h, (0, -1))[1] for h in devices if noop.recap.get(h, (0, -1))[1] != 0}
        if changed:
            raise RuntimeError(f"the no-op rerun is not a no-op: changed per device {dict(list(changed.items())[:5])}")
        check = timed([*play, "--check", "--diff", str(REPO / "playbooks" / "deploy.yml")], "check --diff",
                      base / "check.log")
        pings.append(timed(ping, "ping", base / "ping-2.log").seconds)
        return Row(n, pings, naive, first, noop, check)
    finally:
        fleet.down(log=log)


def table(rows: list[Row]) -> str:
    head = ("N", "ping s", "first s", "no-op s", "check s", "naive s", "no-op/ping <=1.5", "first/ping <=3",
            "first/naive <=0.5", "peak MiB first/naive")
    body = []
    for r in rows:
        g = r.goals()
        cell = {k: f"{v:.2f}x {'PASS' if ok else 'FAIL'}" for k, (v, _lim, ok) in g.items()}
        body.append((str(r.n), f"{r.ping:.1f}", f"{r.first.seconds:.1f}", f"{r.noop.seconds:.1f}",
                     f"{r.check.seconds:.1f}", f"{r.naive.seconds:.1f}", cell["noop/ping"], cell["first/ping"],
                     cell["first/naive"], f"{r.first.peak_mib:.0f} / {r.naive.peak_mib:.0f}"))
    widths = [max(len(x[i]) for x in [head, *body]) for i in range(len(head))]

    def fmt(cells: tuple[str, ...]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()

    return "\n".join([fmt(head), fmt(tuple("-" * w for w in widths)), *(fmt(r) for r in body)])


def scaling(rows: list[Row], big: int = 100, small: int = 50) -> dict[str, Any] | None:
    by_n = {r.n: r for r in rows}
    if big not in by_n or small not in by_n:
        return None
    b, s = by_n[big], by_n[small]
    first, noop = b.first.seconds / s.first.seconds, b.noop.seconds / s.noop.seconds
    return {"big": big, "small": small, "first_deploy": first, "noop_rerun": noop, "ping": b.ping / s.ping,
            "target": 2.2, "first_pass": first <= 2.2, "noop_pass": noop <= 2.2}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="10,50,100")
    ap.add_argument("--forks", type=int, default=10, help="forks for every command (ansible.cfg: 10)")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--keep", action="store_true", help="keep the scratch directory (logs)")
    args = ap.parse_args(argv)
    device_like_bytecode()
    reason = prerequisites()
    if reason:
        print(f"ssh fleet bench: {reason}", file=sys.stderr)
        return 2
    sizes = [int(x) for x in args.sizes.split(",") if x.strip()]
    tmp = Path(tempfile.mkdtemp(prefix="edge-ssh-bench-"))
    started = datetime.now(timezone.utc)
    load_before = os.getloadavg()[0]
    log(f"scratch {tmp}; sizes {sizes}; forks {args.forks}; load average {load_before:.2f}")
    rows: list[Row] = []
    try:
        subprocess.run([str(VENV_BIN / "python"), str(REPO / "scripts" / "build_registry.py"), "--out",
                        str(tmp / "registry"), "--keys", str(tmp / "keys")], check=True, stdout=subprocess.DEVNULL)
        doc = yaml.safe_load((REPO / "models.yaml").read_text())
        doc["registry"] = str(tmp / "registry")
        (tmp / "models.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
        for n in sizes:
            rows.append(bench_size(tmp, n, args.forks))
    finally:
        if args.keep:
            log(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    load_after = os.getloadavg()[0]
    scale = scaling(rows)
    passed = all(ok for r in rows for _v, _l, ok in r.goals().values()) and (
        scale is None or (scale["first_pass"] and scale["noop_pass"]))
    if args.json:
        print(json.dumps({
            "started": started.isoformat(timespec="seconds"), "nproc": os.cpu_count(), "forks": args.forks,
            "load_average_1m": {"before": load_before, "after": load_after}, "all_passed": passed,
            "sizes": [{"n": r.n, "ping_s": r.ping, "ping_runs_s": r.ping_s, "first_deploy_s": r.first.seconds,
                       "noop_rerun_s": r.noop.seconds, "check_diff_s": r.check.seconds, "naive_s": r.naive.seconds,
                       "peak_controller_mib": {"first": r.first.peak_mib, "noop": r.noop.peak_mib,
                                               "check": r.check.peak_mib, "naive": r.naive.peak_mib},
                       "goals": {k: {"value": v, "limit": lim, "pass": ok} for k, (v, lim, ok) in r.goals().items()}}
                      for r in rows],
            "scaling": scale}, indent=1))
    else:
        print(table(rows))
        if scale:
            print(f"\nt({scale['big']})/t({scale['small']}): first deploy {scale['first_deploy']:.2f} "
                  f"{'PASS' if scale['first_pass'] else 'FAIL'}, no-op {scale['noop_rerun']:.2f} "
                  f"{'PASS' if scale['noop_pass'] else 'FAIL'} (target <= 2.2; ping {scale['ping']:.2f})")
        print(f"\n{started:%Y-%m-%d %H:%M} UTC, {os.cpu_count()} CPUs, forks {args.forks}; "
              f"load avg {load_before:.2f} -> {load_after:.2f}; {time.monotonic() - T0:.0f} s")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())

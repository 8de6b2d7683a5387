"""Crash-safety harness: SIGKILL the installing process at every step boundary and at random moments.

For each scenario (an upgrade that commits, a bad model that rolls back, an operator rollback, the monitor's
self-rollback) it

1. enumerates the instrumented step boundaries (each write, fsync, rename, smoke phase, commit,
   rollback) by running the operation once with a counting hook;
2. for every boundary k, forks a child that runs the operation and kills itself with SIGKILL at k;
3. forks children that run the operation unarmed and are killed by the parent after a random delay;

and after every kill it runs recovery, then checks: exactly one active model, it verifies, it is the
old or the new version (never the bad one), no temporary file is left, nothing is pending, and the
next install succeeds. It prints the counts as a table (``--json`` for machines) and exits non-zero on
any violation.

Every smoke test runs in a child process of the killed one (edge_runtime._smoke_proc). Right after each
kill, before recovery, the harness checks that the child dies with its parent (none may survive, so none
keeps testing or serving) and that no version is behind the ``active`` link that has not passed its staged
smoke test; the column ``in-smoke`` counts the kills that landed during a smoke test (its child running or
being started).

SIGKILL stops the process between system calls but keeps the page cache, so this proves the ordering
of the state machine, not the durability of the disk (the fsyncs): that needs a power-cut rig.

Run: ``python tests/crash_harness.py --random 300``
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from edge_runtime import _faults  # noqa: E402
from edge_runtime.device import Device  # noqa: E402
from edge_runtime.errors import RollbackError  # noqa: E402
from tests.support.factory import MODEL, Release, make_release  # noqa: E402
from tests.support.procs import smoke_children, wait_until_no_smoke_children  # noqa: E402


@dataclass
class Scenario:
    name: str
    template: Path
    operation: Callable[[Device], object]
    allowed_final: tuple[str, ...]
    boundaries: list[str] = field(default_factory=list)
    boundary_kills: int = 0
    random_kills: int = 0
    random_completed: int = 0
    #: kills that landed during a smoke test (phase testing/activated, or a smoke child seen alive)
    smoke_kills: int = 0
    violations: list[str] = field(default_factory=list)


def tmp_files(root: Path) -> list[str]:
    return [str(p.relative_to(root)) for p in root.rglob("*") if p.name.startswith(".tmp-") or p.suffix == ".part"]


def after_kill(sc: Scenario, dev: Device) -> list[str]:
    """Right after a kill, before recovery: the smoke child dies with its parent, and no version serves
    that has not passed its staged smoke test (R1). Returns the violations found."""
    seen_child = bool(smoke_children(dev.root))  # racy: PR_SET_PDEATHSIG may have killed it already
    problems = []
    alive = wait_until_no_smoke_children(dev.root)
    if alive:
        problems.append(f"smoke child(ren) {alive} survived their killed parent")
    try:
        st = dev.store.load(MODEL)
    except Exception as exc:
        return [*problems, f"state unreadable after the kill: {exc!r}"]
    link = dev.active_link(MODEL)
    serving = os.readlink(link).split("/")[-1] if link.is_symlink() else None
    p = st.pending
    if seen_child or (p is not None and p.phase in ("testing", "activated") and p.smoke_attempts > 0):
        sc.smoke_kills += 1
    # only a version whose staged test passed (or one being rolled back) may be behind the link uncommitted
    passed_staged = p is not None and p.version == serving and p.phase in ("activating", "activated", "rolling_back")
    if serving is not None and serving not in st.versions and not passed_staged:
        problems.append(f"{serving} serves uncommitted in phase {p.phase if p else None}")
    if p is not None and p.phase in ("staging", "staged", "testing") and serving != p.previous:
        problems.append(f"link moved to {serving} while {p.version} was {p.phase}")
    return problems


def check(dev: Device, allowed: tuple[str, ...], next_bundle: Path) -> list[str]:
    """The invariants after a crash and recovery; returns the violations found."""
    problems = []
    try:
        dev.recover()
    except Exception as exc:
        return [f"recovery failed: {exc!r}"]
    link = dev.active_link(MODEL)
    st = dev.store.load(MODEL)
    if not link.is_symlink():
        problems.append("no active model")
    else:
        version = os.readlink(link).split("/")[-1]
        if version != st.active:
            problems.append(f"active link {version} != state {st.active}")
        if version not in allowed:
            problems.append(f"active version {version} not in {allowed}")
        try:
            dev.verify_installed(MODEL, version)
        except Exception as exc:
            problems.append(f"active version does not verify: {exc!r}")
    if st.pending is not None:
        problems.append(f"still pending after recovery: {st.pending}")
    left = tmp_files(dev.root)
    if left:
        problems.append(f"temp files left: {left}")
    try:
        r = dev.install(str(next_bundle))
        if not r.ok:
            problems.append(f"next install did not commit: {r.reason}")
    except Exception as exc:
        problems.append(f"next install failed: {exc!r}")
    return problems


def run_child(dev_root: Path, op: Callable[[Device], object], arm: Callable[[str], None] | None) -> int:
    pid = os.fork()
    if pid == 0:  # child: run the operation, never return into the harness
        code = 0
        try:
            _faults.unsafe_arm(arm)
            op(Device(dev_root))
        except BaseException:
            code = 1
        os._exit(code)
    return pid


def fresh(template: Path, work: Path) -> Path:
    if work.exists():
        for p in work.rglob("*"):
            if p.is_dir() and not p.is_symlink():
                p.chmod(0o755)
        shutil.rmtree(work)
    shutil.copytree(template, work, symlinks=True)
    return work


def enumerate_boundaries(sc: Scenario, work: Path) -> None:
    names: list[str] = []
    root = fresh(sc.template, work)
    _faults.unsafe_arm(names.append)
    try:
        sc.operation(Device(root))
    finally:
        _faults.unsafe_arm(None)
    sc.boundaries = names


def rollback_verification_scenarios(rel: Release, base: Path) -> list[Scenario]:
    """Kills while a rollback verifies its target (R4): every file read and the corrupt marker's write.

    The active version always verifies in these templates, so every kill must end with it (or the
    verified rollback target) active; a kept copy that does not verify is damaged before the run.
    """
    from tests.support.attacks import corrupt_file

    t_ref = base / "t-refused"  # operator rollback to a corrupt 1.0.0: refused, 1.1.0 stays, marker recorded
    d = rel.device(t_ref)
    d.install(str(rel.bundle("1.0.0")))
    d.install(str(rel.bundle("1.1.0")))
    corrupt_file(d, "1.0.0", "golden.npz")
    t_old = base / "t-bad-old-corrupt"  # a failed install rolls back to 1.1.0, verified; older 1.0.0 is corrupt
    d = rel.device(t_old, keep_versions=3)
    d.install(str(rel.bundle("1.0.0")))
    d.install(str(rel.bundle("1.1.0")))
    corrupt_file(d, "1.0.0")
    b120 = rel.bundle("1.2.0")

    def refused(dv: Device) -> None:
        with contextlib.suppress(RollbackError):
            dv.rollback(MODEL)

    return [
        Scenario("rollback to corrupt 1.0.0", t_ref, refused, ("1.1.0",)),
        Scenario("bad 1.2.0, 1.0.0 corrupt", t_old, lambda dv: dv.install(str(b120)), ("1.1.0",)),
    ]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--random", type=int, default=300, help="random-moment kills in total (default 300)")
    ap.add_argument("--seed", type=int, default=int(time.time()))
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    rng = random.Random(args.seed)
    # Silence the "fault injection is armed" warning: here, arming is the point.
    import logging

    logging.getLogger("edge_runtime._faults").setLevel(logging.ERROR)

    base = Path(tempfile.mkdtemp(prefix="crash-harness-"))
    try:
        rel = make_release(base / "release")
        b100, b110, b120 = rel.bundle("1.0.0"), rel.bundle("1.1.0"), rel.bundle("1.2.0")
        nxt = rel.custom("next.edgebundle", "1.1.0", "--model-version", "9.0.0", "--counter", "90")

        t_up = base / "t-upgrade"
        rel.device(t_up).install(str(b100))
        t_bad = base / "t-bad"
        d = rel.device(t_bad)
        d.install(str(b100))
        d.install(str(b110))
        t_rb = base / "t-rollback"
        shutil.copytree(t_bad, t_rb, symlinks=True)

        scenarios = [
            Scenario("upgrade 1.0.0 -> 1.1.0", t_up, lambda dv: dv.install(str(b110)), ("1.0.0", "1.1.0")),
            Scenario("bad 1.2.0 rolls back", t_bad, lambda dv: dv.install(str(b120)), ("1.1.0",)),
            Scenario("operator rollback", t_rb, lambda dv: dv.rollback(MODEL), ("1.0.0", "1.1.0")),
            # the monitor's self-rollback (edge-runtime monitor): the same persisted path, 1.1.0 quarantined
            Scenario("self-rollback", t_rb, lambda dv: dv.self_rollback(MODEL, "1.1.0", "self-rollback: harness"),
                     ("1.0.0", "1.1.0")),
            *rollback_verification_scenarios(rel, base),
        ]
        work = base / "work"
        durations: dict[str, float] = {}
        for sc in scenarios:
            enumerate_boundaries(sc, work)  # also the warm-up (lazy imports, page cache)
            times = []
            for _ in range(3):  # the operation alone (not the copy of the template), as the kills see it
                fresh(sc.template, work)
                t0 = time.perf_counter()
                sc.operation(Device(work))
                times.append(time.perf_counter() - t0)
            durations[sc.name] = sorted(times)[1]
            for k in range(1, len(sc.boundaries) + 1):
                root = fresh(sc.template, work)
                pid = run_child(root, sc.operation, _faults.kill_at(k))
                _, status = os.waitpid(pid, 0)
                if os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL:
                    sc.boundary_kills += 1
                else:
                    sc.violations.append(f"boundary {k} ({sc.boundaries[k - 1]}): child was not killed")
                for p in after_kill(sc, Device(root)) + check(Device(root), sc.allowed_final, nxt):
                    sc.violations.append(f"boundary {k} ({sc.boundaries[k - 1]}): {p}")

        per = [args.random // len(scenarios) + (1 if i < args.random % len(scenarios) else 0)
               for i in range(len(scenarios))]
        for sc, n in zip(scenarios, per, strict=True):
            for i in range(n):
                root = fresh(sc.template, work)
                delay = rng.uniform(0, durations[sc.name] * 1.1)
                pid = run_child(root, sc.operation, None)
                time.sleep(delay)
                os.kill(pid, signal.SIGKILL)
                _, status = os.waitpid(pid, 0)
                if os.WIFSIGNALED(status):
                    sc.random_kills += 1
                else:
                    sc.random_completed += 1
                for p in after_kill(sc, Device(root)) + check(Device(root), sc.allowed_final, nxt):
                    sc.violations.append(f"random #{i} at {delay * 1e3:.1f} ms: {p}")
    finally:
        for p in base.rglob("*"):
            if p.is_dir() and not p.is_symlink():
                p.chmod(0o755)
        shutil.rmtree(base, ignore_errors=True)

    rows = [
        {
            "scenario": sc.name,
            "boundaries": len(sc.boundaries),
            "boundary_kills": sc.boundary_kills,
            "random_kills": sc.random_kills,
            "random_completed_before_kill": sc.random_completed,
            "killed_during_smoke_test": sc.smoke_kills,
            "violations": len(sc.violations),
        }
        for sc in scenarios
    ]
    total = {
        "seed": args.seed,
        "boundary_kills": sum(r["boundary_kills"] for r in rows),
        "random_moments": sum(r["random_kills"] + r["random_completed_before_kill"] for r in rows),
        "random_kills": sum(r["random_kills"] for r in rows),
        "killed_during_smoke_test": sum(r["killed_during_smoke_test"] for r in rows),
        "violations": sum(r["violations"] for r in rows),
    }
    if args.json:
        print(json.dumps({"scenarios": rows, "total": total,
                          "violation_details": [v for sc in scenarios for v in sc.violations]}, indent=1))
    else:
        print(f"{'scenario':28} {'boundaries':>10} {'killed@step':>11} {'killed@rand':>11} {'done<kill':>9} "
              f"{'in-smoke':>8} {'violations':>10}")
        for r in rows:
            print(f"{r['scenario']:28} {r['boundaries']:>10} {r['boundary_kills']:>11} {r['random_kills']:>11} "
                  f"{r['random_completed_before_kill']:>9} {r['killed_during_smoke_test']:>8} {r['violations']:>10}")
        print(f"total: {total['boundary_kills']} kills at step boundaries, {total['random_moments']} random moments "
              f"({total['random_kills']} killed mid-operation), {total['killed_during_smoke_test']} during a smoke "
              f"test, {total['violations']} violations (seed {args.seed})")
        for sc in scenarios:
            for v in sc.violations[:20]:
                print(f"  VIOLATION {sc.name}: {v}")
    return 1 if total["violations"] else 0


if __name__ == "__main__":
    raise SystemExit(main())

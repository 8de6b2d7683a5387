#!/usr/bin/env python3
"""Inspect or clear the controller's fleet locks (one deploy or rollback at a time per fleet).

  scripts/fleet_lock.py status [LOCK_DIR]          every lock record in LOCK_DIR (default .state/locks)
  scripts/fleet_lock.py clear LOCK_FILE [--force]  remove a stale record

A record is held while the ansible-playbook process it names is alive on this host; a run finds a stale
record (its process gone: crash, Ctrl-C, kill -9) by itself and takes it over, so ``clear`` is rarely needed.
``clear`` refuses a record whose process is alive; a record written on another host (a shared lock
directory) is removed only with ``--force``, after you checked that no rollout runs there.
Exit status: 0 done, 1 refused, 2 usage.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "collections"))

from ansible_collections.edgeml.fleet.plugins.plugin_utils import fleet_lock  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    st = sub.add_parser("status", help="show every lock record and whether its holder runs")
    st.add_argument("lock_dir", nargs="?", default=str(REPO / ".state" / "locks"))
    st.add_argument("--json", action="store_true", help="machine-readable output")
    cl = sub.add_parser("clear", help="remove a stale lock record")
    cl.add_argument("lock_file")
    cl.add_argument("--force", action="store_true", help="also remove a record written on another host")
    args = parser.parse_args(argv)
    if args.cmd == "status":
        records = [fleet_lock.status(p) for p in sorted(Path(args.lock_dir).glob("*.lock"))]
        if args.json:
            print(json.dumps(records, indent=1, sort_keys=True))
            return 0
        if not records:
            print(f"{args.lock_dir}: no fleet lock")
        for r in records:
            h = r.get("holder")
            if h is None:
                print(f"{r['path']}: {r.get('error', 'no holder')}")
                continue
            state = {True: "HELD (running)", False: "stale (its process is gone; the next run takes it over)",
                     None: "HELD on another host (cannot be checked from here)"}[r.get("alive")]
            print(f"{r['path']}: {state}\n  {h['user']}@{h['host']} pid {h['pid']} {h['playbook']} "
                  f"run {h['run_id']} since {h['started_at']}\n  {h.get('command', '')}")
        return 0
    try:
        print(fleet_lock.clear(Path(args.lock_file), force=args.force))
    except fleet_lock.FleetLockError as exc:
        print(f"refused: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

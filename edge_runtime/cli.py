"""``edge-runtime``: the on-device command.

Every command prints text for a person by default and JSON with ``--json``; the exit status is 0
only on success (an install that was rolled back exits 8).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from . import __version__
from ._cli_common import emit, run
from ._fetch import FetchConfig
from .device import DEFAULT_ROOT, Device, InstallResult

__all__ = ["main"]

EXIT_ROLLED_BACK = 8


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="edge-runtime", description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--root",
        type=Path,
        default=Path(os.environ.get("EDGE_RUNTIME_ROOT", DEFAULT_ROOT)),
        help=f"device state directory (default: $EDGE_RUNTIME_ROOT or {DEFAULT_ROOT})",
    )
    p.add_argument("--json", action="store_true", help="print JSON for machines")
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = p.add_subparsers(dest="cmd", required=True)

    s = sub.add_parser("init", help="create or update the device root: trusted keys and config")
    s.add_argument("--trusted-key", type=Path, action="append", required=True, help="public key PEM (repeat)")
    s.add_argument("--threshold", type=int, default=1, help="distinct trusted signatures required (default 1)")
    s.add_argument("--model", action="append", default=[], help="model name this device runs (repeat)")
    s.add_argument("--arch", help="override the CPU architecture (default: this machine's)")
    s.add_argument("--keep-versions", type=int, default=2, help="committed versions kept on disk (default 2)")
    s.add_argument("--facts-path", help="also write local facts here, e.g. /etc/ansible/facts.d/edge_runtime.fact")

    s = sub.add_parser("install", help="install a bundle: fetch, verify, stage, activate, smoke test, commit")
    s.add_argument("source", help="bundle path or http(s) URL")
    s.add_argument("--model", help="refuse the bundle unless it is for this model name")
    s.add_argument("--expect-digest", help="refuse the bundle unless its manifest digest is this sha256:...")
    s.add_argument("--expect-size", type=int, help="bundle size in bytes; a server sending more is refused")
    s.add_argument("--allow-quarantined", action="store_true", help="retry a version that failed on this device before")
    s.add_argument("--connect-timeout", type=float, default=10.0)
    s.add_argument("--read-timeout", type=float, default=30.0, help="abort a download stalled this long")
    s.add_argument("--retries", type=int, default=3, help="resumed download attempts after a drop or stall")

    s = sub.add_parser("rollback", help="activate the previous committed version still kept on the device")
    s.add_argument("model")
    s.add_argument("--to", help="a specific kept version (default: the previous one)")

    sub.add_parser(
        "status", help="show per-model state (read-only: an interrupted operation shows as 'recovery pending')"
    )
    sub.add_parser("facts", help="print device facts (also written to the local facts file)")
    sub.add_parser("recover", help="resolve interrupted operations now (run at boot)")

    s = sub.add_parser("verify", help="re-verify the installed files of a model against its signed manifest")
    s.add_argument("model")
    s.add_argument("--version", dest="model_version", help="default: the active version")

    s = sub.add_parser(
        "check",
        help="post-install health check: re-verify the active version and re-run its smoke test; "
        "roll back and quarantine it if either fails",
    )
    s.add_argument("model")
    s.add_argument("--version", dest="model_version", help="only if this version is active (default: the active one)")

    s = sub.add_parser("repair", help="rebuild a corrupt state file from the verified versions on disk")
    s.add_argument("model")
    return p


def _human_install(r: InstallResult) -> str:
    if r.result == "unchanged":
        return f"{r.model} {r.version} is already active; nothing to do"
    if r.result == "rolled_back":
        return (
            f"{r.model} {r.version} was ROLLED BACK: {r.reason}\n"
            f"active: {r.active or 'none'}; {r.version} is quarantined on this device"
            + (f"\nDEGRADED: {r.degraded}" if r.degraded else "")
        )
    smoke = r.smoke or {}
    lat = f", p95 {smoke['p95_ms']:.3f} ms" if smoke.get("p95_ms") is not None else ""
    return (
        f"{r.model} {r.version} is active (was {r.previous or 'none'}); {r.reason} [{smoke.get('backend', '-')}{lat}]"
    )


def _human_status(st: dict[str, Any]) -> str:
    if not st["models"]:
        return f"{st['root']}: no models installed"
    lines = [f"{'MODEL':24} {'ACTIVE':10} {'PREVIOUS':10} {'STATE':10} LAST"]
    for name, m in st["models"].items():
        last = m["last"] or {}
        last_s = f"{last.get('op', '-')} {last.get('version', '')} {last.get('result', '')}".strip()
        if last.get("result") in ("rolled_back", "interrupted"):
            last_s += f" ({last.get('reason')})"
        lines.append(f"{name:24} {m['active'] or '-':10} {m['previous'] or '-':10} {m['state']:10} {last_s}")
        if m["bad"]:
            lines.append(f"{'':24} quarantined: {', '.join(sorted(m['bad']))}")
        if m.get("degraded"):
            lines.append(f"{'':24} DEGRADED: {m['degraded'].get('reason')}")
    if st["busy"]:
        lines.append("an operation is in progress")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    dev = Device(args.root)

    def body() -> int:
        if args.cmd == "init":
            cfg = dev.init(
                args.trusted_key,
                threshold=args.threshold,
                allowed_models=tuple(args.model),
                architecture=args.arch,
                keep_versions=args.keep_versions,
                facts_path=args.facts_path,
            )
            emit(
                args.json,
                {
                    "ok": True,
                    "root": str(dev.root),
                    "architecture": cfg.architecture,
                    "threshold": cfg.threshold,
                    "trusted_keys": len(args.trusted_key),
                },
                f"initialised {dev.root} ({cfg.architecture}, {len(args.trusted_key)} trusted key(s), "
                f"threshold {cfg.threshold})",
            )
            return 0
        if args.cmd == "install":
            fcfg = FetchConfig(
                connect_timeout=args.connect_timeout, read_timeout=args.read_timeout, retries=args.retries
            )
            r = dev.install(
                args.source,
                expected_name=args.model,
                expected_digest=args.expect_digest,
                expected_size=args.expect_size,
                allow_quarantined=args.allow_quarantined,
                fetch_config=fcfg,
                progress=None if not args.json else False,
            )
            emit(args.json, r.to_dict(), _human_install(r))
            return 0 if r.ok else EXIT_ROLLED_BACK
        if args.cmd == "rollback":
            r = dev.rollback(args.model, args.to)
            emit(
                args.json,
                r.to_dict(),
                f"{r.model}: {r.version} is active (was {r.previous})" if r.changed else _human_install(r),
            )
            return 0
        if args.cmd == "check":
            r = dev.check(args.model, args.model_version)
            if r.result == "rolled_back":
                human = _human_install(r)
            elif r.smoke is None:
                human = f"{r.model}: {r.reason}"
            else:
                p95 = r.smoke.get("p95_ms") or 0.0
                human = f"{r.model} {r.version}: files verified, smoke test passed [p95 {p95:.3f} ms]"
            emit(args.json, r.to_dict(), human)
            return 0 if r.ok else EXIT_ROLLED_BACK
        if args.cmd == "status":
            st = dev.status()
            emit(args.json, {"ok": True, **st}, _human_status(st))
            return 0
        if args.cmd == "facts":  # read-only: never recovers nor runs a smoke test (R1)
            facts = dev.write_facts()
            sys.stdout.write(json.dumps(facts, indent=None if args.json else 1, sort_keys=True) + "\n")
            return 0
        if args.cmd == "recover":
            done = dev.recover()
            emit(
                args.json,
                {"ok": True, "recovered": done},
                "\n".join(f"{d['model']} {d['version']}: {d['action']} (was {d['phase']})" for d in done)
                or "nothing to recover",
            )
            return 0
        if args.cmd == "verify":
            m = dev.verify_installed(args.model, args.model_version)
            emit(
                args.json,
                {"ok": True, "model": m.name, "version": str(m.version), "digest": m.digest, "files": len(m.files)},
                f"{m.name} {m.version}: signature and {len(m.files)} file(s) verified ({m.digest})",
            )
            return 0
        if args.cmd == "repair":
            rep = dev.repair(args.model)
            emit(
                args.json,
                {"ok": True, **rep},
                f"{args.model}: state rebuilt; active {rep['active'] or 'none'}, kept {', '.join(rep['kept'])}",
            )
            return 0
        raise AssertionError(args.cmd)  # pragma: no cover

    return run(body, args.json)


if __name__ == "__main__":
    raise SystemExit(main())

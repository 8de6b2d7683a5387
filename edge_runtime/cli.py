"""``edge-runtime``: the on-device command.

Every command prints text for a person by default and JSON with ``--json``; the exit status is 0
only on success (an install that was rolled back exits 8).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ._cli_common import ArgumentParser, emit, exit_codes_epilog, run
from ._json import dumps_strict, loads_untrusted
from ._version import __version__
from .device import DEFAULT_ROOT, Device, InstallResult
from .errors import ConfigError, quote_untrusted

__all__ = ["main"]

EXIT_ROLLED_BACK = 8


def _parser() -> argparse.ArgumentParser:
    p = ArgumentParser(
        prog="edge-runtime",
        description=__doc__.split("\n\n")[0],
        epilog=exit_codes_epilog(),
    )
    p.add_argument(
        "--root",
        type=Path,
        default=Path(os.environ.get("EDGE_RUNTIME_ROOT", DEFAULT_ROOT)),
        help=f"device state directory (default: $EDGE_RUNTIME_ROOT or {DEFAULT_ROOT}); every command but "
        "init refuses a directory that is not an initialised device root",
    )
    p.add_argument("--json", action="store_true", help="print JSON for machines")
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    # --root and --json are accepted after the subcommand too (`edge-runtime status --json`); SUPPRESS
    # keeps the subcommand from overwriting a value given before it
    common = ArgumentParser(add_help=False)
    common.add_argument("--root", type=Path, default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print JSON for machines")
    sub = p.add_subparsers(dest="cmd", required=True, metavar="COMMAND")

    def command(name: str, help: str) -> argparse.ArgumentParser:
        return sub.add_parser(
            name,
            help=help,
            description=help,
            parents=[common],
            epilog=exit_codes_epilog(),
            allow_abbrev=False,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )

    def download_options(s: argparse.ArgumentParser, what: str) -> None:
        # defaults are FetchConfig's (the one source); None means "not given here"
        s.add_argument("--connect-timeout", type=float, help=f"seconds to connect ({what})")
        s.add_argument("--read-timeout", type=float, help=f"abort a download stalled this long ({what})")
        s.add_argument("--retries", type=int, help=f"resumed download attempts after a drop or stall ({what})")
        s.add_argument(
            "--download-setting",
            action="append",
            default=[],
            metavar="KEY=VALUE",
            help=f"any download setting, e.g. min_rate=8192 or allowed_redirect_hosts=[\"mirror.example\"] "
            f"(JSON value; repeat) ({what}); see docs/DESIGN.md for the list",
        )

    s = command("init", "create or update the device root: trust (keys or a root document) and config")
    s.add_argument("--trusted-key", type=Path, action="append", default=[], help="public key PEM (repeat)")
    s.add_argument(
        "--trust-root",
        type=Path,
        action="append",
        default=[],
        help="root document N.root.json instead of --trusted-key (repeat: the chain from the device's version)",
    )
    s.add_argument("--threshold", type=int, default=1, help="distinct trusted signatures required (default 1)")
    s.add_argument("--model", action="append", default=[], help="model name this device runs (repeat)")
    s.add_argument("--arch", help="override the CPU architecture (default: this machine's)")
    s.add_argument("--keep-versions", type=int, default=2, help="committed versions kept on disk (default 2)")
    s.add_argument("--facts-path", help="also write local facts here, e.g. /etc/ansible/facts.d/edge_runtime.fact")
    download_options(s, "stored in config.json for every later download")
    s.add_argument(
        "--telemetry-setting",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a telemetry setting stored in config.json, e.g. max_bytes=16777216 or retention_days=3 (JSON "
        "value; repeat); see the telemetry section of README.md for the list and defaults",
    )
    s.add_argument(
        "--monitor-setting",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a monitor setting stored in config.json, e.g. confidence_threshold=0.7 or min_inferences=10 "
        "(repeat); see edge_runtime/monitor.py for the list and defaults",
    )
    s.add_argument(
        "--drift-setting",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a drift threshold or window stored in config.json, e.g. psi_threshold=0.25 or window_minutes=30 "
        "(repeat; over the bundle's); see 'Drift statistics' in docs/DESIGN.md for the list and defaults",
    )
    s.add_argument(
        "--metrics-setting",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="Prometheus textfile metrics stored in config.json: textfile_dir=/var/lib/prometheus/node-exporter "
        "(node_exporter's textfile directory; unset: no metrics) and device=NAME (the device label; default: "
        "the host name); textfile_dir=null turns them off. See docs/MONITORING.md",
    )

    s = command("install", "install a bundle: fetch, verify, stage, activate, smoke test, commit")
    s.add_argument("source", help="bundle path or http(s) URL")
    s.add_argument("--model", help="refuse the bundle unless it is for this model name")
    s.add_argument("--expect-digest", help="refuse the bundle unless its manifest digest is this sha256:...")
    s.add_argument("--expect-size", type=int, help="bundle size in bytes; a server sending more is refused")
    s.add_argument("--allow-quarantined", action="store_true", help="retry a version that failed on this device before")
    download_options(s, "this download only; default: the device's download settings")

    s = command("rollback", "activate the previous committed version still kept on the device")
    s.add_argument("model")
    s.add_argument("--to", help="a specific kept version (default: the previous one)")

    command("status", "show per-model state (read-only: an interrupted operation shows as 'recovery pending')")
    command("facts", "print device facts (also written to the local facts file)")
    command("recover", "resolve interrupted operations now (run at boot)")

    s = command("verify", "re-verify the installed files of a model against its signed manifest")
    s.add_argument("model")
    s.add_argument("--model-version", help="the kept version to verify (default: the active version)")
    s.add_argument("--version", action=_RenamedOption, nargs="?", help=argparse.SUPPRESS)

    s = command(
        "check",
        "post-install health check: re-verify the active version and re-run its smoke test; "
        "roll back and quarantine it if either fails",
    )
    s.add_argument("model")
    s.add_argument("--model-version", help="only if this version is active (default: the active one)")
    s.add_argument("--version", action=_RenamedOption, nargs="?", help=argparse.SUPPRESS)

    s = command(
        "update-root",
        "accept newer trust root documents: each must be signed by the root keys of the one before and its own",
    )
    s.add_argument("documents", type=Path, nargs="+", help="root documents N.root.json (the chain, any order)")

    s = command("repair", "rebuild a corrupt state file from the verified versions on disk")
    s.add_argument("model")

    s = command(
        "monitor",
        "evaluate the monitor rules over the recorded telemetry (confidence, errors, drift), roll a model back "
        "by itself when a rule says so, and record the findings in the facts; once (for a timer) or every "
        "SECONDS (one JSON line per evaluation with --json; SIGTERM stops the loop, exit 0). Once: exit 8 when a "
        "model was rolled back; 75 when another monitor runs on this root",
    )
    s.add_argument("--every", type=float, metavar="SECONDS", help="evaluate in a loop, every SECONDS (>= 1)")
    s.add_argument("--count", type=int, metavar="N", help="with --every: stop after N evaluations")
    return p


def _read_root_file(path: Path) -> bytes:
    """The bytes of a root document named on the command line (bounded; a missing file is a usage error)."""
    from ._json import read_untrusted_file
    from ._limits import DEFAULT_LIMITS

    try:
        return read_untrusted_file(path, DEFAULT_LIMITS.root_max_bytes)
    except OSError as exc:
        raise ConfigError(f"root document {quote_untrusted(str(path))} cannot be read: {exc.strerror}") from None


class _RenamedOption(argparse.Action):
    """``verify/check MODEL --version X`` of earlier releases, still accepted after the subcommand (where it
    cannot mean the program's version) with a deprecation warning; without a value it is refused."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        if not values:
            parser.error(
                "--version after a command was the model version and is now --model-version VERSION "
                "(`edge-runtime --version` prints the program's version)"
            )
        sys.stderr.write("warning: `--version VERSION` after the command is deprecated; use --model-version\n")
        namespace.model_version = values


def _settings(items: list[str], flag: str) -> dict[str, Any]:
    """``KEY=VALUE`` options (the value is JSON, or a bare word) as a mapping; validated by the caller."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{flag} {quote_untrusted(item, 60)} is not KEY=VALUE")
        try:  # bounded strict JSON: an operator's typo must not cost a RecursionError
            value = loads_untrusted(raw.encode("utf-8", "surrogateescape"), what="a value", error=ConfigError)
        except ConfigError:
            value = raw  # a bare word
        out[key.strip()] = value
    return out


def _section(
    dev: Device, name: str, items: list[str], flag: str, check: Callable[[dict[str, Any], str], object]
) -> dict[str, Any] | None:
    """A config.json section (``telemetry``, ``monitor``, ``drift``) with ``init``'s ``KEY=VALUE`` items applied
    over the device's current one, checked by its owner's ``from_mapping``; None when no item is given (init
    then keeps the section as it is)."""
    if not items:
        return None
    try:
        section = dict(getattr(dev.config, name) or {})
    except ConfigError:
        section = {}
    section.update(_settings(items, flag))
    check(section, flag)
    return section


def _download_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The download settings given on the command line (FetchConfig keys; validated by FetchConfig)."""
    out = _settings(args.download_setting, "--download-setting")
    for key in ("connect_timeout", "read_timeout", "retries"):
        if getattr(args, key) is not None:
            out[key] = getattr(args, key)
    return out


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
        if m.get("corrupt"):
            lines.append(f"{'':24} no longer verify (not offered for rollback): {', '.join(sorted(m['corrupt']))}")
        if m.get("degraded"):
            lines.append(f"{'':24} DEGRADED: {m['degraded'].get('reason')}")
        if m["state"] == "recovery pending":  # R1: status itself never recovers (it is read-only)
            p = m.get("pending") or {}
            lines.append(
                f"{'':24} interrupted while {p.get('phase')} of {p.get('version')}: run `edge-runtime recover` "
                "(or any install, rollback or check) to resolve it"
            )
    if st["busy"]:
        lines.append("an operation is in progress")
    trust = st.get("trust") or {}
    if trust.get("root_version"):
        lines.append(f"trust root version {trust['root_version']}, expires {trust.get('root_expires')}")
    lines += _human_monitor(st.get("monitor"))
    return "\n".join(lines)


def _human_monitor(mon: dict[str, Any] | None) -> list[str]:
    """The monitor's last evaluation, for ``status``: one line, and one per finding that is not ok."""
    if mon is None:
        return ["monitor: never ran (edge-runtime monitor)"]
    if "error" in mon:
        return [f"monitor: {mon['error']}"]
    lines = [f"monitor: last evaluation {mon.get('evaluated_at')}"]
    for name, m in sorted((mon.get("models") or {}).items()):
        lines.append(f"  {name} {m.get('version') or '-'}: {m.get('state')}")
        lines += [f"    {f.get('rule')}: {f.get('status')}: {f.get('message')}" for f in m.get("findings") or []]
    return lines


def _monitor(dev: Device, args: argparse.Namespace) -> int:
    """``edge-runtime monitor``: once, or every ``--every`` seconds (``--count`` times, else until stopped)."""
    import math
    import signal
    import threading
    import time

    from ._monitor_run import monitor_lock, run_once

    every, count = args.every, args.count
    if every is not None and not (math.isfinite(every) and every >= 1):
        raise ConfigError(f"--every must be a number of seconds >= 1, got {every!r}")
    if count is not None and (every is None or count < 1):
        raise ConfigError("--count N needs --every and N >= 1")
    dev.config.monitor_config()  # a bad monitor section is refused before anything runs
    with monitor_lock(dev.root):
        if every is None:
            report = run_once(dev)
            emit(args.json, {"ok": True, **report}, _human_report(report), warnings=dev.warnings)
            return EXIT_ROLLED_BACK if report["rolled_back"] else 0
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        start, n = time.monotonic(), 0
        while not stop.is_set():
            report = run_once(dev)
            if args.json:  # one JSON document per line and evaluation
                sys.stdout.write(dumps_strict({"ok": True, **report}, "--json output", sort_keys=True) + "\n")
            else:
                sys.stdout.write(_human_report(report) + "\n")
            sys.stdout.flush()
            n += 1
            if count is not None and n >= count:
                break
            # the next tick of a fixed schedule; an evaluation that overran skips the ticks it missed
            ticks = math.floor((time.monotonic() - start) / every) + 1
            stop.wait(max(0.0, start + ticks * every - time.monotonic()))
    return 0


def _human_report(report: dict[str, Any]) -> str:
    lines = [f"monitor evaluation at {report['evaluated_at']}"]
    if not report["models"]:
        lines.append("  no models installed")
    for name, m in sorted(report["models"].items()):
        lines.append(f"  {name} {m.get('version') or '-'}: {m['state']}")
        lines += [
            f"    {f['rule']}: {f['status']}: {f['message']}" for f in m["findings"] if f["status"] not in ("off",)
        ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    dev = Device(args.root)

    def out(data: dict[str, Any], human: str) -> None:
        emit(args.json, data, human, warnings=dev.warnings)

    def body() -> int:
        if args.cmd != "init":
            # a mistyped --root is an error that creates nothing (no lock, no facts/), not a new empty device
            dev.config  # noqa: B018 - raises ConfigError (exit 2) with the fix when the root is not initialised
        if args.cmd == "init":
            from ._fetch_config import FetchConfig

            download = None
            overrides = _download_overrides(args)
            if overrides:
                try:
                    download = dict(dev.config.download or {})
                except ConfigError:
                    download = {}
                download.update(overrides)
                FetchConfig.from_mapping(download, "--download-setting")
            from ._drift_config import DriftConfig
            from .monitor import MonitorConfig
            from .telemetry.config import TelemetryConfig

            telemetry = _section(dev, "telemetry", args.telemetry_setting, "--telemetry-setting",
                                 TelemetryConfig.from_mapping)
            monitor = _section(dev, "monitor", args.monitor_setting, "--monitor-setting", MonitorConfig.from_mapping)
            drift = _section(dev, "drift", args.drift_setting, "--drift-setting", DriftConfig.from_mapping)
            from .metrics import MetricsConfig

            metrics = _section(dev, "metrics", args.metrics_setting, "--metrics-setting", MetricsConfig.from_mapping)
            cfg = dev.init(
                args.trusted_key,
                roots=[_read_root_file(p) for p in args.trust_root] or None,
                threshold=args.threshold,
                allowed_models=tuple(args.model),
                architecture=args.arch,
                keep_versions=args.keep_versions,
                facts_path=args.facts_path,
                download=download,
                telemetry=telemetry,
                monitor=monitor,
                drift=drift,
                metrics=metrics,
            )
            out(
                {
                    "ok": True,
                    "root": str(dev.root),
                    "architecture": cfg.architecture,
                    "threshold": cfg.threshold,
                    "trusted_keys": len(args.trusted_key),
                    "trust_root": dev.current_root().summary(),
                },
                f"initialised {dev.root} ({cfg.architecture}, "
                + (f"{dev.current_root().describe()})" if args.trust_root else
                   f"{len(args.trusted_key)} trusted key(s), threshold {cfg.threshold})"),
            )
            return 0
        if args.cmd == "update-root":
            res = dev.update_root([_read_root_file(p) for p in args.documents])
            out(
                {"ok": True, **res},
                f"trust root version {res['to_version']} (was {res['from_version']})"
                if res["changed"] else f"already at trust root version {res['to_version']}",
            )
            return 0
        if args.cmd == "install":
            overrides = _download_overrides(args)
            dev.config.fetch_config().with_overrides(overrides)  # a bad setting is refused before the lock
            r = dev.install(
                args.source,
                expected_name=args.model,
                expected_digest=args.expect_digest,
                expected_size=args.expect_size,
                allow_quarantined=args.allow_quarantined,
                fetch_config=overrides,
                progress=None if not args.json else False,
            )
            out(r.to_dict(), _human_install(r))
            return 0 if r.ok else EXIT_ROLLED_BACK
        if args.cmd == "rollback":
            r = dev.rollback(args.model, args.to)
            out(
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
            out(r.to_dict(), human)
            return 0 if r.ok else EXIT_ROLLED_BACK
        if args.cmd == "status":
            st = dev.status()
            out({"ok": True, **st}, _human_status(st))
            return 0
        if args.cmd == "facts":  # read-only: never recovers nor runs a smoke test (R1)
            facts = dev.write_facts()
            sys.stdout.write(dumps_strict(facts, "facts", indent=None if args.json else 1, sort_keys=True) + "\n")
            return 0
        if args.cmd == "recover":
            done = dev.recover()
            out(
                {"ok": True, "recovered": done},
                "\n".join(f"{d['model']} {d['version']}: {d['action']} (was {d['phase']})" for d in done)
                or "nothing to recover",
            )
            return 0
        if args.cmd == "verify":
            m = dev.verify_installed(args.model, args.model_version)
            out(
                {"ok": True, "model": m.name, "version": str(m.version), "digest": m.digest, "files": len(m.files)},
                f"{m.name} {m.version}: signature and {len(m.files)} file(s) verified ({m.digest})",
            )
            return 0
        if args.cmd == "monitor":
            return _monitor(dev, args)
        if args.cmd == "repair":
            rep = dev.repair(args.model)
            out(
                {"ok": True, **rep},
                f"{args.model}: state rebuilt; active {rep['active'] or 'none'}, kept {', '.join(rep['kept'])}",
            )
            return 0
        raise AssertionError(args.cmd)  # pragma: no cover

    return run(body, args.json, warnings=dev.warnings)


if __name__ == "__main__":
    raise SystemExit(main())

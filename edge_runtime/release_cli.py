"""``edge-release``: the release side. Create keys, build and sign bundles, verify them.

Runs on a release machine or in CI, never on a device. Private keys are created 0600, are never
printed and never written into a bundle.
"""

from __future__ import annotations

import argparse
from datetime import timedelta
from pathlib import Path
from typing import Any

from . import __version__
from ._cli_common import ArgumentParser, emit, exit_codes_epilog, run
from ._json import dumps_strict, loads_untrusted, read_untrusted_file
from ._limits import DEFAULT_LIMITS
from .bundle import BundleSpec, add_signature, build_bundle, read_envelope, verify_bundle
from .errors import ConfigError, quote_untrusted
from .keys import generate_keypair, load_private_key, load_public_key
from .manifest import Manifest, parse_time
from .trust import TrustPolicy, key_id

__all__ = ["main"]

#: the exit codes edge-release uses (their meaning: edge_runtime._cli_common.EXIT_CODES)
_CODES = (0, 1, 2, 3, 4, 5, 6, 7, 130)

#: files a release directory (as in demo/models/<name>/<version>/) may hold, by entrypoint
RELEASE_FILES = {
    "model": "model.tflite",
    "golden": "golden.npz",
    "baseline": "baseline.json",
    "labels": "labels.txt",
    "preprocess": "preprocess.json",
}


def _parser() -> argparse.ArgumentParser:
    # the conventions of edge-runtime (R3): no prefix matching, --json before or after the command,
    # the exit codes in --help
    p = ArgumentParser(prog="edge-release", description=__doc__.split("\n\n")[0], epilog=exit_codes_epilog(_CODES))
    p.add_argument("--json", action="store_true", help="print JSON for machines")
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    common = ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print JSON for machines")
    sub = p.add_subparsers(dest="cmd", required=True, metavar="COMMAND")

    def command(name: str, help: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help, description=help, parents=[common], allow_abbrev=False,
                              epilog=exit_codes_epilog(_CODES), formatter_class=argparse.RawDescriptionHelpFormatter)

    s = command("keygen", help="create an ECDSA P-256 signing key pair (NAME.key 0600, NAME.pub)")
    s.add_argument("name", type=Path, help="path prefix, e.g. keys/release-1")

    s = command("build", help="build and sign a bundle")
    s.add_argument(
        "--release-dir",
        type=Path,
        help="directory with release.json, model.tflite, golden.npz, baseline.json, labels.txt",
    )
    s.add_argument("--name")
    s.add_argument("--model-version", dest="model_version")
    s.add_argument("--counter", type=int, help="monotonic release counter")
    s.add_argument("--model", type=Path, help="the .tflite file")
    s.add_argument("--golden", type=Path, help="golden samples .npz")
    s.add_argument("--baseline", type=Path, help="drift baseline .json")
    s.add_argument("--labels", type=Path)
    s.add_argument("--input-shape", help="e.g. 1,32,32,1")
    s.add_argument("--input-dtype", choices=["float32", "int8", "uint8"])
    s.add_argument("--atol", type=float)
    s.add_argument("--min-label-agreement", type=float)
    s.add_argument("--p95-latency-ms", type=float)
    s.add_argument("--repeats", type=int)
    s.add_argument("--arch", action="append", help="supported CPU architecture (repeat)")
    s.add_argument("--backend", action="append", help="supported backend: litert, tflite-runtime (repeat)")
    s.add_argument("--expires-in-days", type=float, help="validity from --created (default 365)")
    s.add_argument(
        "--created",
        help="creation time YYYY-MM-DDTHH:MM:SSZ (default now); fixed times give reproducible manifest digests",
    )
    s.add_argument("--key", type=Path, action="append", required=True, help="private key (repeat for more)")
    s.add_argument(
        "--trust-root",
        type=Path,
        action="append",
        default=[],
        help="root document to carry as trust/N.root.json (repeat: the chain), so devices catch up before verifying",
    )
    s.add_argument("-o", "--output", type=Path, required=True)

    s = command("sign", help="add a signature to an existing bundle")
    s.add_argument("bundle", type=Path)
    s.add_argument("--key", type=Path, required=True)

    s = command("verify", help="verify a bundle against trusted public keys or a root chain")
    s.add_argument("bundle", type=Path)
    s.add_argument("--trusted-key", type=Path, action="append", default=[])
    s.add_argument("--trust-root", type=Path, action="append", default=[],
                   help="root documents (the chain); the bundle must satisfy the newest one's release role")
    s.add_argument("--threshold", type=int, default=1)

    s = command("inspect", help="print a bundle's manifest (no trust decision)")
    s.add_argument("bundle", type=Path)

    s = command(
        "publish",
        help="release a trained model in one command: evaluate against the accuracy gate, build the bundle "
        "(golden samples, drift baseline), sign, publish to the registry, and commit the models.yaml change "
        "on a new branch release/<model>-<version> (docs/RELEASE.md)",
    )
    s.add_argument("--config", type=Path, default=Path("release.yaml"), help="release configuration (release.yaml)")
    s.add_argument("--model", required=True, help="model name, as in release.yaml and models.yaml")
    s.add_argument("--model-version", required=True, help="the new version (MAJOR.MINOR.PATCH)")
    s.add_argument("--from", dest="source", type=Path, required=True,
                   help="the trainer's output: a .tflite, or a .keras file / SavedModel directory "
                   "(converted with TensorFlow: run from .venv-train, make venv-train)")
    s.add_argument("--train", type=Path, required=True,
                   help="training data .npz (x, y): the drift baseline (and int8 calibration)")
    s.add_argument("--heldout", type=Path, required=True, help="held-out data .npz (x, y): the accuracy gate")
    s.add_argument("--key", type=Path, action="append", required=True, help="private key (repeat: threshold)")
    s.add_argument("--repo", type=Path, help="the Git repository of models.yaml (default: the config's directory)")
    s.add_argument("--workdir", type=Path, help="where the bundle is built (default: a temporary directory)")

    s = command("root", help="trust root documents: create, sign, verify a chain (key rotation and revocation)")
    rsub = s.add_subparsers(dest="root_cmd", required=True, metavar="ROOT_COMMAND")

    def root_command(name: str, help: str) -> argparse.ArgumentParser:
        return rsub.add_parser(name, help=help, description=help, parents=[common], allow_abbrev=False,
                               epilog=exit_codes_epilog(_CODES))

    r = root_command("new", "write an unsigned root document (then `root sign` it with enough keys)")
    r.add_argument("--root-key", type=Path, action="append", required=True,
                   help="public key allowed to sign the next root (repeat)")
    r.add_argument("--root-threshold", type=int, default=1)
    r.add_argument("--release-key", type=Path, action="append", required=True,
                   help="public key allowed to sign bundles (repeat)")
    r.add_argument("--release-threshold", type=int, default=1)
    r.add_argument("--previous", type=Path, help="the current root document: the new one gets its version + 1")
    r.add_argument("--root-version", type=int, help="the version (default: 1, or --previous's + 1)")
    r.add_argument("--expires-in-days", type=float, default=365.0)
    r.add_argument("-o", "--output", type=Path, required=True)

    r = root_command("sign", "add signatures to a root document (the previous root's keys and its own)")
    r.add_argument("document", type=Path)
    r.add_argument("--key", type=Path, action="append", required=True, help="private key (repeat)")

    r = root_command("verify", "verify a chain of root documents as a device would (oldest is the anchor)")
    r.add_argument("documents", type=Path, nargs="+")
    return p


def _spec_from_args(a: argparse.Namespace) -> BundleSpec:
    rel: dict[str, Any] = {}
    files: dict[str, Path] = {}
    entry: dict[str, str] = {}
    if a.release_dir:
        rel_path = a.release_dir / "release.json"
        try:
            data = read_untrusted_file(rel_path, DEFAULT_LIMITS.local_json_max_bytes)
        except OSError as exc:
            raise ConfigError(f"cannot read {quote_untrusted(str(rel_path))}: {exc.strerror}") from None
        rel = loads_untrusted(
            data, DEFAULT_LIMITS, str(rel_path), error=ConfigError, max_bytes=DEFAULT_LIMITS.local_json_max_bytes
        )
        if not isinstance(rel, dict):
            raise ConfigError(f"{quote_untrusted(str(rel_path))} must hold a JSON object")
        for ep, fname in RELEASE_FILES.items():
            if (a.release_dir / fname).is_file():
                files[fname] = a.release_dir / fname
                entry[ep] = fname
    for ep, path in (("model", a.model), ("golden", a.golden), ("baseline", a.baseline), ("labels", a.labels)):
        if path is not None:
            fname = RELEASE_FILES[ep]
            files[fname] = path
            entry[ep] = fname
    smoke = dict(rel.get("smoke_test", {}))
    for key, val in (
        ("atol", a.atol),
        ("min_label_agreement", a.min_label_agreement),
        ("p95_latency_ms", a.p95_latency_ms),
        ("repeats", a.repeats),
    ):
        if val is not None:
            smoke[key] = val
    inp = rel.get("input", {})
    shape = tuple(int(x) for x in a.input_shape.split(",")) if a.input_shape else tuple(inp.get("shape", ()))
    name = a.name or rel.get("name")
    version = a.model_version or rel.get("version")
    counter = a.counter if a.counter is not None else rel.get("release_counter")
    missing = [
        n
        for n, v in (
            ("--name", name),
            ("--model-version", version),
            ("--counter", counter),
            ("--model", entry.get("model")),
            ("--golden", entry.get("golden")),
            ("--input-shape", shape or None),
        )
        if v is None
    ]
    if missing:
        raise ConfigError(f"build needs {', '.join(missing)}", hint="pass them, or --release-dir with release.json")
    if getattr(a, "trust_root", None):
        from .root import parse_root

        for p in a.trust_root:
            files[f"trust/{parse_root(_read_root_doc(p)).version}.root.json"] = p
    for f in files.values():
        if not f.is_file():
            raise ConfigError(f"{f} does not exist")
    kw: dict[str, Any] = {}
    if a.arch:
        kw["architectures"] = tuple(a.arch)
    if a.backend:
        kw["backends"] = tuple(a.backend)
    created_s = a.created or rel.get("created")
    created = parse_time(created_s, "--created") if created_s else None
    days = a.expires_in_days if a.expires_in_days is not None else float(rel.get("expires_in_days", 365))
    return BundleSpec(
        name=str(name),
        version=str(version),
        release_counter=int(str(counter)),
        files=files,
        entrypoints=entry,
        input_shape=shape,
        input_dtype=a.input_dtype or inp.get("dtype", "float32"),
        smoke_test=smoke,
        expires_in=timedelta(days=days),
        created=created,
        **kw,
    )


def _summary(m: Manifest) -> dict[str, Any]:
    return {
        "name": m.name,
        "version": str(m.version),
        "release_counter": m.release_counter,
        "digest": m.digest,
        "expires": m.raw["expires"],
        "files": len(m.files),
        "bytes": m.total_length,
    }


def _read_root_doc(path: Path) -> bytes:
    try:
        return read_untrusted_file(path, DEFAULT_LIMITS.root_max_bytes)
    except OSError as exc:
        raise ConfigError(f"root document {quote_untrusted(str(path))} cannot be read: {exc.strerror}") from None


def _root_command(a: argparse.Namespace) -> int:
    from datetime import datetime, timezone

    from ._fsutil import atomic_write_bytes
    from .manifest import Envelope
    from .root import make_root_signed, parse_root, sign_root, verify_chain

    if a.root_cmd == "new":
        version = a.root_version
        if a.previous is not None:
            prev = parse_root(_read_root_doc(a.previous))
            if version is not None and version != prev.version + 1:
                raise ConfigError(f"--root-version {version} does not follow --previous (version {prev.version})")
            version = prev.version + 1
        version = 1 if version is None else version
        expires = datetime.now(timezone.utc).replace(microsecond=0) + timedelta(days=a.expires_in_days)
        signed = make_root_signed(version, expires, {
            "root": ([load_public_key(p) for p in a.root_key], a.root_threshold),
            "release": ([load_public_key(p) for p in a.release_key], a.release_threshold),
        })
        if a.output.exists():
            raise ConfigError(f"{a.output} exists", hint="root documents are never overwritten; choose another name")
        atomic_write_bytes(a.output, Envelope(signed, ()).to_bytes())
        root = parse_root(a.output.read_bytes())
        emit(a.json, {"ok": True, "document": str(a.output), **root.summary()},
             f"wrote {a.output}: unsigned root version {version}, expires {signed['expires']}; sign it with "
             f"`edge-release root sign {a.output} --key ...` (the previous root's keys and its own)")
        return 0
    if a.root_cmd == "sign":
        keys = [load_private_key(k) for k in a.key]
        data = sign_root(_read_root_doc(a.document), keys)
        atomic_write_bytes(a.document, data)
        emit(a.json, {"ok": True, "document": str(a.document), "signed_by": [key_id(k.public_key()) for k in keys]},
             f"signed {a.document} with {', '.join(key_id(k.public_key())[:16] for k in keys)}")
        return 0
    chain = verify_chain([_read_root_doc(p) for p in a.documents])
    last = chain[-1]
    emit(a.json, {"ok": True, "versions": [r.version for r in chain], "current": last.summary()},
         f"OK: root versions {', '.join(str(r.version) for r in chain)}; current version {last.version}, "
         f"expires {last.summary()['expires']}, release threshold {last.roles['release'].threshold} of "
         f"{len(last.roles['release'].keyids)}")
    return 0


def _publish_command(a: argparse.Namespace) -> int:
    import tempfile

    from .publish import GateRefusedError, load_release_config, publish

    cfg = load_release_config(a.config)
    repo = a.repo or a.config.resolve().parent
    with tempfile.TemporaryDirectory(prefix="edge-release-") as tmp:
        workdir = a.workdir or Path(tmp)
        try:
            r = publish(cfg, a.model, a.model_version, a.source, a.train, a.heldout, a.key, repo=repo,
                        workdir=workdir)
        except GateRefusedError as exc:
            if a.json:
                raise
            raise GateRefusedError(exc.message + f" (report: {exc.details.get('reports', ['?'])[-1]})",
                                   hint=exc.hint, **exc.details) from None
    g = r.gate
    prev = f"; {r.previous['version']}: {r.previous['accuracy']:.4f}" if r.previous else ""
    pins = ", ".join(f"{grp} {old} -> {r.version}" for grp, old in r.pins.items()) or "no group pinned"
    emit(a.json, {"ok": True, **r.to_dict()},
         f"{r.model} {r.version}: gate passed (held-out accuracy {g['value']:.4f} >= {g['min']:.4f}, "
         f"margin {g['margin']:+.4f}{prev})\n"
         f"{r.registry_result}: {cfg.registry}/{r.bundle} (manifest {r.digest}), signed by "
         f"{', '.join(k[:16] for k in r.signed_by)}\n"
         f"models.yaml on branch {r.branch} ({(r.commit or '')[:12]}): {pins}; open a pull request from it\n"
         f"report: {r.reports[-1]}")
    return 0


def main(argv: list[str] | None = None) -> int:
    a = _parser().parse_args(argv)

    def body() -> int:
        if a.cmd == "keygen":
            a.name.parent.mkdir(parents=True, exist_ok=True)
            priv, pub = a.name.with_suffix(".key"), a.name.with_suffix(".pub")
            kid = generate_keypair(priv, pub)
            emit(
                a.json,
                {"ok": True, "keyid": kid, "private_key": str(priv), "public_key": str(pub)},
                f"created {priv} (mode 0600, keep it secret) and {pub}\nkey id {kid}",
            )
            return 0
        if a.cmd == "build":
            try:
                spec = _spec_from_args(a)
            except (ValueError, TypeError, OverflowError, AttributeError) as exc:  # a malformed option or release.json
                raise ConfigError(
                    f"invalid build input: {quote_untrusted(str(exc), 200)}",
                    hint="check the options and release.json (see `edge-release build --help`)",
                ) from None
            keys = [load_private_key(k) for k in a.key]
            m = build_bundle(spec, a.output, keys)
            emit(
                a.json,
                {
                    "ok": True,
                    "bundle": str(a.output),
                    "size": a.output.stat().st_size,
                    **_summary(m),
                    "signed_by": [key_id(k.public_key()) for k in keys],
                },
                f"built {a.output}: {m.name} {m.version} (counter {m.release_counter}), {len(m.files)} files, "
                f"{len(keys)} signature(s)\nmanifest digest {m.digest}",
            )
            return 0
        if a.cmd == "sign":
            kid = add_signature(a.bundle, load_private_key(a.key))
            emit(a.json, {"ok": True, "bundle": str(a.bundle), "keyid": kid}, f"signed {a.bundle} with {kid[:16]}")
            return 0
        if a.cmd == "verify":
            if bool(a.trusted_key) == bool(a.trust_root):
                raise ConfigError("verify needs --trusted-key or --trust-root (not both)")
            if a.trust_root:
                from .root import verify_chain

                policy = verify_chain([_read_root_doc(p) for p in a.trust_root])[-1].policy("release")
            else:
                policy = TrustPolicy({key_id(k): k for k in (load_public_key(p) for p in a.trusted_key)}, a.threshold)
            m = verify_bundle(a.bundle, policy)
            emit(
                a.json,
                {"ok": True, **_summary(m)},
                f"OK {a.bundle}: {m.name} {m.version}, {len(m.files)} files verified, digest {m.digest}",
            )
            return 0
        if a.cmd == "root":
            return _root_command(a)
        if a.cmd == "publish":
            return _publish_command(a)
        if a.cmd == "inspect":
            env = read_envelope(a.bundle)
            m = Manifest.from_signed(env.signed)
            data = {"ok": True, **_summary(m), "signed": env.signed, "signatures": [s.keyid for s in env.signatures]}
            emit(a.json, data, dumps_strict(data, "manifest", indent=1, sort_keys=True, ensure_ascii=False))
            return 0
        raise AssertionError(a.cmd)  # pragma: no cover

    return run(body, a.json)


if __name__ == "__main__":
    raise SystemExit(main())

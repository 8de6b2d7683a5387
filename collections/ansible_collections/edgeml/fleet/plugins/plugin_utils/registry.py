# Copyright (c) edgeml maintainers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""The bundle registry seen from the controller: where a bundle is, its manifest, its signatures.

Controller-only (reads the registry; imports requests, and edge_runtime's bundle and trust code lazily).

* :func:`check_registry` reads the manifest of every catalogue version (only the first bytes of an
  http(s) bundle) and compares name, version, digest, release counter and size with ``models.yaml``.
* :func:`verify_planned` verifies what a deploy would install against the trusted keys of the devices
  that would install it: a local bundle in full (signatures, then every file's size and SHA-256), an
  http(s) bundle's manifest signatures (the device verifies its files after the download).

Download deadlines are the runtime's (:class:`edge_runtime._fetch_config.FetchConfig` defaults), not a copy.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from ansible_collections.edgeml.fleet.plugins.plugin_utils.models_yaml import SourceMap, YamlPath, kind

__all__ = [
    "KEYS_VAR",
    "MANIFEST_PREFIX_BYTES",
    "ROOT_VAR",
    "THRESHOLD_VAR",
    "Trust",
    "bundle_source",
    "check_registry",
    "check_trust",
    "device_trust",
    "is_url",
    "registry_location",
    "verify_planned",
]

#: how much of a remote bundle is read to find the manifest (tar headers + manifest <= 1 MiB)
MANIFEST_PREFIX_BYTES = (1 << 20) + 64 * 1024


@dataclass(frozen=True)
class Trust:
    """What a device trusts: its key files (controller paths) and the distinct signatures it needs, or the
    chain of trust root documents (controller paths) whose newest version's release role decides."""

    key_files: tuple[str, ...]
    threshold: int = 1
    root_files: tuple[str, ...] = ()


#: the edge_runtime role's variables that say what a device trusts
KEYS_VAR = "edge_runtime_trusted_keys"
THRESHOLD_VAR = "edge_runtime_threshold"
ROOT_VAR = "edge_runtime_trust_root"


def device_trust(host: str, keys: Any, threshold: Any, resolve: Callable[[str], str], roots: Any = ()) -> Trust:
    """A device's :class:`Trust` from its (templated) role variables; ``resolve`` makes a key path absolute."""
    from ansible_collections.edgeml.fleet.plugins.plugin_utils.models_yaml import DesiredStateError

    if isinstance(keys, (str, bytes)) or not isinstance(keys, (list, tuple)):
        raise DesiredStateError(host, 0, 0, f"{KEYS_VAR} must be a list of key file paths, not {kind(keys)}",
                                "write it as a YAML list of controller paths")
    if isinstance(threshold, bool) or not isinstance(threshold, (int, str)) or not str(threshold).strip().isdigit():
        raise DesiredStateError(host, 0, 0, f"{THRESHOLD_VAR} must be a whole number, not {threshold!r}")
    if isinstance(roots, (str, bytes)) or not isinstance(roots, (list, tuple)):
        raise DesiredStateError(host, 0, 0, f"{ROOT_VAR} must be a list of root document paths, not {kind(roots)}",
                                "write it as a YAML list of controller paths (N.root.json)")
    return Trust(tuple(resolve(os.path.expanduser(str(k))) for k in keys), int(threshold),
                 tuple(resolve(os.path.expanduser(str(r))) for r in roots))


def is_url(text: str) -> bool:
    return text.startswith(("http://", "https://"))


def registry_location(models_path: str, registry: str) -> str:
    """An http(s) URL as written, or the absolute registry directory (relative to models.yaml's dir)."""
    if is_url(registry):
        return registry
    return os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(models_path)), registry))


def bundle_source(registry: str, bundle: str) -> str:
    """Where a catalogue ``bundle`` is: its URL, the registry URL joined with it, or a registry file."""
    if is_url(bundle):
        return bundle
    if is_url(registry):
        return registry.rstrip("/") + "/" + quote(bundle, safe="/")
    return os.path.join(registry, *bundle.split("/"))


def _http_timeout() -> tuple[float, float]:
    from edge_runtime._fetch_config import FetchConfig

    cfg = FetchConfig()
    return cfg.connect_timeout, cfg.read_timeout


def _envelope_from_prefix(data: bytes) -> Any:
    """Parse the manifest envelope from the first bytes of a bundle (the manifest is member one)."""
    # The runtime's guarded reader: raw tar headers are checked before tarfile reads them (R2, issue 7).
    from edge_runtime.bundle import envelope_from_prefix

    return envelope_from_prefix(data)


class _Missing(Exception):
    """The bundle is not in the registry."""


def _read_remote(url: str) -> tuple[Any, int | None]:
    """Envelope and total size (if the server says) of a bundle, reading only its beginning."""
    import requests

    headers = {"Range": f"bytes=0-{MANIFEST_PREFIX_BYTES - 1}", "Accept-Encoding": "identity"}
    timeout = _http_timeout()
    # a server dripping bytes just faster than the read timeout is cut too: the whole read has a deadline
    deadline = time.monotonic() + sum(timeout)
    try:
        with requests.get(url, headers=headers, stream=True, timeout=timeout) as resp:
            if resp.status_code in (404, 410):
                raise _Missing(f"HTTP {resp.status_code}")
            if resp.status_code not in (200, 206):
                raise OSError(f"the registry answered HTTP {resp.status_code} {resp.reason}")
            total: int | None = None
            if resp.status_code == 206:
                m = re.search(r"/(\d+)\s*$", resp.headers.get("Content-Range", ""))
                total = int(m.group(1)) if m else None
            elif resp.headers.get("Content-Length", "").isdigit():
                total = int(resp.headers["Content-Length"])
            buf = bytearray()
            for chunk in resp.iter_content(64 * 1024):
                buf += chunk
                if len(buf) >= MANIFEST_PREFIX_BYTES:
                    break
                if time.monotonic() > deadline:
                    raise OSError(f"the registry sent no manifest within {sum(timeout):g} s")
    except requests.RequestException as exc:
        raise OSError(f"cannot reach the registry: {exc}") from None
    return _envelope_from_prefix(bytes(buf[:MANIFEST_PREFIX_BYTES])), total


def _read_envelope(source: str) -> tuple[Any, int | None]:
    """(envelope, size or None) of a bundle in a registry directory or behind a URL."""
    from edge_runtime.bundle import read_envelope

    if is_url(source):
        return _read_remote(source)
    if not os.path.isfile(source):
        raise _Missing(source)
    return read_envelope(Path(source)), os.path.getsize(source)


def check_registry(data: Mapping[str, Any], registry: str, smap: SourceMap) -> dict[tuple[str, str], int]:
    """Every catalogue entry's bundle exists and its manifest matches the entry.

    Returns the bundle sizes the registry reported, keyed by (model, version).
    """
    from edge_runtime.errors import EdgeRuntimeError
    from edge_runtime.manifest import Manifest

    if not is_url(registry) and not os.path.isdir(registry):
        raise smap.error(
            ("registry",),
            f"registry directory {registry} does not exist",
            "publish bundles there first, fix 'registry', or skip the check (--no-registry / check_registry: false)",
        )
    sizes: dict[tuple[str, str], int] = {}
    for name, model in data["models"].items():
        for vtext, entry in model["versions"].items():
            base: YamlPath = ("models", name, "versions", vtext)
            source = bundle_source(registry, entry["bundle"])
            try:
                envelope, size = _read_envelope(source)
                manifest = Manifest.from_signed(envelope.signed)
            except _Missing:
                raise smap.error(
                    (*base, "bundle"),
                    f"bundle of {name} {vtext} is not in the registry: {source}",
                    "publish it with edge-release, or fix 'bundle'",
                ) from None
            except (EdgeRuntimeError, OSError) as exc:
                raise smap.error(
                    (*base, "bundle"),
                    f"cannot read the manifest of {name} {vtext} from {source}: {exc}",
                    "rebuild and republish the bundle",
                ) from None
            # (differs, field, problem, hint): the first difference is reported at its field
            checks = (
                (manifest.name != name or str(manifest.version) != vtext, "bundle",
                 f"bundle {entry['bundle']} holds {manifest.name} {manifest.version}, not {name} {vtext}",
                 "point 'bundle' at the right file"),
                (manifest.digest != entry["digest"], "digest",
                 f"digest of {name} {vtext} does not match the registry: models.yaml pins {entry['digest']}, "
                 f"the bundle's manifest is {manifest.digest}",
                 "if this bundle is the intended release, pin its digest; otherwise republish the pinned bundle"),
                (manifest.release_counter != entry["release_counter"], "release_counter",
                 f"release_counter of {name} {vtext} is {entry['release_counter']} here "
                 f"but {manifest.release_counter} in the bundle",
                 "copy the release_counter from the bundle's manifest"),
                (size is not None and "size" in entry and size != entry["size"], "size",
                 f"size of {name} {vtext} is {entry.get('size')} here but the bundle has {size} bytes",
                 f"set size: {size}, or leave size out"),
            )
            for differs, key, problem, hint in checks:
                if differs:
                    raise smap.error((*base, key), problem, hint)
            if size is not None:
                sizes[(name, vtext)] = size
    return sizes


def _policy(trust: Trust, where: str) -> Any:
    """The runtime's TrustPolicy for ``trust``; every key file passes the public-key gate first."""
    from ansible_collections.edgeml.fleet.plugins.plugin_utils.trusted_keys import TrustedKeyError, read_public_key

    from edge_runtime.errors import EdgeRuntimeError
    from edge_runtime.trust import TrustPolicy

    if trust.root_files:  # the chain the role gives the device: bundles must satisfy its newest release role
        from ansible_collections.edgeml.fleet.plugins.plugin_utils.trusted_keys import read_root_document

        from edge_runtime.root import verify_chain

        if trust.key_files:
            raise TrustedKeyError(where, f"sets both {KEYS_VAR} and {ROOT_VAR}",
                                  f"once devices have a trust root, leave {KEYS_VAR} empty (docs/KEYS.md)")
        try:
            chain = verify_chain([read_root_document(p).encode() for p in trust.root_files])
        except EdgeRuntimeError as exc:
            raise TrustedKeyError(where, exc.message, exc.hint) from None
        if chain[0].version != 1:
            raise TrustedKeyError(where, f"{ROOT_VAR} starts at root version {chain[0].version}",
                                  "list every root document from version 1: a device that holds an older one "
                                  "needs each step of the chain")
        return chain[-1].policy("release")
    if not trust.key_files:
        raise TrustedKeyError(
            where,
            "no trusted keys: a device trusts no bundle without one",
            "set edge_runtime_trusted_keys to the controller paths of the release public keys (PEM)",
        )
    keys = [read_public_key(p) for p in trust.key_files]
    ids = {k.key_id for k in keys}
    if len(ids) != len(keys):
        raise TrustedKeyError(
            where,
            f"edge_runtime_trusted_keys lists the same key more than once ({len(keys)} files, {len(ids)} keys)",
            "a threshold counts distinct keys: remove the duplicate file",
        )
    try:
        return TrustPolicy({k.key_id: k.key for k in keys}, trust.threshold)
    except EdgeRuntimeError as exc:
        raise TrustedKeyError(where, exc.message, exc.hint) from None


def check_trust(trust_of: Mapping[str, Trust]) -> None:
    """Every device's trust (key files are public keys, no duplicates, threshold in range), once per set."""
    hosts_of: dict[Trust, list[str]] = {}
    for host, trust in trust_of.items():
        hosts_of.setdefault(trust, []).append(host)
    for trust, hosts in hosts_of.items():
        _policy(trust, f"trusted keys of {_some(hosts)}")


def verify_planned(
    plan: Mapping[str, Any], trust_of: Mapping[str, Trust], smap: SourceMap, full: bool = True
) -> list[dict[str, Any]]:
    """Verify each planned bundle against the trust of every device that would install it, once per pair.

    ``trust_of`` maps each planned host to its :class:`Trust`. A local bundle is verified in full when
    ``full`` (signatures, then every file), an http(s) one by its manifest's signatures. Failures are
    located at the catalogue entry's ``bundle`` line. Returns what was verified.
    """
    from edge_runtime.bundle import verify_bundle
    from edge_runtime.errors import EdgeRuntimeError
    from edge_runtime.manifest import Manifest
    from edge_runtime.trust import verify_envelope

    wanted: dict[tuple[str, Trust], tuple[str, str, str, list[str]]] = {}
    for host, entry in sorted((plan.get("hosts") or {}).items()):
        trust = trust_of[host]
        for name, pin in sorted((entry.get("models") or {}).items()):
            item = wanted.setdefault(
                (str(pin["source"]), trust), (name, str(pin["version"]), str(pin["digest"]), [])
            )
            item[3].append(host)
    policies: dict[Trust, Any] = {}
    verified: list[dict[str, Any]] = []
    for (source, trust), (name, version, digest, hosts) in sorted(wanted.items(), key=lambda kv: kv[0][0]):
        if trust not in policies:
            policies[trust] = _policy(trust, f"trusted keys of {_some(hosts)}")
        policy = policies[trust]
        where: YamlPath = ("models", name, "versions", version, "bundle")
        try:
            if is_url(source) or not full:
                envelope = _read_envelope(source)[0]
                manifest: Manifest = verify_envelope(envelope, policy)
                files = None
            else:
                manifest = verify_bundle(Path(source), policy)
                files = len(manifest.files)
        except _Missing:
            raise smap.error(where, f"bundle of {name} {version} is not in the registry: {source}") from None
        except EdgeRuntimeError as exc:
            raise smap.error(
                where,
                f"bundle {source} ({name} {version}) does not verify with the trusted keys of {_some(hosts)} "
                f"(threshold {trust.threshold}): {exc.message}",
                exc.hint or "sign it with a key the devices trust, or fix edge_runtime_trusted_keys",
            ) from None
        except OSError as exc:
            raise smap.error(where, f"bundle {source} ({name} {version}) cannot be read: {exc}") from None
        if manifest.digest != digest:
            raise smap.error(
                ("models", name, "versions", version, "digest"),
                f"bundle {source} has manifest digest {manifest.digest}, models.yaml pins {digest} "
                f"for {name} {version}",
                "the registry changed after models.yaml was written; pin the new digest only if this build is "
                "the one you reviewed",
            )
        verified.append({"source": source, "model": name, "version": version, "files": files,
                         "hosts": len(hosts), "threshold": trust.threshold,
                         # for the pull-request plan (plugin_utils/plan_report.py): who this verification
                         # covers and what the signed manifest says about expiry and compatibility
                         "devices": sorted(hosts), "keys": len(trust.key_files), "trust_roots": len(trust.root_files),
                         "expires": manifest.expires.isoformat(), "architectures": list(manifest.architectures),
                         "backends": list(manifest.backends),
                         "input": {"shape": list(manifest.input_shape), "dtype": manifest.input_dtype}})
    return verified


def _some(hosts: Iterable[str]) -> str:
    hosts = sorted(hosts)
    return ", ".join(hosts[:3]) + (f" and {len(hosts) - 3} more device(s)" if len(hosts) > 3 else "")

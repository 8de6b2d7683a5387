"""A device root and its install state machine.

``fetch → verify → stage → smoke test (staged) → activate → post-activation check → commit``, or
``→ roll back``. No version serves before it passed: the smoke test runs on ``versions/<v>`` while the
old version stays active; only then is the ``active`` link swapped onto that very directory, and the
post-activation check re-verifies the files behind the active path (signed manifest of this release,
every file's hash and length, nothing extra) before the commit, which records the post-install check
as passed. One inference per install: the swap is a rename of a symlink, so a second test would run the
same bytes again; the re-verification catches a disk that changed them. After an interruption past the
swap, recovery runs the full post-activation smoke test in a fresh child instead. Every smoke test
runs in a child process with a hard deadline (:mod:`edge_runtime._smoke_proc`); a hang, a crash or
a non-finite output is a failed test (the version is rolled back and quarantined), never a stuck or
crashed runtime. Every transition is persisted atomically before the step it announces, so
:meth:`Device.recover` (and every mutating command, first) can resolve an interrupted operation
deterministically. Read-only commands (``status``, ``facts``, ``verify``) never recover and never
run a smoke test: they report ``recovery pending`` (or ``busy`` while the lock is held).

============  =====================================================================================
phase         on recovery
============  =====================================================================================
staging       partial staging removed; the old version stays active
staged        the staged (uncommitted) version removed; the old version stays active
testing       the staged smoke test (old version still active) runs again in its child and the
              install continues; after ``max_smoke_attempts`` interrupted runs (a model that takes
              the whole device down) the version is quarantined and the old one stays
activating    the swap is completed (the staged test had passed) and the post-activation smoke test
              runs in a fresh child from the active path (commits without a recorded check)
activated     the post-activation smoke test runs again; after ``max_smoke_attempts`` interrupted runs
              the version is rolled back and quarantined
rolling_back  the rollback is completed
============  =====================================================================================

``smoke_attempts`` counts the runs started in the current phase (``testing`` or ``activated``); it is
persisted before each child starts, so an interruption is counted even if nothing else was written.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import platform
import shutil
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from . import _faults
from ._fsutil import (
    TMP_PREFIX,
    atomic_write_bytes,
    fsync_dir,
    iter_tmp_files,
    make_tree_readonly,
    remove_tree,
    swap_symlink,
)
from ._json import dumps_strict_bytes
from ._state import DeviceLock, ModelState, Pending, StateStore, state_label, utcnow
from .decision import Pin, decide
from .errors import (
    ConfigError,
    DiskFullError,
    EdgeRuntimeError,
    IntegrityError,
    NotInstalledError,
    RollbackError,
    RootError,
    StagingError,
    TrustError,
    quote_untrusted,
)

if TYPE_CHECKING:
    from ._drift_config import DriftConfig
    from ._fetch_config import FetchConfig
    from .bundle import BundleStream
    from .manifest import Manifest
    from .metrics import MetricsConfig
    from .monitor import MonitorConfig
    from .root import Root
    from .smoke import SmokeResult
    from .telemetry.config import TelemetryConfig
    from .trust import DeviceContext, TrustPolicy

# numpy (smoke test), requests (fetch), tarfile (bundles) and cryptography (keys, signatures) are imported
# where they are used: a no-op query of the device (status, facts, the Ansible setup module on a device
# that is in sync) should not pay for them. Measured: importing this module 39 ms -> see bench/RESULTS.md.

__all__ = ["DEFAULT_ROOT", "Device", "DeviceConfig", "InstallResult"]

DEFAULT_ROOT = Path("/var/lib/edge-runtime")
CONFIG_NAME = "config.json"
MANIFEST_NAME = "manifest.json"  # == edge_runtime.manifest.MANIFEST_NAME, without importing that module
FREE_SPACE_MARGIN = 1 << 20


@dataclass
class DeviceConfig:
    """``<root>/config.json``: what this device is and what it accepts."""

    architecture: str
    threshold: int = 1
    allowed_models: tuple[str, ...] = ()
    keep_versions: int = 2
    max_smoke_attempts: int = 2
    #: model name -> {"shape": [...], "dtype": "..."}: the input this device feeds the model
    inputs: dict[str, dict[str, Any]] | None = None
    #: extra copy of the facts file, e.g. /etc/ansible/facts.d/edge_runtime.fact
    facts_path: str | None = None
    #: download settings overriding the defaults of :class:`~edge_runtime._fetch_config.FetchConfig`
    #: (e.g. ``{"allowed_redirect_hosts": ["mirror.example"], "min_rate": 8192}``); None: the defaults
    download: dict[str, Any] | None = None
    #: telemetry settings overriding the defaults of :class:`~edge_runtime.telemetry.config.TelemetryConfig`
    #: (size cap ``max_bytes`` 32 MiB, ``retention_days`` 7, ``flush_interval_s`` 5, ...); None: the defaults
    telemetry: dict[str, Any] | None = None
    #: drift thresholds and window overriding the defaults of :class:`~edge_runtime._drift_config.DriftConfig`
    #: and the bundle's (e.g. ``{"psi_threshold": 0.25, "window_minutes": 30}``); None: no override
    drift: dict[str, Any] | None = None
    #: monitor settings overriding the defaults of :class:`~edge_runtime.monitor.MonitorConfig` (confidence
    #: threshold 0.75, 5 consecutive minutes, min 20 inferences/min, ...); None: the defaults
    monitor: dict[str, Any] | None = None
    #: Prometheus textfile metrics (:class:`~edge_runtime.metrics.MetricsConfig`: ``textfile_dir``, the
    #: node_exporter textfile directory, and the ``device`` label); None: no metrics file
    metrics: dict[str, Any] | None = None

    @classmethod
    def load(cls, path: Path) -> DeviceConfig:
        """Read ``config.json`` as untrusted input (bounded strict JSON, every field type-checked)."""
        from ._json import check_fields, loads_untrusted, read_untrusted_file
        from ._limits import DEFAULT_LIMITS as lim

        try:
            data = read_untrusted_file(path, lim.local_json_max_bytes)
        except FileNotFoundError:
            raise ConfigError(
                f"{path.parent} is not an initialised device root ({path.name} missing)",
                hint=f"run `edge-runtime --root {path.parent} init --trusted-key KEY.pub`",
            ) from None
        except OSError as exc:
            raise ConfigError(f"device config {path} is unreadable: {exc.strerror}") from None

        def bad(message: str) -> ConfigError:
            hint = f"fix {path}, or run `edge-runtime --root {path.parent} init --trusted-key KEY.pub` again"
            return ConfigError(message, hint=hint)

        what = f"device config {path}"
        doc = loads_untrusted(data, lim, what, error=bad, max_bytes=lim.local_json_max_bytes)
        check_fields(cls, doc, what, bad)
        cfg = cls(**doc)
        cfg.allowed_models = tuple(cfg.allowed_models)
        cfg.validate(f"device config {path}")
        return cfg

    def validate(self, what: str = "device config") -> None:
        """Refuse values this runtime could not work with: the one check for ``init`` (before anything is
        created or written) and for :meth:`load` (a config edited by hand), so a config ``init`` writes
        always loads again."""
        if self.keep_versions < 1 or self.max_smoke_attempts < 1:
            raise ConfigError(f"{what}: keep_versions and max_smoke_attempts must be >= 1")
        if self.threshold < 1:
            raise ConfigError(f"{what}: threshold must be >= 1", hint="pass --threshold 1 or more")
        for name in self.allowed_models:
            _path_part(name, "model name")
        if not self.architecture or len(self.architecture) > 64:
            raise ConfigError(f"{what}: architecture must be 1-64 characters", hint="pass --arch, e.g. aarch64")
        if self.facts_path is not None and not os.path.isabs(self.facts_path):
            raise ConfigError(
                f"{what}: facts_path must be an absolute path, got {quote_untrusted(self.facts_path)}",
                hint="pass --facts-path /etc/ansible/facts.d/edge_runtime.fact (or leave it out)",
            )
        self.fetch_config(f"{what}: download")  # refuses unknown or invalid download settings now
        self.telemetry_config(f"{what}: telemetry")  # and telemetry settings
        self.drift_config(what=f"{what}: drift")  # the same for the drift settings
        self.monitor_config(f"{what}: monitor")  # and monitor settings
        self.metrics_config(f"{what}: metrics")  # and the metrics textfile settings

    def telemetry_config(self, what: str = "telemetry settings") -> TelemetryConfig:
        """The device's telemetry settings: the defaults with this config's ``telemetry`` overrides."""
        from .telemetry.config import TelemetryConfig

        return TelemetryConfig.from_mapping(self.telemetry, what)

    def monitor_config(self, what: str = "monitor settings") -> MonitorConfig:
        """The device's monitor settings: the defaults with this config's ``monitor`` overrides."""
        from .monitor import MonitorConfig

        return MonitorConfig.from_mapping(self.monitor, what)

    def metrics_config(self, what: str = "metrics settings") -> MetricsConfig:
        """Where this device writes its Prometheus textfile (None: nowhere) and its device label."""
        from .metrics import MetricsConfig

        return MetricsConfig.from_mapping(self.metrics, what)

    def fetch_config(self, what: str = "download settings") -> FetchConfig:
        """The device's download settings: the defaults with this config's ``download`` overrides."""
        from ._fetch_config import FetchConfig

        return FetchConfig.from_mapping(self.download, what)

    def drift_config(self, bundle: dict[str, Any] | None = None, what: str = "device config: drift") -> DriftConfig:
        """The drift settings for a model: the defaults, then the bundle's ``baseline.json`` ``drift`` object
        (``bundle``), then this config's ``drift`` object (the device wins)."""
        from ._drift_config import DriftConfig

        return DriftConfig.resolve(bundle, self.drift, device_what=what)


@dataclass(frozen=True)
class InstallResult:
    model: str
    version: str
    digest: str
    #: "installed", "unchanged", "activated_kept" or "rolled_back"
    result: str
    changed: bool
    previous: str | None
    active: str | None
    reason: str
    smoke: dict[str, Any] | None = None
    #: why the model is degraded after this operation (a rollback target that did not verify), else None
    degraded: str | None = None
    #: True when this operation recorded a passed post-install check of ``active`` (an install whose staged
    #: smoke test passed and whose active files verified after the swap, or a passing ``check``)
    checked: bool = False

    @property
    def ok(self) -> bool:
        return self.result != "rolled_back"

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["ok"] = self.ok
        return out


def _integrity_reason(exc: EdgeRuntimeError) -> str:
    """``model.tflite no longer verifies (...)``: why a kept version is unusable, naming the file."""
    path = exc.details.get("path") if isinstance(exc.details, dict) else None
    return f"{path} no longer verifies ({exc.message})" if path else f"no longer verifies ({exc.message})"


def _lost_reason(lost: list[tuple[str, str]], landed: str | None) -> str:
    """``cannot roll back to 1.0.0: model.tflite no longer verifies (...); 0.9.0 is active instead``."""
    first, why = lost[0]
    parts = [f"cannot roll back to {first}: {why}"]
    parts += [f"{v} does not verify either: {w}" for v, w in lost[1:]]
    parts.append(f"{landed} is active instead" if landed else "no verified version is left, no model is active")
    return "; ".join(parts)


def _path_part(value: str, kind: str) -> str:
    """A model name or version about to become a path component (``rollback ../../x`` is refused)."""
    from .manifest import path_part

    return path_part(value, kind)


def _available_backends() -> tuple[str, ...]:
    from ._smoke_proc import available_backends  # numpy-free (R1): the installing process never imports numpy

    return available_backends()


class Device:
    """All state of one (real or simulated) device lives under ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.models_dir = self.root / "models"
        self.trust_dir = self.root / "trust"
        self.downloads_dir = self.root / "downloads"
        self.facts_file = self.root / "facts" / "edge_runtime.fact"
        self.store = StateStore(self.models_dir)
        self.lock = DeviceLock(self.root / "lock")
        #: problems that did not stop the operation (a facts file that could not be written), for the caller
        self.warnings: list[str] = []

    # ----------------------------------------------------------------- set-up ------------------------

    def init(
        self,
        trusted_keys: list[Path],
        *,
        roots: list[bytes] | None = None,
        threshold: int = 1,
        allowed_models: tuple[str, ...] = (),
        architecture: str | None = None,
        keep_versions: int = 2,
        facts_path: str | None = None,
        download: Mapping[str, Any] | None = None,
        telemetry: Mapping[str, Any] | None = None,
        monitor: Mapping[str, Any] | None = None,
        drift: Mapping[str, Any] | None = None,
        metrics: Mapping[str, Any] | None = None,
    ) -> DeviceConfig:
        """Create or update the device root: trust (a key list or root documents) and config. Idempotent.

        Trust comes either from ``trusted_keys`` (the legacy list, with ``threshold``) or from ``roots``, the
        chain of root documents (:mod:`edge_runtime.root`): a device that already trusts a root (or a key
        list) accepts only the versions that follow it, each signed as rotation requires; a new device takes
        the oldest document given as its anchor (it must be signed by its own root keys). Once a device
        trusts a root document, a key list is refused: keys then change only through a new root.
        ``download``, ``telemetry``, ``monitor``, ``drift`` and ``metrics`` replace the config's sections of those
        names; None keeps the one already there (``metrics={}`` turns the metrics file off).
        """
        from ._fetch_config import FetchConfig
        from .keys import load_public_key
        from .trust import TrustPolicy, key_id

        if not trusted_keys and not roots:
            raise ConfigError(
                "at least one trusted public key or a trust root is required",
                hint="pass --trusted-key KEY.pub or --trust-root N.root.json",
            )
        if trusted_keys and (roots or self.root_file.exists()):
            raise ConfigError(
                "this device's trust comes from root documents; a trusted-key list cannot change it"
                + ("" if roots else f" ({self.root_file} exists)"),
                hint="rotate keys with a new root document (`edge-release root new`, `root sign`) given as "
                "--trust-root (edge_runtime_trust_root in the edge_runtime role)",
            )
        keys = {}
        for p in trusted_keys:
            k = load_public_key(p)
            keys[key_id(k)] = (k, p.read_bytes())
        if keys:
            TrustPolicy({kid: k for kid, (k, _) in keys.items()}, threshold)  # validates the threshold
        accepted = self.roots_to_accept(roots, threshold) if roots else []
        if None in (download, telemetry, monitor, drift, metrics) and (self.root / CONFIG_NAME).exists():
            with contextlib.suppress(ConfigError):
                current = self.config
                download = current.download if download is None else download
                telemetry = current.telemetry if telemetry is None else telemetry
                monitor = current.monitor if monitor is None else monitor
                drift = current.drift if drift is None else drift
                metrics = current.metrics if metrics is None else metrics
        if download is not None:
            FetchConfig.from_mapping(download, "download settings")  # refused before anything is written
        cfg = DeviceConfig(
            architecture=architecture or platform.machine(),
            threshold=threshold,
            allowed_models=tuple(allowed_models),
            keep_versions=keep_versions,
            facts_path=facts_path,
            download=dict(download) if download else None,
            telemetry=dict(telemetry) if telemetry else None,
            monitor=dict(monitor) if monitor else None,
            drift=dict(drift) if drift else None,
            metrics=dict(metrics) if metrics else None,
        )
        del accepted  # checked before anything is written; stored under the lock below
        cfg.validate("init")  # the same check as loading it: init never writes a config it could not read
        doc = asdict(cfg)
        for optional in ("download", "telemetry", "monitor", "drift", "metrics"):
            if doc[optional] is None:
                del doc[optional]  # configs without these settings stay byte-identical
        doc["allowed_models"] = list(cfg.allowed_models)
        # strict: a value that cannot be read back (a lone surrogate, NaN) is refused before anything is
        # created or written
        data = dumps_strict_bytes(doc, "device config", indent=1, sort_keys=True) + b"\n"
        for d in (self.root, self.models_dir, self.trust_dir, self.downloads_dir, self.facts_file.parent):
            d.mkdir(parents=True, exist_ok=True)
        with self.lock.hold("init"):
            if roots:
                self._store_roots(self.roots_to_accept(roots, threshold))  # again, under the lock
            else:
                for kid, (_, pem) in keys.items():
                    target = self.trust_dir / f"{kid}.pub.pem"
                    if not target.exists() or target.read_bytes() != pem:
                        atomic_write_bytes(target, pem)
                for old in self.trust_dir.glob("*.pub.pem"):
                    if old.name.split(".")[0] not in keys:
                        old.unlink()
                fsync_dir(self.trust_dir)
            cfg_path = self.root / CONFIG_NAME
            if not cfg_path.exists() or cfg_path.read_bytes() != data:
                atomic_write_bytes(cfg_path, data)
            self.write_facts()
        return cfg

    @property
    def config(self) -> DeviceConfig:
        return DeviceConfig.load(self.root / CONFIG_NAME)

    # ----------------------------------------------------------------- trust -------------------------

    @property
    def root_file(self) -> Path:
        """The root document this device trusts now (absent on a device that trusts a legacy key list)."""
        return self.trust_dir / "root.json"

    @property
    def roots_dir(self) -> Path:
        """Every root document this device accepted, as ``<version>.root.json`` (for copies already on it)."""
        return self.trust_dir / "roots"

    def _legacy_root(self, threshold: int | None = None) -> Root | None:
        """The key list (``trust/*.pub.pem``) as the implicit root version 0, or None without keys."""
        from .keys import load_public_key
        from .root import Root
        from .trust import key_id

        keys = {}
        for p in sorted(self.trust_dir.glob("*.pub.pem")):
            k = load_public_key(p)
            keys[key_id(k)] = k
        if not keys:
            return None
        return Root.legacy(keys, self.config.threshold if threshold is None else threshold)

    def _read_root(self, path: Path) -> Root:
        from ._json import read_untrusted_file
        from ._limits import DEFAULT_LIMITS
        from .root import check_self_signed, parse_root

        try:
            data = read_untrusted_file(path, DEFAULT_LIMITS.root_max_bytes)
        except OSError as exc:
            raise ConfigError(f"trust root {path} is unreadable: {exc.strerror}") from None
        return check_self_signed(parse_root(data))

    def current_root(self) -> Root:
        """The root this device trusts: ``trust/root.json``, else its legacy key list as root version 0."""
        if self.root_file.exists():
            return self._read_root(self.root_file)
        legacy = self._legacy_root()
        if legacy is None:
            raise ConfigError(
                f"no trusted keys and no trust root in {self.trust_dir}",
                hint="run `edge-runtime init --trusted-key KEY.pub` or `--trust-root N.root.json`",
            )
        return legacy

    def trust_policy(self) -> TrustPolicy:
        """The policy for copies already on this device: the current root's release keys, falling back to
        the roots accepted before it (a version committed under an earlier root stays usable for rollback
        and recovery after its key was rotated out). New bundles go through :meth:`install_policy`."""
        current = self.current_root()
        older: list[Root] = []
        if current.version > 0:
            for p in sorted(self.roots_dir.glob("*.root.json")) if self.roots_dir.is_dir() else []:
                with contextlib.suppress(EdgeRuntimeError):
                    r = self._read_root(p)
                    if r.version < current.version:
                        older.append(r)
            with contextlib.suppress(EdgeRuntimeError):
                legacy = self._legacy_root()
                if legacy is not None:
                    older.append(legacy)
        return current.policy("release", tuple(r.policy("release") for r in older))

    def install_policy(self) -> TrustPolicy:
        """The policy for a new bundle: the current root's release keys only, and only while it has not expired."""
        from .root import check_root_fresh

        current = self.current_root()
        check_root_fresh(current, datetime.now(timezone.utc))
        return current.policy("release")

    def roots_to_accept(self, documents: list[bytes], threshold: int = 1) -> list[Root]:
        """The roots of ``documents`` newer than the device's (checked), or, on a device without any trust,
        the chain from the oldest document (its anchor, which must be signed by its own root keys)."""
        from .root import update_chain, verify_chain

        base: Root | None
        if self.root_file.exists():
            base = self._read_root(self.root_file)
        else:
            base = self._legacy_root(threshold if not (self.root / CONFIG_NAME).exists() else None)
        if base is None:
            return verify_chain(documents)
        return update_chain(base, documents)

    def _store_roots(self, accepted: list[Root]) -> None:
        """Persist newly accepted roots: each in ``trust/roots/``, then ``trust/root.json`` last (atomic, fsynced)."""
        if not accepted:
            return
        self.roots_dir.mkdir(parents=True, exist_ok=True)
        for r in accepted:
            assert r.data is not None
            atomic_write_bytes(self.roots_dir / f"{r.version}.root.json", r.data)
        fsync_dir(self.roots_dir)
        assert accepted[-1].data is not None
        atomic_write_bytes(self.root_file, accepted[-1].data)
        fsync_dir(self.trust_dir)

    def update_root(self, documents: list[bytes]) -> dict[str, Any]:
        """Apply a chain of root documents (``edge-runtime update-root``); what changed, as data."""
        self.config  # noqa: B018 - an uninitialised root is refused with a hint
        with self.lock.hold("update-root"):
            before = self.current_root()
            accepted = self.roots_to_accept(documents)
            self._store_roots(accepted)
            self.write_facts()
        return {
            "changed": bool(accepted),
            "from_version": before.version,
            "to_version": accepted[-1].version if accepted else before.version,
            "applied": [r.version for r in accepted],
            "root": (accepted[-1] if accepted else before).summary(),
        }

    def _apply_bundle_roots(self, path: Path, manifest_signed: Any) -> list[int]:
        """Accept the root documents a bundle carries (``trust/<N>.root.json``) before its signatures are
        checked, so an offline device catches up through the chain. Roots authenticate themselves (each is
        signed by its predecessor's root keys), so this is safe before the manifest is trusted."""
        import hashlib as _hashlib

        from ._limits import DEFAULT_LIMITS
        from .bundle import BundleStream
        from .manifest import Manifest
        from .root import root_member_version
        from .trust import check_file

        files = manifest_signed.get("files") if isinstance(manifest_signed, dict) else None
        if not isinstance(files, list) or not any(
            isinstance(f, dict) and isinstance(f.get("path"), str) and root_member_version(f["path"]) is not None
            for f in files
        ):
            return []
        manifest = Manifest.from_signed(manifest_signed)  # structure only; trust is decided after the roots
        wanted = {e.path for e in manifest.files if root_member_version(e.path) is not None}
        if len(wanted) > DEFAULT_LIMITS.root_max_chain:  # refused before any of them is read
            limit = DEFAULT_LIMITS.root_max_chain
            raise RootError(f"the bundle carries {len(wanted)} root documents, more than {limit}")
        docs: list[bytes] = []
        with path.open("rb") as fh:
            for entry, member in BundleStream(fh).members(manifest):
                if entry.path not in wanted:
                    continue
                if entry.length > DEFAULT_LIMITS.root_max_bytes:
                    raise RootError(f"{entry.path} is {entry.length} bytes, more than {DEFAULT_LIMITS.root_max_bytes}")
                data = member.read(entry.length + 1)
                check_file(entry, _hashlib.sha256(data).hexdigest(), len(data))
                docs.append(data)
                if len(docs) == len(wanted):
                    break
        accepted = self.roots_to_accept(docs)
        self._store_roots(accepted)
        return [r.version for r in accepted]

    # ----------------------------------------------------------------- paths -------------------------

    def model_dir(self, name: str) -> Path:
        return self.models_dir / _path_part(name, "model name")

    def version_dir(self, name: str, version: str) -> Path:
        return self.model_dir(name) / "versions" / _path_part(version, "version")

    def active_link(self, name: str) -> Path:
        return self.model_dir(name) / "active"

    # ----------------------------------------------------------------- install -----------------------

    @contextmanager
    def _operation(self, what: str) -> Iterator[None]:
        self.config  # noqa: B018 - loading it fails early, with a hint, on an uninitialised root
        with self.lock.hold(what):
            self._clean_tmp()
            for name in self.store.names():
                self._recover(name)
            try:
                yield
            finally:
                self.write_facts()

    def install(
        self,
        source: str,
        *,
        expected_name: str | None = None,
        expected_digest: str | None = None,
        expected_size: int | None = None,
        allow_quarantined: bool = False,
        fetch_config: FetchConfig | Mapping[str, Any] | None = None,
        progress: bool | None = None,
    ) -> InstallResult:
        """Install the bundle at ``source`` (a path or an http(s) URL) and return what happened.

        ``fetch_config``: a :class:`FetchConfig` used as is, or a mapping of download settings applied
        over the device's own (``config.json`` ``download``), e.g. the CLI's ``--read-timeout``.
        """
        with self._operation("install"):
            path, downloaded = self._obtain(source, expected_size, fetch_config, progress)
            try:
                return self._install_file(path, expected_name, expected_digest, allow_quarantined)
            finally:
                if downloaded:
                    path.unlink(missing_ok=True)

    def _obtain(
        self,
        source: str,
        expected_size: int | None,
        cfg: FetchConfig | Mapping[str, Any] | None,
        progress: bool | None,
    ) -> tuple[Path, bool]:
        if source.startswith(("http://", "https://")):
            from ._fetch import FetchConfig, expire_partials, fetch

            config = cfg if isinstance(cfg, FetchConfig) else self.config.fetch_config().with_overrides(cfg)
            dest = self.downloads_dir / (hashlib.sha256(source.encode()).hexdigest()[:16] + ".edgebundle")
            try:
                self.downloads_dir.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StagingError(f"cannot create {self.downloads_dir}: {exc.strerror or exc}") from None
            # under the device lock no other download runs: a finished bundle here is a crash's leftover,
            # and partials of other URLs expire by age and count before this one may need their space
            for old in self.downloads_dir.glob("*.edgebundle"):
                if old != dest:
                    with contextlib.suppress(OSError):
                        old.unlink()
            expire_partials(self.downloads_dir, config, keep=dest)
            res = fetch(source, dest, expected_length=expected_size, config=config, progress=progress)
            return res.path, True
        if "://" in source:
            raise ConfigError(
                f"unsupported source {quote_untrusted(source)}", hint="use a file path or an http(s):// URL"
            )
        path = Path(source)
        try:  # a hostile name (too long, unreadable directory) is a usage error, not a traceback
            is_file = path.is_file()
        except OSError as exc:
            raise ConfigError(f"bundle {quote_untrusted(source)} cannot be opened: {exc.strerror}") from None
        if not is_file:
            raise ConfigError(f"bundle {quote_untrusted(source)} does not exist or is not a file")
        if expected_size is not None and path.stat().st_size != expected_size:
            raise IntegrityError(f"bundle {source} is {path.stat().st_size} bytes, expected {expected_size}")
        return path, False

    def _context(self, state: ModelState, expected_name: str | None, cfg: Any) -> DeviceContext:
        from .trust import DeviceContext

        contract = None
        if cfg.inputs and state.model in cfg.inputs:
            spec = cfg.inputs[state.model]
            contract = (tuple(spec["shape"]), str(spec["dtype"]))
        return DeviceContext(
            now=datetime.now(timezone.utc),
            architecture=cfg.architecture,
            backends=_available_backends(),
            expected_name=expected_name,
            allowed_names=cfg.allowed_models,
            highest_counter=state.highest_counter,
            installed={v: info["digest"] for v, info in state.versions.items()},
            bad_versions={v: info["reason"] for v, info in state.bad.items()},
            input_contract=contract,
        )

    def _install_file(
        self, path: Path, expected_name: str | None, expected_digest: str | None, allow_quarantined: bool
    ) -> InstallResult:
        from .bundle import BundleStream, copy_verified
        from .trust import check_install_policy, verify_envelope

        cfg = self.config
        with path.open("rb") as fh:
            stream = BundleStream(fh)
            self._apply_bundle_roots(path, stream.envelope.signed)
            manifest = verify_envelope(stream.envelope, self.install_policy())
            if expected_digest is not None and manifest.digest != expected_digest:
                raise IntegrityError(
                    f"manifest digest {manifest.digest} differs from the pinned {expected_digest}",
                    hint="the registry holds a different build of this version; check models.yaml",
                )
            state = self.store.load(manifest.name)
            check_install_policy(
                manifest, self._context(state, expected_name, cfg), allow_quarantined=allow_quarantined
            )
            version = str(manifest.version)
            self._check_kept_copy(state, version)  # R4: a kept copy that no longer verifies is restaged
            if (state.active == version or version in state.versions) and version not in state.corrupt:
                # Nothing to stage, but a damaged or altered bundle is still refused, never "unchanged".
                for entry, member in stream.members(manifest):
                    copy_verified(entry, member, None)
            # The one install decision (edge_runtime.decision), shared with the Ansible module and the controller.
            decision = decide(
                state, Pin(manifest.name, version, manifest.digest, manifest.release_counter, allow_quarantined)
            )
            if decision.action == "refuse":
                raise decision.error()
            if decision.action == "noop":
                return InstallResult(
                    manifest.name,
                    version,
                    manifest.digest,
                    "unchanged",
                    False,
                    state.previous_committed(),
                    version,
                    "already active",
                )
            if version in state.versions and version not in state.corrupt and self.version_dir(
                manifest.name, version
            ).is_dir():
                kept = True
            else:
                kept = False
                self._stage(state, manifest, stream)
        return self._activate_and_test(state, manifest, kept)

    def _stage(self, state: ModelState, manifest: Manifest, stream: BundleStream) -> None:
        from .bundle import copy_verified

        name, version = manifest.name, str(manifest.version)
        fresh = not self.model_dir(name).exists()  # a refused first install must leave no trace either
        versions = self.model_dir(name) / "versions"
        versions.mkdir(parents=True, exist_ok=True)
        free = shutil.disk_usage(versions).free
        need = manifest.total_length + len(stream.manifest_bytes) + FREE_SPACE_MARGIN
        if free < need:
            raise DiskFullError(
                f"not enough space under {self.root} to stage {name} {version}: need {need} bytes, {free} free",
                hint="free space on the device (old downloads, logs) or lower keep_versions",
            )
        state.pending = Pending(
            "install", version, manifest.digest, manifest.release_counter, "staging", state.active, utcnow()
        )
        self.store.save(state)
        stage = versions / f"{TMP_PREFIX}stage-{version}"
        remove_tree(stage)
        try:
            stage.mkdir()
            for entry, member in stream.members(manifest):
                target = stage / entry.path
                target.parent.mkdir(parents=True, exist_ok=True)
                with target.open("xb") as out:
                    copy_verified(entry, member, out)
                    out.flush()
                    _faults.checkpoint("stage.write")
                    os.fsync(out.fileno())
                _faults.checkpoint("stage.fsync")
            (stage / MANIFEST_NAME).write_bytes(stream.manifest_bytes)
            make_tree_readonly(stage)
            _faults.checkpoint("stage.readonly")
            final = versions / version
            remove_tree(final)  # a leftover of an earlier, uncommitted attempt
            os.rename(stage, final)
            fsync_dir(versions)
            _faults.checkpoint("stage.rename")
        except BaseException as exc:
            remove_tree(stage)
            state.pending = None
            if isinstance(exc, Exception):
                if fresh:  # the model had nothing on this device: remove what this attempt created
                    with contextlib.suppress(OSError):
                        remove_tree(self.model_dir(name))
                else:
                    self._save_quietly(state)
            if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
                raise DiskFullError(
                    f"disk full while staging {name} {version} under {self.root}",
                    hint="free space on the device; the active model is unchanged",
                ) from None
            if isinstance(exc, OSError):
                raise StagingError(f"staging {name} {version} failed: {exc}") from None
            raise
        state.pending.phase = "staged"
        self.store.save(state)

    def _save_quietly(self, state: ModelState) -> None:
        with contextlib.suppress(OSError):  # recovery cleans the pending staging on the next start
            self.store.save(state)

    def _activate_and_test(self, state: ModelState, manifest: Manifest, kept: bool) -> InstallResult:
        """Smoke-test the version where it is staged; only if it passes, activate it and check again.

        Phase ``testing``: the child tests ``versions/<v>`` while the old version still serves; a failure
        quarantines the version without the active link ever pointing at it. Then ``activating`` (the
        swap) and ``activated``: :meth:`_smoke_and_decide` runs the post-activation check.
        """
        name, version = manifest.name, str(manifest.version)
        if state.pending is None:  # re-activating a kept, committed version
            state.pending = Pending(
                "install", version, manifest.digest, manifest.release_counter, "staged", state.active, utcnow()
            )
        result = self._run_smoke(state, manifest, "testing", self.version_dir(name, version))
        if not result.passed:
            return self._rollback_pending(state, f"smoke test failed: {result.reason}", result)
        assert state.pending is not None
        state.pending.phase = "activating"
        self.store.save(state)
        swap_symlink(self.active_link(name), f"versions/{version}")
        _faults.checkpoint("activate.swap")
        return self._verify_and_commit(state, manifest, kept, result)

    def _verify_and_commit(
        self, state: ModelState, manifest: Manifest, kept: bool, staged: SmokeResult
    ) -> InstallResult:
        """The post-activation check of an install that ran its staged smoke test in this process.

        The swap renamed the ``active`` link onto the very directory the staged test just ran on, so a
        second inference would test the same bytes again: instead the active path is re-verified (the
        signed manifest is this release, every file's hash and length, nothing extra), which catches a
        disk that changed the files since. It passes: commit, recording the post-install check as passed
        (no second smoke test is needed for this version in this state); it fails: roll back and
        quarantine. An interruption leaves the phase ``activating``: recovery completes the swap and runs
        the full post-activation smoke test (:meth:`_smoke_and_decide`), committing without a recorded
        check, which the controller then runs (``check``, the role's ``state: tested`` handler).
        """
        try:
            active = self._verify_dir(self.active_link(manifest.name), policy=self.trust_policy())
            if active.digest != manifest.digest:
                raise IntegrityError(
                    f"the active path holds {active.name} {active.version} ({active.digest}), not the tested "
                    f"{manifest.name} {manifest.version} ({manifest.digest})",
                    path=MANIFEST_NAME,
                )
        except TrustError as exc:
            reason = f"post-activation check: active files do not verify: {_integrity_reason(exc)}"
            return self._rollback_pending(state, reason, staged)
        _faults.checkpoint("activate.verified")
        return self._commit(state, manifest, staged, kept, checked=True)

    def _run_smoke(self, state: ModelState, manifest: Manifest, phase: str, model_dir: Path) -> SmokeResult:
        """Persist ``phase`` and one more attempt in it, then run the smoke test in its bounded child."""
        from ._smoke_proc import run_smoke_test_in_child

        p = state.pending
        assert p is not None
        if p.phase != phase:
            p.phase = phase
            p.smoke_attempts = 0
        p.smoke_attempts += 1
        self.store.save(state)
        result = run_smoke_test_in_child(model_dir, manifest)
        _faults.checkpoint("smoke.done")
        return result

    def _smoke_and_decide(self, state: ModelState, manifest: Manifest, kept: bool) -> InstallResult:
        """The post-activation check (phase ``activated``): a fresh child tests the model from the active
        path, as a serving process would open it. It passes: commit; it fails: roll back and quarantine."""
        result = self._run_smoke(state, manifest, "activated", self.active_link(manifest.name))
        if result.passed:
            return self._commit(state, manifest, result, kept)
        return self._rollback_pending(state, f"post-activation smoke test failed: {result.reason}", result)

    def _commit(
        self, state: ModelState, m: Manifest, smoke: SmokeResult, kept: bool, *, checked: bool = False
    ) -> InstallResult:
        """Commit the pending install. ``checked``: the post-install check passed in this operation (staged
        smoke test, then the active files re-verified after the swap) and is recorded with the commit."""
        assert state.pending is not None
        version = str(m.version)
        previous = state.pending.previous
        now = utcnow()
        state.versions[version] = {
            "digest": m.digest,
            "counter": m.release_counter,
            "committed_at": now,
            # when this version began to serve (the monitor counts only its minutes since then)
            "activated_at": now,
            "smoke": smoke.to_dict(),
        }
        if checked:  # the same record as a passing Device.check (edge_runtime.decision.healthy reads it)
            state.versions[version]["check"] = {"passed": True, "at": now, "p95_ms": smoke.p95_ms,
                                                "how": "staged smoke test, active files verified after the swap"}
        if version in state.order:
            state.order.remove(version)
        state.order.append(version)
        state.active = version
        state.highest_counter = max(state.highest_counter, m.release_counter)
        state.pending = None
        state.mark_healthy(version)  # R4: a committed install ends a degraded state
        if previous in state.corrupt:  # R4: a copy known to be damaged is never reported as previous
            previous = state.previous_committed()
        state.last = {
            "op": "install",
            "version": version,
            "result": "committed",
            "reason": smoke.reason,
            "at": utcnow(),
            "smoke": smoke.to_dict(),
        }
        self.store.save(state)
        _faults.checkpoint("commit")
        self._gc(state)
        return InstallResult(
            m.name,
            version,
            m.digest,
            "activated_kept" if kept else "installed",
            True,
            previous,
            version,
            "smoke test passed",
            smoke.to_dict(),
            checked=checked,
        )

    def _rollback_pending(
        self, state: ModelState, reason: str, smoke: SmokeResult | None, *, evidence: Mapping[str, Any] | None = None
    ) -> InstallResult:
        """Roll the pending version back to a version that verifies, and quarantine it.

        The target is verified (signatures, every file's hash and length, nothing extra) before the
        swap: the version that was active before, else the newest other kept version that verifies,
        else none. A target that does not verify is marked corrupt; landing anywhere but on the
        intended target records the model as degraded, with the reason. Interrupted, the persisted
        ``rolling_back`` phase makes recovery run this again (verification included).

        A pending ``fallback`` (an operator rollback found both its target and the active copy
        corrupt) moves off the active version the same way, but keeps it (marked corrupt) instead of
        quarantining it: the release is not at fault, its copy on this disk is. A pending
        ``self_rollback`` (the monitor, :meth:`self_rollback`) is a failed check of a committed version:
        recorded as ``last.op`` ``self_rollback``, with the monitor's ``evidence``.
        """
        p = state.pending
        assert p is not None
        p.phase = "rolling_back"
        p.reason = reason
        self.store.save(state)
        name = state.model
        fallback = p.op == "fallback"
        candidates = [] if p.previous is None else [p.previous, *reversed(state.kept_versions())]
        target, lost = self._first_verified(state, candidates, exclude={p.version})
        if fallback:
            lost.insert(min(1, len(lost)), (p.version, str((state.corrupt.get(p.version) or {}).get("reason"))))
        link = self.active_link(name)
        if target is not None:
            swap_symlink(link, f"versions/{target}")
        elif link.is_symlink():
            link.unlink()
            fsync_dir(link.parent)
        _faults.checkpoint("rollback.swap")
        if not fallback:
            state.bad[p.version] = {"digest": p.digest, "reason": reason, "at": utcnow()}
            state.versions.pop(p.version, None)
            state.corrupt.pop(p.version, None)
            if p.version in state.order:
                state.order.remove(p.version)
        state.active = target
        if target is not None:
            state.versions[target]["activated_at"] = utcnow()
        state.pending = None
        if lost:
            state.set_degraded(_lost_reason(lost, target), op="rollback" if fallback else p.op, version=p.previous)
        if fallback:
            state.last = {"op": "rollback", "version": p.previous, "result": "refused", "at": utcnow(),
                          "reason": (state.degraded or {}).get("reason", reason)}
        else:
            state.last = {
                "op": "self_rollback" if p.op == "self_rollback" else "install",
                "version": p.version,
                "result": "rolled_back",
                "reason": reason,
                "at": utcnow(),
                "smoke": smoke.to_dict() if smoke else None,
            }
            if evidence:
                state.last["evidence"] = dict(evidence)
        self.store.save(state)
        _faults.checkpoint("rollback.commit")
        if not fallback:
            remove_tree(self.version_dir(name, p.version))
        return InstallResult(
            name,
            p.version,
            p.digest,
            "rolled_back",
            True,
            state.previous_committed() if p.previous in state.corrupt else p.previous,
            target,
            reason,
            smoke.to_dict() if smoke else None,
            degraded=(state.degraded or {}).get("reason"),
        )

    def _check_kept_copy(self, state: ModelState, version: str) -> None:
        """Before a kept copy of ``version`` is re-activated or reported as already active, verify it.

        A copy that no longer verifies is marked corrupt in ``state`` (in memory; the install persists
        it), so the install stages the version afresh from the verified bundle instead; for the active
        version the model is also recorded as degraded until that install commits.
        """
        if version not in state.versions or version in state.corrupt:
            return
        why = self._verify_kept(state, version)
        if why is not None and state.active == version:
            state.set_degraded(f"active {version} no longer verified ({why}); reinstalling it from the bundle",
                               op="install", version=version)

    def _first_verified(
        self, state: ModelState, candidates: list[str], exclude: set[str]
    ) -> tuple[str | None, list[tuple[str, str]]]:
        """The first of ``candidates`` that is kept and verifies, and the ``(version, why)`` that did not.

        Versions already known to be corrupt are skipped without reading them; a verification failure
        is recorded in ``state.corrupt`` (the caller persists it).
        """
        lost: list[tuple[str, str]] = []
        seen = set(exclude)
        for v in candidates:
            if v in seen:
                continue
            seen.add(v)
            if v in state.corrupt:
                lost.append((v, str(state.corrupt[v].get("reason"))))
                continue
            if v not in state.versions:
                continue
            why = self._verify_kept(state, v)
            _faults.checkpoint("rollback.verify")
            if why is None:
                return v, lost
            lost.append((v, why))
        return None, lost

    def _verify_kept(self, state: ModelState, version: str) -> str | None:
        """Verify a kept version on disk; None when it verifies, else why not (and it is marked corrupt).

        The trust policy is loaded first and outside: a broken trust configuration (no keys, a threshold
        above the key count) is the device's problem and raised as such, never blamed on a version.
        """
        policy = self.trust_policy()
        try:
            self._verify_dir(self.version_dir(state.model, version), state, version, policy=policy)
        except TrustError as exc:
            why = _integrity_reason(exc)
            state.mark_corrupt(version, why)
            return why
        return None

    def _gc(self, state: ModelState) -> None:
        """Drop kept versions known to be corrupt, then the oldest beyond ``keep_versions``."""
        keep = self.config.keep_versions
        drop = [v for v in state.versions if v in state.corrupt and v != state.active]
        kept = state.kept_versions()
        drop += [v for v in kept[:-keep] if v != state.active] if len(kept) > keep else []
        if drop:
            for v in drop:
                state.versions.pop(v, None)
                state.corrupt.pop(v, None)
                if v in state.order:
                    state.order.remove(v)
            self.store.save(state)
        self._remove_unreferenced(state)

    def _remove_unreferenced(self, state: ModelState) -> None:
        vdir = self.model_dir(state.model) / "versions"
        if vdir.is_dir():
            for d in vdir.iterdir():
                pending = state.pending.version if state.pending else None
                if d.name not in state.versions and d.name != pending:
                    remove_tree(d)
        for tmp in iter_tmp_files(self.model_dir(state.model)):
            remove_tree(tmp)

    # ----------------------------------------------------------------- recovery ----------------------

    def recover(self) -> list[dict[str, Any]]:
        """Resolve interrupted operations on every model; return what was done."""
        with self.lock.hold("recover"):
            self._clean_tmp()
            done = [r for name in self.store.names() if (r := self._recover(name))]
            self.write_facts()
            return done

    def _clean_tmp(self) -> None:
        """Remove temp files an interrupted atomic write left in the device-level directories."""
        for d in (self.root, self.trust_dir, self.facts_file.parent, self.models_dir):
            for tmp in iter_tmp_files(d):
                remove_tree(tmp)

    def _recover(self, name: str) -> dict[str, Any] | None:
        state = self.store.load(name)
        p = state.pending
        mdir = self.model_dir(name)
        for tmp in iter_tmp_files(mdir):
            remove_tree(tmp)
        for tmp in iter_tmp_files(mdir / "versions"):
            remove_tree(tmp)
        if p is None:
            self._remove_unreferenced(state)
            self._check_link(state)
            return None
        action: dict[str, Any] = {"model": name, "version": p.version, "phase": p.phase}
        if p.phase in ("staging", "staged"):
            state.pending = None
            state.last = {
                "op": p.op,
                "version": p.version,
                "result": "interrupted",
                "reason": f"interrupted while {p.phase}; {p.previous or 'no version'} stays active",
                "at": utcnow(),
            }
            self.store.save(state)
            self._remove_unreferenced(state)
            action["action"] = "discarded"
            return action
        if p.phase == "rolling_back":
            res = self._rollback_pending(state, p.reason or "rollback interrupted", None)
            action["action"] = "rolled_back"
            action["result"] = res.to_dict()
            return action
        # testing / activating / activated: the staged bytes were verified; re-test in the bounded child.
        vdir = self.version_dir(name, p.version)
        try:
            from ._json import read_untrusted_file
            from ._limits import DEFAULT_LIMITS
            from .manifest import Manifest, parse_envelope

            manifest = Manifest.from_signed(
                parse_envelope(read_untrusted_file(vdir / MANIFEST_NAME, DEFAULT_LIMITS.manifest_max_bytes)).signed
            )
        except (OSError, EdgeRuntimeError) as exc:
            res = self._rollback_pending(state, f"staged version unreadable after interruption: {exc}", None)
            action.update(action="rolled_back", result=res.to_dict())
            return action
        if p.phase != "activating" and p.smoke_attempts >= self.config.max_smoke_attempts:
            res = self._rollback_pending(
                state,
                f"smoke test interrupted {p.smoke_attempts} time(s) while {p.phase}; the model may take the "
                "device down",
                None,
            )
            action.update(action="rolled_back", result=res.to_dict())
            return action
        kept = p.version in state.versions
        if p.phase == "testing":  # never activated: test where it is staged, then continue the install
            res = self._activate_and_test(state, manifest, kept)
        else:
            if p.phase == "activating":  # the staged test had passed
                swap_symlink(self.active_link(name), f"versions/{p.version}")
            res = self._smoke_and_decide(state, manifest, kept)
        action.update(action="retested", result=res.to_dict())
        return action

    def _check_link(self, state: ModelState) -> None:
        link = self.active_link(state.model)
        want = f"versions/{state.active}" if state.active else None
        have = os.readlink(link) if link.is_symlink() else None
        if want != have:
            if want is None:
                link.unlink()
                fsync_dir(link.parent)
            else:
                swap_symlink(link, want)

    # ----------------------------------------------------------------- rollback ----------------------

    def rollback(self, name: str, to: str | None = None) -> InstallResult:
        """Operator rollback to a committed version still kept on the device (default: the previous).

        The target is verified (signatures, every file's hash and length, nothing extra) before the
        swap. A target that does not verify is marked corrupt (no longer offered as ``previous``), the
        model is recorded as degraded, and :class:`RollbackError` is raised: the active version stays
        when it verifies; when it does not either, the newest other kept version that verifies is
        activated, or none. An operator rollback never silently lands on a version other than the one
        asked for.
        """
        with self._operation("rollback"):
            state = self.store.load(name)
            if state.active is None:
                raise NotInstalledError(f"model {name} has no active version on this device")
            target = to or state.previous_committed()
            if target is None:
                corrupt = ", ".join(sorted(state.corrupt))
                raise RollbackError(
                    f"rollback of {name} refused: no previous committed version that verifies is kept on this "
                    "device" + (f" ({corrupt} no longer verif{'ies' if len(state.corrupt) == 1 else 'y'})"
                                if corrupt else ""),
                    hint="install the wanted version from the registry instead",
                )
            if target not in state.versions:
                kept = ", ".join(state.kept_versions())
                raise RollbackError(f"rollback of {name} refused: {target} is not kept on this device (kept: {kept})")
            if not self.version_dir(name, target).is_dir():
                self._refuse_rollback(state, target, f"its directory {self.version_dir(name, target)} is missing")
            previous = state.active
            if target == previous:
                return InstallResult(
                    name, target, state.versions[target]["digest"], "unchanged", False,
                    state.previous_committed(), target, "already active",
                )
            if target in state.corrupt:
                self._refuse_rollback(state, target, str(state.corrupt[target].get("reason")))
            policy = self.trust_policy()  # a broken trust config is raised as such, never blamed on the target
            try:
                manifest = self._verify_dir(self.version_dir(name, target), state, target, policy=policy)
            except TrustError as exc:
                self._refuse_rollback(state, target, _integrity_reason(exc))
            state.pending = Pending(
                "rollback", target, manifest.digest, manifest.release_counter, "activating", previous, utcnow()
            )
            self.store.save(state)
            swap_symlink(self.active_link(name), f"versions/{target}")
            _faults.checkpoint("rollback.swap")
            state.order.remove(target)
            state.order.append(target)
            state.active = target
            state.versions[target]["activated_at"] = utcnow()
            state.pending = None
            state.mark_healthy(target)
            state.last = {
                "op": "rollback",
                "version": target,
                "result": "committed",
                "reason": f"operator rollback from {previous}",
                "at": utcnow(),
            }
            self.store.save(state)
            return InstallResult(
                name, target, manifest.digest, "installed", True,
                None if previous in state.corrupt else previous, target, f"rolled back from {previous}",
            )

    def _refuse_rollback(self, state: ModelState, target: str, why: str) -> NoReturn:
        """An operator rollback whose target does not verify: record it, keep a verified model, raise.

        The active version stays when it verifies. When it does not either, a persisted ``fallback``
        moves to the newest other kept version that verifies, or deactivates the model.
        """
        name, active = state.model, state.active
        assert active is not None
        if target not in state.corrupt:
            state.mark_corrupt(target, why)
        active_why = (state.corrupt.get(active) or {}).get("reason") or self._verify_kept(state, active)
        landed: str | None = active
        if active_why is not None:
            info = state.versions.get(active) or {}
            state.pending = Pending(
                "fallback", active, str(info.get("digest", "")), int(info.get("counter") or 0), "rolling_back",
                target, utcnow(),
            )
            landed = self._rollback_pending(state, f"rollback target {target} does not verify", None).active
        else:
            state.set_degraded(_lost_reason([(target, why)], active), op="rollback", version=target)
            state.last = {"op": "rollback", "version": target, "result": "refused", "at": utcnow(),
                          "reason": f"cannot roll back to {target}: {why}; {active} stays active"}
            self.store.save(state)
        others = [v for v in state.kept_versions() if v != landed]
        raise RollbackError(
            f"rollback of {name} to {target} refused: {why}",
            hint=(
                f"{landed or 'no version'} is active now; {target} is marked corrupt and no longer offered. "
                + (f"Roll back to another kept version ({', '.join(others)}) or install " if others else "Install ")
                + "the wanted version from the registry"
            ),
            model=name,
            target=target,
            active=landed,
            degraded=(state.degraded or {}).get("reason"),
        )

    # ----------------------------------------------------------------- self-rollback (monitor) --------

    def self_rollback(
        self, name: str, version: str, reason: str, evidence: Mapping[str, Any] | None = None
    ) -> InstallResult:
        """The monitor's rollback: the active, committed ``version`` breached a rule (``reason``, with the
        numbers); roll back to the previous committed version and quarantine ``version``.

        The same persisted path as a failed smoke test or post-install check (:meth:`_rollback_pending`): a
        pending ``self_rollback`` in phase ``rolling_back`` is saved first (recovery completes it after a
        power cut), the target is verified before the swap, ``version`` is quarantined (``bad``, with the
        reason) and its files removed, and ``last`` records the reason and ``evidence``. Unlike a failed
        check, a self-rollback never leaves the model without a version: when no previous committed version
        is kept, or none verifies, it raises :class:`RollbackError` ("cannot roll back") and ``version``
        stays active -- a model with low confidence serves better than none. When ``version`` is no longer
        active (an install or rollback ran after the monitor evaluated), nothing is done (``unchanged``).
        Raises :class:`~edge_runtime.errors.LockedError` at once when another operation holds the lock.
        """
        with self._operation("self-rollback"):
            state = self.store.load(name)
            if state.active is None or state.active != version:
                return InstallResult(
                    name, version, "", "unchanged", False, state.previous_committed(), state.active,
                    f"{version} is no longer active ({state.active or 'no version'} is); nothing done",
                )
            candidates = [v for v in reversed(state.kept_versions()) if v != version]
            if not candidates:
                corrupt = sorted(v for v in state.corrupt if v != version)
                raise RollbackError(
                    f"cannot roll back {name} {version}: no previous committed version is kept on this device"
                    + (f" ({', '.join(corrupt)} no longer verif{'ies' if len(corrupt) == 1 else 'y'})"
                       if corrupt else ""),
                    hint=f"{version} stays active; install a better version (models.yaml) to replace it",
                    model=name, active=version,
                )
            target, lost = self._first_verified(state, candidates, exclude={version})
            if target is None:
                self.store.save(state)  # the kept versions found corrupt are recorded (no longer offered)
                raise RollbackError(
                    f"cannot roll back {name} {version}: "
                    + "; ".join(f"{v} {why}" for v, why in lost),
                    hint=f"{version} stays active; install a better version (models.yaml) to replace it",
                    model=name, active=version,
                )
            info = state.versions[version]
            state.pending = Pending(
                "self_rollback", version, str(info.get("digest", "")), int(info.get("counter") or 0),
                "rolling_back", target, utcnow(), reason=reason,
            )
            return self._rollback_pending(state, reason, None, evidence=evidence)

    # ----------------------------------------------------------------- post-install check -------------

    def check(self, name: str, version: str | None = None) -> InstallResult:
        """Health check of the committed active version, in this (fresh) process.

        Re-verifies every installed file against the signed manifest and re-runs the bundle's smoke test
        from the active path, in its bounded child (a hang or crash is a failed check). If either fails,
        the version is rolled back to the previous committed one (or deactivated when there is none) and
        quarantined, through the same persisted ``rolling_back``
        step as a failed install, so power loss mid-way completes the rollback at the next start.
        With ``version``, only that version is checked: if another one is active, nothing happens.
        """
        with self._operation("check"):
            state = self.store.load(name)
            active = state.active
            if active is None:
                raise NotInstalledError(f"model {name} has no active version on this device")
            info = state.versions.get(active) or {}
            digest = str(info.get("digest", ""))
            previous = state.previous_committed()
            if version is not None and version != active:
                return InstallResult(
                    name, version, "", "unchanged", False, previous, active, f"{version} is not active; not tested"
                )
            smoke = None
            reason: str | None
            try:
                manifest = self.verify_installed(name, active)
            except EdgeRuntimeError as exc:
                reason = f"post-install check: installed files no longer verify: {exc.message}"
            else:
                from ._smoke_proc import run_smoke_test_in_child

                smoke = run_smoke_test_in_child(self.active_link(name), manifest)
                reason = None if smoke.passed else f"post-install smoke test failed: {smoke.reason}"
            if reason is None:
                assert smoke is not None
                if state.degraded is not None:  # R4: a verified, passing active version ends a degraded state
                    state.mark_healthy(active)
                # the passed check of this version, recorded: the controller counts the device healthy for it
                # (edge_runtime.decision.healthy); the next commit of the version starts without one unless
                # that install verified its active files itself (_verify_and_commit)
                state.versions[active]["check"] = {"passed": True, "at": utcnow(), "p95_ms": smoke.p95_ms}
                self.store.save(state)
                return InstallResult(
                    name, active, digest, "unchanged", False, previous, active, "smoke test passed",
                    smoke.to_dict(), checked=True,
                )
            state.pending = Pending(
                "install", active, digest, int(info.get("counter") or 0), "activated", previous,
                utcnow(),
            )
            return self._rollback_pending(state, reason, smoke)

    # ----------------------------------------------------------------- verification & status ---------

    def verify_installed(self, name: str, version: str | None = None) -> Manifest:
        """Re-verify a kept version on disk: signatures, every file, nothing extra.

        A kept version that fails is recorded as corrupt (never offered as ``previous`` or used as a
        rollback target again); a failing active version also marks the model degraded, with a hint
        to run ``check``. The record is written only when the device lock is free (a busy device is
        left alone) and the error is raised either way.
        """
        state = self.store.load(name)
        version = version or state.active
        if version is None:
            raise NotInstalledError(f"model {name} has no active version on this device")
        known = version in state.versions
        policy = self.trust_policy()
        try:
            return self._verify_dir(self.version_dir(name, version), state if known else None, version, policy=policy)
        except TrustError as exc:
            if known:
                self._record_corrupt(name, version, _integrity_reason(exc))
            raise

    def _record_corrupt(self, name: str, version: str, why: str) -> None:
        with contextlib.suppress(EdgeRuntimeError, OSError), self.lock.hold("verify"):
            state = self.store.load(name)
            if version not in state.versions or version in state.corrupt or state.pending is not None:
                return
            state.mark_corrupt(version, why)
            if version == state.active:
                state.set_degraded(
                    f"active {version} no longer verifies: {why}; run `edge-runtime check {name}` to roll back "
                    "to a verified version",
                    op="verify",
                    version=version,
                )
            self.store.save(state)
            self.write_facts()

    def _verify_dir(
        self,
        vdir: Path,
        state: ModelState | None = None,
        version: str | None = None,
        *,
        policy: TrustPolicy | None = None,
    ) -> Manifest:
        """Verify a version directory: signatures, every file's hash and length, nothing extra.

        With ``state`` and ``version``, the manifest must also be that version of that model with the
        digest recorded when it was committed (a directory holding another release is not it).
        Any unreadable file is an :class:`IntegrityError`; nothing but regular files is opened (a FIFO
        would block), and no file is read beyond its signed length (or the manifest's size limit).
        """
        from ._json import read_untrusted_file
        from ._limits import DEFAULT_LIMITS
        from .bundle import copy_verified
        from .manifest import parse_envelope
        from .trust import verify_envelope

        mpath = vdir / MANIFEST_NAME
        try:
            if mpath.is_symlink() or not mpath.is_file():
                raise FileNotFoundError(2, "missing or not a regular file")
            env_bytes = read_untrusted_file(mpath, DEFAULT_LIMITS.manifest_max_bytes)
        except OSError as exc:
            raise IntegrityError(
                f"{vdir} has no readable {MANIFEST_NAME}: {exc.strerror}", path=MANIFEST_NAME
            ) from None
        manifest = verify_envelope(parse_envelope(env_bytes), policy or self.trust_policy())
        if state is not None and version is not None:
            want = (state.versions.get(version) or {}).get("digest")
            if (manifest.name, str(manifest.version)) != (state.model, version) or (want and manifest.digest != want):
                raise IntegrityError(
                    f"{vdir} holds {manifest.name} {manifest.version} ({manifest.digest}), not the committed "
                    f"{state.model} {version} ({want})",
                    path=MANIFEST_NAME,
                )
        listed = {f.path for f in manifest.files} | {MANIFEST_NAME}
        # the directories the listed files need; any other entry (file, link, FIFO, empty dir) is extra
        listed |= {str(parent) for f in manifest.files for parent in Path(f.path).parents if str(parent) != "."}
        try:
            present = {str(p.relative_to(vdir)) for p in vdir.rglob("*")}
        except OSError as exc:
            raise IntegrityError(f"{vdir} cannot be listed: {exc.strerror}") from None
        if present - listed:
            extra = sorted(present - listed)
            raise IntegrityError(f"{vdir} holds files not in the manifest: {', '.join(extra)}", path=extra[0])
        for entry in manifest.files:
            p = vdir / entry.path
            if p.is_symlink() or not p.is_file():
                raise IntegrityError(f"{p} is missing or not a regular file", path=entry.path)
            try:
                size = p.stat().st_size
                if size != entry.length:  # decided without reading a file that grew to any size
                    from .trust import check_file

                    check_file(entry, "", size)
                with p.open("rb") as fh:
                    copy_verified(entry, fh, None)
            except OSError as exc:
                raise IntegrityError(f"{p} cannot be read: {exc.strerror}", path=entry.path) from None
            _faults.checkpoint("verify.file")
        return manifest

    def repair(self, name: str) -> dict[str, Any]:
        """Rebuild ``state.json`` of ``name`` from the version directories that still verify.

        The unreadable file is kept beside it as ``state.json.corrupt-<time>``; the active link is kept
        when it points at a verified version, else the verified version with the highest release counter
        is activated. Quarantine records in the lost file cannot be recovered and are reported as such.
        """
        with self.lock.hold("repair"):
            vroot = self.model_dir(name) / "versions"
            verified: dict[str, Manifest] = {}
            dropped: list[str] = []
            if vroot.is_dir():
                for d in sorted(vroot.iterdir()):
                    if d.name.startswith(TMP_PREFIX):
                        remove_tree(d)
                        continue
                    try:
                        verified[d.name] = self._verify_dir(d)
                    except EdgeRuntimeError:
                        dropped.append(d.name)
                        remove_tree(d)
            link = self.active_link(name)
            current = os.readlink(link).split("/")[-1] if link.is_symlink() else None
            order = sorted(verified, key=lambda v: verified[v].release_counter)
            active = current if current in verified else (order[-1] if order else None)
            state = ModelState(
                model=name,
                active=active,
                versions={
                    v: {"digest": m.digest, "counter": m.release_counter, "committed_at": None, "smoke": None}
                    for v, m in verified.items()
                },
                order=order,
                highest_counter=max((m.release_counter for m in verified.values()), default=-1),
                last={
                    "op": "repair",
                    "version": active,
                    "result": "repaired",
                    "reason": f"state rebuilt from {len(verified)} verified version(s)",
                    "at": utcnow(),
                },
            )
            path = self.store.path(name)
            if path.exists():
                os.replace(path, path.with_name(f"state.json.corrupt-{utcnow()}"))
            self.store.save(state)
            self._check_link(state)
            self.write_facts()
            return {
                "model": name,
                "active": active,
                "kept": order,
                "dropped": dropped,
                "note": "quarantine records of the old state file are not recoverable",
            }

    def status(self) -> dict[str, Any]:
        """Per-model state. Read-only: never takes the lock, recovers nothing, runs no smoke test.

        A model with an interrupted operation is reported as ``recovery pending`` (the next mutating
        command or ``recover`` resolves it), or ``busy`` while another process holds the lock.
        """
        busy = self.lock.is_held()
        models = {}
        for name in self.store.names():
            s = self.store.load(name)
            info = s.versions.get(s.active or "", {})
            models[name] = {
                "active": s.active,
                "previous": s.previous_committed(),
                "digest": info.get("digest"),
                "release_counter": info.get("counter"),
                "kept": s.kept_versions(),
                "state": state_label(s, busy),
                "degraded": s.degraded,
                "corrupt": s.corrupt,
                "pending": asdict(s.pending) if s.pending else None,
                "bad": s.bad,
                "last": s.last,
                "smoke_p95_ms": (info.get("smoke") or {}).get("p95_ms"),
            }
        from ._monitor_record import read_last
        from .facts import trust_facts

        return {"root": str(self.root), "busy": busy, "models": models, "monitor": read_last(self.root),
                "trust": trust_facts(self.trust_dir)}

    def write_facts(self) -> dict[str, Any]:
        """Collect the facts and write them to the facts file(s); return them.

        Never raises for a write that fails (a full or read-only disk, a value that is not strict JSON):
        it is called in ``finally:`` blocks, where raising would hide the operation's own error. The
        problem is logged (stderr) and kept in :attr:`warnings` for the caller's output instead.
        """
        from ._json import dumps_strict_bytes
        from .facts import collect_facts

        facts = collect_facts(self)
        try:
            config: DeviceConfig | None = self.config
        except ConfigError:
            config = None
        extra = config.facts_path if config else None
        targets = [self.facts_file] + ([Path(extra)] if extra else [])
        try:
            data = dumps_strict_bytes(facts, "facts", indent=1, sort_keys=True) + b"\n"
        except EdgeRuntimeError as exc:
            self._warn(f"facts not written: {exc.message}")
            return facts
        for target in targets:
            try:
                target.parent.mkdir(parents=True, exist_ok=True)
                atomic_write_bytes(target, data)
            except OSError as exc:
                self._warn(f"facts not written to {target}: {exc.strerror or exc}")
        if config is not None and config.metrics:
            self._write_metrics(config, facts)
        return facts

    def _write_metrics(self, config: DeviceConfig, facts: dict[str, Any]) -> None:
        """The Prometheus textfile rendered from ``facts`` (:mod:`edge_runtime.metrics`, one owner), written
        atomically; a problem is a warning, like the facts file's."""
        from .metrics import metrics_file_name, render, write_textfile

        try:
            mc = config.metrics_config()
        except ConfigError as exc:
            self._warn(f"metrics not written: {exc.message}")
            return
        if mc.textfile_dir is None:
            return
        device = mc.device or str((facts.get("system") or {}).get("hostname") or "unknown")
        try:
            write_textfile(Path(mc.textfile_dir), metrics_file_name(device), render(facts, device))
        except OSError as exc:
            self._warn(f"metrics not written to {mc.textfile_dir}: {exc.strerror or exc}")

    def _warn(self, message: str) -> None:
        import logging

        self.warnings.append(message)
        logging.getLogger("edge_runtime").warning("%s", message)

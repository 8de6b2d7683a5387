#!/usr/bin/python
# Copyright (c) edgeml maintainers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Ansible module ``edgeml.fleet.edge_runtime_setup``: initialise a device root (trust and config)."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: edge_runtime_setup
short_description: Initialise an edge device root with its trusted keys and config
version_added: 0.1.0
description:
  - Creates or updates the C(edge_runtime) device root with C(Device.init) of the runtime - trusted
    public keys, signature threshold, allowed models, versions kept, the extra local-facts path - and
    returns the device twin as facts.
  - Idempotent; C(changed) reports whether the trusted keys or the config differ from the wanted ones.
    Running it also proves that the device's interpreter can import C(edge_runtime).
extends_documentation_fragment:
  - edgeml.fleet.device
options:
  trusted_key_files:
    description:
      - Controller paths of the trusted public keys (PEM), found like C(copy)'s C(src). Read and checked on the
        controller by this module's action plugin; each must hold exactly one ECDSA P-256 PUBLIC KEY.
      - A private key (or anything else) fails the task on the controller, naming the file but never showing
        its content, and nothing is sent to the device.
      - Keys listed here and in O(trusted_keys) are trusted together; keys not listed are removed.
    type: list
    elements: path
    default: []
  trusted_keys:
    description:
      - PEM contents of trusted public keys, checked on the controller like O(trusted_key_files).
      - Never logged (C(no_log)). Prefer O(trusted_key_files), which keeps key material out of task arguments.
    type: list
    elements: str
    default: []
  trust_roots:
    description:
      - Root documents (the text of C(N.root.json) files, the chain in any order) instead of trusted keys; the
        action plugin reads them from O(trust_root_files). Mutually exclusive with trusted keys.
      - The device accepts only the versions after its own, each signed by a threshold of the previous root's
        root keys and of its own (a gap, an older version or too few signatures fail the task and change
        nothing). A device that trusts a key list takes that list as root version 0, so root version 1 must be
        signed by its keys. Once a device trusts a root, a key list is refused.
    type: list
    elements: str
    default: []
  trust_root_files:
    description: Controller paths of the root documents, read by the action plugin into O(trust_roots).
    type: list
    elements: path
    default: []
  threshold:
    description: Distinct trusted signatures a bundle needs (trusted keys only; a root document says its own).
    type: int
    default: 1
  allowed_models:
    description: Model names the device accepts; empty accepts any signed model.
    type: list
    elements: str
    default: []
  keep_versions:
    description: Committed versions kept on disk for rollback.
    type: int
    default: 2
  architecture:
    description: Override the CPU architecture the device reports (default the machine's).
    type: str
  facts_path:
    description: Also write the local facts here, e.g. C(/etc/ansible/facts.d/edge_runtime.fact).
    type: path
  metrics:
    description:
      - Prometheus textfile metrics rendered from the facts (C(edge_runtime.metrics), docs/MONITORING.md),
        C(config.json) C(metrics). Omitted, the device's setting is left as it is; without O(metrics.textfile_dir)
        the device writes no metrics file.
    type: dict
    suboptions:
      textfile_dir:
        description: node_exporter's textfile directory, e.g. C(/var/lib/prometheus/node-exporter).
        type: path
      device:
        description: The C(device) label of every sample (the role passes the inventory name).
        type: str
  run_id:
    description:
      - The controller's id of this run, echoed in the returned twin (C(ansible_facts.edge_runtime.run_id)).
        The deploy playbook acts only on twins carrying its own run's id.
    type: str
  boot_unit:
    description:
      - The systemd unit that runs C(edge-runtime recover) at boot (C(edge-runtime-recover.service)), as the
        role renders it. When given, the module installs it in O(boot_unit.dir) (atomically, mode 0644) and
        enables it the way C(systemctl enable) does for C(WantedBy=multi-user.target) (a link in
        C(multi-user.target.wants)), so it works in images and chroots without a running systemd; where
        systemd runs (C(/run/systemd/system) exists) it then runs C(systemctl daemon-reload) (60 s deadline).
      - On a device whose unit and link are already in place nothing is written, so a no-op deploy stays one
        module run per device. Omitted, the module leaves any unit alone.
    type: dict
    suboptions:
      dir:
        description: Directory of the unit, e.g. C(/etc/systemd/system).
        type: path
        required: true
      content:
        description: The unit file's text.
        type: str
        required: true
  monitor_units:
    description:
      - The device-side monitor (C(edge-runtime monitor)) as a systemd service and timer
        (C(edge-runtime-monitor.service), C(edge-runtime-monitor.timer)), as the role renders them.
      - With O(monitor_units.state=present) the module installs both in O(monitor_units.dir) where they differ
        and enables the timer (a link in C(timers.target.wants)); where systemd runs it then runs
        C(systemctl daemon-reload) and, when O(monitor_units.dir) is one systemd reads units from
        (C(/etc/systemd/system), C(/run/systemd/system), C(/lib/systemd/system), C(/usr/lib/systemd/system)),
        C(systemctl restart) of the timer (60 s deadline each). With O(monitor_units.state=absent) it stops the
        timer (likewise) and removes both units and the link.
      - Nothing is written, reloaded or restarted when the device already matches, so a no-op deploy stays one
        module run per device. Omitted, the module leaves any monitor unit alone.
    type: dict
    suboptions:
      dir:
        description: Directory of the units, e.g. C(/etc/systemd/system).
        type: path
        required: true
      state:
        description: Whether the monitor units are installed and enabled, or removed.
        type: str
        choices: [present, absent]
        default: present
      service:
        description: The service unit's text (required with O(monitor_units.state=present)).
        type: str
      timer:
        description: The timer unit's text (required with O(monitor_units.state=present)).
        type: str
attributes:
  check_mode:
    support: full
    description: Compares the wanted keys and config with the device and changes nothing.
  diff_mode:
    support: full
    description: Returns the trusted key ids and the config before and after.
seealso:
  - module: edgeml.fleet.edge_model
"""

EXAMPLES = r"""
- name: Initialise the device root
  edgeml.fleet.edge_runtime_setup:
    root: /var/lib/edge-runtime
    trusted_key_files:
      - keys/release-1.pub
    threshold: 1
    allowed_models: [defect-classifier]
    facts_path: /etc/ansible/facts.d/edge_runtime.fact
"""

RETURN = r"""
runtime_version:
  description: Version of the C(edge_runtime) package on the device.
  returned: always
  type: str
  sample: "0.1.0"
python:
  description: The interpreter that ran the module.
  returned: always
  type: str
  sample: /opt/edge-runtime/venv/bin/python
trusted_key_ids:
  description: Key ids (SHA-256 of the DER public key) the device trusts afterwards.
  returned: always
  type: list
  elements: str
  sample: ["3f1c..."]
diff:
  description: Trusted key ids and config before and after.
  returned: always
  type: dict
  sample: {"before": {"trusted_key_ids": []}, "after": {"trusted_key_ids": ["3f1c..."]}}
ansible_facts:
  description:
    - The device twin as C(edge_runtime).
    - C(edge_runtime.platform) holds what bundle compatibility is decided on (C(edge_runtime.compat)), namely the
      architecture the device is configured with after this run (in check mode, the one it would be), the TFLite
      backends its interpreter can import, the input contracts of its config, and the machine and Python version.
  returned: always
  type: dict
  sample:
    edge_runtime:
      schema: 1
      models: {}
      platform: {"architecture": "aarch64", "backends": ["litert"], "python": "3.11.2", "machine": "aarch64"}
"""

import json
import os
import platform
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from edge_runtime.ansible_module import DeviceModule

# The controller writes the task's arguments here as JSON (a JSON-args module: see plugin_utils/device_module.py).
ARGS = r"""<<INCLUDE_ANSIBLE_MODULE_JSON_ARGS>>"""

#: validated on the controller by the action plugin (Ansible's ArgumentSpecValidator); the device expands paths
ARGUMENT_SPEC: dict[str, Any] = {
    "root": {"type": "path", "required": True},
    # the action plugin read and checked the files on the controller and passes their keys here
    "trusted_keys": {"type": "list", "elements": "str", "default": [], "no_log": True},
    # paths of public key files (read on the controller), not secrets
    "trusted_key_files": {"type": "list", "elements": "path", "default": [], "no_log": False},
    "trust_roots": {"type": "list", "elements": "str", "default": []},
    "trust_root_files": {"type": "list", "elements": "path", "default": [], "no_log": False},
    "threshold": {"type": "int", "default": 1},
    "allowed_models": {"type": "list", "elements": "str", "default": []},
    "keep_versions": {"type": "int", "default": 2},
    "architecture": {"type": "str"},
    "facts_path": {"type": "path"},
    "metrics": {"type": "dict", "options": {"textfile_dir": {"type": "path"}, "device": {"type": "str"}}},
    "run_id": {"type": "str"},  # echoed in the twin: the controller acts only on this run's answers
    "boot_unit": {"type": "dict", "options": {"dir": {"type": "path", "required": True},
                                              "content": {"type": "str", "required": True}}},
    "monitor_units": {"type": "dict", "options": {
        "dir": {"type": "path", "required": True},
        "state": {"type": "str", "choices": ["present", "absent"], "default": "present"},
        "service": {"type": "str"},
        "timer": {"type": "str"},
    }},
}

CONFIG_KEYS = ("architecture", "threshold", "allowed_models", "keep_versions", "facts_path")
SYSTEMD_RUNNING = Path("/run/systemd/system")  # what sd_booted() checks
RELOAD_TIMEOUT_S = 60
#: where systemd reads units from (a unit elsewhere is installed for an image and read at its next boot)
SYSTEMD_UNIT_DIRS = ("/etc/systemd/system", "/run/systemd/system", "/lib/systemd/system", "/usr/lib/systemd/system")
MAX_UNIT_BYTES = 64 * 1024  # read at most this much of an existing unit (a real one is < 1 KiB)


def _unit_state(unit_dir: Path, name: str, wanted_by: str | None) -> tuple[Path, Path | None, bytes | None, bool]:
    """(unit path, its wants link or None, the unit's bytes or None, whether the link points at the unit)."""
    unit = unit_dir / name
    wants = unit_dir / f"{wanted_by}.wants" / name if wanted_by else None
    have: bytes | None = None
    try:
        if unit.is_file() and not unit.is_symlink():
            with unit.open("rb") as fh:
                have = fh.read(MAX_UNIT_BYTES + 1)
    except OSError:
        have = None
    try:
        linked = wants is not None and wants.is_symlink() and Path(os.readlink(wants)) == unit
    except OSError:
        linked = False
    return unit, wants, have, linked


def _digest(data: bytes | None) -> str | None:
    import hashlib

    return hashlib.sha256(data).hexdigest() if data is not None else None


def _systemctl(module: DeviceModule, args: list[str], what: str) -> None:
    """``systemctl ARGS`` where systemd runs (60 s deadline); a failure fails the task naming ``what``."""
    if not SYSTEMD_RUNNING.is_dir():
        return
    try:
        proc = subprocess.run(["systemctl", *args], capture_output=True, text=True, timeout=RELOAD_TIMEOUT_S,
                              check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        module.fail_json(msg=f"{what}, but `systemctl {' '.join(args)}` failed: {exc}", error="systemd")
    if proc.returncode != 0:
        module.fail_json(msg=f"{what}, but `systemctl {' '.join(args)}` failed: {proc.stderr.strip()[:500]}",
                         error="systemd")


def ensure_units(
    module: DeviceModule, unit_dir: Path, units: list[tuple[str, bytes | None, str | None]], what: str,
    hint: str = "set edge_runtime_systemd_unit_dir to a writable directory",
) -> tuple[bool, dict[str, Any], dict[str, Any]]:
    """Make each ``(name, content, wanted_by)`` unit in ``unit_dir`` what is wanted: installed (atomically,
    mode 0644) and linked into ``<wanted_by>.wants`` when it has a target, or removed with its link when
    ``content`` is None. Writes only what differs; (changed, before, after) per unit name; check mode writes
    nothing."""
    from edge_runtime._fsutil import atomic_write_bytes, fsync_dir

    before: dict[str, Any] = {}
    after: dict[str, Any] = {}
    todo: list[tuple[Path, Path | None, bytes | None, bool, bytes | None]] = []
    for name, want, wanted_by in units:
        unit, wants, have, linked = _unit_state(unit_dir, name, wanted_by)
        before[name] = {"sha256": _digest(have), "enabled": linked}
        after[name] = {"sha256": _digest(want), "enabled": want is not None and wanted_by is not None}
        if want is None:
            if have is not None or linked or (wants is not None and wants.is_symlink()):
                todo.append((unit, wants, have, linked, want))
        elif have != want or (wants is not None and not linked):
            todo.append((unit, wants, have, linked, want))
    if not todo or module.check_mode:
        return bool(todo), before, after
    try:
        for unit, wants, have, linked, want in todo:
            if want is None:
                if wants is not None:
                    wants.unlink(missing_ok=True)
                unit.unlink(missing_ok=True)
            else:
                if have != want:
                    unit_dir.mkdir(parents=True, exist_ok=True)
                    atomic_write_bytes(unit, want, mode=0o644)
                    os.chmod(unit, 0o644)  # whatever the umask
                if wants is not None and not linked:
                    wants.parent.mkdir(parents=True, exist_ok=True)
                    tmp = wants.with_name(f".{wants.name}.tmp-{os.getpid()}")
                    tmp.unlink(missing_ok=True)
                    os.symlink(unit, tmp)
                    os.replace(tmp, wants)
            if wants is not None and wants.parent.is_dir():
                fsync_dir(wants.parent)
        if unit_dir.is_dir():
            fsync_dir(unit_dir)
    except OSError as exc:
        module.fail_json(msg=f"cannot install the {what} in {unit_dir}: {exc.strerror or exc} (hint: {hint})",
                         error="storage")
    return True, before, after


def ensure_boot_unit(module: DeviceModule, spec: dict[str, Any]) -> tuple[bool, dict[str, Any], dict[str, Any]]:
    """Install and enable the boot recovery unit when it differs; (changed, diff before, diff after)."""
    from edge_runtime.facts import BOOT_UNIT

    changed, before, after = ensure_units(
        module, Path(spec["dir"]), [(BOOT_UNIT, spec["content"].encode("utf-8"), "multi-user.target")],
        "boot recovery unit",
        "set edge_runtime_systemd_unit_dir to a writable directory, or edge_runtime_boot_recovery: none",
    )
    if changed and not module.check_mode:
        _systemctl(module, ["daemon-reload"], "the boot recovery unit is installed (it is read at the next boot)")
    return changed, before[BOOT_UNIT], after[BOOT_UNIT]


def ensure_monitor_units(
    module: DeviceModule, spec: dict[str, Any]
) -> tuple[bool, dict[str, Any], dict[str, Any]]:
    """The monitor's service and timer, present (timer enabled and restarted) or absent (timer stopped)."""
    from edge_runtime._monitor_record import MONITOR_SERVICE, MONITOR_TIMER

    present = spec["state"] == "present"
    if present and not (spec.get("service") and spec.get("timer")):
        module.fail_json(msg="monitor_units: state present needs both service and timer", error="config")
    units = [
        (MONITOR_SERVICE, spec["service"].encode("utf-8") if present else None, None),
        (MONITOR_TIMER, spec["timer"].encode("utf-8") if present else None, "timers.target"),
    ]
    unit_dir = Path(spec["dir"])
    # start/stop the timer only where the running systemd reads the units (not in an image or a test directory)
    live = unit_dir.resolve() in {Path(d).resolve() for d in SYSTEMD_UNIT_DIRS}
    if live and not present and not module.check_mode and (unit_dir / MONITOR_TIMER).exists():
        _systemctl(module, ["stop", MONITOR_TIMER], "the monitor timer is to be removed")
    changed, before, after = ensure_units(
        module, unit_dir, units, "monitor units",
        "set edge_runtime_systemd_unit_dir to a writable directory, or edge_runtime_monitor_enabled: false",
    )
    if changed and not module.check_mode:
        _systemctl(module, ["daemon-reload"], "the monitor units are installed")
        if present and live:
            _systemctl(module, ["restart", MONITOR_TIMER], "the monitor units are installed")
    return changed, before, after


def _current(dev: Any) -> dict[str, Any]:
    from edge_runtime.facts import trust_facts

    ids = sorted(p.name.split(".")[0] for p in dev.trust_dir.glob("*.pub.pem")) if dev.trust_dir.is_dir() else []
    doc = _config_doc(dev)
    return {"trusted_key_ids": ids, "trust_root_version": trust_facts(dev.trust_dir)["root_version"],
            "config": {k: doc.get(k) for k in CONFIG_KEYS if k in doc}}


def _config_doc(dev: Any) -> dict[str, Any]:
    """The device's config.json as written (an unreadable one: empty, and the setup rewrites it)."""
    try:
        doc = json.loads((dev.root / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return doc if isinstance(doc, dict) else {}


def _root_version(doc: str) -> int:
    """The version a root document claims (the device verifies everything else before it trusts it)."""
    try:
        version = json.loads(doc)["signed"]["version"]
    except (ValueError, KeyError, TypeError):
        version = None
    return version if isinstance(version, int) and not isinstance(version, bool) else 0


@contextmanager
def _pem_files(pems: list[bytes]) -> Iterator[list[Path]]:
    """The wanted PEMs as temporary files (what the runtime's key loader and ``Device.init`` read)."""
    with tempfile.TemporaryDirectory(prefix="edge-keys-") as tmp:
        paths = [Path(tmp) / f"key{i}.pub" for i in range(len(pems))]
        for path, pem in zip(paths, pems, strict=True):
            path.write_bytes(pem)
        yield paths


def _key_ids(dev: Any, pems: list[bytes]) -> tuple[list[str], bool]:
    """The key id of each wanted PEM, and whether a trusted-key file on the device must be (re)written.

    Fast path, taken on every converged device: each wanted PEM is byte-identical to a trust file that
    ``Device.init`` wrote under its key id (it parsed the key to name the file), so the ids are those names
    and nothing needs parsing or writing; cryptography is not even imported. Otherwise each key is parsed (a
    bad PEM fails here with the runtime's message) and its id computed. The device itself always derives ids
    from the file contents when it verifies a bundle, so a file's name never grants trust.
    """
    on_device: dict[bytes, str] = {}
    if dev.trust_dir.is_dir():
        for f in dev.trust_dir.glob("*.pub.pem"):
            on_device.setdefault(f.read_bytes(), f.name.split(".")[0])
    if pems and all(pem in on_device for pem in pems):
        return [on_device[pem] for pem in pems], False
    from edge_runtime.keys import load_public_key
    from edge_runtime.trust import key_id

    with _pem_files(pems) as paths:
        ids = [key_id(load_public_key(path)) for path in paths]
    differs = any(on_device.get(pem) != kid for pem, kid in zip(pems, ids, strict=True))
    return ids, differs


def _show_spec() -> None:
    """Not run by Ansible (no arguments were written in): hand ``ARGUMENT_SPEC`` to Ansible's ``AnsibleModule``,
    which is how ansible-test (validate-modules, import) reads a module's options. Nothing else runs."""
    import importlib

    try:
        basic = importlib.import_module("ansible.module_utils" + ".basic")  # (not a module_utils import for Ansible)
    except ImportError:
        return
    basic.AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)


def main() -> None:
    if ARGS.startswith("<<INCLUDE_"):
        _show_spec()
        return
    try:
        from edge_runtime import Device
        from edge_runtime import __version__ as runtime_version
        from edge_runtime.ansible_module import DeviceModule, device_facts
        from edge_runtime.errors import EdgeRuntimeError
    except ImportError as exc:  # no runtime here, or one older than this collection: the action plugin says the fix
        sys.stdout.write(json.dumps({"failed": True, "error": "missing_runtime", "msg": "no edge runtime",
                                     "python": sys.executable, "import_error": str(exc)}) + "\n")
        raise SystemExit(1) from None
    module = DeviceModule(ARGS, ARGUMENT_SPEC)
    p = module.params
    if p["trusted_key_files"] or p["trust_root_files"]:
        module.fail_json(msg="trusted_key_files and trust_root_files are controller paths read by the "
                         "edgeml.fleet.edge_runtime_setup "
                         "action plugin, which did not run; nothing was changed", error="config")
    if any("PRIVATE KEY" in pem for pem in p["trusted_keys"]):  # the action plugin refuses these first
        module.fail_json(msg="trusted_keys holds a private key; only public keys are trusted. Nothing was changed; "
                         "rotate that key", error="config")
    dev = Device(p["root"])
    before = _current(dev)
    # metrics: managed only when given; {} (no textfile_dir) turns the metrics file off
    m = p["metrics"]
    metrics = ({"textfile_dir": m["textfile_dir"], "device": m.get("device") or None}
               if m is not None and m.get("textfile_dir") else None)
    if metrics is not None and metrics["device"] is None:
        del metrics["device"]
    if m is not None:
        before["config"]["metrics"] = _config_doc(dev).get("metrics")
    pems = [(pem.strip() + "\n").encode() for pem in p["trusted_keys"]]
    try:
        roots = [doc.encode("utf-8") for doc in p["trust_roots"]]
        if roots and pems:
            module.fail_json(msg="set either trusted keys or trust roots, not both (hint: once a fleet has a root "
                             "document, edge_runtime_trust_root replaces edge_runtime_trusted_keys)", error="config")
        ids, pem_differs = _key_ids(dev, pems) if pems else (before["trusted_key_ids"], False)
        wanted_ids = sorted(set(ids))
        if roots:
            if (dev.root / "config.json").exists():
                dev.roots_to_accept(roots)  # a refused chain fails here, in check mode too, before any change
        elif not ids:
            module.fail_json(
                msg="no trusted keys: a device trusts no bundle without a key "
                "(set edge_runtime_trusted_keys to the PEM files of the release public keys)",
                error="config",
            )
        if len(wanted_ids) != len(ids):
            module.fail_json(
                msg=f"trusted_keys lists the same key more than once ({len(ids)} entries, {len(wanted_ids)} "
                "distinct keys); a threshold counts distinct keys (hint: remove the duplicate key file)",
                error="config",
            )
        if not roots and not 1 <= p["threshold"] <= len(wanted_ids):
            module.fail_json(
                msg=f"threshold {p['threshold']} must be between 1 and the {len(wanted_ids)} trusted key(s)",
                error="config",
            )
        architecture = p["architecture"] or platform.machine()
        after = {
            "trusted_key_ids": wanted_ids,
            "trust_root_version": (
                max([_root_version(d) for d in p["trust_roots"]] + [before["trust_root_version"] or 0]) if roots else 0
            ),
            "config": {
                "architecture": architecture,
                "threshold": p["threshold"],
                "allowed_models": list(p["allowed_models"]),
                "keep_versions": p["keep_versions"],
                "facts_path": p["facts_path"],
                **({"metrics": metrics} if m is not None else {}),
            },
        }
        changed = before != after or pem_differs
        if changed and not module.check_mode:
            with _pem_files(pems) as paths:
                dev.init(
                    paths,
                    roots=roots or None,
                    threshold=p["threshold"],
                    allowed_models=tuple(p["allowed_models"]),
                    architecture=p["architecture"],
                    keep_versions=p["keep_versions"],
                    facts_path=p["facts_path"],
                    metrics=(metrics or {}) if m is not None else None,
                )
        if p["boot_unit"]:
            unit_changed, before["boot_unit"], after["boot_unit"] = ensure_boot_unit(module, p["boot_unit"])
            changed = changed or unit_changed
        if p["monitor_units"]:
            unit_changed, before["monitor_units"], after["monitor_units"] = ensure_monitor_units(
                module, p["monitor_units"]
            )
            changed = changed or unit_changed
        facts = device_facts(dev)
        # the architecture this device is configured with after this run (in check mode: the one it would be),
        # which the compatibility decision of the plan and of the install reads
        facts["platform"] = {**(facts.get("platform") or {}), "architecture": architecture}
    except EdgeRuntimeError as exc:
        module.fail_runtime_error(exc)
    module.exit_json(
        changed=changed,
        runtime_version=runtime_version,
        python=sys.executable,
        trusted_key_ids=wanted_ids,
        diff={"before": before, "after": after},
        ansible_facts=module.twin_facts(facts),
    )


if __name__ == "__main__":
    main()

#!/usr/bin/python
# Copyright (c) edgeml maintainers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Ansible module ``edgeml.fleet.edge_model``: converge one device to one model version."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: edge_model
short_description: Converge an edge device to a pinned, signed model version
version_added: 0.1.0
description:
  - Installs a signed model bundle on a device through the C(edge_runtime) library, which fetches,
    verifies (signatures, digest, every file), stages, atomically activates and smoke-tests it, and
    commits it or rolls it back. This module is a thin adapter; it holds no install logic itself.
  - With O(state=present) the install decision (no-op, install or refuse, with its reason) is made by the
    runtime's C(edge_runtime.decision.decide) from the device's state file, the same function the runtime
    and the controller's in-sync comparison use; check mode reports that decision. When the active version
    already equals O(version) with the pinned O(digest), nothing is read but the state file.
  - A version that failed on this device before and was rolled back is quarantined there. Asking for it
    again fails with C(quarantined) unless O(allow_quarantined=true), so a bad pin neither flaps nor shows green.
  - O(state=rolled_back) is an operator rollback to the previous committed version still kept on the device.
  - O(state=tested) is the post-install health check, run by the C(edgeml.fleet) role C(edge_model) as a
    handler after an install. In a fresh process it re-verifies every installed file of the active version
    and re-runs the bundle's smoke test from disk; if either fails, the runtime rolls the version back to the
    previous committed one and quarantines it, and the task fails with C(rolled_back=true).
  - Every runtime error fails the task with the runtime's diagnostics (problem and hint) and its error code.
extends_documentation_fragment:
  - edgeml.fleet.device
options:
  name:
    description: Model name, as in the bundle's signed manifest and in C(models.yaml).
    type: str
    required: true
  version:
    description:
      - With O(state=present), the exact version to make active.
      - With O(state=rolled_back), optional; the version to roll back B(from). When given and that version is
        not active (any more), nothing changes, which makes the rollback idempotent.
      - With O(state=tested), optional; test only if this version is active (else nothing happens).
    type: str
  to:
    description:
      - With O(state=rolled_back), the committed version still kept on the device to activate, instead of the
        previous one. Already active means nothing changes; a version not kept on the device fails the task.
    type: str
  digest:
    description: Pinned manifest digest (C(sha256:<hex>)); a bundle with another digest is refused.
    type: str
  source:
    description: Path on the device or C(http(s)) URL of the bundle. Required with O(state=present).
    type: str
  size:
    description: Expected bundle size in bytes; a server sending more is refused.
    type: int
  state:
    description:
      - V(present) makes O(version) the active version (install, smoke test, commit or roll back).
      - V(rolled_back) activates the previous committed version still kept on the device.
      - V(tested) checks the active version (files and smoke test) and rolls it back if it fails.
    type: str
    choices: [present, rolled_back, tested]
    default: present
  allow_quarantined:
    description: Retry a version that failed on this device before. Use only after fixing the cause.
    type: bool
    default: false
  connect_timeout:
    description:
      - Seconds to establish the connection when O(source) is a URL.
      - Unset, the device's download settings apply (C(download) in its C(config.json), else the runtime's
        defaults in C(edge_runtime/_fetch_config.py)), like for O(read_timeout) and O(retries).
    type: float
  read_timeout:
    description: A download stalled this many seconds is aborted (and resumed up to O(retries) times).
    type: float
  retries:
    description: Resumed download attempts after a drop or a stall.
    type: int
  release_counter:
    description:
      - The pinned manifest's release counter, when the plan knows it. A pin below the highest counter
        installed on the device (and not kept there) is refused without reading the bundle (C(downgrade)).
    type: int
  push_src:
    description:
      - Controller path of the bundle to push to the device first (transfer push, C(push_src) of the device's
        plan). The action plugin sends it over the connection itself, to O(source) with C(.part) appended in
        the runtime's downloads directory (or, when become applies, to Ansible's temporary directory of the
        task, as the C(copy) module would), and the module installs from it and removes it in the same module
        run, installed or refused. No separate copy, stat or file module runs. Nothing is sent in check mode
        or with another O(state). Pass it only for a model whose pinned build this run's twin does not show
        active (C(edgeml.fleet.edge_bundles_to_push)), so a converged device gets no transfer.
      - An interrupted transfer leaves at most the C(.part) file, which the next push of that bundle
        replaces and the runtime expires like a partial download (C(partial_max_age_s),
        C(partial_max_count)); a transfer that fails for another reason (a full disk) is reported by the
        module with what the device has free.
    type: path
  pushed:
    description:
      - Set by the action plugin, not by hand. O(source) is a pushed copy (a C(.part) file) that this module
        run removes after it installed or refused it.
    type: bool
    default: false
  push_error:
    description: Set by the action plugin, not by hand. Why the push of O(push_src) failed.
    type: str
  run_id:
    description:
      - The controller's id of this run, echoed in the returned twin (C(ansible_facts.edge_runtime.run_id)).
        The deploy playbook acts only on twins carrying its own run's id.
    type: str
attributes:
  check_mode:
    support: full
    description: Reports what would change and the version diff; touches nothing on the device.
  diff_mode:
    support: full
    description: Returns C(before) and C(after) with the active version.
notes:
  - Returns the device twin as C(ansible_facts.edge_runtime), so no separate facts run is needed.
seealso:
  - module: edgeml.fleet.edge_model_info
  - module: edgeml.fleet.edge_runtime_setup
"""

EXAMPLES = r"""
- name: Converge the device to defect-classifier 1.1.0
  edgeml.fleet.edge_model:
    root: /var/lib/edge-runtime
    name: defect-classifier
    version: "1.1.0"
    digest: "sha256:a9e2385440fabf2ea1b04ac9ed7dfcf3fbf5707de49cbe25bbf96e9339e0d1d8"
    source: https://models.example.com/defect-classifier/1.1.0.edgebundle
    size: 24576

- name: Health-check defect-classifier 1.1.0 after its install (rolls it back if it fails)
  edgeml.fleet.edge_model:
    root: /var/lib/edge-runtime
    name: defect-classifier
    version: "1.1.0"
    state: tested

- name: Roll defect-classifier back from 1.1.0 to the previous committed version
  edgeml.fleet.edge_model:
    root: /var/lib/edge-runtime
    name: defect-classifier
    version: "1.1.0"
    state: rolled_back
"""

RETURN = r"""
result:
  description: What the runtime did.
  returned: when the runtime was asked to act (not in check mode, not when already converged)
  type: str
  sample: installed
  choices: [installed, unchanged, activated_kept, rolled_back]
previous:
  description: The version that was active before.
  returned: always
  type: str
  sample: "1.0.0"
active:
  description: The version active now (or that would be active, in check mode).
  returned: always
  type: str
  sample: "1.1.0"
reason:
  description: Why; for a rollback, the smoke-test failure or the operator action.
  returned: always
  type: str
  sample: smoke test passed
smoke:
  description: The smoke-test report of the runtime (backend, label agreement, latencies in ms).
  returned: after an install
  type: dict
  sample: {"passed": true, "backend": "litert", "p50_ms": 0.01, "p95_ms": 0.02, "label_agreement": 1.0}
rolled_back:
  description: True when the install was rolled back by the runtime (the task fails).
  returned: on an install that was rolled back
  type: bool
  sample: true
quarantined:
  description: True when O(version) is quarantined on the device (the task fails).
  returned: on failure because of quarantine
  type: bool
  sample: true
error:
  description: The runtime's error code.
  returned: on failure
  type: str
  sample: integrity
degraded:
  description:
    - True when the runtime reports the model DEGRADED (a rollback target no longer verified on disk, so the
      device could not reach the intended version); the task fails. Cleared by the next install or operator
      rollback that commits, or a passing O(state=tested) check.
  returned: when the model is degraded, and after a runtime operation
  type: bool
  sample: true
degraded_reason:
  description: Why the model is degraded, e.g. C(cannot roll back to 1.0.0 - model.tflite no longer verifies).
  returned: when the model is degraded
  type: str
  sample: "cannot roll back to 1.0.0: model.tflite no longer verifies (...); no model is active"
decision:
  description: The runtime's install decision for O(state=present) (C(edge_runtime.decision)).
  returned: with O(state=present) on an initialised device
  type: dict
  sample: {"action": "noop", "code": "already_active", "reason": "defect-classifier 1.1.0 is already active"}
healthy:
  description:
    - With a no-op decision, whether the runtime recorded a passed post-install health check for the version.
      False means the version was activated by a run that did not finish its check; the role checks it now.
  returned: when the decision is a no-op
  type: bool
  sample: true
diff:
  description: The active version before and after.
  returned: always
  type: dict
  sample: {"before": {"version": "1.0.0"}, "after": {"version": "1.1.0"}}
ansible_facts:
  description: The device twin.
  returned: always, except when the runtime cannot be loaded
  type: dict
  contains:
    edge_runtime:
      description: Same content as C(<root>/facts/edge_runtime.fact).
      type: dict
      returned: always
      sample: {"schema": 1, "models": {"defect-classifier": {"active_version": "1.1.0"}}}
"""

import contextlib
import json
import os
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from edge_runtime.ansible_module import DeviceModule

# The controller writes the task's arguments here as JSON (a JSON-args module: see plugin_utils/device_module.py).
ARGS = r"""<<INCLUDE_ANSIBLE_MODULE_JSON_ARGS>>"""

#: validated on the controller by the action plugin (Ansible's ArgumentSpecValidator); the device expands paths
ARGUMENT_SPEC: dict[str, Any] = {
    "root": {"type": "path", "required": True},
    "name": {"type": "str", "required": True},
    "version": {"type": "str"},
    "to": {"type": "str"},
    "digest": {"type": "str"},
    "source": {"type": "str"},
    "size": {"type": "int"},
    "state": {"type": "str", "default": "present", "choices": ["present", "rolled_back", "tested"]},
    "allow_quarantined": {"type": "bool", "default": False},
    "connect_timeout": {"type": "float"},
    "read_timeout": {"type": "float"},
    "retries": {"type": "int"},
    "release_counter": {"type": "int"},
    "push_src": {"type": "path"},  # consumed by the action plugin on the controller
    "pushed": {"type": "bool", "default": False},
    "push_error": {"type": "str"},
    "run_id": {"type": "str"},  # echoed in the twin: the controller acts only on this run's answers
}
REQUIRED_IF = [("state", "present", ("version", "digest", "source"))]


def _outcome(module: DeviceModule, dev: Any, before: dict[str, Any], res: dict[str, Any]) -> dict[str, Any]:
    """The module result of a runtime operation; a rollback by the runtime fails the task."""
    facts = dev.write_facts()
    diff = {"before": before, "after": {"version": res["active"]}}
    res["degraded_reason"] = res.pop("degraded", None)
    res["degraded"] = res["degraded_reason"] is not None
    if res["result"] == "rolled_back":
        res.pop("changed", None)
        module.fail_json(
            msg=f"{res['model']} {res['version']} was rolled back to {res['active'] or 'none'}: {res['reason']}",
            changed=True,
            rolled_back=True,
            diff=diff,
            ansible_facts=module.twin_facts(facts),
            **res,
        )
    return {**res, "diff": diff, "ansible_facts": module.twin_facts(facts)}


def _fail_if_degraded(module: DeviceModule, result: dict[str, Any]) -> None:
    """A model the runtime reports DEGRADED (a rollback target did not verify) fails the task, with the reason."""
    name = module.params["name"]
    twin = ((result.get("ansible_facts") or {}).get("edge_runtime") or {}).get("models", {}).get(name) or {}
    if twin.get("state") == "degraded":
        reason = twin.get("degraded_reason")
        extra = {k: v for k, v in result.items() if k not in ("msg", "error", "degraded", "degraded_reason")}
        module.fail_json(msg=f"{name} is DEGRADED on this device: {reason}", error="degraded", degraded=True,
                         degraded_reason=reason, **extra)


def _present(module: DeviceModule, dev: Any) -> dict[str, Any]:
    from edge_runtime.decision import Pin, decide, healthy

    p = module.params
    name, version = p["name"], p["version"]
    if module.check_mode and not (dev.root / "config.json").exists():
        # A device that has never been set up: the plan is "install", and check mode creates nothing.
        return {"changed": True, "previous": None, "active": None,
                "reason": "would initialise the device and install",
                "diff": {"before": {"version": None}, "after": {"version": version}}}
    dev.config  # noqa: B018 - an uninitialised root fails here with a hint, before anything else
    state = dev.store.load(name)  # a corrupt state file fails here, as the decision would (state_corrupt)
    before = {"version": state.active}
    after = {"version": version}
    out: dict[str, Any] = {"previous": state.previous_committed(), "active": state.active}
    # The runtime's install decision, the same function the runtime and the controller ask.
    decision = decide(state, Pin(name, version, p["digest"], p["release_counter"], p["allow_quarantined"]))
    out["decision"] = decision.to_dict()
    if decision.action == "noop":
        # healthy: the runtime recorded a passed post-install check for this version; if not, the role
        # runs that check now (a version installed by a run that did not finish its check)
        return {**out, "changed": False, "reason": "already active", "healthy": healthy(state, version),
                "diff": {"before": before, "after": after}}
    if decision.action == "refuse":
        module.fail_json(
            msg=decision.message(),
            error=decision.code,
            quarantined=decision.code == "quarantined",
            reason=decision.reason,
            ansible_facts=module.twin(dev),
            **out,
        )
    if module.check_mode:
        # check mode reports the device as it is (active = current); the would-be version is in the diff
        return {**out, "changed": True, "reason": f"would install: {decision.reason}",
                "diff": {"before": before, "after": after}}
    # the gate compares the new version's golden-set error rate with the one it replaces
    previous_smoke = (state.versions.get(state.active or "") or {}).get("smoke")

    res = dev.install(
        p["source"],
        expected_name=name,
        expected_digest=p["digest"],
        expected_size=p["size"],
        allow_quarantined=p["allow_quarantined"],
        # only what was set here; every other download setting is the device's (one source of defaults)
        fetch_config={k: p[k] for k in ("connect_timeout", "read_timeout", "retries") if p[k] is not None},
        progress=False,
    ).to_dict()
    res["previous_smoke"] = previous_smoke
    return _outcome(module, dev, before, res)


def _active(module: DeviceModule, dev: Any) -> tuple[Any, dict[str, Any]]:
    """The model's state and the diff's ``before``; an uninitialised root fails here with a hint."""
    dev.config  # noqa: B018
    state = dev.store.load(module.params["name"])
    return state, {"version": state.active}


def _nothing(state: Any, before: dict[str, Any], reason: str) -> dict[str, Any]:
    return {"changed": False, "previous": state.previous_committed(), "active": state.active, "reason": reason,
            "diff": {"before": before, "after": before}}


def _rolled_back(module: DeviceModule, dev: Any) -> dict[str, Any]:
    from edge_runtime.errors import EdgeRuntimeError

    p = module.params
    state, before = _active(module, dev)
    if p["version"] and state.active != p["version"]:
        return _nothing(state, before, f"{p['version']} is not active; nothing to roll back")
    # a refused rollback still reports what the device runs (the rollback report's "now")
    seen = {"active": state.active, "previous": state.previous_committed()}
    if module.check_mode:
        target = p["to"] or state.previous_committed()
        if state.active is None or target is None:
            module.fail_json(msg=f"{p['name']} has no previous committed version kept on this device",
                             error="rollback", ansible_facts=module.twin(dev), **seen)
        if target == state.active:
            return _nothing(state, before, f"{target} is already active")
        if target not in state.versions:
            module.fail_json(msg=f"{p['name']} {target} is not kept on this device", error="rollback",
                             ansible_facts=module.twin(dev), **seen)
        return {"changed": True, "previous": state.active, "active": target, "reason": "would roll back",
                "diff": {"before": before, "after": {"version": target}}}
    try:
        res = dev.rollback(p["name"], p["to"]).to_dict()
    except EdgeRuntimeError as exc:
        module.fail_runtime_error(exc, ansible_facts=module.twin(dev), **seen)
    return _outcome(module, dev, before, res)


def _tested(module: DeviceModule, dev: Any) -> dict[str, Any]:
    p = module.params
    state, before = _active(module, dev)
    if module.check_mode:
        return _nothing(state, before, "check mode: not tested")
    if state.active is None or (p["version"] and state.active != p["version"]):
        return _nothing(state, before, f"{p['version'] or p['name']} is not active; not tested")
    return _outcome(module, dev, before, dev.check(p["name"], p["version"]).to_dict())


def _push_failed(module: DeviceModule, dev: Any) -> None:
    """The transfer of a pushed bundle failed (not the connection): say why, with what the device has free."""
    import shutil

    p = module.params
    where = os.path.dirname(p["source"])
    try:
        free: int | None = shutil.disk_usage(where).free
    except OSError:
        free = None
    need = p["size"]
    if free is not None and need is not None and free < need:
        why = (f"no space left on the device for the pushed bundle: {need} bytes needed, {free} free under "
               f"{where}; free space on the device (old downloads, logs) or lower keep_versions")
    else:
        why = f"the push of the bundle to {p['source']} failed ({free} bytes free there): {p['push_error']}"
    module.fail_json(msg=f"{p['name']} {p['version']}: {why}", error="push", changed=False,
                     ansible_facts=module.twin(dev))


def _remove_pushed(module: DeviceModule, dev: Any) -> None:
    """Remove this run's pushed copy, and expire stale partial pushes and downloads (an interrupted run's)."""
    from edge_runtime._partials import expire_partials
    from edge_runtime.errors import EdgeRuntimeError

    with contextlib.suppress(FileNotFoundError):
        os.unlink(module.params["source"])
    with contextlib.suppress(EdgeRuntimeError, OSError):
        expire_partials(dev.downloads_dir, dev.config.fetch_config())


def _show_spec() -> None:
    """Not run by Ansible (no arguments were written in): hand ``ARGUMENT_SPEC`` to Ansible's ``AnsibleModule``,
    which is how ansible-test (validate-modules, import) reads a module's options. Nothing else runs."""
    import importlib

    try:
        basic = importlib.import_module("ansible.module_utils" + ".basic")  # (not a module_utils import for Ansible)
    except ImportError:
        return
    basic.AnsibleModule(argument_spec=ARGUMENT_SPEC, required_if=REQUIRED_IF, supports_check_mode=True)


def main() -> None:
    if ARGS.startswith("<<INCLUDE_"):
        _show_spec()
        return
    try:
        from edge_runtime import Device
        from edge_runtime.ansible_module import DeviceModule
        from edge_runtime.errors import EdgeRuntimeError
    except ImportError as exc:  # no runtime here, or one older than this collection: the action plugin says the fix
        sys.stdout.write(json.dumps({"failed": True, "error": "missing_runtime", "msg": "no edge runtime",
                                     "python": sys.executable, "import_error": str(exc)}) + "\n")
        raise SystemExit(1) from None
    module = DeviceModule(ARGS, ARGUMENT_SPEC)
    pushed = module.params["pushed"]
    if pushed and (module.params["state"] != "present" or not str(module.params["source"]).endswith(".part")):
        # the only file this module ever deletes is its own pushed copy, named so by the action plugin
        module.fail_json(msg="pushed=true needs state=present and a source ending in .part (set by the action "
                             "plugin from push_src; do not set it by hand)", error="usage")
    dev = Device(module.params["root"])
    try:
        if module.params["push_error"] is not None:
            _push_failed(module, dev)
        action = {"present": _present, "rolled_back": _rolled_back, "tested": _tested}[module.params["state"]]
        result = action(module, dev)
        if "ansible_facts" not in result:
            result["ansible_facts"] = module.twin(dev)
        _fail_if_degraded(module, result)
    except EdgeRuntimeError as exc:
        for warning in dev.warnings:  # e.g. a facts file that could not be written: said, never the error
            module.warn(warning)
        module.fail_runtime_error(exc)
    finally:  # fail_json exits through here too: a refused or failed bundle goes as well
        if pushed and not module.check_mode:
            _remove_pushed(module, dev)
    for warning in dev.warnings:
        module.warn(warning)
    module.exit_json(**result)


if __name__ == "__main__":
    main()

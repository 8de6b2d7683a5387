"""Action plugin ``edgeml.fleet.desired_state``: validate ``models.yaml`` and return the rollout plan.

Runs entirely on the controller (no module is transferred). See the documentation in
``plugins/modules/desired_state.py`` and the plan contract in ``module_utils/desired_state.py``.
"""

from __future__ import annotations

from typing import Any

from ansible_collections.edgeml.fleet.plugins.module_utils.desired_state import DesiredStateError, build_plan
from ansible_collections.edgeml.fleet.plugins.plugin_utils.controller_action import ControllerAction

ARGUMENT_SPEC: dict[str, Any] = {
    "path": {"type": "path", "required": True},
    "groups": {"type": "dict", "required": True},
    "check_registry": {"type": "bool", "default": True},
    "verify_bundles": {"type": "bool", "default": False},
    "trusted_keys": {"type": "list", "elements": "path", "default": []},
    "threshold": {"type": "int", "default": 1},
    "max_waves": {"type": "int"},
}


def verify_bundles(plan: dict[str, Any], key_paths: list[str], threshold: int) -> list[dict[str, Any]]:
    """Verify every planned local bundle (signatures against ``key_paths`` and every file), once each.

    Bundles behind http(s) URLs are not downloaded here: the registry check read their manifests and the
    devices verify them in full. Raises ``ValueError`` with a readable message for the first failure.
    """
    from pathlib import Path

    try:
        from edge_runtime.bundle import verify_bundle
        from edge_runtime.errors import EdgeRuntimeError
        from edge_runtime.keys import load_public_key
        from edge_runtime.trust import TrustPolicy, key_id
    except ImportError as exc:
        raise ValueError(
            f"verifying bundles needs the edge_runtime package on the controller ({exc}); "
            "install the project (pip install -e .) into the Python that runs ansible-playbook"
        ) from None
    try:
        trusted = {key_id(k): k for k in (load_public_key(Path(p)) for p in key_paths)}
        policy = TrustPolicy(trusted, threshold)
    except EdgeRuntimeError as exc:
        raise ValueError(f"trusted keys {key_paths}: {exc.diagnostics()}") from None
    pins: dict[str, tuple[str, str, str]] = {}
    for entry in (plan.get("hosts") or {}).values():
        for name, pin in (entry.get("models") or {}).items():
            pins.setdefault(str(pin["source"]), (name, str(pin["version"]), str(pin["digest"])))
    verified = []
    for source, (name, version, digest) in sorted(pins.items()):
        if source.startswith(("http://", "https://")):
            continue
        try:
            manifest = verify_bundle(Path(source), policy)
        except EdgeRuntimeError as exc:
            raise ValueError(f"bundle {source} ({name} {version}) does not verify: {exc.diagnostics()}") from None
        except OSError as exc:
            raise ValueError(f"bundle {source} ({name} {version}) cannot be read: {exc}") from None
        if manifest.digest != digest:
            raise ValueError(
                f"bundle {source} has manifest digest {manifest.digest}, models.yaml pins {digest} for "
                f"{name} {version} (hint: the registry changed after models.yaml was written; pin the new digest "
                "only if this build is the one you reviewed)"
            )
        verified.append({"source": source, "model": name, "version": version, "files": len(manifest.files)})
    return verified


class ActionModule(ControllerAction):
    """Validate the desired state against the inventory (and registry) and return the plan."""

    ARGUMENT_SPEC = ARGUMENT_SPEC
    _VALID_ARGS = frozenset(ARGUMENT_SPEC)

    def act(self, args: dict[str, Any], task_vars: dict[str, Any], result: dict[str, Any]) -> None:
        # Relative paths are relative to the playbook directory, like other controller-side files.
        path = self._loader.path_dwim(args["path"])
        groups: dict[str, list[str]] = {}
        for name, hosts in args["groups"].items():
            if not isinstance(hosts, (list, tuple)):
                msg = f"groups[{name!r}] must be a list of host names; pass '{{{{ groups }}}}'"
                result.update(failed=True, msg=msg)
                return
            groups[str(name)] = [str(h) for h in hosts]

        try:
            plan = build_plan(path, groups, check_registry=args["check_registry"])
        except DesiredStateError as exc:
            result.update(failed=True, changed=False, msg=str(exc), error=exc.to_dict())
            return
        if args["max_waves"] is not None and plan["max_wave"] > args["max_waves"]:
            per_group = ", ".join(f"{g}: {len(v['waves'])}" for g, v in sorted(plan["groups"].items()))
            result.update(
                failed=True,
                changed=False,
                msg=(
                    f"{path}: the rollout needs {plan['max_wave']} waves ({per_group}); this playbook runs at most "
                    f"{args['max_waves']} (hint: merge waves in the group's rollout policy, or add wave plays)"
                ),
            )
            return
        verified: list[dict[str, Any]] = []
        if args["verify_bundles"] and not args["trusted_keys"]:
            result.update(
                failed=True,
                changed=False,
                msg=(
                    "verify_bundles needs trusted_keys: set edge_runtime_trusted_keys (PEM files of the trusted "
                    "public keys, on the controller) in the inventory; bundles are never trusted implicitly"
                ),
            )
            return
        if args["verify_bundles"]:
            try:
                verified = verify_bundles(plan, args["trusted_keys"], args["threshold"])
            except ValueError as exc:
                result.update(failed=True, changed=False, msg=str(exc))
                return
        result.update(plan=plan, verified=verified)

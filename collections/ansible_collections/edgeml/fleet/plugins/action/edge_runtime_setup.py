# Copyright (c) edgeml maintainers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Action plugin for ``edgeml.fleet.edge_runtime_setup``: only public keys ever leave the controller.

Runs on the controller before the module is sent. It reads ``trusted_key_files`` (controller paths, found
like ``copy``'s ``src``: the role's ``files/``, then the playbook's directory) and passes their keys to the
module as ``trusted_keys``; a PEM given directly in ``trusted_keys`` is checked the same way. Every key
goes through ``plugin_utils/trusted_keys.py``: a file that is not exactly one ECDSA P-256 PUBLIC KEY (a
private key, an encrypted or OpenSSH private key, garbage...) fails the task here, with a message that
names the file and never its content, and nothing is sent to the device. What is sent is the key
re-encoded from its parsed form, so no other byte of a key file reaches a device; the module argument is
``no_log`` as well.
"""

from __future__ import annotations

from typing import Any

from ansible.errors import AnsibleError
from ansible_collections.edgeml.fleet.plugins.modules.edge_runtime_setup import ARGUMENT_SPEC
from ansible_collections.edgeml.fleet.plugins.plugin_utils.device_module import DeviceModuleAction
from ansible_collections.edgeml.fleet.plugins.plugin_utils.trusted_keys import (
    TrustedKeyError,
    check_public_pem,
    read_public_key,
    read_root_document,
)


class ActionModule(DeviceModuleAction):
    """Check and resolve the trusted keys on the controller, then run the module with public keys only."""

    MODULE = "edgeml.fleet.edge_runtime_setup"
    ARGUMENT_SPEC = ARGUMENT_SPEC

    def act(self, args: dict[str, Any], task_vars: dict[str, Any]) -> dict[str, Any]:
        files = args.pop("trusted_key_files", None) or []
        pems = args.pop("trusted_keys", None) or []
        try:
            keys = [check_public_pem(str(pem).encode("utf-8"), f"trusted_keys[{i}]") for i, pem in enumerate(pems)]
            for name in files:
                try:
                    path = self._find_needle("files", str(name))
                except AnsibleError:
                    raise TrustedKeyError(
                        str(name), "trusted key file not found on the controller",
                        "fix the path in edge_runtime_trusted_keys (a controller path of a PEM public key)",
                    ) from None
                keys.append(read_public_key(path))
        except TrustedKeyError as exc:
            return {"failed": True, "changed": False, "msg": str(exc), "error": "trusted_keys"}
        try:
            args["trust_roots"] = [read_root_document(self._find_needle("files", str(name)))
                                   for name in args.pop("trust_root_files", None) or []]
        except AnsibleError:
            return {"failed": True, "changed": False, "error": "trust_root",
                    "msg": "a trust root file was not found on the controller (fix edge_runtime_trust_root)"}
        except TrustedKeyError as exc:
            return {"failed": True, "changed": False, "msg": str(exc), "error": "trust_root"}
        args["trusted_keys"] = [k.pem for k in keys]
        return self.execute(args, task_vars)

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
from ansible.plugins.action import ActionBase
from ansible_collections.edgeml.fleet.plugins.plugin_utils.trusted_keys import (
    TrustedKeyError,
    check_public_pem,
    read_public_key,
    read_root_document,
)


class ActionModule(ActionBase):  # type: ignore[misc]  # ansible-core ships no types: ActionBase is Any
    """Check and resolve the trusted keys on the controller, then run the module with public keys only."""

    TRANSFERS_FILES = False
    _supports_check_mode = True

    def run(self, tmp: str | None = None, task_vars: dict[str, Any] | None = None) -> dict[str, Any]:
        result: dict[str, Any] = super().run(tmp, task_vars)
        del tmp  # unused since Ansible 2.5
        args = dict(self._task.args)
        files = args.pop("trusted_key_files", None) or []
        pems = args.pop("trusted_keys", None) or []
        if isinstance(files, str) or isinstance(pems, str) or not isinstance(files, list) or not isinstance(pems, list):
            result.update(failed=True, msg="trusted_key_files and trusted_keys must be lists")
            return result
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
            result.update(failed=True, changed=False, msg=str(exc), error="trusted_keys")
            return result
        try:
            args["trust_roots"] = [read_root_document(self._find_needle("files", str(name)))
                                   for name in args.pop("trust_root_files", None) or []]
        except AnsibleError:
            result.update(failed=True, changed=False, error="trust_root",
                          msg="a trust root file was not found on the controller (fix edge_runtime_trust_root)")
            return result
        except TrustedKeyError as exc:
            result.update(failed=True, changed=False, msg=str(exc), error="trust_root")
            return result
        args["trusted_keys"] = [k.pem for k in keys]
        result.update(self._execute_module(module_name="edgeml.fleet.edge_runtime_setup", module_args=args,
                                           task_vars=task_vars))
        return result

# Copyright (c) edgeml maintainers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Action plugin for ``edgeml.fleet.edge_model``: the push transfer of a bundle, in the same module run.

With ``push_src`` (transfer push: a file-registry bundle the device cannot read), the bundle is sent over the
task's connection to ``<source>.part`` in the runtime's downloads directory on the device, and the module
installs from that file and removes it in the same run, installed or refused: one transfer and one module run
per model, where ``copy`` (a stat module run, the transfer, a copy module run) and a ``file`` removal cost three
module runs more. The file goes straight to its place: an interrupted transfer (a cut link) leaves no Ansible
temporary directory on the device, only the ``.part`` file, which the next push of the bundle replaces and the
runtime expires like a partial download. When become applies (an unprivileged SSH user that sudoes, as in
``inventory/production.example``), the SSH user cannot write the runtime's directory: the bundle then goes to
the task's Ansible temporary directory, as ``copy`` would send it, which is removed after the module run.

Which models are pushed is decided once, by the role (``edgeml.fleet.edge_bundles_to_push`` over this run's
twin): a model whose pinned build is active gets no ``push_src``, so a converged device gets no transfer.
Check mode and the other states transfer nothing. A connection failure during the transfer makes the item
unreachable (as for any task); another transfer failure (a full disk) is passed to the module, which reports it
with what the device has free.
"""

from __future__ import annotations

import os
from typing import Any

from ansible.errors import AnsibleConnectionFailure, AnsibleError
from ansible_collections.edgeml.fleet.plugins.modules.edge_model import ARGUMENT_SPEC, REQUIRED_IF
from ansible_collections.edgeml.fleet.plugins.plugin_utils.device_module import DeviceModuleAction


class ActionModule(DeviceModuleAction):
    """Push the bundle (when asked), then run the module, which installs from the pushed copy and removes it."""

    MODULE = "edgeml.fleet.edge_model"
    ARGUMENT_SPEC = ARGUMENT_SPEC
    REQUIRED_IF = REQUIRED_IF

    def act(self, args: dict[str, Any], task_vars: dict[str, Any]) -> dict[str, Any]:
        push_src = args.pop("push_src", None)
        if args.get("pushed") or args.get("push_error") is not None:
            return {"failed": True, "changed": False, "error": "usage",
                    "msg": "pushed and push_error are set by the action plugin; give push_src instead"}
        if not push_src or args["state"] != "present" or self._task.check_mode:
            return self.execute(args, task_vars)
        local = str(push_src)
        if not os.path.isfile(local):
            return {"failed": True, "changed": False, "error": "push",
                    "msg": f"push_src {local} is not a file on the controller (the file registry's bundle of "
                           f"{args.get('name')} {args.get('version')}); nothing was sent"}
        if not args.get("source"):
            return {"failed": True, "changed": False, "error": "usage",
                    "msg": "push_src needs source (the device path)"}
        tmpdir = None
        if self._play_context.become:
            tmpdir = self._make_tmp_path()
            remote = self._connection._shell.join_path(tmpdir, "bundle.part")
        else:
            remote = f"{args['source']}.part"
        # (the task's temporary directory, when one was made, is removed by ActionBase.cleanup after the task)
        try:
            self._transfer_file(local, remote)
            if tmpdir is not None:
                self._fixup_perms2((tmpdir, remote), execute=False)
        except AnsibleConnectionFailure:
            raise  # the device is unreachable: reported as such for this item
        except AnsibleError as exc:
            args["push_error"] = str(exc).strip()[-2000:]
        args.update(source=remote, pushed=True)
        return self.execute(args, task_vars)

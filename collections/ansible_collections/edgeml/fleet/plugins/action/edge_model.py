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
from ansible.plugins.action import ActionBase

MODULE = "edgeml.fleet.edge_model"


class ActionModule(ActionBase):  # type: ignore[misc]  # ansible-core ships no types: ActionBase is Any
    """Push the bundle (when asked), then run the module, which installs from the pushed copy and removes it."""

    TRANSFERS_FILES = False  # no early temporary directory: the bundle goes to the device's downloads directory
    _supports_check_mode = True

    def run(self, tmp: str | None = None, task_vars: dict[str, Any] | None = None) -> dict[str, Any]:
        result: dict[str, Any] = super().run(tmp, task_vars)
        del tmp  # unused since Ansible 2.5
        args = dict(self._task.args)
        push_src = args.pop("push_src", None)
        if args.pop("pushed", None) or args.pop("push_error", None) is not None:
            result.update(failed=True, changed=False, error="usage",
                          msg="pushed and push_error are set by the action plugin; give push_src instead")
            return result
        if not push_src or args.get("state", "present") != "present" or self._task.check_mode:
            result.update(self._execute_module(module_name=MODULE, module_args=args, task_vars=task_vars))
            return result
        local = str(push_src)
        if not os.path.isfile(local):
            result.update(failed=True, changed=False, error="push",
                          msg=f"push_src {local} is not a file on the controller (the file registry's bundle of "
                              f"{args.get('name')} {args.get('version')}); nothing was sent")
            return result
        if not args.get("source"):
            result.update(failed=True, changed=False, error="usage", msg="push_src needs source (the device path)")
            return result
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
        result.update(self._execute_module(module_name=MODULE, module_args=args, task_vars=task_vars))
        return result

# Aggregate callback used by bench/fleet.py only (enabled through ANSIBLE_CALLBACKS_ENABLED=fleet_bench).
# It records, per host, every task result (action, status, loop items, delegation) and the wall time of
# every task, then writes them as JSON to $FLEET_BENCH_OUT when the run ends. It prints nothing.
from __future__ import annotations

import json
import os
import time

from ansible.plugins.callback import CallbackBase

DOCUMENTATION = """
name: fleet_bench
type: aggregate
short_description: per-host task results and per-task wall time for bench/fleet.py
description: Writes JSON to the file named by the FLEET_BENCH_OUT environment variable.
requirements: [enabled in callbacks_enabled]
"""


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "fleet_bench"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self) -> None:
        super().__init__()
        self._tasks: list[dict] = []
        self._hosts: dict[str, list[dict]] = {}
        self._t0 = time.perf_counter()
        self._play = ""

    # ------------------------------------------------------------------ tasks
    def v2_playbook_on_play_start(self, play) -> None:
        self._play = play.get_name()
        self._tasks.append({"play": self._play, "task": None, "start": time.perf_counter() - self._t0})

    def _start(self, task, handler: bool) -> None:
        action = getattr(task, "resolved_action", None) or task.action
        self._tasks.append(
            {"play": self._play, "task": task.get_name(), "action": action, "handler": handler,
             "start": time.perf_counter() - self._t0, "results": 0}
        )

    def v2_playbook_on_task_start(self, task, is_conditional) -> None:
        self._start(task, False)

    def v2_playbook_on_handler_task_start(self, task) -> None:
        self._start(task, True)

    # ------------------------------------------------------------------ results
    def _record(self, result, status: str) -> None:
        task = result._task
        res = result._result if isinstance(result._result, dict) else {}
        items = res.get("results")
        n_items = None
        if isinstance(items, list):
            n_items = sum(1 for r in items if isinstance(r, dict) and not r.get("skipped"))
        self._hosts.setdefault(result._host.get_name(), []).append(
            {"play": self._play, "task": task.get_name(),
             "action": getattr(task, "resolved_action", None) or task.action,
             "status": status, "changed": bool(res.get("changed")), "items": n_items,
             "delegated": bool(task.delegate_to) or "_ansible_delegated_vars" in res}
        )
        if self._tasks and self._tasks[-1].get("task") is not None:
            self._tasks[-1]["results"] += 1

    def v2_runner_on_ok(self, result) -> None:
        self._record(result, "ok")

    def v2_runner_on_failed(self, result, ignore_errors=False) -> None:
        self._record(result, "failed")

    def v2_runner_on_skipped(self, result) -> None:
        self._record(result, "skipped")

    def v2_runner_on_unreachable(self, result) -> None:
        self._record(result, "unreachable")

    # ------------------------------------------------------------------ end
    def v2_playbook_on_stats(self, stats) -> None:
        end = time.perf_counter() - self._t0
        for cur, nxt in zip(self._tasks, [*self._tasks[1:], {"start": end}], strict=True):
            cur["wall_s"] = round(nxt["start"] - cur["start"], 4)
        recap = {h: stats.summarize(h) for h in sorted(stats.processed)}
        out = os.environ.get("FLEET_BENCH_OUT")
        if out:
            with open(out, "w", encoding="utf-8") as fh:
                json.dump({"tasks": self._tasks, "hosts": self._hosts, "recap": recap, "end_s": end}, fh)

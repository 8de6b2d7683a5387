# Copyright (c) edgeml maintainers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Stdout callback ``edgeml.fleet.compact``: what changed, what failed and what the playbooks report.

Used by ``make demo`` (``ANSIBLE_STDOUT_CALLBACK=edgeml.fleet.compact``). The default callback prints a
banner for every play and task and a line for every skipped host, which for a fleet playbook with wave plays
is mostly noise. This one prints, per task that did something: one line per outcome with the hosts (changed,
failed, unreachable); the messages of ``debug`` tasks (the gate decisions and the run summaries); failure
messages in full; and a one-line recap. Plays and tasks where nothing changed or failed print nothing.
"""

from __future__ import annotations

DOCUMENTATION = """
    name: compact
    type: stdout
    short_description: compact fleet output (changes, failures, summaries; no skipped or ok noise)
    version_added: 0.2.0
    description:
      - One line per task outcome with its hosts, the messages of debug tasks, failures in full and a one-line
        recap. Nothing is printed for skipped hosts, plays without hosts or tasks that changed nothing.
    requirements:
      - set as stdout callback (ANSIBLE_STDOUT_CALLBACK=edgeml.fleet.compact)
"""

from typing import Any

from ansible import constants as C
from ansible.plugins.callback import CallbackBase

DEBUG_ACTIONS = frozenset({"debug", "ansible.builtin.debug", "ansible.legacy.debug"})


class CallbackModule(CallbackBase):  # type: ignore[misc]
    """Compact stdout for fleet playbooks."""

    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "stdout"
    CALLBACK_NAME = "edgeml.fleet.compact"

    def __init__(self) -> None:
        super().__init__()
        self._task_name = ""
        self._shown_task = False
        self._changed: list[str] = []

    # ------------------------------------------------------------------ helpers --------------------
    def _flush(self) -> None:
        if self._changed:
            hosts = sorted(set(self._changed))
            self._header()
            self._display.display(f"    changed ({len(hosts)}): {', '.join(hosts)}", color=C.COLOR_CHANGED)
        self._changed = []

    def _header(self) -> None:
        if not self._shown_task:
            self._display.display(f"  {self._task_name}")
            self._shown_task = True

    def _start(self, task: Any, prefix: str = "") -> None:
        self._flush()
        self._task_name = prefix + task.get_name().strip()
        self._shown_task = False

    @staticmethod
    def _message(res: dict[str, Any]) -> str:
        """The failure message; for a loop, every failed item's own message."""
        if isinstance(res.get("results"), list):
            msgs = [str(r.get("msg", "")).strip() for r in res["results"] if isinstance(r, dict) and r.get("failed")]
            if any(msgs):
                return "\n".join(m for m in msgs if m)
        return str(res.get("msg") or res.get("reason") or "").strip()

    def _lines(self, text: str, indent: str = "      ") -> str:
        return "\n".join(indent + line for line in text.splitlines())

    # ------------------------------------------------------------------ events ---------------------
    def v2_playbook_on_task_start(self, task: Any, is_conditional: bool) -> None:
        self._start(task)

    def v2_playbook_on_handler_task_start(self, task: Any) -> None:
        self._start(task, "handler: ")

    def v2_playbook_on_play_start(self, play: Any) -> None:
        self._flush()

    def v2_runner_on_ok(self, result: Any) -> None:
        res = result._result
        if result._task.action in DEBUG_ACTIONS and "msg" in res:
            self._flush()
            self._header()
            msg = res["msg"]
            text = "\n".join(str(m) for m in msg) if isinstance(msg, list) else str(msg)
            self._display.display(self._lines(text))
        elif res.get("changed"):
            self._changed.append(result._host.get_name())

    def v2_runner_item_on_ok(self, result: Any) -> None:
        if result._result.get("changed") and result._task.action not in DEBUG_ACTIONS:
            self._changed.append(result._host.get_name())

    def v2_runner_on_failed(self, result: Any, ignore_errors: bool = False) -> None:
        self._flush()
        self._header()
        note = " (ignored: recorded for the report)" if ignore_errors else ""
        self._display.display(f"    FAILED {result._host.get_name()}{note}:", color=C.COLOR_ERROR)
        self._display.display(self._lines(self._message(result._result)), color=C.COLOR_ERROR)

    def v2_runner_item_on_failed(self, result: Any) -> None:
        pass  # reported once per task by v2_runner_on_failed, with every failed item's message

    def v2_runner_on_unreachable(self, result: Any) -> None:
        self._flush()
        self._header()
        self._display.display(f"    UNREACHABLE {result._host.get_name()}: {self._message(result._result)}",
                              color=C.COLOR_UNREACHABLE)

    def v2_playbook_on_stats(self, stats: Any) -> None:
        self._flush()
        hosts = sorted(stats.processed.keys())
        sums = {h: stats.summarize(h) for h in hosts}

        def which(key: str) -> str:
            hs = [h for h in hosts if sums[h][key]]
            return f"{len(hs)} ({', '.join(hs)})" if hs else "0"

        self._display.display(f"  recap: {len(hosts)} hosts; changed {which('changed')}; failed {which('failures')}; "
                              f"unreachable {which('unreachable')}")

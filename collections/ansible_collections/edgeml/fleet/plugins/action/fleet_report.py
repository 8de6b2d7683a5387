"""Action plugin ``edgeml.fleet.fleet_report``: build the deploy or rollback report and write it on the controller.

Runs entirely on the controller (no module is transferred, no file module per report file). See the
documentation in ``plugins/modules/fleet_report.py``.
"""

from __future__ import annotations

import json
import os
import sqlite3
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ansible.module_utils.common.text.converters import to_text
from ansible_collections.edgeml.fleet.plugins.plugin_utils import plan_report, rollback, rollout
from ansible_collections.edgeml.fleet.plugins.plugin_utils.controller_action import ControllerAction
from ansible_collections.edgeml.fleet.plugins.plugin_utils.hostvars import results_and_twins, with_setup_platform

ARGUMENT_SPEC: dict[str, Any] = {
    "plan": {"type": "dict", "required": True},
    "halted": {"type": "dict", "default": {}},
    "gates": {"type": "list", "elements": "dict", "default": []},
    "dest": {"type": "path", "required": True},
    "kind": {"type": "str", "default": "deploy", "choices": ["deploy", "rollback", "plan"]},
    "write": {"type": "bool", "default": True},
    # kind=plan: desired_state's verified bundles (which devices' trusted keys verified which bundle)
    "verified": {"type": "list", "elements": "dict", "default": []},
    "desired_metrics": {"type": "dict", "options": {"dir": {"type": "path", "required": True},
                                                    "plan": {"type": "dict", "required": True}}},
}


def _atomic_write(path: Path, text: str) -> None:
    """Write ``text`` so that a reader sees the old or the new file, never a torn one."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class ActionModule(ControllerAction):
    """Build the report from the plan, every device's result and twin; write JSON and Markdown."""

    ARGUMENT_SPEC = ARGUMENT_SPEC
    _VALID_ARGS = frozenset(ARGUMENT_SPEC)

    def act(self, args: dict[str, Any], task_vars: dict[str, Any], result: dict[str, Any]) -> None:
        plan = args["plan"]
        results, facts = results_and_twins(plan, task_vars.get("hostvars", {}))
        if args["kind"] == "plan":
            self._plan(args, plan, with_setup_platform(plan, task_vars.get("hostvars", {}), facts), result)
            return
        report = rollout.fleet_report(plan, results, facts, args["halted"])
        if args["kind"] == "rollback":
            report = rollback.finish_report(report, plan, facts)
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        report["gates"] = list(args["gates"])
        report["generated_at"] = stamp
        report["check_mode"] = bool(self._task.check_mode)
        title = f"{args['kind'].capitalize()} {stamp}"
        files: list[str] = []
        # A --check run changes nothing, on devices or here: reports are written in normal runs only.
        if args["write"] and not self._task.check_mode:
            dest = Path(args["dest"])
            try:
                dest.mkdir(parents=True, exist_ok=True)
                as_json = json.dumps(report, indent=2, sort_keys=True, default=to_text) + "\n"
                as_md = rollout.report_markdown(report, title) + rollback.markdown_tail(report)
                from edge_runtime.audit import gates_markdown

                as_md += gates_markdown(report["gates"])
                for name, text in ((f"{args['kind']}-{stamp}.json", as_json), (f"{args['kind']}-{stamp}.md", as_md),
                                   ("latest.json", as_json), ("latest.md", as_md)):
                    _atomic_write(dest / name, text)
                    files.append(str(dest / name))
                # the fleet's history (reports/history/events.jsonl, edge_runtime.audit): one line per run
                from edge_runtime.audit import append_event, fleet_event

                summary, data = fleet_event(args["kind"], report, plan)
                append_event(dest, args["kind"], f"{args['kind']} {stamp}", summary, data, files[:2])
                # ... and its queryable index (history/history.db, edge_runtime.history), which the health dashboard
                # reads for the last deploy's gate decisions; a problem there is a warning, the journal has the event
                from edge_runtime.history import HistoryError, sync_events

                try:
                    sync_events(dest)
                except (HistoryError, sqlite3.Error) as exc:
                    result.setdefault("warnings", []).append(f"history index not updated: {exc}")
            except OSError as exc:
                msg = f"cannot write the report into {dest}: {exc} (hint: set edge_reports_dir to a writable directory)"
                result.update(failed=True, msg=msg)
                return
            if args.get("desired_metrics"):
                # the pins of models.yaml for Prometheus (edge_desired_model_info; the out-of-sync rule), from
                # the whole plan, not this run's --limit: edge_runtime.metrics renders it, the one owner
                from edge_runtime.metrics import DESIRED_FILE, render_desired, write_textfile

                where = Path(args["desired_metrics"]["dir"])
                try:
                    text = render_desired(args["desired_metrics"]["plan"].get("hosts") or {})
                    files.append(str(write_textfile(where, DESIRED_FILE, text)))
                except OSError as exc:
                    result.update(failed=True, msg=f"cannot write {DESIRED_FILE} into {where}: {exc} (hint: set "
                                  "edge_metrics_controller_textfile_dir to node_exporter's textfile directory)")
                    return
        # Writing the report is not a change of the fleet: a no-op deploy shows changed=0 everywhere.
        result.update(report=report, files=files, summary="\n".join(rollback.summary_lines(report, args["kind"])))

    def _plan(self, args: dict[str, Any], plan: dict[str, Any], facts: dict[str, Any], result: dict[str, Any]) -> None:
        """kind=plan: the pull-request plan of a check-mode deploy, written as plan.json and plan.md in ``dest``.

        Only in check mode (a plan of a real run would describe what already happened). Writing these two files
        is the point of ``make plan``: they are the run's output on the controller, not a change of the fleet.
        """
        if not self._task.check_mode:
            result.update(failed=True, msg="fleet_report kind=plan describes a check-mode run; run with --check")
            return
        report = plan_report.plan_report(plan, facts, frozenset(facts), args["verified"])
        dest = Path(args["dest"])
        files: list[str] = []
        if args["write"]:
            try:
                dest.mkdir(parents=True, exist_ok=True)
                for name, text in (("plan.json", json.dumps(report, indent=2, sort_keys=True, default=to_text) + "\n"),
                                   ("plan.md", plan_report.plan_markdown(report))):
                    _atomic_write(dest / name, text)
                    files.append(str(dest / name))
            except OSError as exc:
                result.update(failed=True, msg=f"cannot write the plan into {dest}: {exc} "
                              "(hint: set edge_reports_dir to a writable directory)")
                return
        t = report["totals"]
        summary = (f"plan: {t['install']} install, {t['noop']} at the pin, {t['refuse']} refused, "
                   f"{t['unknown']} unknown; {t['bytes']} bytes to move; gates not evaluated"
                   + (f"; written to {', '.join(files)}" if files else ""))
        result.update(report=report, files=files, summary=summary)

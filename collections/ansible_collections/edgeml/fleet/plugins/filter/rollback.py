# Copyright (c) edgeml maintainers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Filters of ``playbooks/rollback.yml``; the logic lives in ``plugin_utils/rollback.py``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ansible_collections.edgeml.fleet.plugins.plugin_utils import rollback


def edge_rollback_plan(plan: Mapping[str, Any], groups: Mapping[str, Any], pattern: Any, limit: Any = None,
                       models: Any = None, to: Any = None, run_id: Any = None, why: Any = None) -> Any:
    """``{{ plan | edgeml.fleet.edge_rollback_plan(groups, targets, ansible_limit, models, to, run_id, why) }}``."""
    return rollback.rollback_request(
        plan, {str(g): [str(h) for h in hs] for g, hs in groups.items()}, str(pattern),
        None if limit is None else str(limit), [str(m) for m in models or []],
        None if to is None else str(to), None if run_id is None else str(run_id), None if why is None else str(why))


def edge_rollback_result(registered: Mapping[str, Any], entry: Mapping[str, Any], check_mode: bool = False) -> Any:
    """``{{ __edge_rollback | edgeml.fleet.edge_rollback_result(plan_entry, ansible_check_mode) }}``."""
    return rollback.rollback_result(registered, entry, bool(check_mode))


class FilterModule:
    """Rollback filters of edgeml.fleet."""

    def filters(self) -> dict[str, Any]:
        return {"edge_rollback_plan": edge_rollback_plan, "edge_rollback_result": edge_rollback_result}

# Copyright (c) edgeml maintainers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Filters of ``playbooks/rollback.yml``; the logic lives in ``plugin_utils/rollback.py``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ansible_collections.edgeml.fleet.plugins.plugin_utils import rollback


def edge_rollback_plan(plan: Mapping[str, Any], targets: Any, models: Any = None, to: Any = None,
                       run_id: Any = None) -> Any:
    """``{{ plan | edgeml.fleet.edge_rollback_plan(query('inventory_hostnames', pattern), models, to, run_id) }}``."""
    return rollback.rollback_plan(plan, [str(h) for h in targets or []], [str(m) for m in models or []],
                                  None if to is None else str(to), None if run_id is None else str(run_id))


def edge_rollback_result(registered: Mapping[str, Any], entry: Mapping[str, Any], check_mode: bool = False) -> Any:
    """``{{ __edge_rollback | edgeml.fleet.edge_rollback_result(plan_entry, ansible_check_mode) }}``."""
    return rollback.rollback_result(registered, entry, bool(check_mode))


class FilterModule:
    """Rollback filters of edgeml.fleet."""

    def filters(self) -> dict[str, Any]:
        return {"edge_rollback_plan": edge_rollback_plan, "edge_rollback_result": edge_rollback_result}

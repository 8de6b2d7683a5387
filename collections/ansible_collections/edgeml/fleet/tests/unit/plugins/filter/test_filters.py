# Copyright (c) edgeml maintainers
# SPDX-License-Identifier: Apache-2.0
"""The filter plugins load without the edge_runtime package and pass the plan through (ansible-test units)."""

from __future__ import annotations

import sys

from ansible_collections.edgeml.fleet.plugins.filter import rollback, rollout


def test_filters_load_without_the_runtime_package():
    # ansible-test units runs without the edge_runtime package: the imports above succeeding is the test;
    # under the repository's venv (where it is installed) loading the filters must still not import it.
    assert "edge_runtime.decision" not in sys.modules or "tests" in sys.modules
    names = set(rollout.FilterModule().filters()) | set(rollback.FilterModule().filters())
    assert {"edge_wave_gate", "edge_plan_subset", "edge_converge_waves", "edge_rollback_plan"} <= names


def test_plan_subset_keeps_waves_and_lists_the_excluded():
    plan = {
        "hosts": {"a1": {"wave": 1}, "a2": {"wave": 2}, "a3": {"wave": 2}},
        "groups": {"line_a": {"waves": [["a1"], ["a2", "a3"]]}},
    }
    sub = rollout.edge_plan_subset(plan, ["a3"])
    assert sub["excluded"] == ["a1", "a2"]
    assert list(sub["hosts"]) == ["a3"]
    assert sub["groups"]["line_a"]["waves"] == [[], ["a3"]]  # a3 stays in wave 2: never renumbered

# Copyright (c) edgeml maintainers
# SPDX-License-Identifier: Apache-2.0
"""Wave membership: cumulative targets, exact percentage rounding, deterministic order (ansible-test units)."""

from __future__ import annotations

import pytest

from ansible_collections.edgeml.fleet.plugins.plugin_utils.waves import parse_wave, resolve_waves, wave_order

HOSTS = [f"d{i}" for i in range(10)]


def test_cumulative_targets_and_a_final_wave():
    assert resolve_waves([1, "50%"], HOSTS) == [HOSTS[:1], HOSTS[1:5], HOSTS[5:]]


@pytest.mark.parametrize(("percent", "size"), [("10%", 1), ("11%", 2), ("100%", 10), ("1%", 1)])
def test_percentages_round_up_in_integers(percent, size):
    assert len(resolve_waves([percent], HOSTS)[0]) == size


@pytest.mark.parametrize("bad", [0, -1, True, "0%", "101%", "05%", "ten", 1.5, None])
def test_bad_wave_items_are_refused(bad):
    with pytest.raises(ValueError):
        parse_wave(bad)


def test_order_ignores_inventory_order_and_changes_with_the_pins():
    a = wave_order("line_a", {"m": "1.0.0"}, HOSTS)
    assert a == wave_order("line_a", {"m": "1.0.0"}, list(reversed(HOSTS)))
    assert sorted(a) == sorted(HOSTS)
    assert a != wave_order("line_a", {"m": "1.1.0"}, HOSTS)

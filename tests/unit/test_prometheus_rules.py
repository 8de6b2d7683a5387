"""The alert rules (prometheus/rules/edge.rules.yml) with Debian's promtool: `check rules` and the rule unit tests
(prometheus/tests/*.test.yml: each alert fires one step beyond its threshold and not at it, and only once its
`for:` has passed). Without promtool (Debian package prometheus; `make system-deps` installs it as root) they
skip, saying so.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "prometheus" / "rules" / "edge.rules.yml"
TESTS = sorted((REPO / "prometheus" / "tests").glob("*.test.yml"))
PROMTOOL = shutil.which("promtool")

pytestmark = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool missing: install Debian's prometheus package (`make system-deps` as root)"
)

#: the alerts the issue asks for, and which of them the alert receiver may act on
ALERTS = {"EdgeModelLowConfidence": "rollback", "EdgeModelErrorRateHigh": "rollback",
          "EdgeModelWrongRateHigh": "rollback", "EdgeModelDataDrift": "report", "EdgeDeviceOutOfSync": "report",
          "EdgeDeviceStale": "report"}


def promtool(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run([PROMTOOL, *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False)


def test_rules_pass_promtool_check() -> None:
    p = promtool("check", "rules", str(RULES))
    assert p.returncode == 0, p.stdout + p.stderr
    assert f"SUCCESS: {len(ALERTS)} rules found" in p.stdout


def test_every_alert_is_unit_tested_at_its_boundary() -> None:
    assert TESTS
    p = promtool("test", "rules", *[t.name for t in TESTS], cwd=TESTS[0].parent)
    assert p.returncode == 0, p.stdout + p.stderr
    assert p.stdout.count("SUCCESS") == len(TESTS), p.stdout
    tested = {t["alertname"] for f in TESTS for case in yaml.safe_load(f.read_text())["tests"]
              for t in case.get("alert_rule_test", []) if t.get("exp_alerts")}
    assert tested == set(ALERTS)


def test_alert_names_and_actions_are_the_ones_the_receiver_knows() -> None:
    from scripts.alert_receiver import ALERT_ACTIONS

    rules = {r["alert"]: r["labels"]["action"] for g in yaml.safe_load(RULES.read_text())["groups"]
             for r in g["rules"]}
    assert rules == ALERTS == ALERT_ACTIONS


def test_a_rule_that_compares_at_the_threshold_fails_the_unit_tests(tmp_path: Path) -> None:
    """The unit tests can fail: the confidence rule with <= instead of < is caught."""
    (tmp_path / "rules").mkdir()
    (tmp_path / "tests").mkdir()
    text = RULES.read_text()
    assert "\n          < on(device, model, version) edge_model_confidence_threshold_ratio" in text
    (tmp_path / "rules" / RULES.name).write_text(text.replace(
        "\n          < on(device, model, version) edge_model_confidence_threshold_ratio",
        "\n          <= on(device, model, version) edge_model_confidence_threshold_ratio"))
    for t in TESTS:
        shutil.copy(t, tmp_path / "tests" / t.name)
    p = promtool("test", "rules", *[t.name for t in TESTS], cwd=tmp_path / "tests")
    assert p.returncode != 0
    assert 'device="at"' in p.stdout + p.stderr


def test_the_example_configs_pass_promtool_and_amtool() -> None:
    p = promtool("check", "config", str(REPO / "prometheus" / "prometheus.example.yml"))
    assert p.returncode == 0, p.stdout + p.stderr
    amtool = shutil.which("amtool")
    if amtool is None:
        pytest.skip("amtool missing: install Debian's prometheus-alertmanager (`make system-deps` as root)")
    a = subprocess.run([amtool, "check-config", str(REPO / "prometheus" / "alertmanager.example.yml")],
                       capture_output=True, text=True, timeout=60, check=False)
    assert a.returncode == 0, a.stdout + a.stderr
    # rollback alerts reach the receiver and people; report alerts reach people only
    for alertname, action, receivers in (("EdgeModelLowConfidence", "rollback", "edge-rollback,people"),
                                         ("EdgeDeviceStale", "report", "people")):
        routes = subprocess.run(
            [amtool, "config", "routes", "test", "--config.file",
             str(REPO / "prometheus" / "alertmanager.example.yml"), f"alertname={alertname}", f"action={action}"],
            capture_output=True, text=True, timeout=60, check=False)
        assert routes.stdout.split() == [receivers], routes.stdout + routes.stderr

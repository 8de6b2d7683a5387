"""plan_report: every check's verdict comes from its owner, at each threshold and one step beyond."""

from __future__ import annotations

import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "collections"))

from ansible_collections.edgeml.fleet.plugins.plugin_utils.plan_report import plan_markdown, plan_report

EXPIRES = datetime(2030, 1, 1, tzinfo=timezone.utc)
SOURCE = "/reg/m/1.1.0.edgebundle"


def plan(counter: int = 2, allow_quarantined: bool = False) -> dict[str, Any]:
    pin = {"version": "1.1.0", "digest": "sha256:" + "b" * 64, "release_counter": counter, "size": 1000,
           "source": SOURCE}
    return {"hosts": {"d1": {"rollout_group": "g", "wave": 1, "models": {"m": pin},
                             "allow_quarantined": allow_quarantined}},
            "groups": {"g": {"policy": {"waves": [1]}}}, "run_hosts": ["d1"]}


VERIFIED = [{"source": SOURCE, "devices": ["d1"], "keys": 2, "threshold": 2, "files": 4,
             "expires": EXPIRES.isoformat(), "architectures": ["aarch64"]}]


def twin(**model: Any) -> dict[str, Any]:
    base = {"active_version": "1.0.0", "digest": "sha256:" + "a" * 64, "release_counter": 1, "highest_counter": 1,
            "kept_digests": {"1.0.0": "sha256:" + "a" * 64}, "state": "committed", "bad_versions": [],
            "corrupt_versions": [], "pending_version": None, "check_passed": True}
    base.update(model)
    return {"d1": {"models": {"m": base}}}


def row(report: dict[str, Any]) -> dict[str, Any]:
    (r,) = report["rows"]
    return r


def test_an_upgrade_moves_the_bundle_and_every_check_passes_or_is_not_evaluated() -> None:
    r = row(plan_report(plan(), twin(), {"d1"}, VERIFIED, now=EXPIRES - timedelta(days=1)))
    assert (r["from"], r["to"], r["action"], r["bytes"]) == ("1.0.0", "1.1.0", "install", 1000)
    assert r["checks"]["signature_digest"]["result"] == "passed"
    assert "threshold 2" in r["checks"]["signature_digest"]["detail"]
    assert r["checks"]["gate"]["result"] == "not evaluated"
    assert r["checks"]["compatibility"]["result"] == "not evaluated"


def test_expiry_at_the_instant_fails_one_step_before_passes() -> None:
    at = row(plan_report(plan(), twin(), {"d1"}, VERIFIED, now=EXPIRES))
    assert at["checks"]["expiry"]["result"] == "failed"
    assert (at["action"], at["code"], at["bytes"]) == ("refuse", "expired", 0)
    before = row(plan_report(plan(), twin(), {"d1"}, VERIFIED, now=EXPIRES - timedelta(microseconds=1)))
    assert before["checks"]["expiry"]["result"] == "passed"
    assert before["action"] == "install"


def test_downgrade_and_quarantine_are_the_install_decisions_refusals() -> None:
    now = EXPIRES - timedelta(days=1)
    down = row(plan_report(plan(counter=1), twin(highest_counter=2), {"d1"}, VERIFIED, now=now))
    assert down["checks"]["downgrade"]["result"] == "failed"
    assert down["action"] == "refuse"
    assert down["bytes"] == 0
    same = row(plan_report(plan(counter=2), twin(highest_counter=2), {"d1"}, VERIFIED, now=now))
    assert same["checks"]["downgrade"]["result"] == "passed"
    q = row(plan_report(plan(), twin(bad_versions=["1.1.0"]), {"d1"}, VERIFIED, now=now))
    assert q["checks"]["quarantined"]["result"] == "failed"
    allowed = row(plan_report(plan(allow_quarantined=True), twin(bad_versions=["1.1.0"]), {"d1"}, VERIFIED, now=now))
    assert allowed["checks"]["quarantined"]["result"] == "passed"


def test_a_device_that_did_not_answer_is_unknown_never_in_sync() -> None:
    report = plan_report(plan(), twin(active_version="1.1.0"), set(), VERIFIED, now=EXPIRES - timedelta(days=1))
    r = row(report)
    assert (r["action"], r["code"]) == ("unknown", "unreachable")
    assert r["checks"]["downgrade"]["result"] == "not evaluated"
    assert report["blocked"] == [r]
    assert "Would not converge" in plan_markdown(report)


def test_a_bundle_not_verified_in_this_run_is_not_evaluated() -> None:
    r = row(plan_report(plan(), twin(), {"d1"}, [], now=EXPIRES - timedelta(days=1)))
    assert r["checks"]["signature_digest"]["result"] == "not evaluated"
    assert r["checks"]["expiry"]["result"] == "not evaluated"

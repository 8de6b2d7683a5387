"""The install decision (edge_runtime.decision): every rule, every input form, and its three callers agree.

The runtime (``Device.install``), the module ``edgeml.fleet.edge_model`` (real run and check mode) and the
controller's in-sync comparison (``rollout.twin_in_sync`` on the twin ``collect_facts`` reports) are fed the
same persisted states; they must give the same answer, because they ask the same function.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Any

import pytest

from edge_runtime._state import ModelState, Pending
from edge_runtime.decision import Decision, ModelView, Pin, decide, healthy, model_view
from edge_runtime.errors import EdgeRuntimeError
from edge_runtime.facts import collect_facts
from tests.support.factory import MODEL, Release

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "collections"))

from ansible_collections.edgeml.fleet.plugins.plugin_utils import rollout

D1 = "sha256:" + "1" * 64
D2 = "sha256:" + "2" * 64


def state(active: str | None = "1.0.0", **kw: Any) -> ModelState:
    s = ModelState(model="m", active=active)
    s.versions = kw.pop("versions", {"1.0.0": {"digest": D1, "counter": 1}} if active else {})
    s.order = list(s.versions)
    s.highest_counter = kw.pop("highest_counter", 1 if active else -1)
    for k, v in kw.items():
        setattr(s, k, v)
    return s


def pin(version: str = "1.0.0", digest: str = D1, counter: int | None = 1, allow: bool = False) -> Pin:
    return Pin("m", version, digest, counter, allow)


# ---------------------------------------------------------------- every rule, at its edge ------------------


def test_the_pinned_version_active_with_its_digest_is_a_noop() -> None:
    d = decide(state(), pin())
    assert (d.action, d.code) == ("noop", "already_active")


def test_no_state_at_all_installs() -> None:
    assert (decide(None, pin()).action, decide(None, pin()).code) == ("install", "not_installed")
    assert decide(state(active=None), pin()).code == "not_installed"


def test_another_active_version_installs_and_names_it() -> None:
    d = decide(state(), pin("1.1.0", D2, 2))
    assert (d.action, d.code) == ("install", "not_installed")
    assert "1.0.0 is active" in d.reason


def test_a_kept_version_is_reactivated() -> None:
    s = state(versions={"1.0.0": {"digest": D1}, "1.1.0": {"digest": D2}}, highest_counter=2)
    assert decide(s, pin("1.1.0", D2, 2)).code == "kept_version"


def test_a_pending_operation_is_never_a_noop_even_on_the_pinned_version() -> None:
    s = state(pending=Pending("install", "1.0.0", D1, 1, "activated", None, "t"))
    d = decide(s, pin())
    assert (d.action, d.code) == ("install", "pending")


def test_a_corrupt_state_file_is_refused_with_the_repair_hint() -> None:
    d = decide({"state": "corrupt", "error": "bad json"}, pin())
    assert (d.action, d.code) == ("refuse", "state_corrupt")
    assert d.hint is not None
    assert "repair" in d.hint


def test_another_build_of_an_active_or_kept_version_is_refused_as_immutable() -> None:
    assert decide(state(), pin(digest=D2)).code == "immutable_version"
    s = state(versions={"1.0.0": {"digest": D1}, "0.9.0": {"digest": D1}})
    assert decide(s, pin("0.9.0", D2)).code == "immutable_version"


def test_an_active_version_without_a_recorded_digest_is_refused() -> None:
    d = decide(state(versions={"1.0.0": {"counter": 1}}), pin())
    assert (d.action, d.code) == ("refuse", "state_incomplete")


def test_a_quarantined_version_is_refused_unless_allowed() -> None:
    s = state(bad={"1.1.0": {"reason": "smoke test failed", "digest": D2}})
    d = decide(s, pin("1.1.0", D2, 2))
    assert (d.action, d.code) == ("refuse", "quarantined")
    assert d.reason.startswith("quarantined:")
    assert "smoke test failed" in d.reason
    assert decide(s, pin("1.1.0", D2, 2, allow=True)).action == "install"


def test_a_quarantined_version_that_is_active_is_a_noop() -> None:
    # retried deliberately (allow_quarantined) and committed: it runs, nothing to do
    s = state(bad={"1.0.0": {"reason": "x"}})
    assert decide(s, pin()).action == "noop"


def test_a_release_counter_below_the_highest_is_refused_only_when_not_kept() -> None:
    s = state(highest_counter=5)
    assert decide(s, pin("0.9.0", D2, 4)).code == "downgrade"
    assert decide(s, pin("0.9.0", D2, 5)).action == "install"  # at the threshold: allowed
    assert decide(s, pin("0.9.0", D2, None)).action == "install"  # unknown counter: the runtime checks it
    kept = state(versions={"1.0.0": {"digest": D1}, "0.9.0": {"digest": D2}}, highest_counter=5)
    assert decide(kept, pin("0.9.0", D2, 4)).code == "kept_version"


def test_a_corrupt_kept_copy_of_the_pinned_version_is_staged_again() -> None:
    s = state(corrupt={"1.0.0": {"reason": "changed", "digest": D1}})
    assert (decide(s, pin()).action, decide(s, pin()).code) == ("install", "corrupt_version")


def test_refusals_become_the_runtimes_errors_of_the_same_code() -> None:
    for d in (decide(state(), pin(digest=D2)), decide(state(bad={"1.1.0": {}}), pin("1.1.0", D2, 2)),
              decide(state(highest_counter=5), pin("0.9.0", D2, 4)), decide({"state": "corrupt"}, pin())):
        err = d.error()
        assert isinstance(err, EdgeRuntimeError)
        assert err.code == d.code


# ---------------------------------------------------------------- health ----------------------------------


def test_healthy_needs_a_recorded_passed_check_for_that_very_version() -> None:
    assert not healthy(state(), "1.0.0")
    checked = state(versions={"1.0.0": {"digest": D1, "check": {"passed": True}}})
    assert healthy(checked, "1.0.0")
    assert not healthy(checked, "1.1.0")
    assert not healthy(state(versions={"1.0.0": {"digest": D1, "check": {"passed": False}}}), "1.0.0")
    degraded = state(versions={"1.0.0": {"digest": D1, "check": {"passed": True}}}, degraded={"reason": "x"})
    assert not healthy(degraded, "1.0.0")


# ---------------------------------------------------------------- input forms -----------------------------


def test_facts_status_and_model_state_forms_read_the_same() -> None:
    facts_entry = {"active_version": "1.0.0", "digest": D1, "state": "committed", "bad_versions": ["1.1.0"],
                   "highest_counter": 1, "kept_digests": {"1.0.0": D1}, "check_passed": True}
    status_entry = {"active": "1.0.0", "digest": D1, "state": "committed", "bad": {"1.1.0": {"reason": ""}},
                    "pending": None}
    s = state(bad={"1.1.0": {"reason": ""}}, versions={"1.0.0": {"digest": D1, "check": {"passed": True}}})
    for p in (pin(), pin("1.1.0", D2, 2), pin(digest=D2)):
        assert decide(facts_entry, p) == decide(s, p) == decide(status_entry, p), p
    assert model_view(facts_entry).checked == model_view(s).checked == frozenset({"1.0.0"})
    assert isinstance(decide(ModelView(), pin()), Decision)
    with pytest.raises(TypeError):
        model_view(42)


# ---------------------------------------------------------------- the three callers agree ------------------


def _module(args: dict[str, Any], check: bool = False) -> dict[str, Any]:
    """Run the real edgeml.fleet.edge_model module as Ansible runs it on a device, and return its result."""
    from tests.support import device_modules

    return device_modules.run("edge_model", args, check=check)


def _runtime_action(device: Any, bundle: Path, allow: bool = False) -> str:
    """What Device.install did: noop (unchanged), install, or refuse (a policy/state error)."""
    try:
        res = device.install(str(bundle), allow_quarantined=allow)
    except EdgeRuntimeError:
        return "refuse"
    return "noop" if res.result == "unchanged" else "install"


def _module_action(root: Path, p: Pin, bundle: Path, check: bool) -> str:
    res = _module({"root": str(root), "name": p.name, "version": p.version, "digest": p.digest,
                   "source": str(bundle), "release_counter": p.release_counter,
                   "allow_quarantined": p.allow_quarantined}, check)
    if res.get("failed"):
        return "refuse"
    return "install" if res.get("changed") else "noop"


@pytest.mark.parametrize("case", ["active", "other_version", "quarantined", "pending_same", "kept"])
def test_runtime_module_and_controller_agree_on_the_same_state(case: str, release: Release, tmp_path: Path) -> None:
    from edge_runtime.bundle import read_envelope
    from edge_runtime.manifest import Manifest

    def pin_of(version: str) -> Pin:
        m = Manifest.from_signed(read_envelope(release.bundle(version)).signed)
        return Pin(MODEL, version, m.digest, m.release_counter)

    dev = release.device(tmp_path / "dev")
    assert dev.install(str(release.bundle("1.0.0"))).result == "installed"
    want = pin_of("1.0.0")
    if case == "other_version":
        want = pin_of("1.1.0")
    elif case == "kept":
        assert dev.install(str(release.bundle("1.1.0"))).result == "installed"
    elif case == "quarantined":
        want = pin_of("1.1.0")
        st = dev.store.load(MODEL)
        st.bad["1.1.0"] = {"digest": want.digest, "reason": "smoke test failed", "at": "t"}
        dev.store.save(st)
    elif case == "pending_same":
        st = dev.store.load(MODEL)
        st.pending = Pending("install", "1.0.0", want.digest, want.release_counter, "activated", None, "t")
        dev.store.save(st)
    state_before = dev.store.load(MODEL)
    expected = decide(state_before, want).action

    # the controller: the twin of this very state, as the device reports it
    entry = {"models": {MODEL: {"version": want.version, "digest": want.digest,
                                "release_counter": want.release_counter}}}
    twin = collect_facts(dev)
    assert (decide(twin["models"][MODEL], rollout.plan_pin(MODEL, entry["models"][MODEL], entry)).action
            == expected)
    assert rollout.twin_in_sync(entry, twin) is (expected == "noop" and healthy(twin["models"][MODEL], want.version))

    # the module, in check mode (reads only) and for real on a copy of the device
    bundle = release.bundle(want.version)
    assert _module_action(dev.root, want, bundle, check=True) == expected
    copy = tmp_path / "copy"
    shutil.copytree(dev.root, copy, symlinks=True)
    assert _module_action(copy, want, bundle, check=False) == expected or (
        case == "pending_same" and expected == "install")  # recovery completes the pending install first

    # the runtime itself, on another copy
    copy2 = tmp_path / "copy2"
    shutil.copytree(dev.root, copy2, symlinks=True)
    from edge_runtime.device import Device

    runtime = _runtime_action(Device(copy2), bundle)
    if case == "pending_same":
        assert runtime == "noop"  # the runtime recovers the interrupted install first, then decides: no-op
    else:
        assert runtime == expected


@pytest.mark.parametrize(("field", "value"), [
    ("corrupt_versions", 7), ("corrupt_versions", [1]), ("state", {"x": 1}), ("state", ["committed"]),
    ("active_version", ["1.0.0"]), ("bad_versions", 5), ("kept_digests", "x"), ("kept_digests", {"1.0.0": [D1]}),
    ("pending_version", 3), ("digest", 1),
])
def test_a_malformed_facts_entry_is_refused_as_corrupt_never_a_crash_or_healthy(field: str, value: Any) -> None:
    """The controller reads devices' facts (twin_in_sync, the plan, health): a field of the wrong type must not
    raise (one device would stop the run for every device) nor read as in sync."""
    entry = {"active_version": "1.0.0", "digest": D1, "kept_digests": {"1.0.0": D1}, "state": "committed",
             "bad_versions": [], "corrupt_versions": [], "check_passed": True, field: value}
    pin = Pin("m", "1.0.0", D1, 1)
    d = decide(entry, pin)
    assert (d.action, d.code) == ("refuse", "state_corrupt")
    assert field in d.reason
    assert not healthy(entry, "1.0.0")
    good = {**entry, field: {"corrupt_versions": [], "state": "committed", "active_version": "1.0.0",
                             "bad_versions": [], "kept_digests": {"1.0.0": D1}, "pending_version": None,
                             "digest": D1}[field]}
    assert decide(good, pin).action == "noop"

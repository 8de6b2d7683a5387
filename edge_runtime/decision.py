"""The install decision: what a device must do about one pinned model version, from its persisted state.

One pure function, :func:`decide`, owns the question "is this device already at the pin, must it
install, or must it refuse?". Three callers ask it and therefore cannot disagree:

* the runtime itself (``Device._install_file``), with the state file it holds under its lock;
* the Ansible module ``edgeml.fleet.edge_model`` (a real run and ``--check``), with the same state file;
* the controller's in-sync comparison (``plugin_utils/rollout.py`` ``twin_in_sync``), with the device twin
  the device reported in this run (``edge_runtime.facts.collect_facts``: the same state, as JSON).

The state may be given as a :class:`~edge_runtime._state.ModelState`, as one model entry of the facts
(``collect_facts(...)["models"][name]``) or of ``Device.status()["models"][name]``, or ``None`` (the
device has no state for the model). Every form is read into one :class:`ModelView` first.

Rules, in order (the first that applies decides):

1. the state file could not be read (``corrupt``)                       → refuse ``state_corrupt``
2. an operation was interrupted (``pending``)                           → install ``pending`` (the
   runtime recovers it first, then decides again with the recovered state)
3. the pinned version is on the device with another manifest digest     → refuse ``immutable_version``
4. the pinned version's kept files were found corrupt                   → install ``corrupt_version``
   (the runtime stages it afresh from the verified bundle)
5. the pinned version is active and committed                           → noop ``already_active``
   (its recorded digest unknown: refuse ``state_incomplete``; nothing can vouch for it)
6. the pinned version is quarantined and ``allow_quarantined`` is false → refuse ``quarantined``
7. the pin's release counter is below the highest installed one and the version is not kept
                                                                         → refuse ``downgrade``
8. the pinned version is kept (committed before)                         → install ``kept_version``
9. otherwise                                                             → install ``not_installed``

"noop" is about installing only. Whether the device is *healthy* at the pin is a second question,
:func:`healthy`: the version is active, committed, not degraded, and the runtime recorded a passed
post-install health check (``Device.check``) for it. The controller counts an in-sync device as
healthy only then; otherwise it converges it, the module answers noop and the health check runs.

This module imports nothing from the rest of the runtime (stdlib only), so the controller can use it
without the device-side dependencies.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = ["Decision", "ModelView", "Pin", "decide", "entry_problem", "healthy", "model_view"]

Action = Literal["noop", "install", "refuse"]

#: the state labels of facts/status with no operation in flight (``ModelState.health``); a model without a
#: label (an old twin) is read from its fields
SETTLED = frozenset({"committed", "none", "degraded", None})


@dataclass(frozen=True)
class Pin:
    """What the fleet wants for one model on one device."""

    name: str
    version: str
    digest: str
    #: the release counter of the pinned manifest, when known (the plan knows it from the registry)
    release_counter: int | None = None
    allow_quarantined: bool = False


@dataclass(frozen=True)
class Decision:
    action: Action
    #: machine-readable: already_active, pending, kept_version, not_installed, state_corrupt,
    #: state_incomplete, immutable_version, quarantined, downgrade
    code: str
    #: for a person: what was found
    reason: str
    #: for a refusal: the fix
    hint: str | None = None

    def to_dict(self) -> dict[str, str | None]:
        return {"action": self.action, "code": self.code, "reason": self.reason, "hint": self.hint}

    def message(self) -> str:
        """The reason and, when there is one, the fix: one line for a person."""
        return f"{self.reason} (hint: {self.hint})" if self.hint else self.reason

    def error(self) -> Exception:
        """A refusal as the runtime's error of the same code (``QuarantinedError`` ...), to raise."""
        from . import errors

        cls: type[errors.EdgeRuntimeError] = {
            "state_corrupt": errors.StateCorruptError,
            "state_incomplete": errors.StateError,
            "immutable_version": errors.ImmutableVersionError,
            "quarantined": errors.QuarantinedError,
            "downgrade": errors.DowngradeError,
        }.get(self.code, errors.PolicyError)
        return cls(self.reason, hint=self.hint)


@dataclass(frozen=True)
class ModelView:
    """The facts of one model's persisted state that the decision reads, whatever form they came in."""

    active: str | None = None
    #: the version of an interrupted operation, or "?" when the form does not name it
    pending: str | None = None
    #: committed versions kept on the device → manifest digest (None when the form does not say)
    digests: Mapping[str, str | None] = field(default_factory=dict)
    highest_counter: int | None = None
    #: quarantined versions → why (empty string when the form does not say)
    quarantined: Mapping[str, str] = field(default_factory=dict)
    #: why the state file could not be read, when it could not
    corrupt: str | None = None
    #: kept versions whose files a verification found changed on disk
    corrupt_versions: frozenset[str] = frozenset()
    #: the runtime could not reach the state an operation intended (see ``ModelState.degraded``)
    degraded: bool = False
    #: versions with a recorded, passed post-install health check
    checked: frozenset[str] = frozenset()


def _str_or_none(value: Any) -> str | None:
    return None if value is None else str(value)


def _int_or_none(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return value


def _from_model_state(state: Any) -> ModelView:
    pending = state.pending
    return ModelView(
        active=state.active,
        pending=str(pending.version) if pending is not None else None,
        digests={str(v): _str_or_none((info or {}).get("digest")) for v, info in state.versions.items()},
        highest_counter=_int_or_none(state.highest_counter),
        quarantined={str(v): str((info or {}).get("reason") or "") for v, info in state.bad.items()},
        corrupt_versions=frozenset(str(v) for v in (getattr(state, "corrupt", None) or {})),
        degraded=bool(getattr(state, "degraded", None)),
        checked=frozenset(str(v) for v, info in state.versions.items() if _passed_check(info)),
    )


def _passed_check(info: Any) -> bool:
    check = (info or {}).get("check") if isinstance(info, Mapping) else None
    return isinstance(check, Mapping) and check.get("passed") is True


def _is_str_list(x: Any) -> bool:
    return isinstance(x, list) and all(isinstance(v, str) for v in x)


def entry_problem(entry: Mapping[str, Any]) -> str | None:
    """What is malformed in a facts/status model entry, or None. The facts come from a device, and a device is
    hostile input: a field the decision reads with the wrong type must neither crash the controller (one device
    would stop the deploy, plan or health report of every device) nor be misread."""
    for k in ("active_version", "active", "state", "digest", "error"):
        if entry.get(k) is not None and not isinstance(entry.get(k), str):
            return f"{k} is not a string"
    if entry.get("corrupt_versions") is not None and not _is_str_list(entry["corrupt_versions"]):
        return "corrupt_versions is not a list of versions"
    for k in ("bad_versions", "bad"):
        if entry.get(k) is not None and not _is_str_list(entry[k]) and not isinstance(entry[k], Mapping):
            return f"{k} is not a list of versions"
    kept = entry.get("kept_digests")
    if kept is not None and not (isinstance(kept, Mapping) and all(d is None or isinstance(d, str)
                                                                   for d in kept.values())):
        return "kept_digests is not an object of digests"
    for k in ("pending_version", "pending"):
        if entry.get(k) is not None and not isinstance(entry[k], (str, Mapping)):
            return f"{k} is not a version"
    return None


def _from_report(entry: Mapping[str, Any]) -> ModelView:
    """A model entry of the facts (``active_version`` ...) or of ``Device.status()`` (``active`` ...); a malformed
    one reads as a corrupt state (refused, never healthy)."""
    problem = entry_problem(entry)
    if problem:
        return ModelView(corrupt=f"the device reported a malformed model entry: {problem}")
    if entry.get("state") == "corrupt":
        return ModelView(corrupt=str(entry.get("error") or "the state file could not be read"))
    active = _str_or_none(entry.get("active_version", entry.get("active")))
    pending: str | None = None
    label = entry.get("state")
    # any state but a settled one (pending, busy, recovery pending, or a label this code does not know) is an
    # operation in flight: never a no-op
    if entry.get("pending_version") or entry.get("pending") or label not in SETTLED:
        raw = entry.get("pending_version") or entry.get("pending") or {}
        pending = str(raw.get("version") or "?") if isinstance(raw, Mapping) else str(raw or "?")
    digests: dict[str, str | None] = {}
    kept = entry.get("kept_digests")
    if isinstance(kept, Mapping):
        digests.update({str(v): _str_or_none(d) for v, d in kept.items()})
    if active is not None:
        digests[active] = _str_or_none(entry.get("digest"))
    bad = entry.get("bad_versions", entry.get("bad")) or {}
    if isinstance(bad, Mapping):
        quarantined = {str(v): str(b.get("reason") or "") if isinstance(b, Mapping) else "" for v, b in bad.items()}
    else:
        quarantined = {str(v): "" for v in bad}
    return ModelView(
        active=active,
        pending=pending,
        digests=digests,
        highest_counter=_int_or_none(entry.get("highest_counter")),
        quarantined=quarantined,
        corrupt_versions=frozenset(str(v) for v in (entry.get("corrupt_versions") or ())),
        degraded=entry.get("state") == "degraded",
        checked=frozenset([active]) if active is not None and entry.get("check_passed") is True else frozenset(),
    )


def model_view(state: Any) -> ModelView:
    """Read a ``ModelState``, a facts/status model entry or ``None`` into a :class:`ModelView`."""
    if state is None:
        return ModelView()
    if isinstance(state, ModelView):
        return state
    if isinstance(state, Mapping):
        return _from_report(state)
    if hasattr(state, "versions") and hasattr(state, "bad"):
        return _from_model_state(state)
    raise TypeError(f"cannot read model state from {type(state).__name__}")


def decide(state: Any, pin: Pin) -> Decision:
    """What the device must do about ``pin`` given its persisted state (see the module docstring)."""
    view = model_view(state)
    name, version = pin.name, pin.version
    if view.corrupt is not None:
        return Decision(
            "refuse",
            "state_corrupt",
            f"the state file of {name} is corrupt ({view.corrupt}); nothing was changed",
            f"inspect it, then run `edge-runtime repair {name}` on the device",
        )
    if view.pending is not None:
        return Decision(
            "install",
            "pending",
            f"an interrupted operation on {name} {view.pending} is pending; the runtime recovers it first",
        )
    recorded = view.digests.get(version)
    if version in view.digests and recorded is not None and recorded != pin.digest:
        return Decision(
            "refuse",
            "immutable_version",
            f"{name} {version} is on this device with manifest digest {recorded}, but {pin.digest} is pinned; "
            "a version is immutable",
            "publish the new build as a new version",
        )
    if version in view.corrupt_versions:
        return Decision(
            "install",
            "corrupt_version",
            f"the kept files of {name} {version} no longer verify; it is staged again from the verified bundle",
        )
    if view.active == version:
        if recorded is None:
            return Decision(
                "refuse",
                "state_incomplete",
                f"{name} {version} is active but its state records no manifest digest, so nothing vouches for it",
                f"run `edge-runtime repair {name}` on the device",
            )
        return Decision(
            "noop", "already_active", f"{name} {version} is already active, committed, with the pinned digest"
        )
    if version in view.quarantined and not pin.allow_quarantined:
        why = view.quarantined[version]
        return Decision(
            "refuse",
            "quarantined",
            f"quarantined: {name} {version} was rolled back on this device before" + (f": {why}" if why else ""),
            "publish a fixed version, or retry deliberately with allow_quarantined",
        )
    if (
        pin.release_counter is not None
        and view.highest_counter is not None
        and pin.release_counter < view.highest_counter
        and version not in view.digests
    ):
        return Decision(
            "refuse",
            "downgrade",
            f"{name} {version} has release counter {pin.release_counter}, lower than {view.highest_counter} already "
            "installed on this device",
            "to go back, roll back to a version still kept on the device",
        )
    if version in view.digests:
        return Decision("install", "kept_version", f"{name} {version} is kept on this device; it is re-activated")
    current = f"{view.active} is active" if view.active else "nothing is active"
    return Decision("install", "not_installed", f"{name} {version} is not installed ({current})")


def healthy(state: Any, version: str) -> bool:
    """True when ``version`` is active, committed, not degraded, with a recorded passed health check."""
    view = model_view(state)
    return (
        view.corrupt is None
        and view.pending is None
        and not view.degraded
        and view.active == version
        and version not in view.corrupt_versions
        and version in view.checked
    )

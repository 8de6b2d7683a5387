"""The inference API applications use: the committed active version of a named model, hot-swapped.

Example (an application on the device)::

    from edge_runtime.serve import Predictor

    with Predictor("/var/lib/edge-runtime", "defect-classifier") as model:
        p = model.predict(image)                 # float32 array of the model's input shape (batch optional)
        if p.ok:
            act_on(p.label, p.confidence)        # e.g. "defect", 0.97
        else:
            log(p.error)                         # the model failed on this input; nothing else is affected
        ...
        model.feedback(p.id, "good")             # later, when the truth is known (label name or index)

**Which version runs.** The version ``state.json`` records as committed (``active``), never a version
that is only staged or being tested: during an install the ``active`` link points at the new version for
its post-activation check, but the application keeps the old one until the commit. Before a version is
loaded its directory is verified exactly as a rollback verifies it (signatures under the device's trusted
keys, the manifest digest recorded at commit, every file's SHA-256 and length, nothing extra); a version
that does not verify is never loaded -- :meth:`Predictor.predict` returns error results naming
``edge-runtime check`` until the device state changes. The cost (a few ms for the demo model) is paid
once per swap, by the first call after it.

**Hot swap.** Every call compares the ``state.json`` file's identity (inode, mtime, size: one ``stat``,
about a microsecond) with the one it loaded from; the runtime replaces that file atomically at every
transition, so an install, an operator rollback, a failed post-install check or the monitor's
self-rollback is seen by the next call, without a restart. The new interpreter is loaded under a lock
by the first call that sees the change (calls arriving meanwhile wait for it: none runs a version that is
no longer committed); calls already running finish on the old interpreter, which is freed when the last
of them returns. Each call runs entirely on one interpreter and reports that version: no call fails and
none is mixed because of a swap. One interpreter per version, calls on it serialised by its own lock.

**Models** with one input and one output tensor (the bundle format's smoke test assumes the same); float32
or quantized (int8/uint8 inputs are quantized, outputs dequantized, as the smoke test does). An invoke
cannot be interrupted in-process, so :meth:`~Predictor.predict` has no deadline of its own: a model that
hangs or crashes never gets this far, because the install's smoke test runs it in a bounded child first.

**Results.** Every failure of a call is an error result (``ok`` False, ``error`` says why, ``label`` and
``confidence`` None): an input that does not match the model, an exception in the interpreter, a NaN or
infinite output (never a confidence), no active or no verifiable version. Nothing is raised from
:meth:`~Predictor.predict`.

**Telemetry.** With telemetry enabled in the device config (the default), every call is recorded in the
device's :class:`~edge_runtime.telemetry.store.TelemetryStore`: model, version, latency, success or
error, top-1 label and confidence, and the input statistics the version's ``baseline.json`` names
(:data:`FEATURES`: ``pixel_mean``, ``pixel_std``) as histogram counts on the baseline's ``bin_edges`` plus
a bounded reservoir sample. No raw input is stored. A baseline feature this runtime cannot compute, a
feature the runtime knows that the baseline lacks, or a feature the drift statistics cannot use (checked by
:meth:`edge_runtime.drift.FeatureBaseline.from_spec`, the one parser of baseline features: bins, fractions,
sample) are a finding in the store's status (the feature is not recorded), never an error of the call.
Recording never raises and never waits for the database. Pass ``telemetry=`` a store to share one between
several predictors of a process, or False to record nothing.

**Feedback.** :meth:`Predictor.feedback` attaches the true label to one of the last ``feedback_window``
predictions of this process; it is counted (right or wrong) for the version that made the prediction, in
the minute the feedback arrives. An unknown id (never issued, already given feedback, or too old) raises
:class:`UnknownPredictionError` and is counted as a finding.
"""

from __future__ import annotations

import itertools
import os
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .drift import BaselineError, FeatureBaseline
from .errors import EdgeRuntimeError, quote_untrusted
from .features import FEATURES, input_statistics
from .smoke import _dequantize, _quantize, load_interpreter
from .telemetry.store import TelemetryStore

__all__ = ["FEATURES", "Prediction", "Predictor", "UnknownPredictionError", "input_statistics"]

#: loads tried in one call when the device state changes under them (an operation running meanwhile)
LOAD_ATTEMPTS = 3
#: baseline.json is read bounded (it is signed, but a serving process still does not trust sizes)
BASELINE_MAX_BYTES = 16 << 20
LABELS_MAX_BYTES = 1 << 20


class UnknownPredictionError(EdgeRuntimeError):
    """Feedback names a prediction this process does not know (never issued, already given, too old)."""

    code = "unknown_prediction"


@dataclass(frozen=True)
class Prediction:
    """One call of :meth:`Predictor.predict`."""

    #: pass to :meth:`Predictor.feedback` when the truth is known
    id: str
    model: str
    #: the version that ran this call (None when none could: not installed, does not verify)
    version: str | None
    #: top-1 label (``labels.txt`` of the bundle, else the class index as text); None on error
    label: str | None
    #: top-1 output value (a finite number); None on error
    confidence: float | None
    #: all outputs, dequantized, flattened; None on error
    outputs: np.ndarray | None
    #: the inference itself (input conversion, invoke, output read), in milliseconds
    latency_ms: float
    #: why the call failed; None when it succeeded
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


class _Loaded:
    """One verified, loaded version: its interpreter (calls serialised by ``lock``), labels, features."""

    def __init__(self, version: str, digest: str, interp: Any, backend: str, labels: list[str],
                 features: tuple[str, ...]) -> None:
        self.version = version
        self.digest = digest
        self.interp = interp
        self.backend = backend
        self.labels = labels
        self.features = features
        self.lock = threading.Lock()
        inp = interp.get_input_details()[0]
        out = interp.get_output_details()[0]
        self.in_detail, self.out_detail = inp, out
        self.in_index, self.out_index = inp["index"], out["index"]
        self.shape = tuple(int(d) for d in inp["shape"])
        self.float_in = inp["dtype"] == np.float32
        self.float_out = out["dtype"] == np.float32


class Predictor:
    """Runs the committed active version of ``model_name`` on the device at ``root``; see the module doc.

    ``clock`` (seconds since the epoch) dates the telemetry records (tests and the workload simulator
    inject one); latency is always measured with a monotonic clock.
    """

    def __init__(
        self,
        root: Path | str,
        model_name: str,
        *,
        clock: Callable[[], float] = time.time,
        telemetry: TelemetryStore | bool | None = None,
    ) -> None:
        from .device import Device

        self.device = Device(Path(root))
        self.model = model_name
        self.clock = clock
        self._state_path = self.device.store.path(model_name)  # refuses a name that is not a model name
        config = self.device.config  # a ConfigError (with the fix) for a root that is not initialised
        tcfg = config.telemetry_config()
        self._owns_store = False
        self.store: TelemetryStore | None
        if isinstance(telemetry, TelemetryStore):
            self.store = telemetry
        elif telemetry is False or (telemetry is None and not tcfg.enabled):
            self.store = None
        else:
            from .telemetry._status import db_path

            self.store = TelemetryStore(db_path(self.device.root), tcfg, clock=clock)
            self._owns_store = True
        self._window = tcfg.feedback_window
        self._recent: OrderedDict[str, tuple[str | None, str | None]] = OrderedDict()
        self._recent_lock = threading.Lock()
        self._ids = itertools.count(1)
        self._prefix = secrets.token_hex(4)
        self._swap_lock = threading.Lock()
        self._loaded: _Loaded | None = None
        self._sig: tuple[int, int, int] | None = None
        #: (state file identity, why) when the committed version could not be loaded
        self._failure: tuple[tuple[int, int, int] | None, str] | None = None

    # ------------------------------------------------------------------ public ----------------------

    @property
    def version(self) -> str | None:
        """The version the next call runs (loading it if the device state changed), or None."""
        loaded, _ = self._current()
        return loaded.version if loaded else None

    def predict(self, x: Any) -> Prediction:
        """Run one input through the committed active version; never raises (see :class:`Prediction`)."""
        pid = f"{self._prefix}-{next(self._ids)}"
        loaded, why = self._current()
        if loaded is None:
            self._remember(pid, None, None)
            return Prediction(pid, self.model, None, None, None, None, 0.0, why)
        t0 = time.perf_counter_ns()
        error: str | None = None
        out: np.ndarray | None = None
        xf: np.ndarray | None = None
        try:
            xf = np.asarray(x, dtype=np.float32)
            if xf.shape != loaded.shape:
                if xf.shape != loaded.shape[1:]:
                    raise _InputError(f"input has shape {list(xf.shape)}, the model takes {list(loaded.shape)}")
                xf = xf.reshape(loaded.shape)
            xq = xf if loaded.float_in else _quantize(xf, loaded.in_detail)
            with loaded.lock:
                loaded.interp.set_tensor(loaded.in_index, xq)
                loaded.interp.invoke()
                raw = loaded.interp.get_tensor(loaded.out_index)
            out = (raw.astype(np.float32) if loaded.float_out else _dequantize(raw, loaded.out_detail)).reshape(-1)
            finite = np.isfinite(out)
            if not finite.all():
                bad = int(np.count_nonzero(~finite))
                error = f"the model produced a non-finite output (NaN or infinity) in {bad} of {out.size} values"
        except _InputError as exc:
            error = str(exc)
        except (TypeError, ValueError, OverflowError) as exc:
            error = f"input is not a numeric array of the model's shape: {quote_untrusted(str(exc), 200)}"
        except Exception as exc:  # an exception in the interpreter: an error result, never a crash
            error = f"inference failed: {type(exc).__name__}: {quote_untrusted(str(exc), 300)}"
        latency_ms = (time.perf_counter_ns() - t0) / 1e6
        label: str | None = None
        conf: float | None = None
        if error is None and out is not None and out.size:
            top = int(np.argmax(out))
            conf = float(out[top])
            label = loaded.labels[top] if top < len(loaded.labels) else str(top)
        elif error is None:
            error = "the model produced no output values"
        self._remember(pid, loaded.version, label)
        if self.store is not None:
            self._record(loaded, xf, latency_ms, error is None, label, conf)
        return Prediction(pid, self.model, loaded.version, label, conf, out if error is None else None,
                          latency_ms, error)

    def _record(self, loaded: _Loaded, xf: np.ndarray | None, latency_ms: float, ok: bool, label: str | None,
                conf: float | None) -> None:
        """The recording step of a call (what bench/telemetry.py times): input statistics, then the store's
        in-memory aggregate. Never raises."""
        assert self.store is not None
        feats: dict[str, float] | None = None
        if xf is not None and loaded.features and xf.size:
            try:  # the store ignores statistics the version's baseline does not name
                feats = input_statistics(xf)
            except Exception:  # a statistic that cannot be computed is not recorded
                feats = None
        self.store.record(self.model, loaded.version, self.clock(), latency_ms, ok, label, conf, feats)

    def feedback(self, prediction_id: str, truth: str | int) -> bool:
        """Attach the true label (name, or class index) to a prediction; returns whether it was right.

        Raises :class:`UnknownPredictionError` (and counts a finding) for an id this process does not hold.
        """
        with self._recent_lock:
            entry = self._recent.pop(prediction_id, None) if isinstance(prediction_id, str) else None
        if entry is None:
            message = (f"feedback for unknown prediction {quote_untrusted(prediction_id, 40)}: never issued by this "
                       f"process, already given feedback, or older than the last {self._window} predictions")
            if self.store is not None:
                self.store.note("feedback_unknown", message)
            raise UnknownPredictionError(message, hint="send feedback once per prediction id, soon after it")
        version, label = entry
        loaded = self._loaded
        truth_label = truth
        if isinstance(truth, int) and not isinstance(truth, bool):
            labels = loaded.labels if loaded is not None and loaded.version == version else []
            truth_label = labels[truth] if 0 <= truth < len(labels) else str(truth)
        right = label is not None and str(truth_label) == label
        if self.store is not None and version is not None:
            self.store.feedback(self.model, version, self.clock(), wrong=not right)
        return right

    def close(self) -> None:
        """Commit pending telemetry (of a store this predictor opened) and drop the interpreter."""
        if self._owns_store and self.store is not None:
            self.store.close()
        self._loaded = None

    def __enter__(self) -> Predictor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ swap ------------------------

    def _remember(self, pid: str, version: str | None, label: str | None) -> None:
        if not self._window:
            return
        with self._recent_lock:
            self._recent[pid] = (version, label)
            if len(self._recent) > self._window:
                self._recent.popitem(last=False)

    def _signature(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self._state_path)
        except OSError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def _current(self) -> tuple[_Loaded | None, str]:
        """The loaded committed version (loading a new one when the state changed), or None and why."""
        sig = self._signature()
        if sig is not None and sig == self._sig:
            loaded = self._loaded
            if loaded is not None:
                return loaded, ""
        with self._swap_lock:
            if sig is not None and sig == self._sig and self._loaded is not None:
                return self._loaded, ""
            if self._failure is not None and self._failure[0] == sig:
                return None, self._failure[1]
            for _ in range(LOAD_ATTEMPTS):
                try:
                    loaded = self._load()
                except Exception as exc:  # anything that stops a load is an error result, never a crash
                    again = self._signature()
                    if again != sig:  # the state moved on while this version was read (a rollback removed
                        sig = again  # it): load what is committed now instead of failing the call
                        continue
                    if isinstance(exc, EdgeRuntimeError):
                        why = exc.message + (f" ({exc.hint})" if exc.hint else "")
                    else:
                        why = f"loading {self.model} failed: {type(exc).__name__}: {quote_untrusted(str(exc), 300)}"
                    self._failure, self._loaded, self._sig = (sig, why), None, None
                    return None, why
                self._failure = None
                self._loaded, self._sig = loaded, sig
                return loaded, ""
            why = f"the state of {self.model} kept changing while its active version was loaded; try again"
            return None, why

    def _load(self) -> _Loaded:
        """(Under ``_swap_lock``.) Read the committed state; verify and load its version unless loaded."""
        from .errors import NotInstalledError, StateError

        state = self.device.store.load(self.model)
        version = state.active
        if version is None:
            raise NotInstalledError(f"model {self.model} has no committed active version on {self.device.root}",
                                    hint=f"install it: edge-runtime install BUNDLE (model {self.model})")
        digest = str((state.versions.get(version) or {}).get("digest", ""))
        current = self._loaded
        if current is not None and (current.version, current.digest) == (version, digest):
            return current
        if version in state.corrupt:
            raise StateError(f"active version {version} of {self.model} is recorded as corrupt; not loaded",
                             hint=f"run `edge-runtime check {self.model}` to roll back to a verified version")
        vdir = self.device.version_dir(self.model, version)
        try:
            manifest = self.device._verify_dir(vdir, state, version)
        except EdgeRuntimeError as exc:
            raise type(exc)(
                f"active version {version} of {self.model} does not verify, not loaded: {exc.message}",
                hint=f"run `edge-runtime check {self.model}` to roll back to a verified version",
            ) from None
        interp, backend = load_interpreter(vdir / manifest.entrypoints["model"], manifest.backends)
        labels = self._labels(vdir, manifest.entrypoints.get("labels"))
        features: tuple[str, ...] = ()
        if self.store is not None:
            edges = self._baseline(vdir, manifest.entrypoints.get("baseline"), version)
            self.store.register_features(self.model, version, edges)
            features = tuple(edges)
        return _Loaded(version, digest, interp, backend, labels, features)

    @staticmethod
    def _labels(vdir: Path, entry: str | None) -> list[str]:
        if not entry:
            return []
        from ._json import read_untrusted_file

        try:
            text = read_untrusted_file(vdir / entry, LABELS_MAX_BYTES)[:LABELS_MAX_BYTES].decode("utf-8", "replace")
        except OSError:
            return []
        return [line.strip() for line in text.splitlines()]

    def _baseline(self, vdir: Path, entry: str | None, version: str) -> dict[str, list[float]]:
        """The usable features of the baseline (name -> bin edges); every problem is a finding, not an error."""
        assert self.store is not None
        where = f"{self.model} {version} baseline"
        if not entry:
            self.store.note(f"baseline_missing:{self.model}:{version}", f"{where}: the bundle has no baseline.json; "
                            "no input statistics are recorded")
            return {}
        from ._json import loads_untrusted, read_untrusted_file
        from ._limits import DEFAULT_LIMITS

        try:
            doc = loads_untrusted(read_untrusted_file(vdir / entry, BASELINE_MAX_BYTES), DEFAULT_LIMITS,
                                  f"{where} {entry}", error=EdgeRuntimeError, max_bytes=BASELINE_MAX_BYTES)
        except (OSError, EdgeRuntimeError) as exc:
            self.store.note(f"baseline_unreadable:{self.model}:{version}",
                            f"{where}: {getattr(exc, 'message', exc)}; no input statistics are recorded")
            return {}
        feats = doc.get("features") if isinstance(doc, dict) else None
        if not isinstance(feats, dict):
            self.store.note(f"baseline_malformed:{self.model}:{version}",
                            f"{where}: no 'features' object; no input statistics are recorded")
            return {}
        out: dict[str, list[float]] = {}
        for name in sorted(set(FEATURES) - set(feats)):
            self.store.note(f"baseline_feature_missing:{self.model}:{version}:{name}",
                            f"{where}: has no feature {name}; it is not recorded")
        for name, spec in feats.items():
            if name not in FEATURES:
                self.store.note(f"baseline_feature_unknown:{self.model}:{version}:{name}",
                                f"{where}: feature {quote_untrusted(name, 40)} has no extractor in this runtime "
                                f"(known: {', '.join(sorted(FEATURES))}); it is not recorded")
                continue
            try:  # the monitor judges what is recorded with the same parser: one owner of "usable baseline"
                usable = FeatureBaseline.from_spec(name, spec)
            except BaselineError as exc:
                self.store.note(f"baseline_bins:{self.model}:{version}:{name}",
                                f"{where}: {exc.message}; it is not recorded")
                continue
            out[name] = usable.edges.tolist()
        return out


class _InputError(Exception):
    pass

"""``edge-release publish``: one command from a trained model to a reviewed ``models.yaml`` pull request.

Release side only (numpy, a TFLite backend, PyYAML; TensorFlow only to convert a Keras model or SavedModel).
The steps, each of which can refuse with the numbers and change nothing after it:

1. **model**: a ready ``.tflite`` is used as is; a ``.keras`` file or a SavedModel directory is converted
   (needs TensorFlow, the optional ``train`` extra): float, or full-integer int8 when the configuration says
   ``convert: {quantize: int8}`` (the default when ``input.dtype`` is int8), calibrated on the first
   ``representative_samples`` training rows. Either way the model's input tensor must be the configuration's
   ``input`` (shape and dtype), as the device's smoke test will demand.
2. **evaluate** on the held-out set (``.npz`` with ``x`` and ``y``) and apply the **accuracy gate** declared in
   the release configuration (``release.yaml``): refused with the accuracy, the gate and by how much. The
   comparison is exact (``correct / n >= min_accuracy`` as fractions), so a model exactly at the gate passes.
3. **bundle**: golden samples chosen from the held-out set (per class, correctly classified with confidence at
   least ``golden_min_confidence``; expected outputs are the model's own), the drift **baseline** from the
   training data (:mod:`edge_runtime.baseline`), the labels, the smoke-test policy of the configuration, and
   the trust root chain (``trust/N.root.json``) so devices catch up before they verify.
4. **sign** with the given keys and **verify** the bundle as a device would (the newest root's release role, so
   a threshold of 2 is enforced here as on the device). Keys inside the Git work tree that Git does not ignore
   are refused.
5. **publish** to the registry: a directory (written under a temporary name, fsynced, then hard-linked into
   place: a half-written bundle is never visible, and a bundle already there is never replaced) or an HTTP
   server that accepts ``PUT`` with ``If-None-Match: *`` (see docs/RELEASE.md). The same version with the same
   signed content is "already published"; with other content it is refused (versions are immutable).
6. **models.yaml** on a new branch ``release/<model>-<version>``: the catalogue entry and, per promoted group,
   the one-line pin change, committed with the evaluation numbers in the message. The working tree and the
   current branch are not touched (the commit is built with a temporary index).
7. **audit**: a JSON and Markdown report in the reports directory and one line in the history
   (:mod:`edge_runtime.audit`).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from fractions import Fraction
from pathlib import Path
from typing import Any

from .errors import ConfigError, PolicyError, quote_untrusted

__all__ = ["GateRefusedError", "ModelRelease", "PublishResult", "ReleaseConfig", "load_release_config", "publish"]

_CONFIG_KEYS = {"schema", "registry", "models_file", "reports_dir", "trust_root", "expires_in_days", "models"}
_MODEL_KEYS = {
    "min_accuracy", "labels", "input", "smoke_test", "golden_per_class", "golden_min_confidence", "promote",
    "architectures", "backends", "convert",
}
_CONVERT_KEYS = {"quantize", "representative_samples"}
#: what each ``convert.quantize`` makes of a Keras model / SavedModel, and the input dtype the result takes
_QUANTIZE_INPUT_DTYPE = {"none": "float32", "int8": "int8"}


class GateRefusedError(PolicyError):
    """The model did not pass the accuracy gate: nothing was built, published or committed."""

    code = "gate"


@dataclass(frozen=True)
class ModelRelease:
    """What ``release.yaml`` declares for one model."""

    name: str
    min_accuracy: Fraction
    labels: tuple[str, ...]
    input_shape: tuple[int, ...]
    input_dtype: str
    smoke_test: Mapping[str, Any]
    golden_per_class: int = 8
    golden_min_confidence: float = 0.75
    promote: tuple[str, ...] = ()
    architectures: tuple[str, ...] = ("x86_64", "aarch64", "armv7l")
    backends: tuple[str, ...] = ("litert", "tflite-runtime")
    quantize: str = "none"  # conversion of a Keras model / SavedModel: "none" (float) or "int8" (full integer)
    representative_samples: int = 200  # training rows that calibrate int8 quantization


@dataclass(frozen=True)
class ReleaseConfig:
    path: Path
    registry: str
    models_file: Path
    reports_dir: Path
    trust_root: tuple[Path, ...]
    expires_in_days: float
    models: Mapping[str, ModelRelease]


def _cfg_error(path: Path, message: str) -> ConfigError:
    return ConfigError(f"release configuration {path}: {message}", hint="see docs/RELEASE.md for release.yaml")


def load_release_config(path: Path) -> ReleaseConfig:
    """Read ``release.yaml`` strictly (unknown keys, wrong types and out-of-range gates are errors)."""
    import yaml

    try:
        with path.open("rb") as fh:
            doc = yaml.safe_load(fh.read(1 << 20))
    except OSError as exc:
        raise _cfg_error(path, f"cannot be read: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise _cfg_error(path, f"is not valid YAML: {quote_untrusted(str(exc), 200)}") from None
    if not isinstance(doc, dict) or doc.get("schema") != 1:
        raise _cfg_error(path, "must be a mapping with schema: 1")
    unknown = set(doc) - _CONFIG_KEYS
    if unknown:
        raise _cfg_error(path, f"unknown keys {sorted(map(str, unknown))}")
    base = path.parent

    def rel(value: Any, what: str) -> Path:
        if not isinstance(value, str) or not value:
            raise _cfg_error(path, f"{what} must be a path")
        p = Path(value)
        return p if p.is_absolute() else base / p

    models = {}
    raw_models = doc.get("models")
    if not isinstance(raw_models, dict) or not raw_models:
        raise _cfg_error(path, "models must map model names to their release settings")
    for name, m in raw_models.items():
        where = f"models.{name}"
        if not isinstance(m, dict):
            raise _cfg_error(path, f"{where} must be a mapping")
        unknown = set(m) - _MODEL_KEYS
        if unknown:
            raise _cfg_error(path, f"{where} has unknown keys {sorted(map(str, unknown))}")
        gate = m.get("min_accuracy")
        if isinstance(gate, bool) or not isinstance(gate, (int, float)) or not 0 <= gate <= 1:
            raise _cfg_error(path, f"{where}.min_accuracy must be a number in [0, 1] (the accuracy gate)")
        labels = m.get("labels")
        if not isinstance(labels, list) or len(labels) < 2 or not all(isinstance(x, str) and x for x in labels):
            raise _cfg_error(path, f"{where}.labels must list at least two class names, in output order")
        inp = m.get("input")
        if not isinstance(inp, dict) or set(inp) != {"shape", "dtype"}:
            raise _cfg_error(path, f"{where}.input must be {{shape: [...], dtype: float32|int8|uint8}}")
        smoke = m.get("smoke_test")
        if not isinstance(smoke, dict):
            raise _cfg_error(path, f"{where}.smoke_test must hold atol, min_label_agreement, p95_latency_ms, repeats")
        convert = m.get("convert", {})
        if not isinstance(convert, dict) or set(convert) - _CONVERT_KEYS:
            raise _cfg_error(path, f"{where}.convert must be {{quantize: none|int8, representative_samples: N}}")
        # default: what the declared input needs (int8 input: full-integer int8; otherwise float)
        quantize = convert.get("quantize", "int8" if inp.get("dtype") == "int8" else "none")
        if quantize not in _QUANTIZE_INPUT_DTYPE:
            raise _cfg_error(path, f"{where}.convert.quantize must be one of {sorted(_QUANTIZE_INPUT_DTYPE)}")
        if "quantize" in convert and inp.get("dtype") != _QUANTIZE_INPUT_DTYPE[quantize]:
            raise _cfg_error(path, f"{where}.convert.quantize {quantize} makes models with "
                             f"{_QUANTIZE_INPUT_DTYPE[quantize]} input, but input.dtype is "
                             f"{quote_untrusted(str(inp.get('dtype')))}")
        samples = convert.get("representative_samples", 200)
        if isinstance(samples, bool) or not isinstance(samples, int) or not 1 <= samples <= 100_000:
            raise _cfg_error(path, f"{where}.convert.representative_samples must be an integer in [1, 100000]")
        promote = m.get("promote", [])
        if not isinstance(promote, list) or not all(isinstance(g, str) for g in promote):
            raise _cfg_error(path, f"{where}.promote must list models.yaml groups")
        try:
            models[str(name)] = ModelRelease(
                name=str(name),
                min_accuracy=Fraction(str(gate)),
                labels=tuple(labels),
                input_shape=tuple(int(d) for d in inp["shape"]),
                input_dtype=str(inp["dtype"]),
                smoke_test=dict(smoke),
                golden_per_class=int(m.get("golden_per_class", 8)),
                golden_min_confidence=float(m.get("golden_min_confidence", 0.75)),
                promote=tuple(promote),
                quantize=quantize,
                representative_samples=samples,
                **{k: tuple(m[k]) for k in ("architectures", "backends") if k in m},
            )
        except (TypeError, ValueError) as exc:
            raise _cfg_error(path, f"{where}: {quote_untrusted(str(exc), 200)}") from None
    registry = doc.get("registry")
    if not isinstance(registry, str) or not registry:
        raise _cfg_error(path, "registry must be a directory or an http(s) URL")
    if not registry.startswith(("http://", "https://")):
        registry = str(rel(registry, "registry"))
    trust = doc.get("trust_root", [])
    if not isinstance(trust, list):
        raise _cfg_error(path, "trust_root must list the root documents (the chain)")
    days = doc.get("expires_in_days", 365)
    if isinstance(days, bool) or not isinstance(days, (int, float)) or not 0 < days <= 36500:
        raise _cfg_error(path, "expires_in_days must be a number of days in (0, 36500]")
    return ReleaseConfig(
        path=path,
        registry=registry,
        models_file=rel(doc.get("models_file", "models.yaml"), "models_file"),
        reports_dir=rel(doc.get("reports_dir", "reports"), "reports_dir"),
        trust_root=tuple(rel(t, "trust_root entry") for t in trust),
        expires_in_days=float(days),
        models=models,
    )


# ----------------------------------------------------------------------------------- model and data


@contextlib.contextmanager
def _stdout_to_stderr() -> Iterator[None]:
    """Send everything written to stdout (Python and C level, e.g. TensorFlow's "Saved artifact at ..." listing)
    to stderr meanwhile: stdout carries only the command's result (``--json`` must stay parseable)."""
    sys.stdout.flush()
    try:
        saved = os.dup(1)
    except OSError:  # no file descriptor 1: nothing at C level to divert
        saved = -1
    try:
        if saved >= 0:
            os.dup2(2, 1)
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        sys.stdout.flush()
        if saved >= 0:
            os.dup2(saved, 1)
            os.close(saved)


def model_bytes(source: Path, m: ModelRelease, x_train: Any) -> tuple[bytes, str]:
    """The TFLite flatbuffer of ``source`` and how it was obtained (``tflite`` or ``converted from …``).

    A ``.keras`` file (loaded with Keras' safe mode: no embedded code runs; legacy ``.h5`` files, which safe mode
    does not cover, are refused) or a SavedModel directory is converted as ``m.quantize`` says; int8 is calibrated
    on the first ``m.representative_samples`` rows of ``x_train``.
    """
    if source.is_file() and source.suffix == ".tflite":
        return source.read_bytes(), "tflite"
    saved_model = source.is_dir() and (source / "saved_model.pb").is_file()
    if not (saved_model or (source.is_file() and source.suffix == ".keras")):
        raise ConfigError(
            f"{quote_untrusted(str(source))} is not a .tflite file, a .keras file or a SavedModel directory "
            "(with saved_model.pb)",
            hint="pass the trainer's output (the demo trainer: scripts/train_demo_models.py --export-keras DIR)",
        )
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        import tensorflow as tf  # type: ignore[import-untyped,import-not-found,unused-ignore]
    except ImportError:
        raise ConfigError(
            f"{source} is a Keras model or SavedModel; converting it needs TensorFlow",
            hint="run it from the train venv (make venv-train: .venv-train/bin/edge-release) or pass a ready .tflite",
        ) from None
    try:
        with _stdout_to_stderr():
            if saved_model:
                converter = tf.lite.TFLiteConverter.from_saved_model(str(source))
            else:
                import keras  # type: ignore[import-untyped,import-not-found,unused-ignore]

                model = keras.models.load_model(source, compile=False, safe_mode=True)
                converter = tf.lite.TFLiteConverter.from_keras_model(model)
            how = f"converted from {source.name} (float32)"
            if m.quantize == "int8":
                import numpy as np

                rep = np.asarray(x_train[: m.representative_samples], np.float32)

                def representative() -> Any:
                    for row in rep:
                        yield [row[None]]

                converter.optimizations = [tf.lite.Optimize.DEFAULT]
                converter.representative_dataset = representative
                converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
                converter.inference_input_type = tf.int8
                converter.inference_output_type = tf.int8
                how = f"converted from {source.name} (full-integer int8, calibrated on {len(rep)} training samples)"
            return bytes(converter.convert()), how
    except Exception as exc:  # TensorFlow raises anything from ValueError to its own ConverterError
        last = (str(exc).strip().splitlines() or [""])[-1]
        raise ConfigError(
            f"converting {quote_untrusted(str(source))} to TFLite failed: "
            f"{type(exc).__name__}: {quote_untrusted(last, 300)}",
            hint="check that it is the trainer's Keras model / SavedModel and that release.yaml's input matches it",
        ) from None


def check_model_input(tflite: Path, m: ModelRelease) -> None:
    """The model's input tensor must be what the configuration (and so the manifest) declares, or devices refuse it."""
    import numpy as np

    from .smoke import load_interpreter

    interp, _backend = load_interpreter(tflite, m.backends)
    detail = interp.get_input_details()[0]
    shape, dtype = tuple(int(d) for d in detail["shape"]), np.dtype(detail["dtype"]).name
    if (shape, dtype) != (m.input_shape, m.input_dtype):
        raise ConfigError(
            f"the model takes {list(shape)} {dtype}, but release.yaml declares input {list(m.input_shape)} "
            f"{m.input_dtype} for {m.name}: devices would refuse it in the smoke test",
            hint="fix models.<name>.input (and convert.quantize) in release.yaml, or export the model with that input",
        )


def load_dataset(path: Path, what: str) -> tuple[Any, Any]:
    """``x`` and ``y`` of an ``.npz`` data set (no pickles); a wrong file is a :class:`ConfigError`."""
    import numpy as np

    try:
        with np.load(path, allow_pickle=False) as d:
            x, y = np.asarray(d["x"]), np.asarray(d["y"])
    except (OSError, KeyError, ValueError) as exc:
        raise ConfigError(
            f"{what} set {quote_untrusted(str(path))} is not an .npz with arrays x and y: {type(exc).__name__}",
            hint="write it with numpy.savez(path, x=images, y=labels)",
        ) from None
    if len(x) == 0 or len(x) != len(y):
        raise ConfigError(f"{what} set {path}: x has {len(x)} rows and y {len(y)}; they must match and be > 0")
    return x, y


def predict(tflite: Path, x: Any, backends: Sequence[str]) -> Any:
    """The model's (dequantized) outputs for every row of ``x``, one invoke each, on the device's backend."""
    import numpy as np

    from .smoke import _dequantize, _quantize, load_interpreter

    interp, _backend = load_interpreter(tflite, tuple(backends))
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    rows = []
    for row in x:
        interp.set_tensor(inp["index"], _quantize(np.asarray(row, np.float32)[None], inp))
        interp.invoke()
        rows.append(_dequantize(interp.get_tensor(out["index"]), out)[0])
    return np.stack(rows).astype(np.float32)


@dataclass(frozen=True)
class Evaluation:
    n: int
    correct: int
    per_class: Mapping[str, float]

    @property
    def accuracy(self) -> Fraction:
        return Fraction(self.correct, self.n)

    def to_dict(self) -> dict[str, Any]:
        return {"n": self.n, "correct": self.correct, "accuracy": round(float(self.accuracy), 6),
                "per_class_accuracy": dict(self.per_class)}


def evaluate(outputs: Any, y: Any, labels: Sequence[str]) -> Evaluation:
    import numpy as np

    pred = np.asarray(outputs).argmax(axis=1)
    y = np.asarray(y)
    per = {labels[c]: round(float((pred[y == c] == c).mean()), 6) for c in range(len(labels)) if (y == c).any()}
    return Evaluation(len(y), int((pred == y).sum()), per)


def gate_decision(ev: Evaluation, gate: Fraction) -> dict[str, Any]:
    """The gate decision with its numbers (exact comparison: at the gate passes, one sample below does not)."""
    passed = ev.accuracy >= gate
    margin = float(ev.accuracy - gate)
    return {"metric": "accuracy", "value": round(float(ev.accuracy), 6), "correct": ev.correct, "n": ev.n,
            "min": float(gate), "margin": round(margin, 6), "passed": passed}


def choose_golden(x: Any, y: Any, outputs: Any, per_class: int, min_conf: float) -> tuple[Any, Any, Any]:
    """Golden samples: per class, the first held-out rows the model classifies correctly with confidence >= min."""
    import numpy as np

    y = np.asarray(y)
    pred, conf = outputs.argmax(axis=1), outputs.max(axis=1)
    ok = (pred == y) & (conf >= min_conf)
    idx = []
    for c in sorted(set(y.tolist())):
        chosen = np.flatnonzero(ok & (y == c))[:per_class]
        if len(chosen) < per_class:
            raise GateRefusedError(
                f"only {len(chosen)} held-out samples of class {c} are classified correctly with confidence >= "
                f"{min_conf}; the smoke test needs {per_class}",
                hint="the model is too unsure to be smoke-tested on devices; improve it or lower golden_min_confidence",
            )
        idx.extend(chosen.tolist())
    sel = np.sort(np.asarray(idx))
    return x[sel].astype(np.float32), outputs[sel].astype(np.float32), y[sel].astype(np.int64)


# ----------------------------------------------------------------------------------- keys and git


def _git(repo: Path, *args: str, env: Mapping[str, str] | None = None, input: bytes | None = None) -> str:
    r = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, input=input, timeout=60, check=False,
                       env={**os.environ, **(env or {})})
    if r.returncode != 0:
        raise ConfigError(f"git {' '.join(args[:2])} failed: {r.stderr.decode(errors='replace').strip()[:300]}")
    return r.stdout.decode().strip()


def refuse_keys_in_repository(keys: Sequence[Path], repo: Path) -> None:
    """A private key inside the work tree that Git does not ignore is refused: it is one `git add` from leaking."""
    top = Path(_git(repo, "rev-parse", "--show-toplevel")).resolve()
    for k in keys:
        path = k.resolve()
        if not path.is_relative_to(top):
            continue
        ignored = subprocess.run(["git", "-C", str(top), "check-ignore", "-q", "--no-index", str(path)],
                                 capture_output=True, timeout=60, check=False).returncode == 0
        if not ignored:
            raise ConfigError(
                f"private key {k} is inside the Git work tree {top} and not ignored by Git",
                hint="keep release keys outside the repository (a CI secret file, ansible-vault), or at least "
                "in an ignored directory such as .state/; if it was ever committed, rotate it (docs/KEYS.md)",
            )


# ----------------------------------------------------------------------------------- models.yaml


def _quote(v: str) -> str:
    return json.dumps(v)


def edit_models_yaml(text: str, model: str, version: str, bundle: str, digest: str, counter: int,
                     promote: Sequence[str]) -> tuple[str, dict[str, str | None]]:
    """``models.yaml`` with the catalogue entry added and each promoted group's pin changed (text edit: comments
    and layout stay). Returns the new text and, per group, the version it pinned before."""
    import yaml

    doc = yaml.safe_load(text)
    cat = (((doc or {}).get("models") or {}).get(model) or {}).get("versions")
    if not isinstance(cat, dict):
        raise ConfigError(f"models.yaml has no catalogue for {model}", hint=f"add models: {model}: versions: first")
    if version in cat:
        raise PolicyError(f"models.yaml already lists {model} {version}", hint="versions are immutable; bump it")
    lines = text.splitlines(keepends=True)
    # the catalogue entry goes after the last line of this model's versions block
    start = next(i for i, ln in enumerate(lines) if re.match(rf"^  {re.escape(model)}:\s*$", ln) or
                 re.match(rf"^  {_quote(model)}:\s*$", ln))
    vstart = next(i for i in range(start + 1, len(lines)) if re.match(r"^    versions:\s*$", lines[i]))
    end = vstart + 1
    while end < len(lines) and (lines[end].startswith("      ") or not lines[end].strip()):
        end += 1
    while not lines[end - 1].strip():
        end -= 1
    entry = (f"      {_quote(version)}:\n        bundle: {bundle}\n        digest: {_quote(digest)}\n"
             f"        release_counter: {counter}\n")
    lines.insert(end, entry)
    before: dict[str, str | None] = {}
    for group in promote:
        pinned = ((doc.get("groups") or {}).get(group) or {}).get("models") or {}
        if model not in pinned:
            raise ConfigError(f"group {group} of models.yaml does not run {model}", hint="fix promote in release.yaml")
        before[group] = str(pinned[model])
        g = next(i for i, ln in enumerate(lines) if re.match(rf"^  {re.escape(group)}:\s*$", ln))
        pin = re.compile(rf"^(      {re.escape(model)}: )(\"[^\"]*\"|'[^']*'|\S+)(.*)$")
        i = next(i for i in range(g + 1, len(lines)) if pin.match(lines[i]))
        lines[i] = pin.sub(lambda m: f"{m.group(1)}{_quote(version)}{m.group(3)}", lines[i].rstrip("\n")) + "\n"
    new = "".join(lines)
    check = yaml.safe_load(new)
    assert check["models"][model]["versions"][version]["digest"] == digest
    assert all(check["groups"][g]["models"][model] == version for g in promote)
    return new, before


def commit_on_branch(repo: Path, rel_path: str, content: str, branch: str, message: str) -> str:
    """Commit ``content`` as ``rel_path`` on a new ``branch`` from HEAD without touching the work tree or HEAD."""
    if subprocess.run(["git", "-C", str(repo), "rev-parse", "--verify", "--quiet", f"refs/heads/{branch}"],
                      capture_output=True, timeout=60, check=False).returncode == 0:
        raise PolicyError(f"branch {branch} already exists", hint="delete it, or release under a new version")
    blob = _git(repo, "hash-object", "-w", "--stdin", input=content.encode())
    with tempfile.TemporaryDirectory(prefix="edge-release-index-") as tmp:
        env = {"GIT_INDEX_FILE": str(Path(tmp) / "index")}
        _git(repo, "read-tree", "HEAD", env=env)
        _git(repo, "update-index", "--cacheinfo", f"100644,{blob},{rel_path}", env=env)
        tree = _git(repo, "write-tree", env=env)
    # a CI runner often has no Git identity: the commit is then made by "edge-release" (the branch is reviewed)
    who = {} if subprocess.run(["git", "-C", str(repo), "config", "user.email"], capture_output=True, timeout=60,
                               check=False).stdout.strip() else {
        "GIT_AUTHOR_NAME": "edge-release", "GIT_AUTHOR_EMAIL": "edge-release@localhost",
        "GIT_COMMITTER_NAME": "edge-release", "GIT_COMMITTER_EMAIL": "edge-release@localhost"}
    commit = _git(repo, "commit-tree", tree, "-p", "HEAD", "-F", "-", input=message.encode(), env=who)
    _git(repo, "branch", branch, commit)
    return commit


# ----------------------------------------------------------------------------------- registry


def _manifest_digest(bundle: Path) -> str:
    from .bundle import read_envelope
    from .manifest import Manifest

    return Manifest.from_signed(read_envelope(bundle).signed).digest


def publish_to_directory(bundle: Path, registry: Path, rel: str, digest: str) -> str:
    """Place ``bundle`` at ``registry/rel`` atomically; "published", "already published", or refuse."""
    from ._fsutil import fsync_dir

    target = registry / rel
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists():
        have = _manifest_digest(target)
        if have == digest:
            return "already published"
        raise PolicyError(
            f"the registry already holds {rel} with manifest {have}; this build is {digest}",
            hint="versions are immutable: publish the change under a new version",
        )
    tmp = target.with_name(f".tmp-{target.name}.{os.getpid()}")
    try:
        with bundle.open("rb") as src, open(tmp, "xb") as dst:
            while chunk := src.read(1 << 20):
                dst.write(chunk)
            dst.flush()
            os.fsync(dst.fileno())
        try:
            os.link(tmp, target)  # atomic, and never replaces a bundle published meanwhile
        except FileExistsError:
            return publish_to_directory(bundle, registry, rel, digest)
        fsync_dir(target.parent)
    finally:
        tmp.unlink(missing_ok=True)
    return "published"


def publish_to_http(bundle: Path, base: str, rel: str, digest: str, timeout: float = 60.0) -> str:
    """``PUT`` the bundle with ``If-None-Match: *`` (create only); 412 means it exists: compare, as for a directory."""
    import requests

    from .bundle import envelope_from_prefix
    from .manifest import Manifest

    url = base.rstrip("/") + "/" + rel
    with bundle.open("rb") as fh:
        r = requests.put(url, data=fh, headers={"If-None-Match": "*", "Content-Type": "application/octet-stream"},
                         timeout=timeout)
    if r.status_code in (200, 201, 204):
        return "published"
    if r.status_code == 412:
        head = requests.get(url, headers={"Range": "bytes=0-1114111"}, timeout=timeout)
        have = Manifest.from_signed(envelope_from_prefix(head.content).signed).digest
        if have == digest:
            return "already published"
        raise PolicyError(f"the registry already holds {url} with manifest {have}; this build is {digest}",
                          hint="versions are immutable: publish the change under a new version")
    raise ConfigError(f"PUT {url} answered HTTP {r.status_code}",
                      hint="the server must accept PUT with If-None-Match: * (docs/RELEASE.md)")


# ----------------------------------------------------------------------------------- publish


@dataclass
class PublishResult:
    model: str
    version: str
    decision: str  # "published", "already published", "refused"
    gate: dict[str, Any]
    evaluation: dict[str, Any]
    previous: dict[str, Any] | None = None
    digest: str | None = None
    bundle: str | None = None
    registry_result: str | None = None
    signed_by: list[str] = field(default_factory=list)
    trust_root_version: int | None = None
    branch: str | None = None
    commit: str | None = None
    pins: dict[str, str | None] = field(default_factory=dict)
    source: str = ""
    release_counter: int | None = None
    reports: list[str] = field(default_factory=list)
    reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        return asdict(self)


def _previous_version(models_yaml: Path, model: str, promote: Sequence[str]) -> tuple[str | None, int]:
    import yaml

    doc = yaml.safe_load(models_yaml.read_text(encoding="utf-8")) or {}
    versions = ((doc.get("models") or {}).get(model) or {}).get("versions") or {}
    counter = max((int(v.get("release_counter", 0)) for v in versions.values()), default=0)
    pinned = [((doc.get("groups") or {}).get(g) or {}).get("models", {}).get(model) for g in promote]
    return (str(pinned[0]) if pinned and pinned[0] else None), counter


def _evaluate_previous(cfg: ReleaseConfig, m: ModelRelease, version: str, x: Any, y: Any) -> dict[str, Any] | None:
    """The held-out numbers of the version the first promoted group runs now (from the registry), for comparison."""
    import yaml

    from .bundle import iter_members, read_envelope
    from .manifest import Manifest

    doc = yaml.safe_load(cfg.models_file.read_text(encoding="utf-8")) or {}
    entry = (((doc.get("models") or {}).get(m.name) or {}).get("versions") or {}).get(version)
    if not entry or cfg.registry.startswith(("http://", "https://")):
        return None
    path = Path(cfg.registry) / entry["bundle"]
    if not path.is_file():
        return None
    manifest = Manifest.from_signed(read_envelope(path).signed)
    with tempfile.TemporaryDirectory(prefix="edge-release-prev-") as tmp:
        target = Path(tmp) / "model.tflite"
        for e, fh in iter_members(path, manifest):
            if e.path == manifest.entrypoints["model"]:
                target.write_bytes(fh.read())
        if not target.exists():
            return None
        ev = evaluate(predict(target, x, m.backends), y, m.labels)
    return {"version": version, **ev.to_dict()}


def publish(
    cfg: ReleaseConfig,
    model_name: str,
    version: str,
    source: Path,
    train: Path,
    heldout: Path,
    keys: Sequence[Path],
    *,
    repo: Path,
    workdir: Path,
    now: datetime | None = None,
) -> PublishResult:
    """Run the whole release (see the module docstring); raises :class:`GateRefusedError` below the gate."""
    import numpy as np

    from . import audit
    from .baseline import make_baseline
    from .bundle import BundleSpec, build_bundle, verify_bundle
    from .keys import load_private_key
    from .manifest import Version, format_time
    from .root import verify_chain
    from .trust import key_id

    now = (now or datetime.now(timezone.utc)).replace(microsecond=0)
    if model_name not in cfg.models:
        raise ConfigError(f"{cfg.path} declares no release settings for {quote_untrusted(model_name)}",
                          hint=f"add models: {model_name}: min_accuracy, labels, input, smoke_test")
    Version.parse(version)
    m = cfg.models[model_name]
    if not keys:
        raise ConfigError("publish needs --key (repeat for threshold signing)")
    refuse_keys_in_repository(keys, repo)
    signing = [load_private_key(k) for k in keys]
    chain = verify_chain([p.read_bytes() for p in cfg.trust_root]) if cfg.trust_root else []
    x_held, y_held = load_dataset(heldout, "held-out")
    x_train, _y_train = load_dataset(train, "training")
    tfl_bytes, how = model_bytes(source, m, x_train)
    workdir.mkdir(parents=True, exist_ok=True)
    tfl = workdir / "model.tflite"
    tfl.write_bytes(tfl_bytes)
    check_model_input(tfl, m)
    out_held = predict(tfl, x_held, m.backends)
    ev = evaluate(out_held, y_held, m.labels)
    gate = gate_decision(ev, m.min_accuracy)
    previous_version, counter = _previous_version(cfg.models_file, m.name, m.promote)
    previous = _evaluate_previous(cfg, m, previous_version, x_held, y_held) if previous_version else None
    result = PublishResult(m.name, version, "refused", gate, ev.to_dict(), previous, source=how,
                           release_counter=counter + 1)
    if not gate["passed"]:
        result.reason = (f"held-out accuracy {gate['value']:.4f} ({ev.correct}/{ev.n}) is below the gate "
                         f"{gate['min']:.4f} by {-gate['margin']:.4f}")
        result.reports = audit.write_release_report(cfg.reports_dir, result.to_dict(), now)
        raise GateRefusedError(
            f"{m.name} {version} not released: {result.reason}",
            hint=f"improve the model, or change min_accuracy in {cfg.path} in a reviewed pull request",
            gate=gate, reports=result.reports,
        )

    golden = choose_golden(x_held, y_held, out_held, m.golden_per_class, m.golden_min_confidence)
    baseline = make_baseline(x_train, predict(tfl, x_train, m.backends))
    files = {"model.tflite": tfl, "golden.npz": workdir / "golden.npz", "baseline.json": workdir / "baseline.json",
             "labels.txt": workdir / "labels.txt"}
    with files["golden.npz"].open("wb") as fh:
        np.savez_compressed(fh, inputs=golden[0], expected_outputs=golden[1], expected_labels=golden[2])
    files["baseline.json"].write_text(json.dumps(baseline, separators=(",", ":"), allow_nan=False) + "\n")
    files["labels.txt"].write_text("".join(label + "\n" for label in m.labels))
    for r in chain:
        assert r.data is not None
        p = workdir / f"{r.version}.root.json"
        p.write_bytes(r.data)
        files[f"trust/{r.version}.root.json"] = p
    spec = BundleSpec(
        name=m.name, version=version, release_counter=counter + 1, files=files,
        entrypoints={"model": "model.tflite", "golden": "golden.npz", "baseline": "baseline.json",
                     "labels": "labels.txt"},
        input_shape=m.input_shape, input_dtype=m.input_dtype, smoke_test=m.smoke_test,
        backends=m.backends, architectures=m.architectures, expires_in=timedelta(days=cfg.expires_in_days),
        created=now,
    )
    out = workdir / f"{m.name}-{version}.edgebundle"
    manifest = build_bundle(spec, out, signing)
    if chain:  # as a device would: the newest root's release role (threshold) must be satisfied
        verify_bundle(out, chain[-1].policy("release"))
        result.trust_root_version = chain[-1].version
    result.digest = manifest.digest
    result.signed_by = sorted({key_id(k.public_key()) for k in signing})
    rel = f"{m.name}/{version}.edgebundle"
    result.bundle = rel
    if cfg.registry.startswith(("http://", "https://")):
        result.registry_result = publish_to_http(out, cfg.registry, rel, manifest.digest)
    else:
        result.registry_result = publish_to_directory(out, Path(cfg.registry), rel, manifest.digest)
    result.decision = result.registry_result

    text = cfg.models_file.read_text(encoding="utf-8")
    new_text, result.pins = edit_models_yaml(text, m.name, version, rel, manifest.digest, counter + 1, m.promote)
    top = Path(_git(repo, "rev-parse", "--show-toplevel")).resolve()
    rel_models = str(cfg.models_file.resolve().relative_to(top))
    pins = ", ".join(f"{g} {b} -> {version}" for g, b in result.pins.items()) or "catalogue only, no group pinned"
    prev_line = (f"; {previous['version']} had {previous['accuracy']:.4f} "
                 f"({previous['accuracy'] and gate['value'] - previous['accuracy']:+.4f})") if previous else ""
    message = (
        f"release {m.name} {version}: {pins}\n\n"
        f"Held-out accuracy {gate['value']:.4f} ({ev.correct}/{ev.n}), gate >= {gate['min']:.4f} "
        f"(margin {gate['margin']:+.4f}){prev_line}.\n"
        f"Per class: {', '.join(f'{k} {v:.4f}' for k, v in ev.per_class.items())}.\n"
        f"Bundle {rel}, manifest {manifest.digest}, release counter {counter + 1}, "
        f"expires {format_time(manifest.expires)}.\n"
        f"Signed by {', '.join(k[:16] for k in result.signed_by)}"
        + (f" (trust root version {result.trust_root_version})" if result.trust_root_version else "") + ".\n"
        f"Model: {how}; baseline from {len(x_train)} training samples; {len(golden[2])} golden samples.\n"
        f"Made by edge-release publish.\n"
    )
    result.branch = f"release/{m.name}-{version}"
    result.commit = commit_on_branch(repo, rel_models, new_text, result.branch, message)
    result.reports = audit.write_release_report(cfg.reports_dir, result.to_dict(), now)
    return result

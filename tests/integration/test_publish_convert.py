"""`edge-release publish --from` a Keras model or a SavedModel: TensorFlow conversion, for real.

The demo trainer (scripts/train_demo_models.py --export-keras) trains 1.0.0 and 1.1.0 and hands them over as
``model.keras`` and ``saved_model/``; publish converts them (float, and full-integer int8 calibrated on the
training data when release.yaml says so), evaluates them on the held-out set against the gate, bundles, signs
(2-of-2 trust root), publishes and proposes the models.yaml change; a real device installs the bundle (its smoke
test runs the golden samples publish chose on the converted model).

TensorFlow is an optional extra: these tests run in the train venv (``make test-train``) and skip elsewhere. The
refusals that need no TensorFlow (a path that is no model) run everywhere.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge_runtime import errors
from edge_runtime.bundle import read_envelope
from edge_runtime.device import Device
from edge_runtime.manifest import Manifest
from edge_runtime.publish import load_release_config, publish
from tests.support.publish_repo import REPO, Setup, git

HAVE_TF = importlib.util.find_spec("tensorflow") is not None
needs_tf = pytest.mark.skipif(not HAVE_TF, reason="TensorFlow is an optional extra: make test-train")
INT8 = "defect-classifier-int8"


@pytest.fixture(scope="module")
def handover(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The demo trainer's hand-over: ``{version: dir with model.keras and saved_model/}`` (trained here, ~20 s)."""
    if not HAVE_TF:
        pytest.skip("TensorFlow is an optional extra: make test-train")
    sys.path.insert(0, str(REPO / "scripts"))
    import train_demo_models

    return train_demo_models.export_keras(tmp_path_factory.mktemp("handover"))


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Setup:
    return Setup(tmp_path_factory.mktemp("publish-convert"))


def keras_outputs(model_dir: Path, x: Any) -> Any:
    import keras

    model = keras.models.load_model(model_dir / "model.keras", compile=False)
    return np.concatenate([model(x[i:i + 1], training=False).numpy() for i in range(len(x))])


def bundle_member(bundle: Path, name: str) -> bytes:
    with tarfile.open(bundle) as tar:
        data = tar.extractfile(name)
        assert data is not None
        return data.read()


def bundle_member_file(bundle: Path, name: str, tmp: Path) -> Path:
    path = tmp / name
    path.write_bytes(bundle_member(bundle, name))
    return path


def tflite_io(model: bytes) -> tuple[tuple[str, tuple[int, ...]], tuple[str, tuple[int, ...]]]:
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_content=model)
    i, o = interp.get_input_details()[0], interp.get_output_details()[0]
    return ((np.dtype(i["dtype"]).name, tuple(i["shape"])), (np.dtype(o["dtype"]).name, tuple(o["shape"])))


def install(tmp: Path, setup: Setup, bundle: Path, digest: str) -> tuple[str, str | None]:
    dev = Device(tmp / "dev")
    dev.init([setup.k["ci"].public_path])  # today's key list; the bundle carries root 1 (2 of 2)
    res = dev.install(str(bundle), expected_digest=digest)
    return res.result, res.active


@needs_tf
def test_saved_model_is_converted_to_float_gated_published_and_installs(
        setup: Setup, handover: dict[str, Path], tmp_path: Path) -> None:
    head = git(setup.repo, "rev-parse", "HEAD")
    r = setup.publish("1.1.0", handover["1.1.0"] / "saved_model")
    assert (r.decision, r.source) == ("published", "converted from saved_model (float32)")
    assert r.gate["passed"]
    assert r.gate["n"] == 1000
    assert r.gate["value"] >= 0.93
    assert r.previous["version"] == "1.0.0"  # the committed .tflite in the registry, for comparison
    # the conversion is faithful: the bundled model computes what the trainer's Keras model computes
    bundle = setup.registry / r.bundle
    model = bundle_member(bundle, "model.tflite")
    assert tflite_io(model) == (("float32", (1, 32, 32, 1)), ("float32", (1, 2)))
    with np.load(bundle_member_file(bundle, "golden.npz", tmp_path)) as g:
        np.testing.assert_allclose(g["expected_outputs"], keras_outputs(handover["1.1.0"], g["inputs"]), atol=1e-5)
    baseline = json.loads(bundle_member(bundle, "baseline.json"))
    assert baseline["n_samples"] == 4000  # computed from the training data, with the converted model
    # the proposal: a new branch, HEAD and the work tree untouched, the message says how the model was obtained
    assert git(setup.repo, "rev-parse", "HEAD") == head
    message = git(setup.repo, "log", "-1", "--format=%B", r.branch)
    assert "Model: converted from saved_model (float32); baseline from 4000 training samples" in message
    assert f"Held-out accuracy {r.gate['value']:.4f} ({r.gate['correct']}/1000)" in message
    assert install(tmp_path, setup, bundle, r.digest) == ("installed", "1.1.0")


@needs_tf
def test_keras_file_is_quantized_to_int8_through_the_cli_with_clean_json(
        setup: Setup, handover: dict[str, Path], tmp_path: Path) -> None:
    # a real process: TensorFlow prints its export listing to stdout; --json output must stay one JSON document
    proc = subprocess.run(
        [sys.executable, "-m", "edge_runtime.release_cli", "--json", "publish",
         "--config", str(setup.repo / "release.yaml"), "--model", INT8, "--model-version", "1.2.0",
         "--from", str(handover["1.1.0"] / "model.keras"), "--train", str(setup.data["train"]),
         "--heldout", str(setup.data["heldout"]),
         "--key", str(setup.k["ci"].private_path), "--key", str(setup.k["rm"].private_path)],
        capture_output=True, text=True, timeout=600, cwd=REPO, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout)
    assert (out["decision"], out["model"]) == ("published", INT8)
    assert out["source"] == "converted from model.keras (full-integer int8, calibrated on 200 training samples)"
    assert out["gate"]["passed"]
    assert out["gate"]["value"] >= 0.93
    assert out["pins"] == {"lab": "1.0.0"}
    assert out["release_counter"] == 3
    bundle = setup.registry / out["bundle"]
    model = bundle_member(bundle, "model.tflite")
    assert tflite_io(model) == (("int8", (1, 32, 32, 1)), ("int8", (1, 2)))
    manifest = Manifest.from_signed(read_envelope(bundle).signed)
    assert (manifest.input_shape, manifest.input_dtype) == ((1, 32, 32, 1), "int8")
    # quantized, yet the same classifier: labels agree with the Keras model on the golden samples
    with np.load(bundle_member_file(bundle, "golden.npz", tmp_path)) as g:
        ref = keras_outputs(handover["1.1.0"], g["inputs"])
        assert (ref.argmax(axis=1) == g["expected_labels"]).all()
        # int8 end to end (inputs, weights, activations): measured within 0.02 of float; 0.05 leaves room
        np.testing.assert_allclose(g["expected_outputs"], ref, atol=0.05)
        assert len(np.unique(g["expected_outputs"] * 256 % 1)) == 1  # outputs on the int8 grid (steps of 1/256)
    diff = git(setup.repo, "diff", "main", out["branch"], "--", "models.yaml")
    assert '-      defect-classifier-int8: "1.0.0"' in diff
    assert '+      defect-classifier-int8: "1.2.0"' in diff
    assert install(tmp_path, setup, bundle, out["digest"]) == ("installed", "1.2.0")


@needs_tf
def test_keras_model_below_the_gate_is_refused_after_conversion(setup: Setup, handover: dict[str, Path]) -> None:
    before = sorted(p.name for p in setup.registry.rglob("*"))
    branches = git(setup.repo, "branch", "--list")
    with pytest.raises(errors.PolicyError, match=r"not released: held-out accuracy 0\.\d{4} \(\d+/1000\) is below "
                                                 r"the gate 0\.9300 by 0\.\d{4}"):
        setup.publish("1.7.0", handover["1.0.0"] / "model.keras")
    assert sorted(p.name for p in setup.registry.rglob("*")) == before
    assert git(setup.repo, "branch", "--list") == branches


@needs_tf
def test_converted_model_whose_input_differs_from_release_yaml_is_refused(
        setup: Setup, handover: dict[str, Path], tmp_path: Path) -> None:
    text = (setup.repo / "release.yaml").read_text().replace("shape: [1, 32, 32, 1], dtype: float32",
                                                             "shape: [1, 28, 28, 1], dtype: float32")
    (tmp_path / "release.yaml").write_text(text)
    cfg = dataclasses.replace(load_release_config(tmp_path / "release.yaml"), models_file=setup.repo / "models.yaml",
                              reports_dir=tmp_path / "reports", trust_root=())
    before = sorted(p.name for p in setup.registry.rglob("*"))
    with pytest.raises(errors.ConfigError, match=r"the model takes \[1, 32, 32, 1\] float32, but release\.yaml "
                                                 r"declares input \[1, 28, 28, 1\] float32 for defect-classifier"):
        publish(cfg, "defect-classifier", "1.8.0", handover["1.1.0"] / "model.keras", setup.data["train"],
                setup.data["heldout"], [setup.k["ci"].private_path], repo=setup.repo, workdir=tmp_path / "w")
    assert sorted(p.name for p in setup.registry.rglob("*")) == before


@needs_tf
def test_a_file_named_keras_that_is_no_keras_model_is_a_clear_error(setup: Setup, tmp_path: Path) -> None:
    bogus = tmp_path / "model.keras"
    bogus.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(errors.ConfigError, match=r"converting '.*model\.keras' to TFLite failed: \w+"):
        setup.publish("1.9.0", bogus)


@pytest.fixture
def no_tensorflow(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make ``import tensorflow`` fail, as in the default venv (also where TensorFlow is installed)."""
    monkeypatch.setitem(sys.modules, "tensorflow", None)


def test_without_tensorflow_a_keras_model_asks_for_the_train_venv(
        setup: Setup, tmp_path: Path, no_tensorflow: None) -> None:
    (tmp_path / "saved").mkdir()
    (tmp_path / "saved" / "saved_model.pb").write_bytes(b"")
    with pytest.raises(errors.ConfigError, match=r"converting it needs TensorFlow") as exc:
        setup.publish("1.9.1", tmp_path / "saved")
    assert "make venv-train" in (exc.value.hint or "")


@pytest.mark.parametrize("name", ["empty-dir", "model.onnx", "missing.keras", "model.h5"])
def test_a_path_that_is_no_model_is_refused_before_any_conversion(setup: Setup, tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    if name == "empty-dir":
        path.mkdir()  # a directory without saved_model.pb is no SavedModel
    elif name in ("model.onnx", "model.h5"):
        path.write_bytes(b"onnx")
    with pytest.raises(errors.ConfigError, match=r"is not a \.tflite file, a \.keras file or a SavedModel directory"):
        setup.publish("1.9.2", path)


@pytest.mark.parametrize(("convert", "message"), [
    ("{quantize: int4}", r"convert\.quantize must be one of \['int8', 'none'\]"),
    ("{quantize: int8}", r"convert\.quantize int8 makes models with int8 input, but input\.dtype is 'float32'"),
    ("{representative_samples: 0}", r"representative_samples must be an integer in \[1, 100000\]"),
    ("{representative_samples: 100001}", r"representative_samples must be an integer in \[1, 100000\]"),
    ("{representative_samples: true}", r"representative_samples must be an integer"),
    ("{quantise: int8}", r"convert must be \{quantize: none\|int8, representative_samples: N\}"),
])
def test_convert_settings_are_checked_strictly(tmp_path: Path, convert: str, message: str) -> None:
    text = (REPO / "release.yaml").read_text().replace(
        "    golden_per_class: 8\n", f"    convert: {convert}\n    golden_per_class: 8\n", 1)
    (tmp_path / "release.yaml").write_text(text)
    with pytest.raises(errors.ConfigError, match=message):
        load_release_config(tmp_path / "release.yaml")


def test_convert_defaults_follow_the_declared_input(tmp_path: Path) -> None:
    cfg = load_release_config(REPO / "release.yaml")
    assert (cfg.models["defect-classifier"].quantize, cfg.models[INT8].quantize) == ("none", "int8")
    assert (cfg.models["defect-classifier"].representative_samples, cfg.models[INT8].representative_samples) == (
        200, 200)
    # the limit itself is allowed
    text = (REPO / "release.yaml").read_text().replace("representative_samples: 200", "representative_samples: 100000")
    (tmp_path / "release.yaml").write_text(text)
    assert load_release_config(tmp_path / "release.yaml").models[INT8].representative_samples == 100000

"""Train and export the small demo models that live under ``demo/models/``.

These are *demo* artifacts for the edge model delivery tooling (bundles, smoke tests, drift
baselines). They are not meant for production use.

Run it with a Python that has TensorFlow (tensorflow-cpu 2.x, Keras 3) and ``ai-edge-litert``::

    /path/to/venv-with-tensorflow/bin/python scripts/train_demo_models.py [--out demo/models]

It needs no network access: all data is generated synthetically and deterministically (fixed
seeds, ``tf.config.experimental.enable_op_determinism``). It takes about a minute on 2 CPU cores.

Task: 32x32 grayscale "texture" images in [0, 1] (brightness gradient, optional stripes, noise).
Class 1 ("defect") images carry one thin bright or dark scratch (a short line segment at a random
angle); class 0 ("good") images do not. The generator (``make_images``) lives in the runtime package
(``edge_runtime/_synthetic.py``, numpy only), where the workload simulator draws its inputs from it;
``tests/unit/test_synthetic.py`` checks that it still reproduces the committed golden inputs and, with
``edge_runtime.baseline``, the committed baselines bit for bit.

Produced, one directory per ``<out>/<model-name>/<version>/`` with ``model.tflite``,
``golden.npz``, ``baseline.json``, ``labels.txt`` and ``release.json`` (formats: docs/DESIGN.md):

* ``defect-classifier`` (float32 input/output)
  - 1.0.0 (release_counter 1): tiny CNN trained on 10% of the training data (worse, still usable).
  - 1.1.0 (release_counter 2): the same CNN trained on all training data (better).
  - 1.2.0 (release_counter 3): correctly built but BAD: trained on flipped labels. Its golden.npz
    holds the *correct* expectations (outputs of 1.1.0, ground-truth labels), so its smoke test
    fails on outputs and on label agreement.
  - 1.3.0 (release_counter 4): TOO SLOW: the 1.1.0 network behind a deliberately heavy stem:
    3x nearest upsampling to 96x96, ten 64-channel 3x3 convolutions, a 1x1 projection back to one
    channel and 3x3 average pooling back to 32x32. The stem is constructed, not trained: channel 0
    passes the image through exactly, the other 63 channels are wasted compute. So the model is as
    accurate as 1.1.0 (its golden expectations are its own outputs) but one invoke takes ~60 ms
    (single thread, x86_64 with XNNPACK), far more than the 20 ms budget, with a ~1.4 MB file.
    Wide convolutions at 32x32 alone cannot exceed 20 ms with XNNPACK (~60 GMAC/s here) while
    the file stays under ~3 MB, hence the upsampling.
* ``defect-classifier-int8`` (full-integer quantization, int8 input and output tensors)
  - 1.0.0 (release_counter 1): from the 10%-data model.
  - 1.1.0 (release_counter 2): from the all-data model.

Hand-over to ``edge-release publish`` (``--export-keras DIR``): only the two good trainings (1.0.0 on 10% of
the data, 1.1.0 on all of it), each saved as the trainer's own artefacts, not converted:
``DIR/<version>/model.keras`` (Keras 3 file) and ``DIR/<version>/saved_model/`` (a TensorFlow SavedModel), both
of the batch-1 export model (input ``[1, 32, 32, 1]`` float32). ``edge-release publish --from`` either of them
converts (float, or full-integer int8 when ``release.yaml`` says ``convert: {quantize: int8}``), evaluates,
bundles and signs (docs/RELEASE.md); ``tests/integration/test_publish_convert.py`` does exactly that.

Golden samples: the same 16 held-out images (8 per class) for every version, chosen (in held-out
order) among those that all good models (float and int8, 1.0.0 and 1.1.0) classify correctly
with confidence >= 0.75. ``expected_outputs`` are the outputs of the TFLite model itself run with
the LiteRT interpreter (dequantized for int8), except for 1.2.0 (see above).

Baselines (``baseline.json``) describe the model's training data: per-image pixel mean and pixel
std, and the model's max softmax probability ("confidence") on that data, computed with the
exported TFLite model. For 1.3.0 the confidence is computed with 1.1.0's TFLite model, which is
the same function (the script checks this on the golden and 100 held-out images) but ~100x cheaper
to run.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script: the repository's edge_runtime
# The data generator lives in the runtime package (numpy only): the workload simulator draws its inputs from it.
from edge_runtime._synthetic import IMG, LABELS, SEED_HELDOUT_DATA, SEED_TRAIN_DATA, make_images
from edge_runtime.baseline import make_baseline

N_TRAIN = 4000
N_HELDOUT = 1000
SMALL_FRACTION = 0.10
N_GOLDEN_PER_CLASS = 8

FLOAT_ATOL = 0.02
MIN_LABEL_AGREEMENT = 0.9
P95_LATENCY_MS = 20.0
REPEATS = 3
# int8 atol = 4 * output scale (1/256 for softmax -> 0.015625): tflite-runtime 2.14's int8 kernels differ
# from LiteRT's by up to 3 quantization steps on these models (measured), and both backends must pass.
INT8_ATOL_IN_OUTPUT_STEPS = 4.0

HEAVY_UPSAMPLE = 3
HEAVY_CHANNELS = 64
HEAVY_LAYERS = 10


# --------------------------------------------------------------------------- data (numpy only)


def datasets() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    x_train, y_train = make_images(N_TRAIN, SEED_TRAIN_DATA)
    x_held, y_held = make_images(N_HELDOUT, SEED_HELDOUT_DATA)
    return x_train, y_train, x_held, y_held


# --------------------------------------------------------------------------- LiteRT runner


class TFLiteModel:
    """Runs a .tflite model one image at a time; float in, float (dequantized) out."""

    def __init__(self, model_bytes: bytes, num_threads: int | None = None):
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError:  # pragma: no cover - fallback for a TF-only environment
            from tensorflow.lite import Interpreter  # type: ignore
        self.interp = Interpreter(model_content=model_bytes, num_threads=num_threads)
        self.interp.allocate_tensors()
        self.inp = self.interp.get_input_details()[0]
        self.out = self.interp.get_output_details()[0]

    @property
    def output_scale(self) -> float:
        return float(self.out["quantization"][0])

    def _quantize(self, x: np.ndarray) -> np.ndarray:
        dtype = self.inp["dtype"]
        if dtype == np.float32:
            return x.astype(np.float32)
        scale, zero_point = self.inp["quantization"]
        info = np.iinfo(dtype)
        q = np.round(x / scale + zero_point)
        return np.clip(q, info.min, info.max).astype(dtype)

    def _dequantize(self, y: np.ndarray) -> np.ndarray:
        if self.out["dtype"] == np.float32:
            return y.astype(np.float32)
        scale, zero_point = self.out["quantization"]
        return ((y.astype(np.float32) - zero_point) * scale).astype(np.float32)

    def predict(self, images: np.ndarray, timings: list[float] | None = None) -> np.ndarray:
        outs = []
        for img in images:
            self.interp.set_tensor(self.inp["index"], self._quantize(img[None]))
            t0 = time.perf_counter()
            self.interp.invoke()
            if timings is not None:
                timings.append((time.perf_counter() - t0) * 1000.0)
            outs.append(self._dequantize(self.interp.get_tensor(self.out["index"]))[0])
        return np.stack(outs).astype(np.float32)


# --------------------------------------------------------------------------- TensorFlow parts


def _tf():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(2)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    tf.config.experimental.enable_op_determinism()
    return tf, keras


def small_layers(keras) -> list:
    return [
        keras.layers.Conv2D(16, 3, padding="same", activation="relu"),
        keras.layers.MaxPooling2D(),
        keras.layers.Conv2D(32, 3, padding="same", activation="relu"),
        keras.layers.MaxPooling2D(),
        keras.layers.Conv2D(32, 3, padding="same", activation="relu"),
        keras.layers.GlobalMaxPooling2D(),
        keras.layers.Dense(2, activation="softmax"),
    ]


def build_small(keras, batch_size: int | None = None):
    return keras.Sequential([keras.Input((IMG, IMG, 1), batch_size=batch_size), *small_layers(keras)])


def train_small(keras, x, y, epochs: int, seed: int):
    keras.utils.set_random_seed(seed)
    model = build_small(keras)
    model.compile(
        optimizer=keras.optimizers.Adam(3e-3),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    model.fit(x, y, batch_size=32, epochs=epochs, shuffle=True, verbose=0)
    return model


def export_model(keras, trained):
    """Batch-1 copy of a trained small model (fixed input shape [1, 32, 32, 1])."""
    model = build_small(keras, batch_size=1)
    model.set_weights(trained.get_weights())
    return model


def build_heavy(keras, trained_small, seed: int):
    """Identity-by-construction heavy stem + the trained small network (see module docstring)."""
    rng = np.random.default_rng(seed)
    stem = [keras.layers.UpSampling2D(HEAVY_UPSAMPLE)]
    convs = [keras.layers.Conv2D(HEAVY_CHANNELS, 3, padding="same", activation="relu") for _ in range(HEAVY_LAYERS)]
    proj = keras.layers.Conv2D(1, 1)
    head = small_layers(keras)
    model = keras.Sequential(
        [
            keras.Input((IMG, IMG, 1), batch_size=1),
            *stem,
            *convs,
            proj,
            keras.layers.AveragePooling2D(HEAVY_UPSAMPLE),
            *head,
        ]
    )
    c_in = 1
    for conv in convs:
        w = rng.normal(0.0, 0.5 / np.sqrt(9 * c_in), (3, 3, c_in, HEAVY_CHANNELS)).astype(np.float32)
        b = np.full(HEAVY_CHANNELS, 0.05, np.float32)  # keeps the wasted channels away from 0
        w[:, :, :, 0] = 0.0  # output channel 0 = input channel 0 (pixels >= 0, so ReLU is a no-op)
        w[1, 1, 0, 0] = 1.0
        b[0] = 0.0
        conv.set_weights([w, b])
        c_in = HEAVY_CHANNELS
    proj_w = np.zeros((1, 1, HEAVY_CHANNELS, 1), np.float32)
    proj_w[0, 0, 0, 0] = 1.0
    proj.set_weights([proj_w, np.zeros(1, np.float32)])
    src = [layer for layer in trained_small.layers if layer.get_weights()]
    dst = [layer for layer in head if layer.get_weights()]
    assert len(src) == len(dst)
    for s, d in zip(src, dst, strict=True):
        d.set_weights(s.get_weights())
    return model


def to_tflite_float(tf, model) -> bytes:
    return tf.lite.TFLiteConverter.from_keras_model(model).convert()


def to_tflite_int8(tf, model, representative: np.ndarray) -> bytes:
    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]

    def rep():
        for img in representative:
            yield [img[None].astype(np.float32)]

    conv.representative_dataset = rep
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = tf.int8
    conv.inference_output_type = tf.int8
    return conv.convert()


# --------------------------------------------------------------------------- artifacts


# feature_summary / make_baseline: edge_runtime.baseline (shared with `edge-release publish`; one format owner)


def write_version(
    out: Path,
    name: str,
    version: str,
    counter: int,
    description: str,
    model_bytes: bytes,
    input_dtype: str,
    golden: tuple[np.ndarray, np.ndarray, np.ndarray],
    baseline: dict,
    atol: float,
) -> Path:
    d = out / name / version
    d.mkdir(parents=True, exist_ok=True)
    (d / "model.tflite").write_bytes(model_bytes)
    inputs, expected_outputs, expected_labels = golden
    with open(d / "golden.npz", "wb") as f:
        np.savez_compressed(
            f,
            inputs=inputs.astype(np.float32),
            expected_outputs=expected_outputs.astype(np.float32),
            expected_labels=expected_labels.astype(np.int64),
        )
    (d / "baseline.json").write_text(
        json.dumps(baseline, separators=(",", ":"), allow_nan=False) + "\n", encoding="utf-8"
    )
    (d / "labels.txt").write_text("".join(label + "\n" for label in LABELS), encoding="utf-8")
    release = {
        "name": name,
        "version": version,
        "release_counter": counter,
        "description": description,
        "input": {"shape": [1, IMG, IMG, 1], "dtype": input_dtype},
        "smoke_test": {
            "atol": atol,
            "min_label_agreement": MIN_LABEL_AGREEMENT,
            "p95_latency_ms": P95_LATENCY_MS,
            "repeats": REPEATS,
        },
    }
    (d / "release.json").write_text(json.dumps(release, indent=2) + "\n", encoding="utf-8")
    return d


def accuracy(outputs: np.ndarray, labels: np.ndarray) -> float:
    return float((outputs.argmax(axis=1) == labels).mean())


# --------------------------------------------------------------------------- fault models (tests only)

#: Loop trips of the hanging model's WHILE: at ~1 us per trip in the TFLite interpreter, about half an
#: hour per invoke -- it "never returns" for any smoke-test deadline, yet is a plain, valid model.
HANG_TRIPS = 2**31 - 1


def build_fault_models(tf) -> dict[str, bytes]:
    """Two REAL but faulty TFLite models for the runtime's fault tests (no training needed).

    * ``hang``: a WHILE loop with ``HANG_TRIPS`` trips around a scalar update; one invoke takes ~30 min.
    * ``nan``: ``log(mean(x) - 2)`` for both classes: every output is NaN for inputs in [0, 1].
    Both take the demo input ``[1, 32, 32, 1]`` float32 and return ``[1, 2]``.
    """
    spec = [tf.TensorSpec([1, IMG, IMG, 1], tf.float32)]

    @tf.function(input_signature=spec)
    def hang(x):
        m = tf.reduce_mean(x, axis=[1, 2, 3])

        def cond(i, acc):
            return i < HANG_TRIPS

        def body(i, acc):
            return i + 1, acc * 0.999 + 0.001 * m

        _, acc = tf.while_loop(cond, body, [tf.constant(0, tf.int32), m])
        return tf.stack([acc, 1.0 - acc], axis=1)

    @tf.function(input_signature=spec)
    def nan(x):
        y = tf.math.log(tf.reduce_mean(x, axis=[1, 2, 3]) - 2.0)
        return tf.stack([y, y], axis=1)

    out = {}
    for key, fn in (("hang", hang), ("nan", nan)):
        conv = tf.lite.TFLiteConverter.from_concrete_functions([fn.get_concrete_function()], fn)
        out[key] = conv.convert()
    return out


def write_fault_models(out: Path, golden_from: Path) -> list[Path]:
    """``<out>/defect-classifier/{1.4.0,1.5.0}``: the hanging and the NaN model, as signed-release dirs.

    They live apart from ``demo/models`` (the registry and the demo never see them). Golden inputs are
    the demo's; 1.4.0 keeps 1.1.0's expectations (it never gets to compare), 1.5.0's expectations are
    its own outputs (NaN) and label 0 -- exactly what a careless release pipeline would record, and what
    a smoke test comparing with ``>`` and ``argmax`` used to pass.
    """
    tf, _ = _tf()
    models = build_fault_models(tf)
    with np.load(golden_from / "golden.npz", allow_pickle=False) as g:
        g_in, g_out, g_lab = (np.asarray(g[k]) for k in ("inputs", "expected_outputs", "expected_labels"))
    nan_out = TFLiteModel(models["nan"]).predict(g_in)
    assert np.isnan(nan_out).all(), "the NaN model produced finite outputs"
    flat = g_in.reshape(len(g_in), -1)
    baseline = make_baseline(g_in, np.stack([flat.mean(axis=1), 1 - flat.mean(axis=1)], axis=1))
    name = "defect-classifier"
    return [
        write_version(
            out, name, "1.4.0", 5,
            f"FAULT MODEL (tests only): a WHILE loop of {HANG_TRIPS} trips; one invoke takes ~30 min, so "
            "its smoke test must time out.",
            models["hang"], "float32", (g_in, g_out, g_lab), baseline, FLOAT_ATOL,
        ),
        write_version(
            out, name, "1.5.0", 6,
            "FAULT MODEL (tests only): every output is NaN (log of a negative number); its golden "
            "expectations are its own NaN outputs and label 0, so only a NaN-aware smoke test fails it.",
            models["nan"], "float32", (g_in, nan_out, np.zeros(len(g_in), np.int64)), baseline, FLOAT_ATOL,
        ),
    ]


#: What ``--export-keras`` trains: version -> (fraction of the training data, seed), as for the committed models.
HANDOVER = {"1.0.0": (SMALL_FRACTION, 1), "1.1.0": (1.0, 2)}


def export_keras(out: Path, versions: tuple[str, ...] = tuple(HANDOVER), epochs: int = 15) -> dict[str, Path]:
    """Train ``versions`` and save each as ``out/<version>/model.keras`` and ``out/<version>/saved_model/``.

    The hand-over to ``edge-release publish`` (which converts); nothing is converted or evaluated here.
    Returns ``{version: out/<version>}``.
    """
    x_train, y_train, _, _ = datasets()
    _, keras = _tf()
    written = {}
    for version in versions:
        fraction, seed = HANDOVER[version]
        n = int(N_TRAIN * fraction)
        print(f"training {version} ({n} images, {epochs} epochs)...", flush=True)
        model = export_model(keras, train_small(keras, x_train[:n], y_train[:n], epochs=epochs, seed=seed))
        d = out / version
        d.mkdir(parents=True, exist_ok=True)
        model.save(d / "model.keras")
        model.export(str(d / "saved_model"), format="tf_saved_model", verbose=False)
        written[version] = d
    return written


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="demo/models", help="output directory (default: demo/models)")
    ap.add_argument(
        "--fault-models",
        metavar="DIR",
        help="only write the faulty test models (hanging, NaN) under DIR (e.g. demo/fault-models); no training",
    )
    ap.add_argument(
        "--export-keras",
        metavar="DIR",
        help="only train 1.0.0 and 1.1.0 and hand them over unconverted: DIR/<version>/model.keras and "
        "DIR/<version>/saved_model/ (for edge-release publish --from)",
    )
    ap.add_argument("--epochs", type=int, default=15, help="training epochs (default 15, as the committed models)")
    args = ap.parse_args(argv)
    if args.export_keras:
        for version, d in export_keras(Path(args.export_keras), epochs=args.epochs).items():
            print(version, d / "model.keras", d / "saved_model")
        return 0
    if args.fault_models:
        for d in write_fault_models(Path(args.fault_models), Path(args.out) / "defect-classifier" / "1.1.0"):
            print(d, sum(f.stat().st_size for f in d.iterdir()), "bytes")
        return 0
    out = Path(args.out)
    t_start = time.time()

    x_train, y_train, x_held, y_held = datasets()
    n_small = int(N_TRAIN * SMALL_FRACTION)
    x_small, y_small = x_train[:n_small], y_train[:n_small]

    tf, keras = _tf()
    print("training 1.0.0 (10% data)...", flush=True)
    m_small = train_small(keras, x_small, y_small, epochs=args.epochs, seed=HANDOVER["1.0.0"][1])
    print("training 1.1.0 (all data)...", flush=True)
    m_full = train_small(keras, x_train, y_train, epochs=args.epochs, seed=HANDOVER["1.1.0"][1])
    print("training 1.2.0 (flipped labels)...", flush=True)
    m_flip = train_small(keras, x_train, 1 - y_train, epochs=args.epochs, seed=3)

    print("converting...", flush=True)
    b_small = to_tflite_float(tf, export_model(keras, m_small))
    b_full = to_tflite_float(tf, export_model(keras, m_full))
    b_flip = to_tflite_float(tf, export_model(keras, m_flip))
    b_heavy = to_tflite_float(tf, build_heavy(keras, m_full, seed=4))
    b_small_q = to_tflite_int8(tf, export_model(keras, m_small), x_small[:200])
    b_full_q = to_tflite_int8(tf, export_model(keras, m_full), x_train[:200])

    r = {
        "small": TFLiteModel(b_small),
        "full": TFLiteModel(b_full),
        "flip": TFLiteModel(b_flip),
        "small_q": TFLiteModel(b_small_q),
        "full_q": TFLiteModel(b_full_q),
    }
    held = {k: m.predict(x_held) for k, m in r.items()}
    acc = {k: accuracy(v, y_held) for k, v in held.items()}

    # Golden samples: all good models correct and confident; in held-out order; 8 per class.
    good_keys = ("small", "full", "small_q", "full_q")
    ok = np.ones(N_HELDOUT, bool)
    for k in good_keys:
        ok &= (held[k].argmax(axis=1) == y_held) & (held[k].max(axis=1) >= 0.75)
    golden_idx = np.sort(np.concatenate([np.flatnonzero(ok & (y_held == c))[:N_GOLDEN_PER_CLASS] for c in (0, 1)]))
    assert len(golden_idx) == 2 * N_GOLDEN_PER_CLASS, "not enough confidently-correct samples"
    g_in, g_lab = x_held[golden_idx], y_held[golden_idx]

    # Heavy model: check equivalence to 1.1.0 and measure its latency.
    heavy = TFLiteModel(b_heavy)
    times: list[float] = []
    g_heavy = heavy.predict(g_in, timings=times)
    h_check = heavy.predict(x_held[:100])
    max_diff = float(max(np.abs(g_heavy - held["full"][golden_idx]).max(), np.abs(h_check - held["full"][:100]).max()))
    assert max_diff < 1e-4, f"heavy stem is not an identity: {max_diff}"
    heavy_ms = float(np.median(times))
    print(f"1.3.0 median invoke {heavy_ms:.1f} ms (single-threaded default), size {len(b_heavy)} B")
    if heavy_ms < 2 * P95_LATENCY_MS:
        print("WARNING: 1.3.0 is not clearly slower than the latency budget on this machine")

    conf_train = {k: r[k].predict(x_train) for k in ("full", "flip", "full_q")}
    conf_small = {k: r[k].predict(x_small) for k in ("small", "small_q")}

    def float_golden(key):
        return g_in, held[key][golden_idx], g_lab

    q_atol_small = round(INT8_ATOL_IN_OUTPUT_STEPS * r["small_q"].output_scale, 6)
    q_atol_full = round(INT8_ATOL_IN_OUTPUT_STEPS * r["full_q"].output_scale, 6)
    name_f, name_q = "defect-classifier", "defect-classifier-int8"
    written = [
        write_version(
            out,
            name_f,
            "1.0.0",
            1,
            f"Tiny CNN trained on 10% of the synthetic data ({n_small} images). "
            f"Held-out accuracy {acc['small']:.3f}. Demo model, not for production.",
            b_small,
            "float32",
            float_golden("small"),
            make_baseline(x_small, conf_small["small"]),
            FLOAT_ATOL,
        ),
        write_version(
            out,
            name_f,
            "1.1.0",
            2,
            f"Tiny CNN trained on all synthetic training data ({N_TRAIN} images). "
            f"Held-out accuracy {acc['full']:.3f}. Demo model, not for production.",
            b_full,
            "float32",
            float_golden("full"),
            make_baseline(x_train, conf_train["full"]),
            FLOAT_ATOL,
        ),
        write_version(
            out,
            name_f,
            "1.2.0",
            3,
            "BAD release (demo): trained on flipped labels, predictions are inverted "
            f"(held-out accuracy {acc['flip']:.3f}). Golden expectations are the correct ones "
            "(1.1.0 outputs, ground-truth labels), so its smoke test must fail.",
            b_flip,
            "float32",
            float_golden("full"),
            make_baseline(x_train, conf_train["flip"]),
            FLOAT_ATOL,
        ),
        write_version(
            out,
            name_f,
            "1.3.0",
            4,
            "TOO SLOW release (demo): the 1.1.0 network behind a heavy stem (3x upsampling, "
            f"{HEAVY_LAYERS} x {HEAVY_CHANNELS}-channel 3x3 convs at 96x96). As accurate as 1.1.0 "
            f"(held-out accuracy {acc['full']:.3f}) but ~60 ms per invoke (one x86_64 thread, "
            "XNNPACK), so its smoke test must fail on latency only.",
            b_heavy,
            "float32",
            (g_in, g_heavy, g_lab),
            # Same training data and (checked) the same function as 1.1.0: see module docstring.
            make_baseline(x_train, conf_train["full"]),
            FLOAT_ATOL,
        ),
        write_version(
            out,
            name_q,
            "1.0.0",
            1,
            f"Full-integer int8 quantization of defect-classifier 1.0.0 (10% data). "
            f"Held-out accuracy {acc['small_q']:.3f}. Smoke atol = "
            f"{INT8_ATOL_IN_OUTPUT_STEPS} x output scale. Demo model, not for production.",
            b_small_q,
            "int8",
            float_golden("small_q"),
            make_baseline(x_small, conf_small["small_q"]),
            q_atol_small,
        ),
        write_version(
            out,
            name_q,
            "1.1.0",
            2,
            f"Full-integer int8 quantization of defect-classifier 1.1.0 (all data). "
            f"Held-out accuracy {acc['full_q']:.3f}. Smoke atol = "
            f"{INT8_ATOL_IN_OUTPUT_STEPS} x output scale. Demo model, not for production.",
            b_full_q,
            "int8",
            float_golden("full_q"),
            make_baseline(x_train, conf_train["full_q"]),
            q_atol_full,
        ),
    ]
    print("held-out accuracy:", {k: round(v, 4) for k, v in acc.items()})
    print("golden held-out indices:", golden_idx.tolist())
    for d in written:
        print(d, sum(f.stat().st_size for f in d.iterdir()), "bytes")
    print(f"done in {time.time() - t_start:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Export: TF Serving SavedModel signatures (reloaded and called), bytes input
and bad bytes, saved_model_cli, TFLite with builtin ops only, the REST and
gRPC clients against local stand-ins for TF Serving, and the CLI."""

import base64
import zlib
import io
import json
import os
import re
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler
from http.server import ThreadingHTTPServer

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_mixer
from keras_mixer.training import data
from keras_mixer import export

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "export"))

import grpc_client  # noqa: E402
import rest_client  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bombs  # noqa: E402

ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "KERAS_BACKEND": "tensorflow"}
LABELS = [f"class_{i}" for i in range(10)]


def _randomise(model, scale=0.05):
    for v in model.weights:
        rng = np.random.default_rng(zlib.crc32(v.path.encode()))
        v.assign(rng.normal(0, scale, v.shape).astype("float32"))
    return model


@pytest.fixture(scope="module")
def small_model():
    keras.utils.set_random_seed(0)
    return _randomise(keras_mixer.MixerS32(input_shape=(64, 64, 3), classes=10))


@pytest.fixture(scope="module")
def served(small_model, tmp_path_factory):
    base = tmp_path_factory.mktemp("serving") / "mixer_s32"
    path = export.save_for_serving(small_model, str(base), version=3,
                                   labels=LABELS)
    return path, tf.saved_model.load(path)


def _images(n, seed=0, size=64):
    return np.random.default_rng(seed).uniform(0, 255, (n, size, size, 3)).astype("float32")


def test_layout_and_signatures(served):
    path, loaded = served
    assert path.endswith(os.path.join("mixer_s32", "3"))
    assert os.path.exists(os.path.join(path, "saved_model.pb"))
    assert os.path.isdir(os.path.join(path, "variables"))
    assert set(export.SIGNATURES) <= set(loaded.signatures)
    # Nothing half-written is left beside the version.
    assert os.listdir(os.path.dirname(path)) == ["3"]


@pytest.mark.parametrize("batch", [3, 1])  # any batch size
def test_serving_default_matches_keras(served, small_model, batch):
    _, loaded = served
    x = _images(batch, seed=batch)
    out = loaded.signatures["serving_default"](images=tf.constant(x))
    expected = small_model.predict(x, verbose=0)
    np.testing.assert_allclose(out["probabilities"], expected, rtol=1e-5, atol=1e-7)
    order = np.argsort(-expected, axis=1, kind="stable")[:, :5]
    np.testing.assert_array_equal(out["top_k_indices"], order)
    np.testing.assert_allclose(out["top_k_scores"],
                               np.take_along_axis(expected, order, 1), rtol=1e-5)
    labels = out["top_k_labels"].numpy().astype(str)
    np.testing.assert_array_equal(labels, np.array(LABELS)[order])
    assert out["top_k_indices"].dtype == tf.int32


def test_features_signature_is_the_prelogits_embedding(served, small_model):
    _, loaded = served
    x = _images(2, seed=5)
    out = loaded.signatures["features"](images=tf.constant(x))["features"]
    pooled = keras.Model(small_model.input, small_model.get_layer("avg_pool").output)
    np.testing.assert_allclose(out, pooled.predict(x, verbose=0), rtol=1e-5, atol=1e-6)
    assert out.shape == (2, 512)


def _encode(image, fmt):
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format=fmt)
    return buffer.getvalue()


def test_image_bytes_decodes_any_format_and_size(served, small_model):
    _, loaded = served
    rng = np.random.default_rng(2)
    rgb = rng.integers(0, 256, (90, 120, 3), dtype=np.uint8)
    gray = rng.integers(0, 256, (70, 50), dtype=np.uint8)
    rgba = rng.integers(0, 256, (64, 64, 4), dtype=np.uint8)
    cases = [
        (_encode(rgb, "PNG"), rgb),
        (_encode(rgb, "BMP"), rgb),
        (_encode(gray, "PNG"), np.repeat(gray[..., None], 3, -1)),
        (_encode(rgba, "PNG"), rgba[..., :3]),
    ]
    blobs = tf.constant([blob for blob, _ in cases])
    out = loaded.signatures["image_bytes"](image_bytes=blobs)
    # Reference: the lossless pixels, the same eval crop, the Keras model.
    reference = np.stack([
        data.resmall_crop(tf.constant(pixels, tf.float32), 64).numpy()
        for _, pixels in cases
    ])
    expected = small_model.predict(reference, verbose=0)
    np.testing.assert_allclose(out["probabilities"], expected, rtol=1e-4, atol=1e-6)
    # JPEG and GIF (palette) decode too; their pixels are lossy, so only the
    # shapes and a valid distribution are checked.
    lossy = [_encode(rgb, "JPEG"), _encode(rgb, "GIF")]
    out = loaded.signatures["image_bytes"](image_bytes=tf.constant(lossy))
    assert out["probabilities"].shape == (2, 10)
    np.testing.assert_allclose(np.sum(out["probabilities"], 1), 1.0, rtol=1e-5)


@pytest.mark.parametrize("bad, message", [
    (b"", r"image_bytes\[1\] is not a JPEG, PNG, GIF or BMP image"),
    (b"not an image", r"image_bytes\[1\] is not a JPEG, PNG, GIF or BMP"),
    (b"\x89PNG\r\n\x1a\n broken", r"image_bytes\[1\] is not a .* header is damaged"),
    (b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x20\0\0\0\x20\x08\x02\0\0\0broken",
     r"image_bytes\[1\] could not be decoded"),
    (bombs.png_bomb(23000), r"image_bytes\[1\] is 23000x23000 pixels, over "
     r"the decoding limit of 67108864 pixels"),
])
def test_bad_bytes_fail_their_request_naming_the_element(served, bad, message):
    _, loaded = served
    good = _encode(np.full((30, 40, 3), 128, np.uint8), "PNG")
    with pytest.raises(tf.errors.InvalidArgumentError, match=message):
        loaded.signatures["image_bytes"](
            image_bytes=tf.constant([good, bad, good]))
    out = loaded.signatures["image_bytes"](image_bytes=tf.constant([good]))
    assert out["probabilities"].shape == (1, 10)


_BOMB_MEMORY = """
import json, os, sys
import numpy as np, tensorflow as tf
sys.path.insert(0, sys.argv[3])
import bombs
from keras_mixer import export
from keras_mixer.training import data

def rss(key):
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024

folder, saved = sys.argv[1], sys.argv[2]
small = tf.io.encode_png(np.full((40, 50, 3), 90, np.uint8)).numpy()
bomb = bombs.png_bomb(23000)
for name, content in (("warm/a/1.png", small), ("warm/b/1.png", small),
                      ("bomb/a/1.png", small), ("bomb/a/2.png", bomb),
                      ("bomb/b/1.png", small)):
    os.makedirs(os.path.dirname(os.path.join(folder, name)), exist_ok=True)
    open(os.path.join(folder, name), "wb").write(content)
signature = tf.saved_model.load(saved).signatures["image_bytes"]

def serve(blob):
    signature(image_bytes=tf.constant([blob]))

def predict(blob):
    export.decode_and_resize(tf.constant(blob), 64, 64, what="bomb.png")

def folder_dataset(name):
    ds, info = data.build_dataset(os.path.join(folder, name), "train",
                                  image_size=16, batch_size=1, training=True)
    list(ds.take(4))
    return info.skipped_files

result = {}
for path, warm, go in (("image_bytes", lambda: serve(small), lambda: serve(bomb)),
                       ("predict", lambda: predict(small), lambda: predict(bomb)),
                       ("folder", lambda: folder_dataset("warm"),
                        lambda: folder_dataset("bomb"))):
    warm()
    idle = rss("VmRSS")
    open("/proc/self/clear_refs", "w").write("5")  # resets the peak (VmHWM)
    try:
        outcome = go()
    except tf.errors.InvalidArgumentError as error:
        outcome = error.message
    result[path] = [rss("VmHWM") - idle, str(outcome)]
print(json.dumps(result))
"""


def test_png_bomb_is_refused_from_its_header_in_bounded_memory(served, tmp_path):
    """A 1.5 MB PNG of 23000x23000 pixels (1.59 GB decoded, 6.3 GB as
    float32): each way in refuses it from its header, and the process's peak
    memory stays within 100 MiB of its idle size (the issue's bound: 1.5 GB)."""
    path, _ = served
    result = subprocess.run(
        [sys.executable, "-c", _BOMB_MEMORY, str(tmp_path), path,
         os.path.dirname(__file__)],
        capture_output=True, text=True, env=ENV, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    limit = "is 23000x23000 pixels, over the decoding limit of 67108864 pixels"
    assert "image_bytes[0] " + limit in report["image_bytes"][1]
    assert "bomb.png " + limit in report["predict"][1]
    assert report["folder"][1] == "1"  # skipped and counted
    for path, (growth, _) in report.items():
        assert growth < 100 * 2**20, (path, growth)


def test_saved_model_cli_shows_the_contract(served):
    path, _ = served
    result = subprocess.run(["saved_model_cli", "show", "--dir", path, "--all"],
                            capture_output=True, text=True, env=ENV, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    text = result.stdout
    blocks = dict(re.findall(r"signature_def\['(\w+)'\]:(.*?)(?=signature_def\[|\Z)",
                             text, re.S))
    for name in export.SIGNATURES:
        assert "tensorflow/serving/predict" in blocks[name]
    default = blocks["serving_default"]
    assert re.search(r"inputs\['images'\].*?dtype: DT_FLOAT\s+shape: \(-1, 64, 64, 3\)", default, re.S)
    assert re.search(r"outputs\['probabilities'\].*?DT_FLOAT\s+shape: \(-1, 10\)", default, re.S)
    assert re.search(r"outputs\['top_k_indices'\].*?DT_INT32\s+shape: \(-1, 5\)", default, re.S)
    assert re.search(r"outputs\['top_k_labels'\].*?DT_STRING\s+shape: \(-1, 5\)", default, re.S)
    assert re.search(r"inputs\['image_bytes'\].*?DT_STRING\s+shape: \(-1\)", blocks["image_bytes"], re.S)
    assert re.search(r"outputs\['features'\].*?DT_FLOAT\s+shape: \(-1, 512\)", blocks["features"], re.S)


def test_export_refuses_bad_arguments(small_model, tmp_path):
    export.save_for_serving(small_model, str(tmp_path / "m"), version=1, labels=LABELS)
    with pytest.raises(FileExistsError, match="exists: pass overwrite=True"):
        export.save_for_serving(small_model, str(tmp_path / "m"), version=1)
    with pytest.raises(ValueError, match="3 labels for a 10-class model"):
        export.save_for_serving(small_model, str(tmp_path / "m"), version=2,
                                labels=["a", "b", "c"])
    headless = keras_mixer.MixerS32(input_shape=(64, 64, 3), include_top=False)
    with pytest.raises(ValueError, match="has no classification head"):
        export.save_for_serving(headless, str(tmp_path / "h"))


def test_logits_model_gets_softmax_and_imagenet_labels(tmp_path):
    model = _randomise(keras_mixer.MixerS32(input_shape=(32, 32, 3),
                                            classifier_activation=None))
    path = export.save_for_serving(model, str(tmp_path / "m"))
    out = tf.saved_model.load(path).signatures["serving_default"](
        images=tf.constant(_images(2, size=32)))
    logits = model.predict(_images(2, size=32), verbose=0)
    expected = np.exp(logits - logits.max(1, keepdims=True))
    expected /= expected.sum(1, keepdims=True)
    np.testing.assert_allclose(out["probabilities"], expected, rtol=1e-5, atol=1e-7)
    names = keras_mixer.labels.class_names(1000)
    top = out["top_k_indices"].numpy()[0, 0]
    assert out["top_k_labels"].numpy()[0, 0].decode() == names[top][1]


def test_full_size_b16_exports_and_serves(tmp_path):
    model = keras_mixer.MixerB16()
    for v in model.weights:  # a non-zero head, so outputs differ per image
        if v.path.startswith("head"):
            v.assign(np.random.default_rng(0).normal(0, 0.02, v.shape))
    # The test reloads and compares itself (what check=True does).
    path = export.save_for_serving(model, str(tmp_path / "mixer_b16"),
                                   check=False)
    loaded = tf.saved_model.load(path)
    x = _images(2, size=224)
    out = loaded.signatures["serving_default"](images=tf.constant(x))
    np.testing.assert_allclose(out["probabilities"], model.predict(x, verbose=0),
                               rtol=1e-4, atol=1e-7)
    assert out["top_k_labels"].shape == (2, 5)
    _check_weights_stored_once(path, model.count_params())


def _check_weights_stored_once(path, params):
    """The float32 weights sit once in variables/, none in the graph
    protobuf (so the 2 GB protobuf limit cannot bite)."""
    variables = sum(os.path.getsize(os.path.join(d, f))
                    for d, _, files in os.walk(os.path.join(path, "variables"))
                    for f in files)
    assert 4 * params <= variables < 4 * params * 1.01
    assert os.path.getsize(os.path.join(path, "saved_model.pb")) < 20e6


def test_h14_exports_past_the_protobuf_limit(tmp_path):
    """Mixer-H/14: 432M parameters, 1.7 GB of float32 (about 25 s and 6.5 GB
    of memory on two cores)."""
    model = keras_mixer.MixerH14()
    path = export.save_for_serving(model, str(tmp_path / "mixer_h14"),
                                   check=False)
    _check_weights_stored_once(path, 432_350_952)
    loaded = tf.saved_model.load(path)
    x = _images(1, size=224)
    out = loaded.signatures["serving_default"](images=tf.constant(x))
    np.testing.assert_allclose(out["probabilities"], model.predict(x, verbose=0),
                               rtol=1e-4, atol=1e-7)


# ----------------------------------------------------------------------------
# TFLite.


def _family_model(family):
    """A small randomised classifier: Mixer with the tanh or the exact GELU,
    or ResMLP."""
    keras.utils.set_random_seed(0)
    if family == "resmlp":
        model = keras_mixer.ResMLP12(input_shape=(32, 32, 3), classes=10)
    else:
        model = keras_mixer.MixerS32(input_shape=(64, 64, 3), classes=10,
                                     approximate_gelu=family == "mixer_tanh")
    return _randomise(model)


@pytest.mark.parametrize("family, quantization", [
    *[("mixer_tanh", q) for q in export.QUANTIZATIONS],
    # The exact (erf) GELU of timm's and deit's weights, and ResMLP's Affine
    # and LayerScale, lower to builtins too.
    ("mixer_exact_gelu", "none"), ("mixer_exact_gelu", "int8"),
    ("resmlp", "none"), ("resmlp", "dynamic_int8"),
])
def test_tflite_is_builtin_only_dynamic_batch_and_matches(family, quantization, tmp_path):
    model = _family_model(family)
    size = model.input_shape[1]
    calibration = _images(16, seed=1, size=size)
    report = export.to_tflite(model, str(tmp_path / "m.tflite"), quantization,
                              representative_data=calibration,
                              measure_latency=quantization == "none")
    # Every op is a builtin: exact GELU included (GELU, not FlexErf).
    assert not [op for op in report["ops"] if op.startswith("Flex")]
    assert "GELU" in report["ops"]
    limit = {"none": 1e-4, "float16": 1e-2, "dynamic_int8": 5e-2, "int8": 1e-1}
    assert report["max_relative_error"] < limit[quantization]
    assert report["top1_agreement"] >= 0.75
    # Dynamic batch: another batch size runs and agrees with Keras.
    x = _images(3, seed=9, size=size)
    got = export.run_tflite(report["path"], x)
    expected = model.predict(x, verbose=0)
    assert got.shape == (3, 10)
    assert np.max(np.abs(got - expected)) / np.max(expected) < limit[quantization]
    sizes = {"none": 4.0, "float16": 2.0, "dynamic_int8": 1.0, "int8": 1.0}
    assert report["size_bytes"] < model.count_params() * sizes[quantization] * 1.1
    # What LiteRT's XNNPACK delegate leaves out. Float files run in one
    # partition. Full-integer int8: token mixing is FULLY_CONNECTED on the
    # transposed table (no BATCH_MATMUL), and LayerNorm's variance a MUL (no
    # SQUARED_DIFFERENCE, which XNNPACK does not run in int8); only the
    # per-token RSQRT with its epsilon ADD and the int8 GELU stay out.
    outside = report["ops_outside_xnnpack"]
    assert "BATCH_MATMUL" not in report["ops"]
    if quantization == "int8":
        norms = 2 * 8 + 1
        assert "SQUARED_DIFFERENCE" not in report["ops"]
        assert set(outside) <= {"RSQRT", "ADD", "GELU"}
        assert outside["RSQRT"] == norms and outside.get("GELU", 0) <= 16
        assert report["xnnpack_partitions"] <= norms + 16 + 1
    elif quantization in ("none", "dynamic_int8"):
        assert (outside, report["xnnpack_partitions"]) == ({}, 1)
    assert not [layer for layer in model._flatten_layers() if "call" in vars(layer)]


def test_layer_norms_trace_as_mul_for_tflite_and_are_restored():
    """Inside `layer_norms_for_xnnpack` every last-axis LayerNormalization
    computes the same function (NumPy float64 reference); other axes and
    layers without centre or scale keep Keras's call; on leaving, no layer
    keeps the patch."""
    rng = np.random.default_rng(3)
    inputs = keras.Input((5, 12))
    norms = [keras_mixer.layers.LayerNorm(name="ours"),
             keras.layers.LayerNormalization(epsilon=1e-3, name="keras"),
             keras.layers.LayerNormalization(axis=1, name="tokens"),
             keras.layers.LayerNormalization(center=False, name="uncentred")]
    model = keras.Model(inputs, [norm(inputs) for norm in norms])
    for v in model.weights:
        v.assign(rng.normal(1.0, 0.5, v.shape))
    x = rng.normal(2.0, 3.0, (4, 5, 12)).astype("float32")

    def reference(norm, axis):
        x64 = x.astype(np.float64)
        mean = x64.mean(axis, keepdims=True)
        var = ((x64 - mean) ** 2).mean(axis, keepdims=True)
        gamma, beta = (np.asarray(w, np.float64) for w in norm.get_weights())
        shape = [1, 1, 1]
        shape[axis] = -1
        return ((x64 - mean) / np.sqrt(var + norm.epsilon) * gamma.reshape(shape)
                + beta.reshape(shape))

    with export.tflite.layer_norms_for_xnnpack(model) as patched:
        assert [n.name for n in patched] == ["ours", "keras", "tokens"]
        got = tf.function(model)(x)
        mul_graph = tf.function(norms[1]).get_concrete_function(
            tf.TensorSpec((None, 5, 12))).graph
    assert "SquaredDifference" not in {op.type for op in mul_graph.get_operations()}
    for out, norm, axis in zip(got[:3], norms, (2, 2, 1)):
        np.testing.assert_allclose(out, reference(norm, axis), rtol=2e-5, atol=2e-5)
    np.testing.assert_allclose(got[3], model(x)[3], rtol=1e-6)
    assert not [layer for layer in model._flatten_layers() if "call" in vars(layer)]
    keras_graph = tf.function(norms[1]).get_concrete_function(
        tf.TensorSpec((None, 5, 12))).graph
    assert "SquaredDifference" in {op.type for op in keras_graph.get_operations()}


def _depthwise_reference(x, kernel, bias, padding):
    """A depthwise convolution in NumPy float64, tap by tap."""
    kh, kw, channels, multiplier = kernel.shape
    if padding == "same":
        top, left = (kh - 1) // 2, (kw - 1) // 2
        x = np.pad(x, [(0, 0), (top, kh - 1 - top), (left, kw - 1 - left), (0, 0)])
    height, width = x.shape[1] - kh + 1, x.shape[2] - kw + 1
    out = np.zeros((x.shape[0], height, width, channels * multiplier))
    for i in range(kh):
        for j in range(kw):
            taps = x[:, i:i + height, j:j + width, :, None] * kernel[i, j]
            out += taps.reshape(out.shape)
    return out + bias


def test_depthwise_convs_trace_in_pieces_for_tflite_and_are_restored():
    """Inside `depthwise_convs_for_xnnpack` a DepthwiseConv2D of more than
    5x5 taps is the sum of its 3x3 pieces: the same function (NumPy float64
    reference), also on a map of unknown size; smaller kernels and strided
    ones keep Keras's call; on leaving, no layer keeps the patch."""
    rng = np.random.default_rng(5)
    convs = [keras.layers.DepthwiseConv2D(7, padding="same", activation="relu",
                                          name="k7"),
             keras.layers.DepthwiseConv2D((9, 4), padding="valid",
                                          depth_multiplier=2, name="k9x4"),
             keras.layers.DepthwiseConv2D(5, padding="same", name="k5"),
             keras.layers.DepthwiseConv2D(7, strides=2, padding="same",
                                          name="strided")]
    inputs = keras.Input((None, None, 3))
    model = keras.Model(inputs, [conv(inputs) for conv in convs])
    for v in model.weights:
        v.assign(rng.normal(size=v.shape))
    x = rng.normal(size=(2, 11, 13, 3)).astype("float32")
    keras_out = model(x)
    with export.tflite.depthwise_convs_for_xnnpack(model) as patched:
        assert [c.name for c in patched] == ["k7", "k9x4"]
        function = tf.function(model)
        got = function(x)
        graph = function.get_concrete_function(
            tf.TensorSpec((None, None, None, 3))).graph
    ops = [op.type for op in graph.get_operations()]
    # 3x3 pieces: 9 for the 7x7, 3 x 2 for the 9x4, 1 + 1 unpatched.
    assert ops.count("DepthwiseConv2dNative") == 9 + 6 + 2
    for out, conv, padding in zip(got[:2], convs, ("same", "valid")):
        kernel, bias = (np.asarray(w, np.float64) for w in conv.get_weights())
        want = _depthwise_reference(x.astype(np.float64), kernel, bias, padding)
        if conv.name == "k7":
            want = np.maximum(want, 0)
        assert np.abs(np.asarray(out) - want).max() < 1e-5 * np.abs(want).max()
    for out, keras_one in zip(got[2:], keras_out[2:]):
        np.testing.assert_allclose(out, keras_one, rtol=1e-6, atol=1e-6)
    assert not [layer for layer in model._flatten_layers() if "call" in vars(layer)]


def test_cycle_shifts_trace_as_depthwise_for_tflite_and_are_restored():
    """Inside `cycle_shifts_for_xnnpack` every Cycle FC shifts its channels
    with a one-hot depthwise convolution: exactly the definition (channel c
    reads position p + d(c), zeros outside), on 1-wide maps too."""
    from keras_mixer.models import cyclemlp

    rng = np.random.default_rng(6)
    for kernel_size in ((1, 3), (3, 1), (1, 4)):
        for height, width in ((5, 7), (1, 1), (2, 1)):
            fc = cyclemlp.CycleFC(4, kernel_size)
            inputs = keras.Input((height, width, 7))
            model = keras.Model(inputs, fc(inputs))
            x = rng.normal(size=(2, height, width, 7)).astype("float32")
            want = np.zeros_like(x)
            axis = fc.shift_axis
            for c, d in enumerate(fc.shifts):
                for p in range(x.shape[axis]):
                    if 0 <= p + d < x.shape[axis]:
                        source = [slice(None), slice(None), slice(None), c]
                        target = list(source)
                        source[axis], target[axis] = p + d, p
                        want[tuple(target)] = x[tuple(source)]
            with export.tflite.cycle_shifts_for_xnnpack(model) as patched:
                assert patched == [fc]
                got = tf.function(fc.shift)(tf.constant(x))
                ops = {op.type for op in tf.function(fc.shift).get_concrete_function(
                    tf.TensorSpec(x.shape)).graph.get_operations()}
            assert "DepthwiseConv2dNative" in ops and "Pad" not in ops
            np.testing.assert_array_equal(got, want)
            assert "shift" not in vars(fc)


def test_tflite_checks(small_model, tmp_path):
    with pytest.raises(RuntimeError, match=r"non-builtin ops \['FlexErf'\]"):
        export.check_builtin_ops(["ADD", "FlexErf"])
    with pytest.raises(ValueError, match="give representative_data"):
        export.to_tflite(small_model, str(tmp_path / "x.tflite"), "int8")
    with pytest.raises(ValueError, match="Unknown quantization 'int4'"):
        export.to_tflite(small_model, str(tmp_path / "x.tflite"), "int4")
    assert not (tmp_path / "x.tflite").exists()


def _tree(path):
    """{relative path: (mode, bytes)} of a file or folder."""
    if os.path.isfile(path):
        return {"": (os.stat(path).st_mode & 0o777, open(path, "rb").read())}
    tree = {}
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            full = os.path.join(root, name)
            content = open(full, "rb").read() if name in files else None
            tree[os.path.relpath(full, path)] = (os.stat(full).st_mode & 0o777,
                                                 content)
    return tree


def test_a_failed_check_leaves_what_was_there(tmp_path, monkeypatch):
    """Exports go to a temporary name and replace the destination only once
    their check passes: a failing check leaves the previous version or file
    byte for byte, and no temporary. Modes are `cp -r`'s."""
    model = _randomise(keras_mixer.MLPMixer(4, 16, 1, 8, 32,
                                            input_shape=(16, 16, 3), classes=3))
    old_umask = os.umask(0o022)
    try:
        version = export.save_for_serving(model, str(tmp_path / "m"),
                                          version=1, top_k=1)
        tflite = str(tmp_path / "m.tflite")
        export.to_tflite(model, tflite, measure_latency=False)
    finally:
        os.umask(old_umask)
    before = _tree(version), _tree(tflite)
    assert {mode for mode, content in before[0].values() if content is None} == {0o755}
    assert {mode for mode, content in before[0].values() if content} == {0o644}
    assert before[1][""][0] == 0o644

    monkeypatch.setattr(export.serving, "SAVED_MODEL_TOLERANCE", -1.0)
    monkeypatch.setitem(export.TFLITE_TOLERANCE, "none", -1.0)
    with pytest.raises(RuntimeError, match="SavedModel .* differs .* not "
                       "written and what was there is unchanged"):
        export.save_for_serving(model, str(tmp_path / "m"), version=1,
                                top_k=1, overwrite=True)
    with pytest.raises(RuntimeError, match="TFLite .* differs"):
        export.to_tflite(model, tflite, measure_latency=False)
    assert (_tree(version), _tree(tflite)) == before
    assert sorted(os.listdir(tmp_path)) == ["m", "m.tflite"]
    assert os.listdir(tmp_path / "m") == ["1"]  # no temporaries left
    # LiteRT would run a 20x20 image on this 16x16 model, dropping pixels.
    with pytest.raises(ValueError, match=r"takes images \[batch, 16, 16, 3\]; "
                       r"got shape \(1, 20, 20, 3\)"):
        export.run_tflite(tflite, _images(1, size=20))


def test_non_finite_weights_are_refused_before_export(tmp_path):
    model = keras_mixer.MLPMixer(4, 16, 1, 8, 32, input_shape=(16, 16, 3),
                                 classes=3)
    kernel = model.get_layer("block_0").channel_mixing.fc1.kernel
    kernel.assign(np.where(np.eye(*kernel.shape) > 0, np.inf, 0.0))
    message = r"tensor 'block_0/channel_mixing/fc1/kernel' holds 16 NaN/Inf"
    with pytest.raises(ValueError, match=message):
        export.save_for_serving(model, str(tmp_path / "m"))
    with pytest.raises(ValueError, match=message):
        export.to_tflite(model, str(tmp_path / "m.tflite"))
    with pytest.raises(ValueError, match=message):
        export.to_onnx(model, str(tmp_path / "m.onnx"))
    model.save(tmp_path / "m.keras")
    with pytest.raises(ValueError, match=message):
        export.load_predictor(str(tmp_path / "m.keras"))
    assert sorted(os.listdir(tmp_path)) == ["m.keras"]


# ----------------------------------------------------------------------------
# Clients against local stand-ins for TF Serving.


class _FakeRestServing(BaseHTTPRequestHandler):
    """Implements TF Serving's REST :predict (row format) over a SavedModel."""

    loaded = None
    requests = []

    def do_POST(self):  # noqa: N802
        match = re.fullmatch(r"/v1/models/(\w+)(?:/versions/(\d+))?:predict", self.path)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).requests.append((self.path, body))
        if not match or match.group(1) != "mixer_s32":
            return self._reply(404, {"error": "Servable not found"})
        signature = self.loaded.signatures[body.get("signature_name", "serving_default")]
        blobs = [base64.b64decode(row["image_bytes"]["b64"]) for row in body["instances"]]
        try:
            out = signature(image_bytes=tf.constant(blobs))
        except tf.errors.InvalidArgumentError as error:
            return self._reply(400, {"error": error.message})
        rows = [{k: (v[i].numpy().astype(str).tolist() if v.dtype == tf.string
                     else v[i].numpy().tolist()) for k, v in out.items()}
                for i in range(len(blobs))]
        self._reply(200, {"predictions": rows})

    def _reply(self, code, payload):
        raw = json.dumps(payload).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def log_message(self, *args):
        pass


@pytest.fixture
def image_files(tmp_path):
    paths = []
    for i, fmt in enumerate(["PNG", "JPEG"]):
        image = np.random.default_rng(i).integers(0, 256, (50, 70, 3), dtype=np.uint8)
        path = tmp_path / f"img{i}.{fmt.lower()}"
        path.write_bytes(_encode(image, fmt))
        paths.append(str(path))
    return paths


def test_rest_client_request_and_output(served, image_files, capsys):
    _, loaded = served
    body = rest_client.build_request(image_files)
    assert body["signature_name"] == "image_bytes"
    assert [sorted(row) for row in body["instances"]] == [["image_bytes"]] * 2
    assert base64.b64decode(body["instances"][0]["image_bytes"]["b64"]) == open(
        image_files[0], "rb").read()
    assert rest_client.predict_url("http://h:8501/", "m", 2) == \
        "http://h:8501/v1/models/m/versions/2:predict"

    _FakeRestServing.loaded, _FakeRestServing.requests = loaded, []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FakeRestServing)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        assert rest_client.main(["--server", url, "--model", "mixer_s32", *image_files]) == 0
    finally:
        server.shutdown()
    printed = capsys.readouterr().out
    direct = loaded.signatures["image_bytes"](
        image_bytes=tf.constant([open(p, "rb").read() for p in image_files]))
    for i, path in enumerate(image_files):
        first = direct["top_k_labels"][i, 0].numpy().decode()
        index = int(direct["top_k_indices"][i, 0])
        assert f"{path}\n  1. {first} ({index}): " in printed
    assert printed.count("  5. ") == 2


def test_grpc_client_request_and_output(served, image_files):
    grpc = pytest.importorskip("grpc")
    from concurrent import futures

    from tensorflow_serving.apis import predict_pb2
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    _, loaded = served
    request = grpc_client.build_request(image_files, "mixer_s32", version=3)
    assert request.model_spec.name == "mixer_s32"
    assert request.model_spec.signature_name == "image_bytes"
    assert request.model_spec.version.value == 3
    tensor = request.inputs["image_bytes"]
    assert tensor.dtype == tf.string.as_datatype_enum
    assert [d.size for d in tensor.tensor_shape.dim] == [2]
    assert tensor.string_val[1] == open(image_files[1], "rb").read()

    seen = []

    class Servicer(prediction_service_pb2_grpc.PredictionServiceServicer):
        def Predict(self, request, context):  # noqa: N802
            seen.append(request)
            signature = loaded.signatures[request.model_spec.signature_name]
            blobs = tf.make_ndarray(request.inputs["image_bytes"])
            out = signature(image_bytes=tf.constant(blobs))
            response = predict_pb2.PredictResponse()
            for key, value in out.items():
                response.outputs[key].CopyFrom(tf.make_tensor_proto(value.numpy()))
            return response

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(Servicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        outputs = grpc_client.predict(f"127.0.0.1:{port}", "mixer_s32", image_files)
    finally:
        server.stop(0)
    assert seen[0].model_spec.name == "mixer_s32"
    direct = loaded.signatures["image_bytes"](
        image_bytes=tf.constant([open(p, "rb").read() for p in image_files]))
    np.testing.assert_array_equal(outputs["top_k_indices"], direct["top_k_indices"])
    lines = grpc_client.format_top5(outputs)
    assert lines[0][0].startswith(f"  1. {direct['top_k_labels'][0, 0].numpy().decode()} (")


# ----------------------------------------------------------------------------
# CLI.


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "keras_mixer", *args],
                          capture_output=True, text=True, env=ENV, timeout=400)


def test_export_and_predict_cli(small_model, image_files, tmp_path,
                                cli_usage_error):
    model_file = tmp_path / "s32.keras"
    small_model.save(model_file)
    labels = tmp_path / "labels.txt"
    labels.write_text("\n".join(LABELS) + "\n")
    out_dir = tmp_path / "models" / "mixer_s32"
    result = _cli("export", f"--model={model_file}", f"--output={out_dir}",
                  "--version=2", "--tflite=none,dynamic_int8", f"--labels={labels}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert (out_dir / "2" / "saved_model.pb").exists()
    for quantization in ("none", "dynamic_int8"):
        assert (out_dir / f"mixer_s32_{quantization}.tflite").exists()
        assert re.search(rf"TFLite\s+{quantization}: .* MB, batch-1 [\d.]+ ms, "
                         r"max relative error .*, builtin ops only", result.stdout)
    # The checks before any work run in this process (no new interpreter).
    assert "exists: give --overwrite" in cli_usage_error(
        "export", f"--model={model_file}", f"--output={out_dir}", "--version=2")

    direct = small_model.predict(np.stack([
        data.resmall_crop(tf.cast(tf.io.decode_image(open(p, "rb").read(), 3), tf.float32),
                          64).numpy() for p in image_files]), verbose=0)
    for model_dir in (out_dir / "2", out_dir / "mixer_s32_none.tflite", model_file):
        result = _cli("predict", f"--model_dir={model_dir}", f"--labels={labels}", *image_files)
        assert result.returncode == 0, result.stderr[-3000:]
        for i, path in enumerate(image_files):
            top = int(np.argmax(direct[i]))
            assert f"{path}\n  1. class_{top} ({top}): " in result.stdout
        assert result.stdout.count("  5. ") == 2

    assert "No such image file(s)" in cli_usage_error(
        "predict", f"--model_dir={out_dir / '2'}", str(tmp_path / "none.png"))
    assert "--tflite int8 calibrates on real images" in cli_usage_error(
        "export", f"--model={model_file}", f"--output={tmp_path / 'x'}",
        "--tflite=int8")


def test_onnx_matches_keras_in_onnxruntime(tmp_path):
    """The exact GELU: TensorFlow's Erfc goes to ONNX as 1 - Erf."""
    pytest.importorskip("tf2onnx")
    model = _family_model("mixer_exact_gelu")
    size = model.input_shape[1]
    report = export.to_onnx(model, str(tmp_path / "m.onnx"),
                            check_data=_images(2, seed=4, size=size))
    assert report["max_relative_error"] < 1e-5
    assert "Erf" in report["ops"]
    import onnxruntime

    session = onnxruntime.InferenceSession(report["path"], providers=["CPUExecutionProvider"])
    x = _images(5, seed=6, size=size)  # another batch size
    got = session.run(None, {session.get_inputs()[0].name: x})[0]
    np.testing.assert_allclose(got, model.predict(x, verbose=0), rtol=1e-4, atol=1e-6)

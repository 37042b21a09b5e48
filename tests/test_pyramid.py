"""CycleMLP and Vision Permutator: the Keras models against the independent
NumPy float64 reference (`tests/reference_pyramid.py`, whose Cycle FC is
torchvision's `deform_conv2d` evaluated by its definition, not the shift the
models use), loading files written in the official key layouts; seeded bugs
that the comparison catches; size rules; the official file formats; the
stage features and the README's segmentation example; JAX and PyTorch;
mixed precision; export.

Every weight is random (the reference's generator: O(1) activations, a
branch softmax far from uniform, the exact fixed offsets)."""

import argparse
import importlib.util
import json
import os
import re
import subprocess
import sys

import keras
import numpy as np
import pytest

import keras_mixer
from keras_mixer import benchmark
from keras_mixer import checkpoints
from keras_mixer import train
from keras_mixer.checkpoints import assign
from keras_mixer.models import cyclemlp
from keras_mixer.models import vip

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(TESTS_DIR)
DATA = os.path.join(TESTS_DIR, "data")


def _load(name):
    # By path under a private name, independent of sys.path.
    path = os.path.join(TESTS_DIR, f"{name}.py")
    spec = importlib.util.spec_from_file_location(f"_keras_mixer_tests_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


R = _load("reference_pyramid")
rel_err = _load("reference").rel_err

RTOL = 1e-5
# A seeded bug must move the logits by far more than the float32 error.
BUG = 1e-3
CLASSES = 5
# The configurations of tests/data/cyclemlp.json and vip.json (same shapes,
# so the JAX process compiles each op once for both).
CYCLE = dict(depths=(1, 1, 1, 1), widths=(8, 8, 16, 16), mlp_ratios=(2, 2, 4, 4))
VIP_S7 = dict(patch_size=4, depths=(1, 1, 1, 1), widths=(16, 32, 32, 32),
              transitions=(True, False, False, False), segment_dims=(8, 4, 4, 4),
              mlp_ratios=(3, 3, 3, 3))
# M/7's layout: the stride-2 convolution after the second stage.
VIP_M7 = dict(VIP_S7, widths=(16, 16, 32, 32), transitions=(False, True, False, False),
              segment_dims=(8, 8, 4, 4))


@pytest.fixture(autouse=True, scope="module")
def _float32_full_precision():
    keras.config.set_dtype_policy("float32")
    import tensorflow as tf

    before = tf.config.experimental.tensor_float_32_execution_enabled()
    tf.config.experimental.enable_tensor_float_32_execution(False)
    yield
    tf.config.experimental.enable_tensor_float_32_execution(before)


def images(shape, seed, batch=2):
    return np.random.default_rng(seed).uniform(0, 255, (batch,) + shape).astype("float32")


def run(model, x):
    return keras.ops.convert_to_numpy(model(x, training=False))


def save_torch(path, obj):
    """torch.save of nested dicts whose arrays become tensors."""
    torch = pytest.importorskip("torch")

    def convert(value):
        if isinstance(value, dict):
            return {k: convert(v) for k, v in value.items()}
        if isinstance(value, np.ndarray):
            return torch.from_numpy(np.ascontiguousarray(value))
        return value

    torch.save(convert(obj), str(path))
    return str(path)


def cycle_state(seed):
    return R.random_cyclemlp_state(**CYCLE, classes=CLASSES, seed=seed)


def vip_state(config, seed):
    return R.random_vip_state(**config, classes=CLASSES, seed=seed)


def vip_reference(state, config, x, **kwargs):
    return R.vip_forward(state, x, config["segment_dims"], **kwargs)


# ----------------------------------------------------------------------------
# Files in the official layouts give the reference's logits and features.
# ----------------------------------------------------------------------------


def test_cyclemlp_release_file_gives_the_reference_outputs(tmp_path):
    state = cycle_state(seed=1)
    assert any(k.endswith(".offset") for k in state)  # the deform path runs
    # As main.py saves it: the state under 'model', beside the arguments.
    path = save_torch(tmp_path / "CycleMLP_tiny.pth", {
        "model": state, "epoch": 299,
        "args": argparse.Namespace(model="CycleMLP_B1", lr=1e-3),
    })
    # (32, 64): the last map is 1x2, where a shift by one row reads only zeros.
    for shape, seed in (((64, 64, 3), 2), ((64, 96, 3), 3), ((32, 64, 3), 4)):
        kwargs = dict(CYCLE, classes=CLASSES, input_shape=shape, weights=path)
        x = images(shape, seed)
        model = keras_mixer.CycleMLP(**kwargs, classifier_activation=None)
        logits = run(model, x)
        expected = R.cyclemlp_forward(state, x, logits=True)
        assert rel_err(logits, expected) < RTOL
        assert 0.1 < np.abs(expected).max() < 100 and np.std(expected) > 0.1
        features = keras_mixer.feature_extractor(model)(x)
        for name, value in R.cyclemlp_features(state, x).items():
            stride = 4 * 2 ** int(name[-1])
            assert value.shape[1:3] == (shape[0] // stride, shape[1] // stride)
            assert rel_err(features[name], value) < RTOL, name
    # The normalised map of the backbone, and the softmax head.
    backbone = keras_mixer.CycleMLP(**kwargs, include_top=False)
    expected = R.cyclemlp_forward(state, x, include_top=False)
    assert rel_err(run(backbone, x), expected) < RTOL
    probs = run(keras_mixer.CycleMLP(**kwargs), x)
    assert rel_err(probs, R.cyclemlp_forward(state, x)) < RTOL


@pytest.mark.parametrize("layout", ["S7", "M7"])
def test_vip_file_gives_the_reference_outputs(tmp_path, layout):
    config = VIP_S7 if layout == "S7" else VIP_M7
    state = vip_state(config, seed=4)
    if layout == "S7":  # a timm training checkpoint, DataParallel keys
        other = vip_state(config, seed=5)
        obj = {"state_dict": {f"module.{k}": v for k, v in state.items()},
               "state_dict_ema": other, "epoch": 3, "arch": "vip_s7",
               "args": argparse.Namespace(model="vip_s7")}
    else:  # a bare state dict
        obj = state
    path = save_torch(tmp_path / "vip.pth", obj)
    x = images((32, 32, 3), 6)
    model = keras_mixer.VisionPermutator(
        **config, classes=CLASSES, classifier_activation=None, weights=path)
    expected = vip_reference(state, config, x, logits=True)
    assert rel_err(run(model, x), expected) < RTOL
    assert 0.1 < np.abs(expected).max() < 100 and np.std(expected) > 0.1
    features = keras_mixer.feature_extractor(model)(x)
    reference = R.vip_features(state, x, config["segment_dims"])
    assert sorted(features) == sorted(reference) == [f"stage_{s}" for s in range(4)]
    for name, value in reference.items():
        assert rel_err(features[name], value) < RTOL, name


@pytest.mark.parametrize("name", ["sfc_h", "sfc_w"])
def test_cycle_fc_is_deform_conv2d_with_the_fixed_offsets(name):
    """The layer (shifts) against deform_conv2d's definition, at sizes where
    the shift leaves the map (width or height 1) and channel counts that are
    not multiples of 3."""
    kernel_size = cyclemlp.CYCLE_KERNELS[name]
    rng = np.random.default_rng(15)
    for shape in ((2, 5, 6, 7), (1, 1, 3, 4), (1, 3, 1, 5)):
        offsets = cyclemlp.cycle_offsets(shape[-1], kernel_size)
        np.testing.assert_array_equal(offsets, R.cycle_offsets(shape[-1], kernel_size))
        layer = cyclemlp.CycleFC(6, kernel_size)
        layer.build(shape)
        weight = rng.standard_normal((6, shape[-1], 1, 1))  # torch layout
        bias = rng.standard_normal(6)
        layer.set_weights([weight[:, :, 0, 0].T, bias])
        x = rng.standard_normal(shape).astype("float32")
        expected = R.cycle_fc(x, weight, bias, offsets)
        assert rel_err(run(layer, x), expected) < RTOL, shape


@pytest.mark.parametrize("family", ["cyclemlp", "vip"])
def test_reference_uses_every_tensor(family):
    """Each tensor of the official layout moves the reference's logits: a
    key map that dropped or misplaced one could not match it."""
    if family == "cyclemlp":
        state, x = cycle_state(seed=7), images((64, 64, 3), 8, batch=1)
        forward = lambda s: R.cyclemlp_forward(s, x, logits=True)  # noqa: E731
    else:
        state, x = vip_state(VIP_S7, seed=7), images((32, 32, 3), 8, batch=1)
        forward = lambda s: vip_reference(s, VIP_S7, x, logits=True)  # noqa: E731
    base = forward(state)
    rng = np.random.default_rng(9)
    for key, value in state.items():
        if key.endswith(".offset"):
            continue  # fixed by the architecture (refused when altered)
        changed = dict(state)
        changed[key] = value + 0.2 * rng.standard_normal(value.shape).astype(value.dtype)
        assert rel_err(forward(changed), base) > BUG, key


# ----------------------------------------------------------------------------
# Seeded bugs: each moves the model away from the reference.
# ----------------------------------------------------------------------------


def _off_by_one(channels, kernel_size):
    k = max(kernel_size)
    return np.arange(channels) % k - k // 2  # start index 0 instead of 1


def _swapped(x, dense, segment_dim, axis, _branch=vip.permute_branch):
    return _branch(x, dense, segment_dim, 3 - axis)


CYCLE_BUGS = {
    "offset pattern off by one": (cyclemlp, "cycle_shifts", _off_by_one),
    "H/W swapped": (cyclemlp, "CYCLE_KERNELS", {"sfc_h": (3, 1), "sfc_w": (1, 3)}),
    "missing softmax": (keras.ops, "softmax", lambda x, axis=-1: x),
}
VIP_BUGS = {
    "H/W swapped": (vip, "permute_branch", _swapped),
    "missing softmax": (keras.ops, "softmax", lambda x, axis=-1: x),
}


@pytest.mark.parametrize("family", ["cyclemlp", "vip"])
def test_seeded_bugs_are_caught(family, monkeypatch):
    """The clean model agrees with the reference; the same model with one
    bug seeded (patched into the library code it would live in) does not."""
    if family == "cyclemlp":
        state, x, bugs = cycle_state(seed=10), images((64, 96, 3), 11), CYCLE_BUGS
        expected = R.cyclemlp_forward(state, x, logits=True)

        def build():
            return keras_mixer.CycleMLP(**CYCLE, classes=CLASSES,
                                        input_shape=x.shape[1:],
                                        classifier_activation=None)
    else:
        state, x, bugs = vip_state(VIP_S7, seed=10), images((32, 32, 3), 11), VIP_BUGS
        expected = vip_reference(state, VIP_S7, x, logits=True)

        def build():
            return keras_mixer.VisionPermutator(**VIP_S7, classes=CLASSES,
                                                classifier_activation=None)
    checkpoint = checkpoints.convert_arrays(state)

    def logits():
        model = build()
        assign.assign_checkpoint(model, checkpoint)
        return run(model, x)

    assert rel_err(logits(), expected) < RTOL
    for bug, (where, name, replacement) in bugs.items():
        with monkeypatch.context() as patch:
            patch.setattr(where, name, replacement)
            assert rel_err(logits(), expected) > BUG, bug


def test_altered_offsets_are_refused_naming_the_tensor(tmp_path):
    state = cycle_state(seed=12)
    key = "network.2.0.attn.sfc_w.offset"
    state[key] = np.roll(state[key], 2, axis=1)
    path = save_torch(tmp_path / "altered.pth", {"model": state})
    with pytest.raises(ValueError, match=re.escape(f"offsets '{key}'")):
        keras_mixer.CycleMLP(**CYCLE, input_shape=(64, 64, 3), weights=path)
    # The offset check also stops two of the seeded bugs at loading time.
    path = save_torch(tmp_path / "clean.pth", {"model": cycle_state(seed=12)})
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(cyclemlp, "cycle_shifts", _off_by_one)
        with pytest.raises(ValueError, match="differ from CycleMLP's fixed pattern"):
            keras_mixer.CycleMLP(**CYCLE, input_shape=(64, 64, 3), weights=path)


def test_official_layouts_are_read_strictly():
    vip_keys = vip_state(VIP_S7, seed=13)
    extra = dict(vip_keys, **{"network.0.0.attn.mlp_h.bias": np.zeros(16, "float32")})
    with pytest.raises(ValueError, match=r"keys that a Vision Permutator does not have: \['network.0.0.attn.mlp_h.bias'\]"):
        checkpoints.convert_arrays(extra)
    missing = dict(vip_keys)
    del missing["network.2.0.attn.mlp_w.weight"]
    with pytest.raises(ValueError, match=r"incomplete Vision Permutator checkpoint: missing \['network.2.0.attn.mlp_w.weight'\]"):
        checkpoints.convert_arrays(missing)
    cycle_keys = cycle_state(seed=13)
    del cycle_keys["network.0.0.attn.sfc_h.offset"]
    with pytest.raises(ValueError, match=r"incomplete CycleMLP checkpoint: missing \['network.0.0.attn.sfc_h.offset'\]"):
        checkpoints.convert_arrays(cycle_keys)
    converted = checkpoints.convert_arrays(cycle_state(seed=13))
    assert (converted.family, converted.source) == ("cyclemlp", "official CycleMLP")
    assert len(converted.buffers) == 2 * 4  # two Cycle FCs per block
    assert checkpoints.convert_arrays(vip_keys).family == "vip"


# ----------------------------------------------------------------------------
# Sizes, variants, FLOPs.
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("build, message", [
    (lambda: keras_mixer.ViPS7(input_shape=(256, 256, 3)),
     r"Input height 256: the input side must be 224 \(Vision Permutator's permute layers are \(C, C\) matrices over segment_dim = 32 rows and columns of 7-pixel patches"),
    (lambda: keras_mixer.ViPS14(input_shape=(224, 448, 3)), "Input width 448: the input side must be 224"),
    (lambda: keras_mixer.CycleMLPB1(input_shape=(100, 224, 3)),
     "Input height 100 is not a multiple of the total stride 32: use 96 or 128"),
    (lambda: keras_mixer.VisionPermutator(**dict(VIP_S7, segment_dims=(8, 8, 4, 4))),
     r"segment_dims\[1\] = 8 cannot be used: stage 1's map is 4x4"),
    (lambda: keras_mixer.CycleMLP((1, 1), (8, 16, 32), (2, 2)),
     "Give one entry per stage in each of depths, widths, mlp_ratios: depths has 2, widths has 3"),
    (lambda: keras_mixer.CycleMLP((1,), (2,), (2,), input_shape=(32, 32, 3)),
     r"`widths\[0\]` must be an integer >= 4, got 2"),
    (lambda: benchmark.check_arguments("ViPM7", image_size=448),
     "image_size 448: ViPM7's input side must be 224"),
    (lambda: train.check_inputs(dict(config="x", dataset="digits", data_dir=None, model="ViPS7",
                                     image_size=256, teacher=None)),
     "--image_size 256: ViPS7's input side must be 224"),
    (lambda: train.check_inputs(dict(config="x", dataset="digits", data_dir=None, model="CycleMLPB2",
                                     image_size=200, teacher=None)),
     "--image_size 200 is not a multiple of CycleMLPB2's total stride 32: use 192 or 224"),
])
def test_sizes_are_refused_with_reasons(build, message):
    with pytest.raises(ValueError, match=message):
        build()


def test_variants_carry_their_size_rule():
    assert keras_mixer.CycleMLPB3.size_rule.multiple == 32
    assert keras_mixer.ViPS14.size_rule.only == 224
    assert keras_mixer.ViPL7.size_rule.only == 224
    keras_mixer.ViPS7.size_rule.check("image_size", 224)  # accepted
    assert keras_mixer.MixerB16.size_rule.multiple == 16


def test_count_flops_is_the_hand_count(constant_initializers):
    # Per position of a map of width C, MLP ratio r: 4 C^2 (the three
    # branches and proj) + 2 r C^2 (the MLP); per image the reweighting
    # (4 C * C/4), the stem, the downsamplings and the head.
    def blocks(side, c, r, n):
        return n * (side * side * (4 + 2 * r) * c * c + 4 * c * (c // 4))

    c, r, d = (64, 128, 320, 512), (4, 4, 4, 4), (2, 2, 4, 2)
    macs = 56 * 56 * 7 * 7 * 3 * c[0] + c[-1] * 1000
    for s, side in enumerate((56, 28, 14, 7)):
        macs += blocks(side, c[s], r[s], d[s])
        if s:
            macs += side * side * 9 * c[s - 1] * c[s]
    assert keras_mixer.count_flops(keras_mixer.CycleMLPB1()) == 2 * macs
    assert round(macs / 1e9, 1) == 2.1  # the README's "2.1G" (MACs)
    c, d = (192, 384, 384, 384), (4, 3, 8, 3)
    macs = 32 * 32 * 7 * 7 * 3 * 192 + 16 * 16 * 4 * 192 * 384 + 384 * 1000
    for s, side in enumerate((32, 16, 16, 16)):
        macs += blocks(side, c[s], 3, d[s])
    assert keras_mixer.count_flops(keras_mixer.ViPS7()) == 2 * macs
    assert round(macs / 1e9, 1) == 6.9  # the paper's ViP-S/7


# ----------------------------------------------------------------------------
# Pyramid features for dense prediction: the README example runs.
# ----------------------------------------------------------------------------


def test_readme_segmentation_example_trains():
    with open(os.path.join(ROOT, "README.md")) as f:
        readme = f.read()
    section = readme[readme.index("### Dense prediction"):]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    namespace = {}
    exec(compile(code, "README.md", "exec"), namespace)  # noqa: S102
    model, history = namespace["model"], namespace["history"]
    assert model.output_shape == (None, 64, 64, 3)
    losses = history.history["loss"]
    assert len(losses) == 3 and all(np.isfinite(losses))
    assert losses[-1] < losses[0]


# ----------------------------------------------------------------------------
# Mixed precision, visualize, CLI.
# ----------------------------------------------------------------------------


def test_mixed_precision_dtypes():
    keras.config.set_dtype_policy("mixed_bfloat16")
    for model in (
        keras_mixer.CycleMLP(**CYCLE, input_shape=(64, 64, 3), classes=CLASSES),
        keras_mixer.VisionPermutator(**VIP_S7, classes=CLASSES),
    ):
        assert {v.dtype for v in model.weights} == {"float32"}
        block = model.get_layer("stage_0_block_0")
        assert block.compute_dtype == block.token_mixing.reweight.compute_dtype == "bfloat16"
        for layer in ("avg_pool", "head", "predictions"):
            assert model.get_layer(layer).compute_dtype == "float32"
        x = images(model.input_shape[1:], 14)
        assert keras_mixer.feature_extractor(model)(x)["stage_3"].dtype == "bfloat16"
        y = model(x)
        assert y.dtype == "float32"
        np.testing.assert_allclose(np.sum(y, -1), 1.0, rtol=1e-5)


def test_training_reaches_every_weight():
    import tensorflow as tf

    for model, state in (
        (keras_mixer.CycleMLP(**CYCLE, input_shape=(64, 64, 3), classes=CLASSES,
                              drop_path_rate=0.2, classifier_activation=None),
         cycle_state(16)),
        (keras_mixer.VisionPermutator(**VIP_S7, classes=CLASSES, drop_path_rate=0.2,
                                      classifier_activation=None),
         vip_state(VIP_S7, 16)),
    ):
        assign.assign_checkpoint(model, checkpoints.convert_arrays(state))
        x = tf.constant(images(model.input_shape[1:], 17, batch=4))
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(model(x, training=True) ** 2)
        grads = tape.gradient(loss, model.trainable_weights)
        for v, g in zip(model.trainable_weights, grads):
            assert g is not None and float(tf.reduce_max(tf.abs(g))) > 0, v.path


def test_stem_figure_and_cli(tmp_path, cli_usage_error):
    from keras_mixer import cli
    from keras_mixer import visualize

    figure = visualize.stem_units(keras_mixer.VisionPermutator(**VIP_S7))
    assert "16 linear\nprojection units (4x4 patches)" in figure.axes[0].get_title()
    path = tmp_path / "stem.png"
    assert cli.main(["keras-mixer", "visualize",
                     f"--model={os.path.join(DATA, 'cyclemlp.keras')}",
                     f"--output={path}"]) == 0
    assert path.read_bytes().startswith(b"\x89PNG")
    message = cli_usage_error("summary", "--model=ViPS7", "--image_size=256")
    assert "Input height 256: the input side must be 224" in message


def test_cli_summary_by_name(constant_initializers, capsys):
    """`keras-mixer summary --model CycleMLPB1` in this process (the console
    script's own path is tested in tests/test_cli.py)."""
    from keras_mixer import cli

    assert cli.main(["keras-mixer", "summary", "--model=CycleMLPB1",
                     "--image_size=64"]) == 0
    out = capsys.readouterr().out
    assert "stage_3_block_1" in out
    assert "parameters: 15,155,400" in out
    flops = keras_mixer.count_flops(keras_mixer.CycleMLPB1(input_shape=(64, 64, 3)))
    assert f"(2 x multiply-accumulates): {flops / 1e9:.2f}" in out


# ----------------------------------------------------------------------------
# Export: SavedModel, builtin-only TFLite with no 5-D tensor, ONNX.
# ----------------------------------------------------------------------------


def test_export_saved_model_tflite_and_onnx(tmp_path):
    import tensorflow as tf

    from keras_mixer import export

    models = {
        # The last map is 1x2: LiteRT once failed on its empty shift slices.
        "cyclemlp": keras_mixer.CycleMLP(**CYCLE, input_shape=(32, 64, 3), classes=CLASSES,
                                         classifier_activation=None),
        "vip": keras_mixer.VisionPermutator(**VIP_S7, classes=CLASSES,
                                            classifier_activation=None),
    }
    states = {"cyclemlp": cycle_state(30), "vip": vip_state(VIP_S7, 31)}
    for name, model in models.items():
        assign.assign_checkpoint(model, checkpoints.convert_arrays(states[name]))
        x = images(model.input_shape[1:], 32, batch=3)
        report = export.to_tflite(model, str(tmp_path / f"{name}.tflite"),
                                  check_data=x, measure_latency=False)
        assert not [op for op in report["ops"] if op.startswith("Flex")], report["ops"]
        assert report["max_relative_error"] < 1e-4
        interpreter = tf.lite.Interpreter(model_path=report["path"])
        ranks = {len(t["shape"]) for t in interpreter.get_tensor_details()}
        assert max(ranks) <= 4, (name, ranks)
        # One XNNPACK partition: the branch weights are sliced without
        # dropping an axis (a STRIDED_SLICE that drops one stays outside).
        assert (report["ops_outside_xnnpack"], report["xnnpack_partitions"]) == ({}, 1)
        # CycleMLP's shifts: one-hot depthwise convolutions, no masked sums.
        assert ("DEPTHWISE_CONV_2D" in report["ops"]) == (name == "cyclemlp")
        got = export.run_tflite(report["path"], x[:1])  # another batch size
        assert rel_err(got, run(model, x[:1])) < 1e-4
    served = export.save_for_serving(models["vip"], str(tmp_path / "serving"))
    x = images((32, 32, 3), 33, batch=2)
    out = tf.saved_model.load(served).signatures["serving_default"](images=tf.constant(x))
    logits = run(models["vip"], x)
    softmax = np.exp(logits - logits.max(1, keepdims=True))
    softmax /= softmax.sum(1, keepdims=True)
    np.testing.assert_allclose(out["probabilities"], softmax, rtol=1e-4, atol=1e-6)
    pytest.importorskip("tf2onnx")
    report = export.to_onnx(models["cyclemlp"], str(tmp_path / "cyclemlp.onnx"),
                            check_data=images((32, 64, 3), 34))
    assert report["max_relative_error"] < 1e-5


# ----------------------------------------------------------------------------
# JAX and PyTorch, in fresh processes that run while the module's other tests
# do (the fixture starts them; the module's last test waits for them).
# ----------------------------------------------------------------------------

_BACKEND_SCRIPT = r"""
import json, os, sys
import numpy as np
import keras
from keras.src.initializers import random_initializers
import keras_mixer

# Every variable below is set from a file (assign_checkpoint refuses a
# variable left out), so the random draws of the initial values are skipped:
# on JAX each new shape compiles its own.
def zeros(self, shape, dtype=None):
    return keras.ops.zeros(shape, dtype=dtype)
for name in ("RandomNormal", "TruncatedNormal", "RandomUniform", "VarianceScaling"):
    setattr(getattr(random_initializers, name), "__call__", zeros)

if keras.backend.backend() == "jax":
    import jax
    jax.config.update("jax_default_matmul_precision", "highest")

    def run(model, x):  # one compiled function instead of op-by-op compiles
        call = jax.jit(lambda t, n, x: model.stateless_call(t, n, x)[0])
        out = call([v.value for v in model.trainable_variables],
                   [v.value for v in model.non_trainable_variables], x)
        return jax.tree_util.tree_map(np.asarray, out)
else:
    def run(model, x):
        out = model(x, training=False)
        return keras.tree.map_structure(keras.ops.convert_to_numpy, out)

data, cases, out_path = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
outputs = {}
for case in cases:
    builder = getattr(keras_mixer, case["builder"])
    prefix = os.path.join(data, case["name"])
    x = np.load(prefix + ".input.npy", allow_pickle=False)
    # A file in the official layout: logits and stage outputs.
    model = builder(**case["kwargs"], weights=case["weights"])
    features = keras_mixer.feature_extractor(model).output
    both = keras.Model(model.input, {"logits": model.output, **features})
    for key, value in run(both, x).items():
        outputs[f"reference_{case['name']}/{key}"] = value
    # The .keras file saved on TensorFlow.
    whole = keras.models.load_model(prefix + ".keras", safe_mode=True)
    outputs[case["name"] + "/keras"] = run(whole, x)
np.savez(out_path, **outputs)
print("BACKEND=" + keras.backend.backend())
"""
BACKENDS = ("jax", "torch")
# name: (builder, configuration, seed of the state in the official layout)
BACKEND_CASES = {
    "cyclemlp": ("CycleMLP", CYCLE, 20),
    "vip": ("VisionPermutator", VIP_S7, 22),
}


def _official_state(name):
    _, config, seed = BACKEND_CASES[name]
    return cycle_state(seed) if name == "cyclemlp" else vip_state(config, seed)


@pytest.fixture(scope="module", autouse=True)
def other_backends(request, tmp_path_factory):
    """Starts one process per backend when the module starts, if the test
    that checks them is selected: {backend: (output file, process)}."""
    if not any(item.name == "test_jax_and_pytorch_match_the_reference_and_load_saved_files"
               for item in request.session.items):
        yield None
        return
    folder = tmp_path_factory.mktemp("backends")
    cases = []
    for name, (builder, config, _) in BACKEND_CASES.items():
        weights = folder / f"{name}.npz"
        np.savez(weights, **_official_state(name))
        shape = np.load(os.path.join(DATA, f"{name}.input.npy"), mmap_mode="r").shape
        kwargs = {k: v if k == "patch_size" else list(v) for k, v in config.items()}
        kwargs.update(classes=CLASSES, classifier_activation=None,
                      input_shape=list(shape[1:]))
        cases.append(dict(name=name, builder=builder, kwargs=kwargs,
                          weights=str(weights)))
    processes = {}
    for backend in BACKENDS:
        env = dict(os.environ, KERAS_BACKEND=backend, JAX_PLATFORMS="cpu",
                   TF_CPP_MIN_LOG_LEVEL="3",
                   PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]))
        out = folder / f"{backend}.npz"
        processes[backend] = (out, subprocess.Popen(
            [sys.executable, "-c", _BACKEND_SCRIPT, DATA, json.dumps(cases), str(out)],
            cwd=str(folder), env=env, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True))
    yield processes
    for _, process in processes.values():
        if process.poll() is None:  # the test did not run (a failure before)
            process.kill()
            process.communicate()


def test_jax_and_pytorch_match_the_reference_and_load_saved_files(other_backends):
    """JAX and PyTorch (one fresh process each, both at once): files in the
    official layouts give the reference's logits and stage outputs (rel err
    < 1e-5), and the .keras files saved on TensorFlow (tests/data) give the
    logits saved with them. The images are those saved with the .keras files
    (one batch size for every call, so JAX compiles fewer functions)."""
    expected = {}
    for name, (builder, config, _) in BACKEND_CASES.items():
        with open(os.path.join(DATA, f"{name}.json")) as f:
            assert json.load(f)["builder"] == builder
        state = _official_state(name)
        x = np.load(os.path.join(DATA, f"{name}.input.npy"))
        if name == "cyclemlp":
            logits = R.cyclemlp_forward(state, x, logits=True)
            features = R.cyclemlp_features(state, x)
        else:
            logits = vip_reference(state, config, x, logits=True)
            features = R.vip_features(state, x, config["segment_dims"])
        expected[f"reference_{name}/logits"] = logits
        for key, value in features.items():
            expected[f"reference_{name}/{key}"] = value
        expected[f"{name}/keras"] = np.load(os.path.join(DATA, f"{name}.logits.npy"))
    for backend, (out, process) in other_backends.items():
        stdout, stderr = process.communicate(timeout=600)
        assert process.returncode == 0, stdout[-2000:] + stderr[-4000:]
        assert stdout.strip().splitlines()[-1] == f"BACKEND={backend}"
        with np.load(out, allow_pickle=False) as got:
            assert sorted(got.files) == sorted(expected)
            for key, value in expected.items():
                assert rel_err(got[key], value) < RTOL, (backend, key)

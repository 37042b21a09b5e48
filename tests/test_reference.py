"""The Keras models against the independent NumPy float64 reference
(`tests/reference.py`), with every weight randomised so that every term of
the equations shows in the output."""

import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(TESTS_DIR)
REFERENCE_PATH = os.path.join(TESTS_DIR, "reference.py")
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import keras  # noqa: E402

import keras_mixer  # noqa: E402


def _load_reference():
    # Loaded by path under a private name: independent of sys.path and of any
    # other module called `reference`.
    spec = importlib.util.spec_from_file_location(
        "_keras_mixer_tests_reference", REFERENCE_PATH
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


reference = _load_reference()

RTOL = 1e-5

MIXER_SMALL = dict(
    patch_size=4, hidden_dim=24, num_blocks=2, tokens_mlp_dim=12,
    channels_mlp_dim=48, input_shape=(16, 16, 3), classes=7,
)
RESMLP_SMALL = dict(
    patch_size=4, hidden_dim=24, num_blocks=2, input_shape=(16, 16, 3),
    classes=7,
)


# ----------------------------------------------------------------------------
# Helpers.
# ----------------------------------------------------------------------------


@pytest.fixture(autouse=True, scope="module")
def _float32_full_precision():
    """float32 everywhere, and no TF32 matmuls on GPUs (which would miss
    1e-5 by far); restored afterwards."""
    policy = keras.config.dtype_policy()
    keras.config.set_dtype_policy("float32")
    backend = keras.backend.backend()
    restore = None
    if backend == "tensorflow":
        import tensorflow as tf

        before = tf.config.experimental.tensor_float_32_execution_enabled()
        tf.config.experimental.enable_tensor_float_32_execution(False)
        restore = lambda: tf.config.experimental.enable_tensor_float_32_execution(before)  # noqa: E731
    elif backend == "jax":
        import jax

        before = jax.config.jax_default_matmul_precision
        jax.config.update("jax_default_matmul_precision", "highest")
        restore = lambda: jax.config.update("jax_default_matmul_precision", before)  # noqa: E731
    yield
    keras.config.set_dtype_policy(policy)
    if restore is not None:
        restore()


rel_err = reference.rel_err


def random_weights(model, seed):
    """A float32 random value for every weight of `model`, keyed by path.

    Kernels ~ N(0, 1/fan_in) (activations stay O(1)), biases and shifts
    ~ N(0, 0.3^2), LayerNorm / Affine scales ~ 1 + N(0, 0.3^2), LayerScale
    factors ~ N(0, 0.4^2); nothing is left at its (zero, one or tiny)
    initial value."""
    rng = np.random.default_rng(seed)
    weights = {}
    for v in model.weights:
        path, shape = v.path, tuple(v.shape)
        leaf = path.rsplit("/", 1)[-1]
        if leaf == "kernel":
            fan_in = int(np.prod(shape[:-1]))
            value = rng.standard_normal(shape) / np.sqrt(fan_in)
        elif leaf in ("bias", "beta"):
            value = 0.3 * rng.standard_normal(shape)
        elif leaf == "gamma" and "/ls" in path:
            value = 0.4 * rng.standard_normal(shape)
        elif leaf in ("gamma", "alpha"):
            value = 1.0 + 0.3 * rng.standard_normal(shape)
        else:  # pragma: no cover - a new kind of weight
            raise AssertionError(f"no random rule for weight {path}")
        weights[path] = value.astype(np.float32)
    return weights


def set_weights(model, weights):
    """Assigns weights[path] to every weight of `model`; every one of the
    model's weights must be given (extra entries, e.g. the head for a
    backbone, are ignored)."""
    paths = [v.path for v in model.weights]
    assert len(set(paths)) == len(paths), "duplicate weight paths"
    missing = set(paths) - set(weights)
    assert not missing, f"no value for {sorted(missing)}"
    for v in model.weights:
        assert tuple(v.shape) == weights[v.path].shape, v.path
        v.assign(weights[v.path])


def random_images(shape, seed, batch=3):
    rng = np.random.default_rng(seed)
    return rng.uniform(0.0, 255.0, (batch,) + tuple(shape)).astype(np.float32)


def run(model, images):
    out = model(images, training=False)
    return keras.ops.convert_to_numpy(out)


def build_pair(builder, kwargs, seed):
    """The classifier (logits) with random weights, and the backbone
    (include_top=False, pooling=None) with the same weights."""
    model = builder(**kwargs, classifier_activation=None)
    weights = random_weights(model, seed)
    set_weights(model, weights)
    backbone = builder(**kwargs, include_top=False, pooling=None)
    set_weights(backbone, weights)
    return model, backbone, weights


def check_model(builder, kwargs, family, approximate_gelu, seed):
    model, backbone, weights = build_pair(builder, kwargs, seed)
    images = random_images(kwargs["input_shape"], seed + 1)
    ref = dict(approximate_gelu=approximate_gelu)

    logits = run(model, images)
    expected = reference.forward(family, weights, images, logits=True, **ref)
    assert logits.shape == (images.shape[0], kwargs["classes"])
    assert rel_err(logits, expected) < RTOL

    tokens = run(backbone, images)
    expected_tokens = reference.forward(
        family, weights, images, include_top=False, **ref
    )
    patch = model.get_layer("stem").patch_size
    height, width = kwargs["input_shape"][:2]
    assert tokens.shape == (
        images.shape[0], (height // patch) * (width // patch),
        model.get_layer("stem").hidden_dim,
    )
    assert rel_err(tokens, expected_tokens) < RTOL
    return model, weights, images, logits


# ----------------------------------------------------------------------------
# Keras (current backend) against the reference.
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("approximate_gelu", [True, False])
def test_mixer_small_matches_reference(approximate_gelu):
    kwargs = dict(MIXER_SMALL, approximate_gelu=approximate_gelu)
    _, _, _, logits = check_model(
        keras_mixer.MLPMixer, kwargs, "mixer", approximate_gelu, seed=10
    )
    # The logits are O(1) and differ between images and classes.
    assert 0.1 < np.max(np.abs(logits)) < 100
    assert np.std(logits) > 0.1


def test_mixer_gelu_forms_differ():
    # tanh vs erf GELU must be distinguishable at this tolerance, otherwise
    # the two parametrisations above test the same thing.
    model, _, weights = build_pair(
        keras_mixer.MLPMixer, dict(MIXER_SMALL, approximate_gelu=True), 11
    )
    images = random_images(MIXER_SMALL["input_shape"], 12)
    out = run(model, images)
    tanh = reference.mixer_forward(weights, images, True, logits=True)
    erf = reference.mixer_forward(weights, images, False, logits=True)
    assert rel_err(out, tanh) < RTOL
    # (The two forms differ by < 5e-4 pointwise; here by ~7e-5 in the
    # logits, while the float32 model is within ~2e-7 of the reference.)
    assert rel_err(out, erf) > 3 * RTOL


def test_resmlp_small_matches_reference():
    _, _, _, logits = check_model(
        keras_mixer.ResMLP, RESMLP_SMALL, "resmlp", False, seed=20
    )
    assert 0.1 < np.max(np.abs(logits)) < 1e3
    assert np.std(logits) > 0.1


def test_softmax_and_pooling_outputs():
    model = keras_mixer.MLPMixer(**MIXER_SMALL)  # softmax
    weights = random_weights(model, 30)
    set_weights(model, weights)
    images = random_images(MIXER_SMALL["input_shape"], 31)
    probs = run(model, images)
    expected = reference.mixer_forward(weights, images)
    assert rel_err(probs, expected) < RTOL
    np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-5)
    for pooling in ("avg", "max"):
        backbone = keras_mixer.MLPMixer(
            **MIXER_SMALL, include_top=False, pooling=pooling
        )
        set_weights(backbone, weights)
        expected = reference.mixer_forward(
            weights, images, include_top=False, pooling=pooling
        )
        assert rel_err(run(backbone, images), expected) < RTOL


@pytest.mark.parametrize(
    "builder, family, mode",
    [
        (keras_mixer.MLPMixer, "mixer", "torch"),
        (keras_mixer.ResMLP, "resmlp", "tf"),
    ],
)
def test_preprocessing_modes(builder, family, mode):
    config = MIXER_SMALL if family == "mixer" else RESMLP_SMALL
    rng_images = random_images(config["input_shape"], 41)
    # A non-default mode inside the model.
    model = builder(**config, classifier_activation=None, preprocessing=mode)
    weights = random_weights(model, 40)
    set_weights(model, weights)
    expected = reference.forward(
        family, weights, rng_images, logits=True, preprocess=mode
    )
    assert rel_err(run(model, rng_images), expected) < RTOL
    # No preprocessing inside the model: it takes normalised input as is.
    raw = builder(
        **config, classifier_activation=None, include_preprocessing=False
    )
    set_weights(raw, weights)
    x = np.random.default_rng(42).standard_normal(
        (2,) + config["input_shape"]
    ).astype(np.float32)
    expected = reference.forward(
        family, weights, x, logits=True, preprocess=False
    )
    assert rel_err(run(raw, x), expected) < RTOL


def test_named_variants_match_reference():
    check_model(
        keras_mixer.MixerS32,
        dict(input_shape=(64, 64, 3), classes=10),
        "mixer", True, seed=50,
    )
    check_model(
        keras_mixer.ResMLP12,
        dict(input_shape=(32, 32, 3), classes=10),
        "resmlp", False, seed=60,
    )


# ----------------------------------------------------------------------------
# The comparison can fail.
# ----------------------------------------------------------------------------


def test_perturbed_token_mixing_weight_is_detected():
    model, _, weights = build_pair(keras_mixer.MLPMixer, MIXER_SMALL, 70)
    images = random_images(MIXER_SMALL["input_shape"], 71)
    out = run(model, images)
    assert rel_err(out, reference.mixer_forward(weights, images, logits=True)) < RTOL
    perturbed = dict(weights)
    kernel = perturbed["block_0/token_mixing/fc1/kernel"].copy()
    kernel[3, 5] += 0.5
    perturbed["block_0/token_mixing/fc1/kernel"] = kernel
    expected = reference.mixer_forward(perturbed, images, logits=True)
    assert rel_err(out, expected) > 1e-3


def test_token_axis_and_patch_order_are_checked():
    model, _, weights = build_pair(keras_mixer.ResMLP, RESMLP_SMALL, 80)
    images = random_images(RESMLP_SMALL["input_shape"], 81)
    out = run(model, images)
    assert rel_err(out, reference.resmlp_forward(weights, images, logits=True)) < RTOL
    # The square cross-patch kernel transposed: mixing the wrong way round.
    transposed = dict(weights)
    transposed["block_0/cross_patch/kernel"] = np.ascontiguousarray(
        weights["block_0/cross_patch/kernel"].T
    )
    expected = reference.resmlp_forward(transposed, images, logits=True)
    assert rel_err(out, expected) > 1e-3
    # Tokens in column-major order instead of raster order.
    swapped = np.ascontiguousarray(images.transpose(0, 2, 1, 3))
    kernel = weights["stem/proj/kernel"]
    swapped_weights = dict(weights, **{
        "stem/proj/kernel": np.ascontiguousarray(kernel.transpose(1, 0, 2, 3))
    })
    expected = reference.resmlp_forward(swapped_weights, swapped, logits=True)
    assert rel_err(out, expected) > 1e-3


@pytest.mark.parametrize("family", ["mixer", "resmlp"])
def test_reference_uses_every_weight(family):
    # Every weight of the model moves the reference's output: a reference
    # that ignored a weight (or the model's copy of it) could not match.
    builder = keras_mixer.MLPMixer if family == "mixer" else keras_mixer.ResMLP
    config = MIXER_SMALL if family == "mixer" else RESMLP_SMALL
    model = builder(**config, classifier_activation=None)
    weights = random_weights(model, 90)
    images = random_images(config["input_shape"], 91, batch=2)
    base = reference.forward(family, weights, images, logits=True)
    rng = np.random.default_rng(92)
    for path, value in weights.items():
        changed = dict(weights)
        changed[path] = value + 0.2 * rng.standard_normal(value.shape).astype(
            np.float32
        )
        out = reference.forward(family, changed, images, logits=True)
        if family == "mixer" and path.endswith("token_mixing/fc2/bias"):
            # The one exception, a property of the architecture: this bias
            # adds b[s] to every channel of token s; every later use of the
            # residual stream goes through a LayerNorm over the channels,
            # which removes a per-token constant. (A bias over the tokens is
            # checked by ResMLP's cross_patch, followed by an Affine.)
            assert rel_err(out, base) < 1e-12, path
        else:
            assert rel_err(out, base) > 1e-3, path


# ----------------------------------------------------------------------------
# The JAX backend, in a subprocess.
# ----------------------------------------------------------------------------

_JAX_SCRIPT = r"""
import importlib.util, json, sys
import jax
jax.config.update("jax_default_matmul_precision", "highest")
import numpy as np
import keras
import keras_mixer

assert keras.backend.backend() == "jax", keras.backend.backend()
keras.config.set_dtype_policy("float32")
reference_path, cases_json, out_path = sys.argv[1:4]
spec = importlib.util.spec_from_file_location("jax_reference", reference_path)
reference = importlib.util.module_from_spec(spec)
spec.loader.exec_module(reference)

results = {}
for case in json.loads(cases_json):
    data = np.load(case["npz"], allow_pickle=False)
    images = data["__images__"]
    weights = {k: data[k] for k in data.files if k != "__images__"}
    builder = getattr(keras_mixer, case["builder"])
    for include_top in (True, False):
        model = builder(**case["kwargs"], include_top=include_top,
                        classifier_activation=None)
        for v in model.weights:
            v.assign(weights[v.path])
        out = keras.ops.convert_to_numpy(model(images, training=False))
        expected = reference.forward(
            case["family"], weights, images, logits=True,
            include_top=include_top,
            approximate_gelu=case["approximate_gelu"])
        assert out.shape == expected.shape, (case["name"], out.shape)
        err = reference.rel_err(out, expected)
        assert err < 1e-5, (case["name"], include_top, err)
        results[case["name"] + ("_top" if include_top else "_tokens")] = out
np.savez(out_path, **results)
print("BACKEND=" + keras.backend.backend())
"""


def test_jax_backend_matches_reference(tmp_path):
    pytest.importorskip("jax")
    cases, expected = [], {}
    specs = [
        ("mixer_tanh", "MLPMixer", "mixer", True, MIXER_SMALL),
        ("mixer_erf", "MLPMixer", "mixer", False, MIXER_SMALL),
        ("resmlp", "ResMLP", "resmlp", False, RESMLP_SMALL),
    ]
    for i, (name, builder_name, family, approx, config) in enumerate(specs):
        kwargs = dict(config)
        if family == "mixer":
            kwargs["approximate_gelu"] = approx
        # Weights drawn from this (parent) process's model, so the paths are
        # checked to agree between backends too.
        model = getattr(keras_mixer, builder_name)(**kwargs)
        weights = random_weights(model, 100 + i)
        images = random_images(config["input_shape"], 200 + i, batch=2)
        npz = tmp_path / f"{name}.npz"
        np.savez(npz, __images__=images, **weights)
        cases.append(dict(name=name, builder=builder_name, family=family,
                          approximate_gelu=approx, kwargs=kwargs,
                          npz=str(npz)))
        for include_top, suffix in ((True, "_top"), (False, "_tokens")):
            expected[name + suffix] = reference.forward(
                family, weights, images, logits=True,
                include_top=include_top, approximate_gelu=approx)
    out_path = tmp_path / "jax_outputs.npz"
    env = dict(os.environ)
    env["KERAS_BACKEND"] = "jax"
    env["JAX_PLATFORMS"] = "cpu"  # the parent may hold the GPU
    env["PYTHONPATH"] = os.pathsep.join(
        [ROOT] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    )
    proc = subprocess.run(
        [sys.executable, "-c", _JAX_SCRIPT, REFERENCE_PATH,
         json.dumps(cases), str(out_path)],
        cwd=str(tmp_path), env=env, capture_output=True, text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    lines = proc.stdout.strip().splitlines()
    assert lines and lines[-1] == "BACKEND=jax", proc.stdout[-3000:]
    with np.load(out_path, allow_pickle=False) as outputs:
        assert sorted(outputs.files) == sorted(expected)
        for key, value in expected.items():
            assert rel_err(outputs[key], value) < RTOL, key

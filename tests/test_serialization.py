"""Whole models through .keras and .weights.h5, and mixed-precision dtypes."""

import keras
import numpy as np
import pytest

import keras_mixer

SMALL = {
    "MixerS32": dict(input_shape=(64, 64, 3), drop_path_rate=0.1, dropout_rate=0.1),
    "MixerS16": dict(input_shape=(32, 48, 1), include_top=False, pooling="avg"),
    "ResMLP12": dict(input_shape=(32, 32, 3), drop_path_rate=0.1),
    # The generic builders, small, with their extra options.
    "MLPMixer": dict(
        patch_size=4, hidden_dim=16, num_blocks=2, tokens_mlp_dim=8,
        channels_mlp_dim=32, input_shape=(16, 16, 3), approximate_gelu=False,
        head_dropout_rate=0.2, preprocessing="zero_one",
    ),
    "ResMLP": dict(
        patch_size=4, hidden_dim=16, num_blocks=3, mlp_ratio=3,
        input_shape=(16, 16, 3), include_top=False, preprocessing="tf",
    ),
}
MODELS = {**keras_mixer.MODELS, "MLPMixer": keras_mixer.MLPMixer, "ResMLP": keras_mixer.ResMLP}


def _randomise(model, seed=0):
    rng = np.random.default_rng(seed)
    for v in model.weights:
        v.assign(0.05 * rng.normal(size=v.shape))


@pytest.mark.parametrize("name", sorted(SMALL))
def test_keras_file_round_trip(name, tmp_path):
    model = MODELS[name](**SMALL[name])
    _randomise(model)
    shape = model.input_shape[1:]
    x = np.random.default_rng(1).uniform(0, 255, (2,) + shape).astype("float32")
    expected = np.asarray(model(x))
    path = tmp_path / f"{name}.keras"
    model.save(path)
    # safe_mode stays on: every layer is a registered class, no lambdas.
    restored = keras.models.load_model(path, safe_mode=True)
    assert [l.name for l in restored.layers] == [l.name for l in model.layers]
    assert restored.count_params() == model.count_params()
    np.testing.assert_array_equal(np.asarray(restored(x)), expected)


@pytest.mark.parametrize("name", sorted(SMALL))
def test_weights_file_round_trip(name, tmp_path):
    model = MODELS[name](**SMALL[name])
    _randomise(model)
    shape = model.input_shape[1:]
    x = np.random.default_rng(2).uniform(0, 255, (2,) + shape).astype("float32")
    path = tmp_path / f"{name}.weights.h5"
    model.save_weights(path)
    fresh = MODELS[name](**SMALL[name])
    assert not np.allclose(fresh(x), model(x))
    fresh.load_weights(path)
    np.testing.assert_array_equal(np.asarray(fresh(x)), np.asarray(model(x)))
    # The constructor's `weights=` takes the same file.
    built = MODELS[name](weights=str(path), **SMALL[name])
    np.testing.assert_array_equal(np.asarray(built(x)), np.asarray(model(x)))


@pytest.mark.parametrize("policy", ["mixed_bfloat16", "mixed_float16"])
@pytest.mark.parametrize("name", ["MixerS32", "ResMLP12"])
def test_mixed_precision_dtypes(policy, name):
    keras.config.set_dtype_policy(policy)
    half = policy.split("_")[1]
    model = MODELS[name](**SMALL[name])
    # Variables stay float32; matmuls run in the policy's half type.
    assert {v.dtype for v in model.weights} == {"float32"}
    block = model.get_layer("block_0")
    assert block.compute_dtype == half
    mlp = block.channel_mixing
    assert mlp.fc1.compute_dtype == half
    # Pooling, head and softmax run in float32.
    for layer in ("avg_pool", "head", "predictions"):
        assert model.get_layer(layer).compute_dtype == "float32"
    features = keras_mixer.feature_extractor(model, ["block_0", "pre_head_norm"])
    x = np.random.default_rng(3).uniform(0, 255, (2,) + model.input_shape[1:])
    out = features(x)
    assert out["block_0"].dtype == half
    y = model(x)
    assert y.dtype == "float32"
    np.testing.assert_allclose(np.sum(y, -1), 1.0, rtol=1e-5)


@pytest.mark.parametrize("policy", ["mixed_bfloat16", "mixed_float16"])
def test_layer_norm_statistics_in_float32(policy):
    """Tokens with a large common offset: variance from half-precision sums
    would cancel catastrophically; float32 statistics recover the signal."""
    keras.config.set_dtype_policy(policy)
    half = policy.split("_")[1]
    block = keras_mixer.models.mixer.MixerBlock(4, 8)
    rng = np.random.default_rng(4)
    signal = rng.normal(size=(2, 6, 64))
    x = keras.ops.cast(200.0 + signal, half)
    block(x)
    norm = block.norm1
    y = np.asarray(keras.ops.cast(norm(x), "float32"))
    x32 = np.asarray(keras.ops.cast(x, "float32"), "float64")
    ref = (x32 - x32.mean(-1, keepdims=True)) / np.sqrt(
        x32.var(-1, keepdims=True) + 1e-6
    )
    # Within half-precision rounding of the output (bf16: 8 bits).
    tol = 0.05 if half == "bfloat16" else 0.01
    assert np.max(np.abs(y - ref)) < tol * np.max(np.abs(ref))


# The dataset paths of a one-block Mixer's .weights.h5. Keras names a
# functional model's top-level layers by class in these files (and nested
# ones by attribute), so swapping a layer's class (e.g. pre_head_norm) or
# renaming a sublayer attribute would make saved files fail to load.
MIXER_WEIGHTS_H5_PATHS = [
    f"layers/{layer}/vars/{i}"
    for layer in (
        "dense", "layer_normalization",
        "mixer_block/channel_mixing/fc1", "mixer_block/channel_mixing/fc2",
        "mixer_block/norm1", "mixer_block/norm2",
        "mixer_block/token_mixing/fc1", "mixer_block/token_mixing/fc2",
        "patch_embedding/proj",
    )
    for i in (0, 1)
]


def test_weights_file_layout_is_unchanged(tmp_path):
    h5py = pytest.importorskip("h5py")
    model = keras_mixer.MLPMixer(
        patch_size=4, hidden_dim=8, num_blocks=1, tokens_mlp_dim=4,
        channels_mlp_dim=16, input_shape=(8, 8, 3), classes=3)
    path = str(tmp_path / "m.weights.h5")
    model.save_weights(path)
    paths = []
    with h5py.File(path, "r") as f:
        f.visit(lambda n: paths.append(n) if isinstance(f[n], h5py.Dataset)
                else None)
    assert sorted(paths) == sorted(MIXER_WEIGHTS_H5_PATHS)


# ----------------------------------------------------------------------------
# What the package writes loads in a new process after `import keras_mixer`
# alone, and that import stays free of TensorFlow, under JAX and PyTorch
# (under TensorFlow, tests/test_journey.py loads a trained run's models in a
# new process).

FRESH_PROCESS = r"""
import json, sys
import keras, keras_mixer
import numpy as np

out = {"tensorflow_at_import": "tensorflow" in sys.modules,
       "registered": sorted(k for k in keras.saving.get_custom_objects()
                            if k.startswith("keras_mixer>"))}
for name in ("recipes", "evaluation", "visualize"):  # backend-agnostic
    getattr(keras_mixer, name)
out["tensorflow_after_agnostic"] = "tensorflow" in sys.modules
# (Keras's own file reading may import TensorFlow when it is installed.)
model = keras.saving.load_model(sys.argv[1])  # safe_mode on
got = keras.ops.convert_to_numpy(model(np.load(sys.argv[2])))
out["max_abs_diff"] = float(np.max(np.abs(got - np.load(sys.argv[3]))))
out["schedule"] = model.optimizer.get_config()["learning_rate"]
out["lazy"] = {n: getattr(keras_mixer, n).__name__
               for n in keras_mixer.LAZY_SUBMODULES}
out["lazy_targets"] = keras_mixer.LAZY_SUBMODULES
if sys.argv[4] == "classes":  # every serializable class of every module
    import importlib, inspect, pkgutil
    for info in pkgutil.walk_packages(keras_mixer.__path__, "keras_mixer."):
        importlib.import_module(info.name)
    kinds = (keras.layers.Layer, keras.optimizers.schedules.LearningRateSchedule,
             keras.losses.Loss, keras.metrics.Metric, keras.optimizers.Optimizer,
             keras.initializers.Initializer, keras.regularizers.Regularizer,
             keras.constraints.Constraint)
    out["classes"] = {
        f"{cls.__module__}.{cls.__qualname__}": keras.saving.get_registered_name(cls)
        for module in list(sys.modules.values())
        if getattr(module, "__name__", "").startswith("keras_mixer.")
        for cls in vars(module).values()
        if inspect.isclass(cls) and issubclass(cls, kinds)
        and cls.__module__ == module.__name__}
print(json.dumps(out))
"""
# Never written to a file: train saves the distiller's student, not it.
NEVER_SAVED = {"keras_mixer.training.recipes.HardDistillation"}


@pytest.fixture(scope="module")
def trained_file(tmp_path_factory):
    """A small Mixer trained one step with a recipe's optimizer and
    learning-rate schedule, saved as .keras (TensorFlow), with an input and
    its expected output."""
    from keras_mixer.training import recipes

    folder = tmp_path_factory.mktemp("trained")
    config = recipes.get_config("demo", weight_decay=0.05)
    model = keras_mixer.MLPMixer(4, 16, 1, 8, 32, input_shape=(8, 8, 3),
                                 classes=3)
    _randomise(model, seed=5)
    model.compile(optimizer=recipes.make_optimizer(
        config, recipes.make_schedule(config, 4, 10)),
        loss=recipes.make_loss(config), metrics=recipes.make_metrics())
    rng = np.random.default_rng(6)
    x = rng.uniform(0, 255, (4, 8, 8, 3)).astype("float32")
    model.fit(x, np.eye(3)[[0, 1, 2, 0]], epochs=1, verbose=0)
    model.save(folder / "m.keras")
    np.save(folder / "x.npy", x)
    np.save(folder / "y.npy", np.asarray(model(x)))
    return folder


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_saved_files_load_after_import_keras_mixer_alone(backend, trained_file):
    import importlib.util
    import json
    import os
    import subprocess
    import sys

    if importlib.util.find_spec(backend) is None:
        pytest.skip(f"{backend} is not installed")
    env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3"}
    result = subprocess.run(
        [sys.executable, "-c", FRESH_PROCESS, str(trained_file / "m.keras"),
         str(trained_file / "x.npy"), str(trained_file / "y.npy"),
         "classes" if backend == "jax" else "-"],
        capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.splitlines()[-1])
    assert out["max_abs_diff"] < 1e-5
    assert out["schedule"]["registered_name"] == "keras_mixer>WarmupDecay"
    assert out["schedule"]["config"]["decay"] == "cosine"
    assert set(out["lazy"]) >= {"export", "train", "data", "evaluation",
                                "visualize", "benchmark"}
    # Each public name is the module its entry names (the training modules
    # under their short names: keras_mixer.train is keras_mixer.training.train).
    assert out["lazy"] == out["lazy_targets"]
    assert out["lazy"]["train"] == "keras_mixer.training.train"
    assert not out["tensorflow_at_import"]
    assert not out["tensorflow_after_agnostic"]
    if "classes" in out:
        unregistered = {name for name, registered in out["classes"].items()
                        if registered not in out["registered"]}
        assert unregistered == NEVER_SAVED
        assert "keras_mixer.training.recipes.WarmupDecay" in out["classes"]


def test_public_submodules_are_attributes():
    assert {"export", "train", "data", "evaluation", "visualize",
            "benchmark", "recipes"} <= set(dir(keras_mixer))
    assert keras_mixer.recipes.get_config("demo")["model"] == "demo"
    assert callable(keras_mixer.train.train)
    with pytest.raises(AttributeError, match="has no attribute 'trian'"):
        keras_mixer.trian

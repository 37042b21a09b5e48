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

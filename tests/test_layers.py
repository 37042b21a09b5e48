"""Each layer on its own: shapes, config round trip, gradients, semantics.

The shared layers of `keras_mixer.layers` and the blocks of every family
(`keras_mixer.models.<family>`)."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_mixer import layers as L
from keras_mixer.models import _pyramid
from keras_mixer.models import convmixer
from keras_mixer.models import cyclemlp
from keras_mixer.models import gmlp
from keras_mixer.models import mixer
from keras_mixer.models import resmlp
from keras_mixer.models import vip

RNG = np.random.default_rng(0)
TOKENS = (2, 6, 8)  # batch, tokens, channels
IMAGE = (2, 8, 12, 3)
MAP = (2, 4, 4, 8)  # batch, height, width, channels (the pyramid families)

# Every module that defines layers: the shared ones and each family's.
LAYER_MODULES = (L, mixer, resmlp, gmlp, convmixer, _pyramid, cyclemlp, vip)

# (factory, input shape) for every layer of LAYER_MODULES.
LAYER_CASES = {
    "Normalize": (lambda: L.Normalize([0.4, 0.5, 0.6], [0.2, 0.3, 0.4]), IMAGE),
    "PatchEmbedding": (lambda: L.PatchEmbedding(4, 8), IMAGE),
    "Dense": (lambda: L.Dense(5, activation="gelu"), TOKENS),
    "MlpBlock_channels": (lambda: L.MlpBlock(16, axis=-1), TOKENS),
    "MlpBlock_tokens": (lambda: L.MlpBlock(4, axis=1, dropout_rate=0.1), TOKENS),
    "DropPath": (lambda: L.DropPath(0.3, seed=1), TOKENS),
    "LayerNorm": (lambda: L.LayerNorm(), TOKENS),
    "MixerBlock": (lambda: mixer.MixerBlock(4, 16, drop_path_rate=0.1), TOKENS),
    "Affine": (lambda: L.Affine(), TOKENS),
    "LayerScale": (lambda: L.LayerScale(0.1), TOKENS),
    "ResMLPBlock": (lambda: resmlp.ResMLPBlock(1e-5, drop_path_rate=0.1), TOKENS),
    "GluMlp": (lambda: L.GluMlp(6, dropout_rate=0.1), TOKENS),
    "MixerBlock_glu": (lambda: mixer.MixerBlock(4, 16, mlp_layer="glu"), TOKENS),
    "SpatialGatingUnit": (lambda: gmlp.SpatialGatingUnit(), TOKENS),
    "GMLPBlock": (lambda: gmlp.GMLPBlock(12, drop_path_rate=0.1), TOKENS),
    "ConvMixerStem": (lambda: convmixer.ConvMixerStem(4, 8, "relu"), IMAGE),
    "ConvMixerBlock": (lambda: convmixer.ConvMixerBlock(3, drop_path_rate=0.1), IMAGE),
    "ConvEmbedding": (lambda: _pyramid.ConvEmbedding(6, 3, strides=2, padding=1), IMAGE),
    "SplitAttention": (lambda: _pyramid.SplitAttention(3), (2, 8)),
    "CycleFC": (lambda: cyclemlp.CycleFC(5, (3, 1)), MAP),
    "CycleMixing": (lambda: cyclemlp.CycleMixing(), MAP),
    "CycleBlock": (lambda: cyclemlp.CycleBlock(2, drop_path_rate=0.1), MAP),
    "PermuteMixing": (lambda: vip.PermuteMixing(4), MAP),
    "PermutatorBlock": (lambda: vip.PermutatorBlock(4, drop_path_rate=0.1), MAP),
}
EXPECTED_SHAPES = {
    "PatchEmbedding": (2, 6, 8),
    "Dense": (2, 6, 5),
    "SpatialGatingUnit": (2, 6, 4),
    "ConvMixerStem": (2, 2, 3, 8),
    "ConvEmbedding": (2, 4, 6, 6),
    "SplitAttention": (2, 8, 3),
    "CycleFC": (2, 4, 4, 5),
}


def _randomise(layer):
    for v in layer.weights:
        value = RNG.normal(size=v.shape).astype("float32")
        if v.path.endswith("moving_variance"):  # BatchNorm: a variance
            value = np.abs(value) + 0.1
        v.assign(value)


# Bases that a family's block completes (its token mixer): tested through it.
ABSTRACT_LAYERS = {"PyramidBlock"}


def test_every_layer_is_covered():
    public = {
        name
        for module in LAYER_MODULES
        for name, obj in vars(module).items()
        if isinstance(obj, type)
        and issubclass(obj, keras.layers.Layer)
        and obj.__module__ == module.__name__
    } - ABSTRACT_LAYERS
    covered = {name.split("_")[0] for name in LAYER_CASES}
    assert public == covered


@pytest.mark.parametrize("case", sorted(LAYER_CASES))
def test_shape_and_config_round_trip(case):
    factory, shape = LAYER_CASES[case]
    x = RNG.uniform(0, 255, size=shape).astype("float32")
    layer = factory()
    y = layer(x)
    assert tuple(y.shape) == EXPECTED_SHAPES.get(case, shape)
    assert tuple(layer.compute_output_shape(shape)) == tuple(y.shape)
    _randomise(layer)

    config = layer.get_config()
    clone = type(layer).from_config(config)
    assert clone.get_config() == config
    # Through Keras's serialization registry too (what .keras files use).
    restored = keras.saving.deserialize_keras_object(
        keras.saving.serialize_keras_object(layer)
    )
    assert type(restored) is type(layer)
    assert restored.get_config() == config
    clone.build(shape)
    clone.set_weights(layer.get_weights())
    np.testing.assert_allclose(clone(x), layer(x), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("case", sorted(LAYER_CASES))
def test_gradient_reaches_every_trainable_weight(case):
    factory, shape = LAYER_CASES[case]
    layer = factory()
    x = tf.constant(RNG.normal(size=shape).astype("float32"))
    layer(x)
    _randomise(layer)
    with tf.GradientTape() as tape:
        y = layer(x, training=False)
        loss = tf.reduce_sum(y * tf.constant(RNG.normal(size=y.shape), y.dtype))
    grads = tape.gradient(loss, layer.trainable_weights)
    assert len(grads) == len(layer.trainable_weights)
    for v, g in zip(layer.trainable_weights, grads):
        assert g is not None, v.path
        assert float(tf.reduce_max(tf.abs(g))) > 0, v.path


@pytest.mark.parametrize("shape", [(6, 8), TOKENS, (2, 3, 4, 8)])
def test_dense_equals_keras_dense_at_any_rank(shape):
    x = RNG.normal(size=shape).astype("float32")
    ours = L.Dense(5, activation="gelu")
    theirs = keras.layers.Dense(5, activation="gelu")
    ours.build(shape)
    theirs.build(shape)
    _randomise(ours)
    theirs.set_weights(ours.get_weights())
    assert ours.get_config() | {"name": None} == theirs.get_config() | {"name": None}
    kernel, bias = (np.asarray(w, "float64") for w in ours.get_weights())
    h = x @ kernel + bias
    expected = 0.5 * h * (1 + np.vectorize(math.erf)(h / np.sqrt(2)))
    np.testing.assert_allclose(ours(x), expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ours(x), theirs(x), rtol=1e-5, atol=1e-5)


def test_mlp_block_over_tokens_is_the_channel_mlp_on_the_transpose():
    x = RNG.normal(size=TOKENS).astype("float32")
    tokens_mlp = L.MlpBlock(4, axis=1)
    tokens_mlp(x)
    _randomise(tokens_mlp)
    channels_mlp = L.MlpBlock(4, axis=-1)
    channels_mlp(np.swapaxes(x, 1, 2))
    channels_mlp.set_weights(tokens_mlp.get_weights())
    expected = np.swapaxes(channels_mlp(np.swapaxes(x, 1, 2)), 1, 2)
    np.testing.assert_allclose(tokens_mlp(x), expected, rtol=1e-5, atol=1e-5)


def test_mlp_block_calls_its_dense_sublayers(monkeypatch):
    """fc1 and fc2 are the layers that compute (through `Dense.on_rows`,
    which `Dense.call` also runs): when it returns zeros, the whole MLP
    returns zeros."""
    calls = []

    def zero_call(self, rows):
        calls.append(self.name)
        return keras.ops.zeros((rows.shape[0], self.units))

    block = L.MlpBlock(4)
    x = RNG.normal(size=TOKENS).astype("float32")
    block(x)
    _randomise(block)
    assert float(np.max(np.abs(block(x)))) > 0
    monkeypatch.setattr(L.Dense, "on_rows", zero_call)
    np.testing.assert_array_equal(block(x), np.zeros(TOKENS, "float32"))
    assert calls == ["fc1", "fc2"]


@pytest.mark.parametrize("approximate", [True, False])
def test_mlp_block_gelu_flavour(approximate):
    block = L.MlpBlock(3, approximate_gelu=approximate)
    x = RNG.normal(size=(1, 1, 2)).astype("float32")
    block(x)
    w1, b1, w2, b2 = [np.asarray(w, "float64") for w in block.get_weights()]
    h = x[0, 0] @ w1 + b1
    if approximate:
        g = 0.5 * h * (1 + np.tanh(np.sqrt(2 / np.pi) * (h + 0.044715 * h**3)))
    else:
        g = 0.5 * h * (1 + np.vectorize(math.erf)(h / np.sqrt(2)))
    np.testing.assert_allclose(block(x)[0, 0], g @ w2 + b2, rtol=1e-5)


def test_patch_embedding_tokens_are_in_raster_order():
    # Each patch is filled with its own index; a kernel summing the first
    # channel then reads the index back (times patch area).
    p, rows, cols = 2, 3, 4
    image = np.zeros((1, rows * p, cols * p, 1), "float32")
    for r in range(rows):
        for c in range(cols):
            image[0, r * p : (r + 1) * p, c * p : (c + 1) * p] = r * cols + c
    layer = L.PatchEmbedding(p, 1)
    layer(image)
    layer.set_weights([np.ones((p, p, 1, 1), "float32"), np.zeros(1, "float32")])
    tokens = np.asarray(layer(image))[0, :, 0] / (p * p)
    np.testing.assert_allclose(tokens, np.arange(rows * cols))


def test_patch_embedding_rejects_sides_not_multiple_of_patch():
    with pytest.raises(ValueError, match="not a multiple of the patch size 4"):
        L.PatchEmbedding(4, 8)(np.zeros((1, 10, 8, 3), "float32"))


def test_normalize_values():
    layer = L.Normalize(0.5, 0.5)
    np.testing.assert_allclose(
        layer(np.array([[0.0, 127.5, 255.0]], "float32")), [[-1, 0, 1]]
    )
    with pytest.raises(ValueError, match="3 entries but the input has 1"):
        L.Normalize([0.1, 0.2, 0.3], [1, 1, 1])(np.zeros((1, 2, 2, 1)))
    with pytest.raises(ValueError, match="std` must be positive"):
        L.Normalize(0.5, 0.0)


def test_drop_path_identity_at_inference_and_per_sample_in_training():
    layer = L.DropPath(0.5, seed=3)
    x = np.ones((256, 4, 3), "float32")
    np.testing.assert_array_equal(layer(x, training=False), x)
    y = np.asarray(layer(x, training=True))
    per_sample = y.reshape(256, -1)
    # Each sample is dropped whole or kept whole and scaled by 1 / keep.
    assert set(np.unique(per_sample)) == {0.0, 2.0}
    assert np.all(per_sample.min(1) == per_sample.max(1))
    kept = float((per_sample[:, 0] > 0).mean())
    assert 0.35 < kept < 0.65


def test_affine_and_layerscale_initial_values():
    x = RNG.normal(size=TOKENS).astype("float32")
    np.testing.assert_allclose(L.Affine()(x), x)
    np.testing.assert_allclose(L.LayerScale(1e-5)(x), 1e-5 * x, rtol=1e-6)


def test_mixer_block_layer_norms_are_separate():
    block = mixer.MixerBlock(4, 16, name="block_0")
    block(np.zeros(TOKENS, "float32"))
    assert block.norm1 is not block.norm2
    assert block.norm1.epsilon == block.norm2.epsilon == 1e-6
    paths = {v.path for v in block.weights}
    assert "block_0/norm1/gamma" in paths
    assert "block_0/norm2/gamma" in paths


@pytest.mark.parametrize(
    "factory, message",
    [
        (lambda: L.PatchEmbedding(0, 8), "patch_size` must be a positive"),
        (lambda: L.MlpBlock(8, axis=2), "axis` must be -1"),
        (lambda: L.MlpBlock(-1), "mlp_dim` must be a positive"),
        (lambda: L.DropPath(1.0), r"rate` must be in \[0, 1\)"),
        (lambda: mixer.MixerBlock(4, 0), "channels_mlp_dim` must be a positive"),
        (lambda: resmlp.ResMLPBlock(0.1, mlp_ratio=0), "mlp_ratio` must be positive"),
        (lambda: L.GluMlp(5), "mlp_dim` 5 must be even"),
        (lambda: L.GluMlp(4, activation="gelu"), "activation` must be one of"),
        (lambda: mixer.MixerBlock(4, 8, mlp_layer="swiglu"), "Unknown `mlp_layer` 'swiglu'"),
        (lambda: gmlp.GMLPBlock(7), "ffn_dim` 7 must be even"),
        (lambda: convmixer.ConvMixerBlock(3, activation="silu"), "Unknown `activation` 'silu'"),
    ],
)
def test_layer_argument_errors(factory, message):
    with pytest.raises(ValueError, match=message):
        factory()


@pytest.mark.parametrize("axis", [-1, 1])
def test_tensorflow_graph_of_an_mlp_is_2d_matmul_and_bias_add(axis):
    """The lever measured in BENCHMARKS.md: each dense layer traces to a 2-D
    MatMul and a BiasAdd (which grappler fuses with the GELU), never to a
    broadcast BatchMatMul with an AddV2 bias."""
    block = L.MlpBlock(8, axis=axis)
    x = tf.zeros((2, 6, 4))
    block(x)
    graph = tf.function(lambda x: block(x)).get_concrete_function(x).graph
    types = [op.type for op in graph.get_operations()]
    assert types.count("MatMul") == 2 and types.count("BiasAdd") == 2
    assert "BatchMatMulV2" not in types


def _silu(x):
    return x / (1 + np.exp(-x))


def test_glu_mlp_gates_the_second_half_with_silu():
    """timm's GluMlp (gate_last): fc1's first half is the value, its second
    half goes through SiLU; fc2 takes the product."""
    layer = L.GluMlp(6)
    x = RNG.normal(size=TOKENS).astype("float32")
    layer(x)
    _randomise(layer)
    w1, b1, w2, b2 = [np.asarray(w, "float64") for w in layer.get_weights()]
    h = x @ w1 + b1
    expected = (h[..., :3] * _silu(h[..., 3:])) @ w2 + b2
    np.testing.assert_allclose(layer(x), expected, rtol=1e-4, atol=1e-5)
    assert w2.shape == (3, TOKENS[-1])


def test_spatial_gating_unit_equation():
    """s(Z) = Z1 * (W LayerNorm(Z2) + b) with W over the tokens, LayerNorm
    epsilon 1e-5, and W ~ 1e-6, b = 1 at initialisation (s(Z) ~ Z1)."""
    layer = gmlp.SpatialGatingUnit()
    z = RNG.normal(size=TOKENS).astype("float32")
    np.testing.assert_allclose(layer(z), z[..., :4], rtol=1e-4, atol=1e-4)
    assert layer.norm.epsilon == 1e-5
    _randomise(layer)
    gamma, beta, kernel, bias = [np.asarray(w, "float64") for w in layer.get_weights()]
    gate = z[..., 4:].astype("float64")
    gate = (gate - gate.mean(-1, keepdims=True)) / np.sqrt(gate.var(-1, keepdims=True) + 1e-5)
    gate = gate * gamma + beta
    projected = np.einsum("bsc,st->btc", gate, kernel) + bias[:, None]
    np.testing.assert_allclose(layer(z), z[..., :4] * projected, rtol=1e-4, atol=1e-5)


def test_mixed_bfloat16_block_computes_in_bfloat16():
    block = mixer.MixerBlock(4, 8, dtype="mixed_bfloat16")
    y = block(RNG.normal(size=TOKENS).astype("float32"))
    assert y.dtype == "bfloat16"
    assert block.token_mixing.fc1.kernel.dtype == "float32"


@pytest.mark.parametrize("dtype", ["float32", "mixed_bfloat16"])
def test_layer_norm_matches_the_float64_equation(dtype, reference):
    """Statistics in float32 even under mixed_bfloat16: the only error left
    is the output's rounding to bfloat16 (2^-8 relative)."""
    x = (RNG.normal(size=(3, 5, 64)) * 4 + 30).astype("float32")
    layer = L.LayerNorm(dtype=dtype)
    layer.build(x.shape)
    gamma = RNG.normal(size=64).astype("float32")
    beta = RNG.normal(size=64).astype("float32")
    layer.set_weights([gamma, beta])
    inputs = keras.ops.cast(x, layer.compute_dtype)
    want = reference.layer_norm(keras.ops.convert_to_numpy(
        keras.ops.cast(inputs, "float32")), gamma, beta)
    got = keras.ops.convert_to_numpy(
        keras.ops.cast(layer(inputs), "float32")).astype("float64")
    assert layer(inputs).dtype == layer.compute_dtype
    if dtype == "float32":
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    else:
        np.testing.assert_allclose(got, want, rtol=2**-8, atol=1e-3)


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"axis": 1}, {"center": False}, {"scale": False}],
)
def test_layer_norm_equals_keras_layer_normalization(kwargs):
    """The fast form and the Keras fallbacks give Keras's numbers."""
    x = (RNG.normal(size=TOKENS) * 2 - 1).astype("float32")
    ours = L.LayerNorm(**kwargs)
    keras_ln = keras.layers.LayerNormalization(epsilon=1e-6, **kwargs)
    ours.build(x.shape)
    keras_ln.build(x.shape)
    weights = [RNG.normal(size=w.shape).astype("float32")
               for w in keras_ln.get_weights()]
    ours.set_weights(weights)
    keras_ln.set_weights(weights)
    assert [w.path.split("/")[-1] for w in ours.weights] == [
        w.path.split("/")[-1] for w in keras_ln.weights]
    np.testing.assert_allclose(ours(x), keras_ln(x), rtol=1e-5, atol=1e-5)


def test_layer_norm_takes_its_own_path_only_where_it_should(monkeypatch):
    """The last-axis default runs the fast form; other axes, rms_scaling and
    center/scale off go to Keras's call."""

    def keras_call(self, inputs):
        raise AssertionError("Keras's LayerNormalization.call")

    monkeypatch.setattr(keras.layers.LayerNormalization, "call", keras_call)
    x = RNG.normal(size=TOKENS).astype("float32")
    for kwargs in ({}, {"axis": -1}, {"axis": [2]}):
        L.LayerNorm(**kwargs)(x)
    for kwargs in ({"axis": 1}, {"center": False}, {"scale": False}):
        with pytest.raises(AssertionError, match="LayerNormalization.call"):
            L.LayerNorm(**kwargs)(x)

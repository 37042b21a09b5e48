"""Every named variant, and the keras.applications contract of the builders."""

import doctest

import keras
import numpy as np
import pytest

import keras_mixer
from keras_mixer.models import _builder

# Trainable parameter counts with a 1000-class head at 224x224 (MLP-Mixer
# paper Table 1 as published by the reference implementations; ResMLP as
# deit; gMLP, gMixer and ConvMixer as timm, whose counts leave out
# BatchNorm's running statistics as Keras's non-trainable weights).
GOLDEN_PARAMS = {
    "MixerS32": 19_104_624,
    "MixerS16": 18_528_264,
    "MixerS8": 20_646_504,
    "MixerB32": 60_293_428,
    "MixerB16": 59_880_472,
    "MixerL32": 206_939_264,
    "MixerL16": 208_196_168,
    "MixerH14": 432_350_952,
    "ResMLP12": 15_350_872,
    "ResMLP24": 30_020_680,
    "ResMLP36": 44_690_488,
    "ResMLPB24": 129_138_280,
    "GMLPTi16": 5_867_328,
    "GMLPS16": 19_422_656,
    "GMLPB16": 73_075_392,
    "GMixer12": 12_701_080,
    "GMixer24": 24_721_096,
    "ConvMixer1536_20": 51_625_960,
    "ConvMixer768_32": 21_110_248,
    "ConvMixer1024_20": 24_383_464,
    # CycleMLP and ViP: the authors' models' parameters(), without
    # CycleMLP's offset buffers (constants here).
    "CycleMLPB1": 15_155_400,
    "CycleMLPB2": 26_802_504,
    "CycleMLPB3": 38_385_720,
    "CycleMLPB4": 51_796_552,
    "CycleMLPB5": 75_747_280,
    "ViPS14": 29_892_904,
    "ViPS7": 25_114_984,
    "ViPM7": 55_272_488,
    "ViPL7": 87_784_936,
}
MODEL_LIST = sorted(keras_mixer.MODELS)
# Each variant's smallest side (its patch size or total stride); None for
# Vision Permutator, which takes 224 only (tests/test_pyramid.py runs small
# configurations of it, and test_parameter_count builds every variant).
PATCH = {
    name: constructor.size_rule.multiple if constructor.size_rule.only is None else None
    for name, constructor in keras_mixer.MODELS.items()
}


def _mixer_s8_params():
    # S/8 is not in Table 1: count it from the architecture by hand.
    c, ds, dc, blocks, p, tokens = 512, 256, 2048, 8, 8, (224 // 8) ** 2
    stem = p * p * 3 * c + c
    block = 2 * 2 * c + (tokens * ds + ds + ds * tokens + tokens)
    block += c * dc + dc + dc * c + c
    return stem + blocks * block + 2 * c + c * 1000 + 1000


def test_golden_table_covers_every_registered_variant():
    assert set(GOLDEN_PARAMS) == set(keras_mixer.MODELS)
    assert GOLDEN_PARAMS["MixerS8"] == _mixer_s8_params()


def _hand_flops():
    """2 x multiply-accumulates at 224, from the architectures' equations."""
    t, c, f = 196, 256, 1536  # gMLP-S/16: tokens, width, d_ffn; 30 blocks
    gmlp = t * 768 * c + 30 * (t * c * f + (f // 2) * t * t + t * (f // 2) * c) + c * 1000
    t, c = 196, 384  # gMixer-24: GLU fc1 widths 384 (tokens) and 1536
    token = c * (t * 384 + 192 * t)
    channel = t * (c * 1536 + 768 * c)
    gmixer = t * 768 * c + 24 * (token + channel) + c * 1000
    s, c, k = 32 * 32, 1536, 9  # ConvMixer-1536/20: 32x32 positions
    conv = s * 7 * 7 * 3 * c + 20 * s * c * (k * k + c) + c * 1000
    return {"GMLPS16": 2 * gmlp, "GMixer24": 2 * gmixer, "ConvMixer1536_20": 2 * conv}


HAND_FLOPS = _hand_flops()


@pytest.mark.parametrize("name", MODEL_LIST)
def test_parameter_count(name, constant_initializers):
    model = keras_mixer.MODELS[name]()
    assert model.input_shape == (None, 224, 224, 3)
    assert model.output_shape == (None, 1000)
    trainable = sum(int(np.prod(v.shape)) for v in model.trainable_weights)
    assert trainable == GOLDEN_PARAMS[name]
    assert model.name == keras_mixer.MODELS[name].__defaults__[-1]
    if name in HAND_FLOPS:
        assert keras_mixer.count_flops(model) == HAND_FLOPS[name]


# The pyramid variants (full width even at a small size) run at small sizes
# in tests/test_pyramid.py, in configurations of their own.
SMALL_FORWARD = [n for n in MODEL_LIST if PATCH[n] and not n.startswith("CycleMLP")]


@pytest.mark.parametrize("name", SMALL_FORWARD)
def test_forward_at_small_size(name):
    size = 2 * PATCH[name]
    model = keras_mixer.MODELS[name](
        input_shape=(size, size, 3), classes=5, drop_path_rate=0.1
    )
    x = np.random.default_rng(0).uniform(0, 255, (2, size, size, 3))
    # Eager: a traced predict() costs about a second per variant, and graph
    # mode is exercised by the training and export tests.
    y = np.asarray(model(x, training=False))
    assert y.shape == (2, 5)
    assert np.all(np.isfinite(y))
    np.testing.assert_allclose(y.sum(-1), 1.0, rtol=1e-5)


def test_layer_names_mirror_the_paper():
    model = keras_mixer.MixerS32(input_shape=(64, 64, 3))
    names = [layer.name for layer in model.layers]
    assert names == [
        "images", "preprocessing", "stem",
        *[f"block_{i}" for i in range(8)],
        "pre_head_norm", "avg_pool", "head", "predictions",
    ]
    paths = {v.path for v in model.weights}
    for path in [
        "stem/proj/kernel",
        "block_0/norm1/gamma",
        "block_0/token_mixing/fc1/kernel",
        "block_7/channel_mixing/fc2/bias",
        "pre_head_norm/gamma",
        "head/kernel",
    ]:
        assert path in paths
    resmlp = keras_mixer.ResMLP12(input_shape=(32, 32, 3))
    paths = {v.path for v in resmlp.weights}
    for path in [
        "block_0/norm1/alpha",
        "block_0/cross_patch/kernel",
        "block_0/ls1/gamma",
        "block_11/channel_mixing/fc1/kernel",
        "block_11/ls2/gamma",
        "pre_head_norm/beta",
    ]:
        assert path in paths


def test_layerscale_init_by_depth():
    inits = {
        "ResMLP12": 0.1, "ResMLP24": 1e-5, "ResMLP36": 1e-6, "ResMLPB24": 1e-6
    }
    for name, value in inits.items():
        size = 2 * PATCH[name]
        model = keras_mixer.MODELS[name](input_shape=(size, size, 3))
        gamma = model.get_layer("block_0").ls1.gamma
        np.testing.assert_allclose(gamma, value)


def test_drop_path_rates_rise_linearly():
    model = keras_mixer.MixerS32(input_shape=(32, 32, 3), drop_path_rate=0.2)
    rates = [model.get_layer(f"block_{i}").drop_path_rate for i in range(8)]
    np.testing.assert_allclose(rates, np.linspace(0, 0.2, 8))


def test_drop_path_schedules_by_family():
    """ResMLP and gMLP: the same rate in every block (deit, timm); Mixer:
    linear (big_vision); either on request."""
    def rates(builder, **kwargs):
        model = builder(patch_size=8, hidden_dim=8, num_blocks=3,
                        input_shape=(16, 16, 3), drop_path_rate=0.3, **kwargs)
        return [model.get_layer(f"block_{i}").drop_path_rate for i in range(3)]

    np.testing.assert_allclose(rates(keras_mixer.ResMLP), [0.3, 0.3, 0.3])
    np.testing.assert_allclose(rates(keras_mixer.GMLP), [0.3, 0.3, 0.3])
    np.testing.assert_allclose(
        rates(keras_mixer.ResMLP, drop_path_schedule="linear"), [0.0, 0.15, 0.3])
    mixer_kwargs = dict(tokens_mlp_dim=4, channels_mlp_dim=8)
    np.testing.assert_allclose(rates(keras_mixer.MLPMixer, **mixer_kwargs), [0.0, 0.15, 0.3])
    np.testing.assert_allclose(
        rates(keras_mixer.MLPMixer, drop_path_schedule="uniform", **mixer_kwargs), [0.3] * 3)
    with pytest.raises(ValueError, match="Unknown `drop_path_schedule` 'cosine'"):
        rates(keras_mixer.ResMLP, drop_path_schedule="cosine")
    assert "default 'uniform'" in keras_mixer.ResMLP12.__doc__
    assert "default 'linear'" in keras_mixer.MixerB16.__doc__
    assert "default 'uniform'" in keras_mixer.GMixer12.__doc__


@pytest.mark.parametrize(
    "include_top, pooling, shape",
    [
        (True, None, (None, 10)),
        (True, "avg", (None, 10)),
        (False, None, (None, 4, 512)),
        (False, "avg", (None, 512)),
        (False, "max", (None, 512)),
    ],
)
def test_include_top_and_pooling(include_top, pooling, shape):
    model = keras_mixer.MixerS32(
        include_top=include_top, pooling=pooling, input_shape=(64, 64, 3),
        classes=10,
    )
    assert model.output_shape == shape
    x = np.random.default_rng(1).uniform(0, 255, (2, 64, 64, 3))
    y = np.asarray(model(x))
    assert y.shape == (2,) + shape[1:]
    if pooling == "max":
        tokens = keras_mixer.feature_extractor(model)(x)["pre_head_norm"]
        np.testing.assert_allclose(y, np.max(tokens, axis=1), rtol=1e-6)


def test_pooled_backbone_matches_mean_of_token_table():
    x = np.random.default_rng(2).uniform(0, 255, (2, 32, 32, 3))
    table = keras_mixer.ResMLP12(include_top=False, input_shape=(32, 32, 3))
    pooled = keras_mixer.ResMLP12(
        include_top=False, pooling="avg", input_shape=(32, 32, 3)
    )
    pooled.set_weights(table.get_weights())
    np.testing.assert_allclose(
        pooled(x), np.mean(table(x), axis=1), rtol=1e-5, atol=1e-6
    )


def test_feature_extractor_returns_every_block():
    model = keras_mixer.MixerS32(input_shape=(64, 64, 3))
    features = keras_mixer.feature_extractor(model)
    x = np.random.default_rng(3).uniform(0, 255, (1, 64, 64, 3))
    outputs = features(x)
    assert sorted(outputs) == sorted(
        ["stem", "pre_head_norm", *[f"block_{i}" for i in range(8)]]
    )
    assert all(tuple(t.shape) == (1, 4, 512) for t in outputs.values())
    # The last block feeds the pre-head norm.
    norm = model.get_layer("pre_head_norm")
    np.testing.assert_allclose(
        norm(outputs["block_7"]), outputs["pre_head_norm"], rtol=1e-5, atol=1e-5
    )
    with pytest.raises(ValueError, match="has no layers named"):
        keras_mixer.feature_extractor(model, ["block_99"])


def test_any_channel_count_and_non_square_input():
    for constructor in (keras_mixer.MixerS32, keras_mixer.ResMLP12):
        model = constructor(input_shape=(64, 96, 1), classes=3)
        y = model(np.full((2, 64, 96, 1), 128.0))
        assert tuple(y.shape) == (2, 3)
        assert np.all(np.isfinite(y))


def test_input_tensor():
    inputs = keras.Input(shape=(64, 64, 3))
    model = keras_mixer.MixerS32(input_tensor=inputs, classes=4)
    assert model.inputs[0] is inputs
    assert model.output_shape == (None, 4)
    model = keras_mixer.MixerS32(
        input_tensor=inputs, input_shape=(64, 64, 3), classes=4
    )
    assert model.output_shape == (None, 4)


@pytest.mark.parametrize("mode", ["tf", "torch"])
def test_preprocess_input_matches_include_preprocessing(mode):
    constructor = keras_mixer.MixerS32 if mode == "tf" else keras_mixer.ResMLP12
    inside = constructor(input_shape=(64, 64, 3), classifier_activation=None)
    outside = constructor(
        input_shape=(64, 64, 3),
        classifier_activation=None,
        include_preprocessing=False,
    )
    outside.set_weights(inside.get_weights())
    for v in inside.weights:  # a non-zero head, so the logits differ
        if v.path == "head/kernel":
            v.assign(np.random.default_rng(4).normal(size=v.shape))
            outside.get_layer("head").kernel.assign(v)
    x = np.random.default_rng(5).uniform(0, 255, (2, 64, 64, 3)).astype("float32")
    pre = keras_mixer.preprocess_input(x, mode=mode)
    assert pre.dtype == np.float32
    if mode == "tf":
        np.testing.assert_allclose(pre, x / 127.5 - 1, rtol=1e-6, atol=1e-6)
    else:
        mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
        np.testing.assert_allclose(pre, (x / 255 - mean) / std, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(inside(x), outside(pre), rtol=1e-4, atol=1e-4)
    # Tensors go through keras.ops.
    np.testing.assert_allclose(
        keras_mixer.preprocess_input(keras.ops.convert_to_tensor(x), mode),
        pre,
        rtol=1e-6,
        atol=1e-6,
    )
    with pytest.raises(ValueError, match="Unknown preprocessing mode 'caffe'"):
        keras_mixer.preprocess_input(x, mode="caffe")


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(input_shape=(225, 224, 3)), "height 225 is not a multiple of the patch size 32"),
        (dict(input_shape=(224, 100, 3)), "width 100 is not a multiple of the patch size 32: use 96 or 128"),
        (dict(pooling="mean"), "Unknown `pooling` 'mean'"),
        (dict(include_top=True, pooling="max"), "pooling='max' applies only with include_top=False"),
        (dict(input_shape=(0, 224, 3)), "non-positive or non-integer height"),
        (dict(input_shape=(224, 224, -3)), "non-positive or non-integer channels"),
        (dict(input_shape=(None, 224, 3)), "leaves the height undefined"),
        (dict(input_shape=(224, 224)), r"must be \(height, width, channels\)"),
        (dict(classes=0), "`classes` must be a positive integer"),
        (dict(classifier_activation="softmaxx"), "Unknown `classifier_activation`"),
        (dict(weights="imagenet"), "`weights` .imagenet. is neither a weights name of MixerS32 \(gsam\) nor an existing file"),
        (dict(drop_path_rate=1.0), r"drop_path_rate` must be in \[0, 1\)"),
        (dict(input_tensor=keras.Input((64, 64, 3)), input_shape=(32, 32, 3)), r"`input_tensor` has shape .*\(64, 64, 3\) but `input_shape` is \(32, 32, 3\)"),
        (dict(input_tensor=np.zeros((1, 64, 64, 3))), "must be a symbolic Keras tensor"),
    ],
)
def test_errors_say_what_is_wrong(kwargs, message):
    with pytest.raises(ValueError, match=message):
        keras_mixer.MixerS32(**kwargs)


def test_channels_first_is_refused_with_advice():
    keras.config.set_image_data_format("channels_first")
    with pytest.raises(ValueError, match="channels_last.*set_image_data_format"):
        keras_mixer.ResMLP12()


def test_generic_builders_check_sizes():
    with pytest.raises(ValueError, match="num_blocks` must be a positive"):
        keras_mixer.MLPMixer(16, 64, 0, 32, 128)
    with pytest.raises(ValueError, match="hidden_dim` must be a positive"):
        keras_mixer.ResMLP(16, -8, 2)
    with pytest.raises(ValueError, match="patch_size` must be a positive"):
        keras_mixer.MLPMixer(0, 64, 2, 32, 128)


def test_count_flops_matches_the_hand_count():
    # Mixer-B/16 at 224: 196 tokens, C=768, D_S=384, D_C=3072, 12 blocks.
    t, c, ds, dc = 196, 768, 384, 3072
    macs = t * 16 * 16 * 3 * c + 12 * (2 * t * ds * c + 2 * t * c * dc) + c * 1000
    model = keras_mixer.MixerB16()
    assert keras_mixer.count_flops(model) == 2 * macs
    assert abs(2 * macs / 1e9 - 25.2) < 0.05  # the figure of the perf issue
    # ResMLP-12: one cross-patch linear (T x T) and a ratio-4 MLP per block.
    t, c = 196, 384
    macs = t * 768 * c + 12 * (t * t * c + 2 * t * c * 4 * c) + c * 1000
    assert keras_mixer.count_flops(keras_mixer.ResMLP12()) == 2 * macs


def test_variant_docstrings_run():
    for constructor in (keras_mixer.MixerS32, keras_mixer.ResMLP12, keras_mixer.GMLPTi16):
        assert constructor.__doc__ and "Args:" in constructor.__doc__
        parser = doctest.DocTestParser()
        test = parser.get_doctest(
            constructor.__doc__,
            {"np": np, "keras_mixer": keras_mixer},
            constructor.__name__,
            None,
            0,
        )
        runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
        result = runner.run(test)
        assert result.attempted >= 2 and result.failed == 0


def test_stochastic_depth_rates():
    assert _builder.stochastic_depth_rates(0.3, 1) == [0.0]
    np.testing.assert_allclose(
        _builder.stochastic_depth_rates(0.3, 4), [0.0, 0.1, 0.2, 0.3]
    )
    assert _builder.stochastic_depth_rates(0.3, 2, "uniform") == [0.3, 0.3]


@pytest.mark.parametrize("name", ["MixerS32", "ResMLP12"])
def test_training_gradient_reaches_every_weight_and_fit_runs(name):
    import tensorflow as tf

    size = 2 * PATCH[name]
    model = keras_mixer.MODELS[name](
        input_shape=(size, size, 3), classes=4, dropout_rate=0.1,
        drop_path_rate=0.1,
    )
    rng = np.random.default_rng(6)
    # The head starts at zero (as the paper): give it values so that the
    # gradient flows back into the blocks.
    model.get_layer("head").kernel.assign(rng.normal(size=(model.get_layer("head").kernel.shape)))
    x = tf.constant(rng.uniform(0, 255, (4, size, size, 3)), "float32")
    labels = np.array([0, 1, 2, 3])
    with tf.GradientTape() as tape:
        probs = model(x, training=True)
        loss = keras.losses.sparse_categorical_crossentropy(labels, probs)
    grads = tape.gradient(loss, model.trainable_weights)
    for v, g in zip(model.trainable_weights, grads):
        assert g is not None and float(tf.reduce_max(tf.abs(g))) > 0, v.path
    before = [np.array(v) for v in model.trainable_weights]
    model.compile(optimizer=keras.optimizers.AdamW(1e-3), loss="sparse_categorical_crossentropy")
    history = model.fit(x, labels, epochs=2, batch_size=4, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    changed = [not np.array_equal(b, np.array(v)) for b, v in zip(before, model.trainable_weights)]
    assert all(changed)


@pytest.mark.large
@pytest.mark.parametrize("name", ["MixerB16", "ResMLP12"])
def test_full_size_forward_at_224(name):
    model = keras_mixer.MODELS[name]()
    x = np.random.default_rng(7).uniform(0, 255, (1, 224, 224, 3))
    y = np.asarray(model.predict(x, verbose=0))
    assert y.shape == (1, 1000) and np.all(np.isfinite(y))

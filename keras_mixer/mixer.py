"""MLP-Mixer (Tolstikhin et al., 2021, https://arxiv.org/abs/2105.01601).

patches -> Conv2D stem (kernel = stride = patch) -> N Mixer blocks -> LayerNorm
-> global average pooling -> linear head. `MODEL_CONFIGS` is Table 1 of the
paper, plus S/8 (published by the authors among their GSAM checkpoints).
"""

import keras

from keras_mixer import common
from keras_mixer import layers as mixer_layers

_SIZES = {
    # hidden_dim C, num_blocks, tokens_mlp_dim D_S, channels_mlp_dim D_C
    "S": dict(hidden_dim=512, num_blocks=8, tokens_mlp_dim=256, channels_mlp_dim=2048),
    "B": dict(hidden_dim=768, num_blocks=12, tokens_mlp_dim=384, channels_mlp_dim=3072),
    "L": dict(hidden_dim=1024, num_blocks=24, tokens_mlp_dim=512, channels_mlp_dim=4096),
    "H": dict(hidden_dim=1280, num_blocks=32, tokens_mlp_dim=640, channels_mlp_dim=5120),
}

MODEL_CONFIGS = {
    f"{size}/{patch}": dict(patch_size=patch, **_SIZES[size])
    for size, patch in (
        ("S", 32), ("S", 16), ("S", 8), ("B", 32), ("B", 16),
        ("L", 32), ("L", 16), ("H", 14),
    )
}


def MLPMixer(
    patch_size,
    hidden_dim,
    num_blocks,
    tokens_mlp_dim,
    channels_mlp_dim,
    include_top=True,
    weights=None,
    input_tensor=None,
    input_shape=None,
    pooling=None,
    classes=1000,
    classifier_activation="softmax",
    include_preprocessing=True,
    dropout_rate=0.0,
    drop_path_rate=0.0,
    name="mlp_mixer",
    approximate_gelu=None,
    layer_norm_epsilon=1e-6,
    head_dropout_rate=0.0,
    preprocessing=None,
):
    """Builds an MLP-Mixer of any size.

    Layer names mirror the paper and the official code: `preprocessing`,
    `stem`, `block_0` ... `block_{N-1}` (each with `norm1`, `token_mixing`,
    `norm2`, `channel_mixing`), `pre_head_norm`, `avg_pool`, `head`,
    `predictions`.

    Args:
        patch_size: side of the square patches (the stem's kernel and stride).
        hidden_dim: channels C of each token.
        num_blocks: number of Mixer blocks.
        tokens_mlp_dim: hidden width D_S of the token-mixing MLPs.
        channels_mlp_dim: hidden width D_C of the channel-mixing MLPs.
        include_top, weights, input_tensor, input_shape, pooling, classes,
        classifier_activation, include_preprocessing, dropout_rate,
        drop_path_rate, name: as in `keras_mixer.MixerB16`.
        approximate_gelu: True uses the tanh approximation of GELU, as the
            official Flax code; False the exact erf GELU (timm). None (default):
            the form of the `weights`' source, else True.
        layer_norm_epsilon: epsilon of every LayerNorm (1e-6 as Flax, timm).
        head_dropout_rate: dropout before the head (include_top only).
        preprocessing: input normalisation of `include_preprocessing`: "tf"
            ([-1, 1], the official pipeline; the default), "torch" (ImageNet
            mean/std) or "zero_one".

    Returns:
        A `keras.Model`.

    Example:
    >>> model = keras_mixer.MLPMixer(
    ...     patch_size=4, hidden_dim=32, num_blocks=2, tokens_mlp_dim=16,
    ...     channels_mlp_dim=64, input_shape=(16, 16, 1), classes=10)
    >>> model.count_params()
    10666
    """
    for arg in (
        "patch_size", "hidden_dim", "num_blocks", "tokens_mlp_dim",
        "channels_mlp_dim",
    ):
        common._check_positive_int(arg, locals()[arg])
    common.check_head_arguments(
        include_top, pooling, classes, classifier_activation
    )
    shape = common.resolve_input_shape(input_tensor, input_shape, patch_size, 224)
    rates = common.stochastic_depth_rates(drop_path_rate, num_blocks)
    checkpoint = common.read_weights(weights)
    if approximate_gelu is None:
        approximate_gelu = getattr(checkpoint, "approximate_gelu", True)
    tokens_mlp_dim = common.grown_tokens_mlp_dim(
        checkpoint, tokens_mlp_dim, patch_size, shape
    )

    def trunk(x):
        for i, rate in enumerate(rates):
            x = mixer_layers.MixerBlock(
                tokens_mlp_dim,
                channels_mlp_dim,
                approximate_gelu=approximate_gelu,
                dropout_rate=dropout_rate,
                drop_path_rate=rate,
                layer_norm_epsilon=layer_norm_epsilon,
                name=f"block_{i}",
            )(x)
        return x

    return common.build_model(
        trunk=trunk,
        # Keras's class, not layers.LayerNorm: a functional model's
        # .weights.h5 files name top-level layers by class, and files saved
        # before LayerNorm existed hold this one under "layer_normalization".
        # One norm per forward pass; the blocks' 2 x num_blocks use LayerNorm.
        pre_head_norm=keras.layers.LayerNormalization(
            epsilon=layer_norm_epsilon, name="pre_head_norm"
        ),
        patch_size=patch_size,
        hidden_dim=hidden_dim,
        include_top=include_top,
        weights=checkpoint,
        input_tensor=input_tensor,
        input_shape=input_shape,
        pooling=pooling,
        classes=classes,
        classifier_activation=classifier_activation,
        include_preprocessing=include_preprocessing,
        preprocessing=preprocessing or "tf",
        head_dropout_rate=head_dropout_rate,
        default_size=224,
        name=name,
    )


def _variant(key):
    size, patch = key.split("/")
    function = f"Mixer{size}{patch}"
    return common.make_variant(
        MLPMixer,
        MODEL_CONFIGS[key],
        function,
        f"mixer_{size.lower()}{patch}",
        dict(
            title=f"Mixer-{key}",
            family="MLP-Mixer",
            paper="Tolstikhin et al. (2021)",
            description=(
                "{num_blocks} Mixer blocks of width {hidden_dim} on "
                "{patch_size}x{patch_size} patches; token-mixing MLP width "
                "{tokens_mlp_dim}, channel-mixing MLP width "
                "{channels_mlp_dim}. GELU is tanh-approximate as in the "
                "official code (`approximate_gelu=False` for the exact "
                "form)."
            ).format(**MODEL_CONFIGS[key]),
            reference="https://arxiv.org/abs/2105.01601 (Table 1)",
            default_size=224,
            preprocessing="tf",
            preprocessing_text="to [-1, 1], as the official input pipeline",
            example_size=2 * int(patch),
        ),
    )


MixerS32 = _variant("S/32")
MixerS16 = _variant("S/16")
MixerS8 = _variant("S/8")
MixerB32 = _variant("B/32")
MixerB16 = _variant("B/16")
MixerL32 = _variant("L/32")
MixerL16 = _variant("L/16")
MixerH14 = _variant("H/14")

VARIANTS = {
    f.__name__: f
    for f in (
        MixerS32, MixerS16, MixerS8, MixerB32, MixerB16,
        MixerL32, MixerL16, MixerH14,
    )
}

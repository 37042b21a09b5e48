"""MLP-Mixer (Tolstikhin et al., 2021, https://arxiv.org/abs/2105.01601).

patches -> Conv2D stem (kernel = stride = patch) -> N Mixer blocks -> LayerNorm
-> global average pooling -> linear head. `MODEL_CONFIGS` is Table 1 of the
paper, plus S/8 (published by the authors among their GSAM checkpoints).
"""

import keras
from keras import ops

from keras_mixer import checks
from keras_mixer import layers
from keras_mixer.checkpoints import resize
from keras_mixer.models import _builder

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


@keras.saving.register_keras_serializable(package="keras_mixer")
class MixerBlock(keras.layers.Layer):
    """The Mixer layer of eq. (1) of the MLP-Mixer paper.

        U = X + TokenMLP(LayerNorm(X)^T)^T
        Y = U + ChannelMLP(LayerNorm(U))

    with one LayerNorm (epsilon 1e-6) per sublayer and stochastic depth on
    both residual branches. The token MLP mixes the patches: the table is
    transposed to `(batch, channels, tokens)` around it, as in the official
    Flax code.

    Args:
        tokens_mlp_dim: int, hidden width `D_S` of the token-mixing MLP.
        channels_mlp_dim: int, hidden width `D_C` of the channel-mixing MLP.
        approximate_gelu: bool, see `keras_mixer.layers.MlpBlock`; the default
            is the tanh form of the official Flax code.
        dropout_rate: float, dropout inside both MLPs.
        drop_path_rate: float, stochastic depth rate of this block.
        layer_norm_epsilon: float.
    """

    family = "mixer"
    # Appendix C: the token MLP's weights grow with the patch grid, its
    # hidden width D_S with the number of parts (see grown_config).
    token_axes = {
        "token_mixing/fc1/kernel": (resize.TOKENS, resize.HIDDEN),
        "token_mixing/fc1/bias": (resize.HIDDEN,),
        "token_mixing/fc2/kernel": (resize.HIDDEN, resize.TOKENS),
        "token_mixing/fc2/bias": (resize.TOKENS,),
    }

    def __init__(
        self,
        tokens_mlp_dim,
        channels_mlp_dim,
        approximate_gelu=True,
        dropout_rate=0.0,
        drop_path_rate=0.0,
        layer_norm_epsilon=1e-6,
        **kwargs,
    ):
        super().__init__(**kwargs)
        checks.check_int("tokens_mlp_dim", tokens_mlp_dim, where="MixerBlock")
        checks.check_int("channels_mlp_dim", channels_mlp_dim, where="MixerBlock")
        checks.check_rate("drop_path_rate", drop_path_rate, where="MixerBlock")
        self.tokens_mlp_dim = tokens_mlp_dim
        self.channels_mlp_dim = channels_mlp_dim
        self.approximate_gelu = bool(approximate_gelu)
        self.dropout_rate = float(dropout_rate)
        self.drop_path_rate = float(drop_path_rate)
        self.layer_norm_epsilon = float(layer_norm_epsilon)

    def build(self, input_shape):
        batch, _, channels = input_shape
        tokens = layers.known_tokens(input_shape, "MixerBlock")
        policy = self.dtype_policy
        self.norm1 = layers.LayerNorm(
            epsilon=self.layer_norm_epsilon, dtype=policy, name="norm1"
        )
        self.token_mixing = layers.MlpBlock(
            self.tokens_mlp_dim,
            approximate_gelu=self.approximate_gelu,
            dropout_rate=self.dropout_rate,
            dtype=policy,
            name="token_mixing",
        )
        self.norm2 = layers.LayerNorm(
            epsilon=self.layer_norm_epsilon, dtype=policy, name="norm2"
        )
        self.channel_mixing = layers.MlpBlock(
            self.channels_mlp_dim,
            approximate_gelu=self.approximate_gelu,
            dropout_rate=self.dropout_rate,
            dtype=policy,
            name="channel_mixing",
        )
        self.drop_path = layers.DropPath(
            self.drop_path_rate, dtype=policy, name="drop_path"
        )
        self.norm1.build(input_shape)
        self.token_mixing.build((batch, channels, tokens))
        self.norm2.build(input_shape)
        self.channel_mixing.build(input_shape)
        self.built = True

    def call(self, inputs, training=None):
        x = inputs
        y = ops.transpose(self.norm1(x), (0, 2, 1))
        y = ops.transpose(self.token_mixing(y, training=training), (0, 2, 1))
        x = x + self.drop_path(y, training=training)
        y = self.channel_mixing(self.norm2(x), training=training)
        return x + self.drop_path(y, training=training)

    def compute_output_shape(self, input_shape):
        return input_shape

    def count_macs(self, input_shape):
        """Multiply-accumulates of one sample of `(batch, tokens, channels)`."""
        batch, tokens, channels = input_shape
        return self.token_mixing.count_macs(
            (batch, channels, tokens)
        ) + self.channel_mixing.count_macs(input_shape)

    def grown_config(self, parts):
        """The config of this block for `parts` times as many patches."""
        config = self.get_config()
        config["tokens_mlp_dim"] *= parts
        return config

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "tokens_mlp_dim": self.tokens_mlp_dim,
                "channels_mlp_dim": self.channels_mlp_dim,
                "approximate_gelu": self.approximate_gelu,
                "dropout_rate": self.dropout_rate,
                "drop_path_rate": self.drop_path_rate,
                "layer_norm_epsilon": self.layer_norm_epsilon,
            }
        )
        return config


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
    preprocessing = preprocessing or "tf"
    sizes = dict(
        patch_size=patch_size, hidden_dim=hidden_dim, num_blocks=num_blocks,
        tokens_mlp_dim=tokens_mlp_dim, channels_mlp_dim=channels_mlp_dim,
    )
    rates = dict(
        dropout_rate=dropout_rate, drop_path_rate=drop_path_rate,
        head_dropout_rate=head_dropout_rate,
    )
    shape = _builder.check_arguments(
        sizes, rates, include_top, input_tensor, input_shape, pooling,
        classes, classifier_activation, include_preprocessing, preprocessing,
    )
    checkpoint = _builder.read_weights(weights, MixerBlock.family, name)
    if approximate_gelu is None:
        approximate_gelu = getattr(checkpoint, "approximate_gelu", True)
    # A checkpoint of a smaller patch grid: D_S grows with it (Appendix C).
    tokens_mlp_dim *= _builder.checkpoint_parts(
        checkpoint, "block_0/token_mixing/fc1/kernel", patch_size, shape
    )

    inputs, x = _builder.model_inputs(input_tensor, shape)
    if include_preprocessing:
        x = _builder.preprocessing(preprocessing, shape[-1])(x)
    x = layers.PatchEmbedding(patch_size, hidden_dim, name="stem")(x)
    drop_path_rates = _builder.stochastic_depth_rates(drop_path_rate, num_blocks)
    for i, rate in enumerate(drop_path_rates):
        x = MixerBlock(
            tokens_mlp_dim,
            channels_mlp_dim,
            approximate_gelu=approximate_gelu,
            dropout_rate=dropout_rate,
            drop_path_rate=rate,
            layer_norm_epsilon=layer_norm_epsilon,
            name=f"block_{i}",
        )(x)
    # Keras's class, not layers.LayerNorm: a functional model's .weights.h5
    # file names its top-level layers by class (`layer_normalization`), and
    # tests/test_serialization.py pins that layout.
    x = keras.layers.LayerNormalization(
        epsilon=layer_norm_epsilon, name="pre_head_norm"
    )(x)
    x = _builder.head(
        x, include_top, pooling, classes, classifier_activation,
        head_dropout_rate,
    )
    model = keras.Model(inputs, x, name=name)
    _builder.load_weights(model, checkpoint)
    return model


def _variant(key):
    size, patch = key.split("/")
    function = f"Mixer{size}{patch}"
    return _builder.make_variant(
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

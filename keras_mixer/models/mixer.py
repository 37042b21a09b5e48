"""MLP-Mixer (Tolstikhin et al., 2021, https://arxiv.org/abs/2105.01601),
and gMixer, its gated variant.

patches -> Conv2D stem (kernel = stride = patch) -> N Mixer blocks -> LayerNorm
-> global average pooling -> linear head. `MODEL_CONFIGS` is Table 1 of the
paper, plus S/8 (published by the authors among their GSAM checkpoints).

gMixer (timm's `gmixer_12_224` / `gmixer_24_224`, Ross Wightman's experiment)
is this architecture with both MLPs replaced by a GLU MLP with SiLU
(`mlp_layer="glu"`, `layers.GluMlp`), as timm builds it: `MlpMixer(...,
mlp_layer=GluMlp, act_layer=nn.SiLU)`. It is an option of this family, not a
family of its own, because it differs in that one sublayer: the skeleton, the
norms, the checkpoint keys and the Appendix C resize are Mixer's.
`GMIXER_CONFIGS` holds its two sizes.
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

# timm's gmixer_{12,24}_224: mlp_ratio (1.0, 4.0) of the width 384 gives fc1's
# widths (value and gate halves together).
GMIXER_CONFIGS = {
    str(depth): dict(patch_size=16, hidden_dim=384, num_blocks=depth,
                     tokens_mlp_dim=384, channels_mlp_dim=1536, mlp_layer="glu")
    for depth in (12, 24)
}

MLP_LAYERS = ("mlp", "glu")


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
        tokens_mlp_dim: int, hidden width `D_S` of the token-mixing MLP (for
            `mlp_layer="glu"`, fc1's width: value and gate halves).
        channels_mlp_dim: int, hidden width `D_C` of the channel-mixing MLP
            (likewise).
        approximate_gelu: bool, see `keras_mixer.layers.MlpBlock`; the default
            is the tanh form of the official Flax code. Unused by "glu".
        dropout_rate: float, dropout inside both MLPs.
        drop_path_rate: float, stochastic depth rate of this block.
        layer_norm_epsilon: float.
        mlp_layer: "mlp" (fc1 -> GELU -> fc2, the paper's) or "glu"
            (`layers.GluMlp` with SiLU, timm's gMixer).
    """

    family = "mixer"

    @property
    def token_axes(self):
        """Appendix C: the token MLP's weights grow with the patch grid, its
        hidden width with the number of parts (see grown_config); a GLU's
        fc1 keeps its values before its gates."""
        hidden = resize.GATED if self.mlp_layer == "glu" else resize.HIDDEN
        return {
            "token_mixing/fc1/kernel": (resize.TOKENS, hidden),
            "token_mixing/fc1/bias": (hidden,),
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
        mlp_layer="mlp",
        **kwargs,
    ):
        super().__init__(**kwargs)
        checks.check_int("tokens_mlp_dim", tokens_mlp_dim, where="MixerBlock")
        checks.check_int("channels_mlp_dim", channels_mlp_dim, where="MixerBlock")
        checks.check_rate("drop_path_rate", drop_path_rate, where="MixerBlock")
        check_mlp_layer(mlp_layer, "MixerBlock: ")
        self.mlp_layer = mlp_layer
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
        self.token_mixing = self._mlp(self.tokens_mlp_dim, "token_mixing")
        self.norm2 = layers.LayerNorm(
            epsilon=self.layer_norm_epsilon, dtype=policy, name="norm2"
        )
        self.channel_mixing = self._mlp(self.channels_mlp_dim, "channel_mixing")
        self.drop_path = layers.DropPath(
            self.drop_path_rate, dtype=policy, name="drop_path"
        )
        self.norm1.build(input_shape)
        self.token_mixing.build((batch, channels, tokens))
        self.norm2.build(input_shape)
        self.channel_mixing.build(input_shape)
        self.built = True

    def _mlp(self, width, name):
        if self.mlp_layer == "glu":
            return layers.GluMlp(
                width, activation="silu", dropout_rate=self.dropout_rate,
                dtype=self.dtype_policy, name=name,
            )
        return layers.MlpBlock(
            width,
            approximate_gelu=self.approximate_gelu,
            dropout_rate=self.dropout_rate,
            dtype=self.dtype_policy,
            name=name,
        )

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
                "mlp_layer": self.mlp_layer,
            }
        )
        return config


def check_mlp_layer(mlp_layer, where=""):
    if mlp_layer not in MLP_LAYERS:
        raise ValueError(
            f"{where}Unknown `mlp_layer` {mlp_layer!r}. Use 'mlp' (fc1 -> GELU "
            "-> fc2, the MLP-Mixer paper's) or 'glu' (fc1 -> value * "
            "SiLU(gate) -> fc2, timm's gMixer)."
        )


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
    mlp_layer="mlp",
    drop_path_schedule="linear",
):
    """Builds an MLP-Mixer (or a gMixer) of any size.

    Layer names mirror the paper and the official code: `preprocessing`,
    `stem`, `block_0` ... `block_{N-1}` (each with `norm1`, `token_mixing`,
    `norm2`, `channel_mixing`), `pre_head_norm`, `avg_pool`, `head`,
    `predictions`.

    Args:
        patch_size: side of the square patches (the stem's kernel and stride).
        hidden_dim: channels C of each token.
        num_blocks: number of Mixer blocks.
        tokens_mlp_dim: hidden width D_S of the token-mixing MLPs (with
            `mlp_layer="glu"`: fc1's width, even; fc2 takes half).
        channels_mlp_dim: hidden width D_C of the channel-mixing MLPs
            (likewise).
        include_top, weights, input_tensor, input_shape, pooling, classes,
        classifier_activation, include_preprocessing, dropout_rate,
        drop_path_rate, name: as in `keras_mixer.MixerB16`.
        approximate_gelu: True uses the tanh approximation of GELU, as the
            official Flax code; False the exact erf GELU (timm). None (default):
            the form of the `weights`' source, else True. Unused by "glu".
        layer_norm_epsilon: epsilon of every LayerNorm (1e-6 as Flax, timm).
        head_dropout_rate: dropout before the head (include_top only).
        preprocessing: input normalisation of `include_preprocessing`: "tf"
            ([-1, 1], the official pipeline; the default), "torch" (ImageNet
            mean/std, timm's gMixer) or "zero_one".
        mlp_layer: "mlp" (default): fc1 -> GELU -> fc2 in both mixings, the
            paper's. "glu": timm's `GluMlp` with SiLU (gMixer): fc1's output
            is split into a value half and a gate half, and fc2 gets
            `value * SiLU(gate)`.
        drop_path_schedule: "linear" (default, as big_vision's Mixer): the
            stochastic depth rate rises from 0 in the first block to
            `drop_path_rate` in the last; "uniform": every block has
            `drop_path_rate` (timm; the gMixer variants' default).

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
        drop_path_schedule,
    )
    check_mlp_layer(mlp_layer)
    if mlp_layer == "glu":
        for what, width in (("tokens_mlp_dim", tokens_mlp_dim),
                            ("channels_mlp_dim", channels_mlp_dim)):
            if width % 2:
                raise ValueError(
                    f"`{what}` {width} must be even with mlp_layer='glu': it "
                    "is fc1's width, split into a value half and a gate half."
                )
    checkpoint = _builder.read_weights(
        weights, MixerBlock.family, name,
        preprocessing if include_preprocessing else None,
    )
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
    drop_path_rates = _builder.stochastic_depth_rates(
        drop_path_rate, num_blocks, drop_path_schedule
    )
    for i, rate in enumerate(drop_path_rates):
        x = MixerBlock(
            tokens_mlp_dim,
            channels_mlp_dim,
            approximate_gelu=approximate_gelu,
            dropout_rate=dropout_rate,
            drop_path_rate=rate,
            layer_norm_epsilon=layer_norm_epsilon,
            mlp_layer=mlp_layer,
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


def _gmixer_variant(depth):
    config = GMIXER_CONFIGS[depth]
    return _builder.make_variant(
        MLPMixer,
        config,
        f"GMixer{depth}",
        f"gmixer_{depth}",
        dict(
            title=f"gMixer-{depth}",
            family="gated MLP-Mixer (gMixer)",
            paper="timm (Wightman), after Tolstikhin et al. (2021)",
            description=(
                "{num_blocks} Mixer blocks of width {hidden_dim} on "
                "{patch_size}x{patch_size} patches whose MLPs are GLUs with "
                "SiLU (timm's GluMlp): fc1 of width {tokens_mlp_dim} (tokens) "
                "and {channels_mlp_dim} (channels), its first half the value "
                "and its second half the gate, fc2 from half that width."
            ).format(**config),
            reference=(
                "timm `gmixer_{0}_224` (timm/models/mlp_mixer.py); "
                "https://arxiv.org/abs/2105.01601"
            ).format(depth),
            default_size=224,
            preprocessing="torch",
            preprocessing_text="ImageNet mean and std, as timm",
            example_size=32,
        ),
        # timm's gMixer recipe: ImageNet normalisation, the same stochastic
        # depth rate in every block.
        defaults=dict(preprocessing="torch", drop_path_schedule="uniform"),
    )


MixerS32 = _variant("S/32")
MixerS16 = _variant("S/16")
MixerS8 = _variant("S/8")
MixerB32 = _variant("B/32")
MixerB16 = _variant("B/16")
MixerL32 = _variant("L/32")
MixerL16 = _variant("L/16")
MixerH14 = _variant("H/14")

GMixer12 = _gmixer_variant("12")
GMixer24 = _gmixer_variant("24")

VARIANTS = {
    f.__name__: f
    for f in (
        MixerS32, MixerS16, MixerS8, MixerB32, MixerB16,
        MixerL32, MixerL16, MixerH14, GMixer12, GMixer24,
    )
}

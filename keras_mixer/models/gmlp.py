"""gMLP (Liu et al., 2021, "Pay Attention to MLPs",
https://arxiv.org/abs/2105.08050), as timm builds it.

patches -> Conv2D stem (kernel = stride = patch) -> N gMLP blocks -> LayerNorm
-> global average pooling -> linear head. A block (the paper's Figure 1):

    Z = GELU(LayerNorm(X) U)                 (d_ffn channels)
    s(Z) = Z1 * (W LayerNorm'(Z2) + b)       Spatial Gating Unit: Z1, Z2 are
                                             the first and second halves of
                                             Z's channels; W mixes the tokens
    Y = X + s(Z) V

`MODEL_CONFIGS` follows timm's `gmlp_ti16_224`, `gmlp_s16_224` and
`gmlp_b16_224` (the paper's Table 1 sizes, 30 blocks, d_ffn = 6 d_model).
"""

import keras
from keras import ops

from keras_mixer import checks
from keras_mixer import layers
from keras_mixer.checkpoints import resize
from keras_mixer.models import _builder

MODEL_CONFIGS = {
    "Ti/16": dict(patch_size=16, hidden_dim=128, num_blocks=30, mlp_ratio=6),
    "S/16": dict(patch_size=16, hidden_dim=256, num_blocks=30, mlp_ratio=6),
    "B/16": dict(patch_size=16, hidden_dim=512, num_blocks=30, mlp_ratio=6),
}


@keras.saving.register_keras_serializable(package="keras_mixer")
class SpatialGatingUnit(keras.layers.Layer):
    """s(Z) = Z1 * (W LayerNorm(Z2) + b), the gate of gMLP (Section 2).

    The input's channels are split into halves: the first, Z1, is the value;
    the second, Z2, is normalised and projected across the tokens by a
    dense layer on the transposed table, `proj` (W: tokens x tokens, timm's
    order). As in the paper and timm, `proj` starts near zero (weights
    N(0, 1e-6)) with a bias of one, so that the unit starts as s(Z) = Z1.

    Args:
        epsilon: float, the LayerNorm's epsilon (1e-5: timm's gate uses
            torch's default, unlike the block's 1e-6).
    """

    def __init__(self, epsilon=1e-5, **kwargs):
        super().__init__(**kwargs)
        checks.check_positive("epsilon", epsilon, where="SpatialGatingUnit")
        self.epsilon = float(epsilon)

    def build(self, input_shape):
        batch, _, width = input_shape
        tokens = layers.known_tokens(input_shape, "SpatialGatingUnit")
        if width % 2:
            raise ValueError(
                f"SpatialGatingUnit: the input has {width} channels; it needs "
                "an even number (a value half and a gate half)."
            )
        policy = self.dtype_policy
        self.norm = layers.LayerNorm(epsilon=self.epsilon, dtype=policy, name="norm")
        self.proj = layers.Dense(
            tokens,
            kernel_initializer=keras.initializers.RandomNormal(stddev=1e-6),
            bias_initializer="ones",
            dtype=policy,
            name="proj",
        )
        self.norm.build((batch, tokens, width // 2))
        self.proj.build((None, tokens))
        self.built = True

    def call(self, inputs):
        value, gate = ops.split(inputs, 2, axis=-1)
        gate = ops.transpose(self.norm(gate), (0, 2, 1))
        gate = ops.transpose(self.proj(gate), (0, 2, 1))
        return value * gate

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], input_shape[-1] // 2)

    def count_macs(self, input_shape):
        """Multiply-accumulates of one sample of `(batch, tokens, channels)`."""
        _, tokens, width = input_shape
        return (width // 2) * tokens * tokens

    def get_config(self):
        config = super().get_config()
        config.update({"epsilon": self.epsilon})
        return config


@keras.saving.register_keras_serializable(package="keras_mixer")
class GMLPBlock(keras.layers.Layer):
    """One gMLP block: `X + DropPath(fc2(SGU(GELU(fc1(LayerNorm(X))))))`.

    fc1 widens the channels to `ffn_dim`, GELU acts on all of them, the
    Spatial Gating Unit halves them, fc2 projects back; dropout follows
    GELU and fc2 (timm's `GatedMlp`).

    Args:
        ffn_dim: int, even, the paper's d_ffn (fc1's width).
        approximate_gelu: bool, see `keras_mixer.layers.MlpBlock`; timm uses
            the exact GELU, the default.
        dropout_rate: float.
        drop_path_rate: float, stochastic depth rate of this block.
        layer_norm_epsilon: float, the block's LayerNorm (1e-6, as timm).
        gate_epsilon: float, the gate's LayerNorm (1e-5, as timm).
    """

    family = "gmlp"
    # Appendix C: W mixes tokens and grows block-diagonally with the grid.
    token_axes = {
        "spatial_gating/proj/kernel": (resize.TOKENS, resize.TOKENS),
        "spatial_gating/proj/bias": (resize.TOKENS,),
    }

    def __init__(
        self,
        ffn_dim,
        approximate_gelu=False,
        dropout_rate=0.0,
        drop_path_rate=0.0,
        layer_norm_epsilon=1e-6,
        gate_epsilon=1e-5,
        **kwargs,
    ):
        super().__init__(**kwargs)
        checks.check_int("ffn_dim", ffn_dim, where="GMLPBlock")
        if ffn_dim % 2:
            raise ValueError(
                f"GMLPBlock: `ffn_dim` {ffn_dim} must be even (the gate splits "
                "it into halves)."
            )
        checks.check_rate("dropout_rate", dropout_rate, where="GMLPBlock")
        checks.check_rate("drop_path_rate", drop_path_rate, where="GMLPBlock")
        self.ffn_dim = ffn_dim
        self.approximate_gelu = bool(approximate_gelu)
        self.dropout_rate = float(dropout_rate)
        self.drop_path_rate = float(drop_path_rate)
        self.layer_norm_epsilon = float(layer_norm_epsilon)
        self.gate_epsilon = float(gate_epsilon)

    def build(self, input_shape):
        batch, _, dim = input_shape
        tokens = layers.known_tokens(input_shape, "GMLPBlock")
        policy = self.dtype_policy
        self.norm = layers.LayerNorm(
            epsilon=self.layer_norm_epsilon, dtype=policy, name="norm"
        )
        self.fc1 = layers.Dense(self.ffn_dim, dtype=policy, name="fc1")
        self.drop1 = keras.layers.Dropout(self.dropout_rate, dtype=policy, name="drop1")
        self.spatial_gating = SpatialGatingUnit(
            self.gate_epsilon, dtype=policy, name="spatial_gating"
        )
        self.fc2 = layers.Dense(dim, dtype=policy, name="fc2")
        self.drop2 = keras.layers.Dropout(self.dropout_rate, dtype=policy, name="drop2")
        self.drop_path = layers.DropPath(
            self.drop_path_rate, dtype=policy, name="drop_path"
        )
        self.norm.build(input_shape)
        self.fc1.build((None, dim))
        self.spatial_gating.build((batch, tokens, self.ffn_dim))
        self.fc2.build((None, self.ffn_dim // 2))
        self.built = True

    def call(self, inputs, training=None):
        # fc1 on rows, GELU in the same graph region (`Dense.on_rows`).
        y = self.fc1.on_rows(layers.to_rows(self.norm(inputs)))
        y = layers.from_rows(ops.gelu(y, approximate=self.approximate_gelu), inputs)
        y = self.spatial_gating(self.drop1(y, training=training))
        y = self.drop2(self.fc2(y), training=training)
        return inputs + self.drop_path(y, training=training)

    def compute_output_shape(self, input_shape):
        return input_shape

    def count_macs(self, input_shape):
        """Multiply-accumulates of one sample of `(batch, tokens, channels)`."""
        batch, tokens, dim = input_shape
        half = self.ffn_dim // 2
        gate = self.spatial_gating.count_macs((batch, tokens, self.ffn_dim))
        return tokens * dim * self.ffn_dim + gate + tokens * half * dim

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "ffn_dim": self.ffn_dim,
                "approximate_gelu": self.approximate_gelu,
                "dropout_rate": self.dropout_rate,
                "drop_path_rate": self.drop_path_rate,
                "layer_norm_epsilon": self.layer_norm_epsilon,
                "gate_epsilon": self.gate_epsilon,
            }
        )
        return config


def GMLP(
    patch_size,
    hidden_dim,
    num_blocks,
    mlp_ratio=6,
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
    name="gmlp",
    approximate_gelu=None,
    layer_norm_epsilon=1e-6,
    gate_epsilon=1e-5,
    head_dropout_rate=0.0,
    preprocessing=None,
    drop_path_schedule="uniform",
):
    """Builds a gMLP of any size.

    Layer names: `preprocessing`, `stem`, `block_0` ... `block_{N-1}` (each
    with `norm`, `fc1`, `spatial_gating` (`norm`, `proj`), `fc2`),
    `pre_head_norm`, `avg_pool`, `head`, `predictions`.

    Args:
        patch_size: side of the square patches.
        hidden_dim: channels of each token (the paper's d_model).
        num_blocks: number of gMLP blocks.
        mlp_ratio: d_ffn as a multiple of `hidden_dim` (6 in the paper and
            timm); d_ffn must be even.
        include_top, weights, input_tensor, input_shape, pooling, classes,
        classifier_activation, include_preprocessing, dropout_rate,
        drop_path_rate, name: as in `keras_mixer.GMLPS16`.
        approximate_gelu: False (exact GELU, timm's); None (default): the form
            of the `weights`' source, else False.
        layer_norm_epsilon: epsilon of the blocks' and the pre-head
            LayerNorms (1e-6, as timm).
        gate_epsilon: epsilon of the gates' LayerNorms (1e-5, as timm).
        head_dropout_rate: dropout before the head (include_top only).
        preprocessing: input normalisation of `include_preprocessing`: "tf"
            (mean = std = 0.5, timm's gMLP; the default), "torch" or
            "zero_one".
        drop_path_schedule: "uniform" (default, as timm): every block has
            `drop_path_rate`; "linear": it rises from 0 in the first block.

    Returns:
        A `keras.Model`.

    Example:
    >>> model = keras_mixer.GMLP(
    ...     patch_size=4, hidden_dim=16, num_blocks=2,
    ...     input_shape=(16, 16, 3), classes=10)
    >>> tuple(model.get_layer("block_0").spatial_gating.proj.kernel.shape)
    (16, 16)
    """
    preprocessing = preprocessing or "tf"
    sizes = dict(patch_size=patch_size, hidden_dim=hidden_dim, num_blocks=num_blocks)
    rates = dict(
        dropout_rate=dropout_rate, drop_path_rate=drop_path_rate,
        head_dropout_rate=head_dropout_rate,
    )
    shape = _builder.check_arguments(
        sizes, rates, include_top, input_tensor, input_shape, pooling,
        classes, classifier_activation, include_preprocessing, preprocessing,
        drop_path_schedule,
    )
    checks.check_positive("mlp_ratio", mlp_ratio)
    ffn_dim = int(mlp_ratio * hidden_dim)
    if ffn_dim % 2:
        raise ValueError(
            f"mlp_ratio * hidden_dim = {ffn_dim} must be even: the Spatial "
            "Gating Unit splits fc1's outputs into halves."
        )
    checkpoint = _builder.read_weights(
        weights, GMLPBlock.family, name,
        preprocessing if include_preprocessing else None,
    )
    if approximate_gelu is None:
        approximate_gelu = getattr(checkpoint, "approximate_gelu", False)

    inputs, x = _builder.model_inputs(input_tensor, shape)
    if include_preprocessing:
        x = _builder.preprocessing(preprocessing, shape[-1])(x)
    x = layers.PatchEmbedding(patch_size, hidden_dim, name="stem")(x)
    drop_path_rates = _builder.stochastic_depth_rates(
        drop_path_rate, num_blocks, drop_path_schedule
    )
    for i, rate in enumerate(drop_path_rates):
        x = GMLPBlock(
            ffn_dim,
            approximate_gelu=approximate_gelu,
            dropout_rate=dropout_rate,
            drop_path_rate=rate,
            layer_norm_epsilon=layer_norm_epsilon,
            gate_epsilon=gate_epsilon,
            name=f"block_{i}",
        )(x)
    x = layers.LayerNorm(epsilon=layer_norm_epsilon, name="pre_head_norm")(x)
    x = _builder.head(
        x, include_top, pooling, classes, classifier_activation,
        head_dropout_rate,
    )
    model = keras.Model(inputs, x, name=name)
    _builder.load_weights(model, checkpoint)
    return model


def _variant(key):
    config = MODEL_CONFIGS[key]
    size, patch = key.split("/")
    return _builder.make_variant(
        GMLP,
        config,
        f"GMLP{size}{patch}",
        f"gmlp_{size.lower()}{patch}",
        dict(
            title=f"gMLP-{key}",
            family="gMLP",
            paper="Liu et al. (2021)",
            description=(
                "{num_blocks} gMLP blocks of width {hidden_dim} on "
                "{patch_size}x{patch_size} patches, d_ffn = {mlp_ratio} x "
                "width, exact GELU; timm's gmlp_{size}{patch}_224."
            ).format(size=size.lower(), patch=patch, **config),
            reference="https://arxiv.org/abs/2105.08050 (Table 1)",
            default_size=224,
            preprocessing="tf",
            preprocessing_text="mean = std = 0.5, as timm",
            example_size=2 * config["patch_size"],
        ),
    )


GMLPTi16 = _variant("Ti/16")
GMLPS16 = _variant("S/16")
GMLPB16 = _variant("B/16")

VARIANTS = {f.__name__: f for f in (GMLPTi16, GMLPS16, GMLPB16)}

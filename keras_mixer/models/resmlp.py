"""ResMLP (Touvron et al., 2021, https://arxiv.org/abs/2105.03404).

The Mixer skeleton with a single linear layer across patches, the Affine
transform `alpha * x + beta` in place of LayerNorm, LayerScale on both residual
branches and GELU only in the channel MLP. `MODEL_CONFIGS` follows deit's
`resmlp_models.py`.
"""

import keras
from keras import ops

from keras_mixer import checks
from keras_mixer import layers
from keras_mixer.checkpoints import resize
from keras_mixer.models import _builder

MODEL_CONFIGS = {
    "12": dict(patch_size=16, hidden_dim=384, num_blocks=12, layerscale_init=0.1),
    "24": dict(patch_size=16, hidden_dim=384, num_blocks=24, layerscale_init=1e-5),
    "36": dict(patch_size=16, hidden_dim=384, num_blocks=36, layerscale_init=1e-6),
    "B24": dict(patch_size=8, hidden_dim=768, num_blocks=24, layerscale_init=1e-6),
}


def default_layerscale_init(num_blocks):
    """LayerScale initial value by depth, as in the ResMLP paper: 0.1 up to
    18 blocks, 1e-5 up to 24, 1e-6 beyond (ResMLP-B24 also uses 1e-6)."""
    if num_blocks <= 18:
        return 0.1
    if num_blocks <= 24:
        return 1e-5
    return 1e-6


@keras.saving.register_keras_serializable(package="keras_mixer")
class ResMLPBlock(keras.layers.Layer):
    """The residual block of ResMLP (eq. 1-3 of the ResMLP paper).

        Z = X + DropPath(ls1 * CrossPatch(Affine1(X)^T)^T)
        Y = Z + DropPath(ls2 * MLP(Affine2(Z)))

    `CrossPatch` is one linear layer over the tokens (no activation), run on
    the table transposed to `(batch, channels, tokens)`; `MLP` is
    Dense(mlp_ratio * dim) -> GELU -> Dense(dim); `ls1`, `ls2` are LayerScale
    factors.

    Args:
        layerscale_init: float, initial LayerScale value.
        mlp_ratio: int or float, hidden width of the MLP over the channels.
        approximate_gelu: bool, see `keras_mixer.layers.MlpBlock` (deit uses
            the exact GELU, the default).
        dropout_rate: float, dropout inside the channel MLP.
        drop_path_rate: float, stochastic depth rate of this block.
    """

    family = "resmlp"
    # Appendix C: the cross-patch layer grows block-diagonally with the grid.
    token_axes = {
        "cross_patch/kernel": (resize.TOKENS, resize.TOKENS),
        "cross_patch/bias": (resize.TOKENS,),
    }

    def __init__(
        self,
        layerscale_init,
        mlp_ratio=4,
        approximate_gelu=False,
        dropout_rate=0.0,
        drop_path_rate=0.0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        checks.check_positive("mlp_ratio", mlp_ratio, where="ResMLPBlock")
        checks.check_rate("drop_path_rate", drop_path_rate, where="ResMLPBlock")
        self.layerscale_init = float(layerscale_init)
        self.mlp_ratio = mlp_ratio
        self.approximate_gelu = bool(approximate_gelu)
        self.dropout_rate = float(dropout_rate)
        self.drop_path_rate = float(drop_path_rate)

    def build(self, input_shape):
        batch, _, dim = input_shape
        tokens = layers.known_tokens(input_shape, "ResMLPBlock")
        policy = self.dtype_policy
        self.norm1 = layers.Affine(dtype=policy, name="norm1")
        # deit initialises every linear layer with a truncated normal, std 0.02.
        init = {"class_name": "TruncatedNormal", "config": {"stddev": 0.02}}
        self.cross_patch = layers.Dense(
            tokens, kernel_initializer=init, dtype=policy, name="cross_patch"
        )
        self.ls1 = layers.LayerScale(
            self.layerscale_init, dtype=policy, name="ls1"
        )
        self.norm2 = layers.Affine(dtype=policy, name="norm2")
        self.channel_mixing = layers.MlpBlock(
            int(self.mlp_ratio * dim),
            approximate_gelu=self.approximate_gelu,
            dropout_rate=self.dropout_rate,
            kernel_initializer=init,
            dtype=policy,
            name="channel_mixing",
        )
        self.ls2 = layers.LayerScale(
            self.layerscale_init, dtype=policy, name="ls2"
        )
        self.drop_path = layers.DropPath(
            self.drop_path_rate, dtype=policy, name="drop_path"
        )
        self.norm1.build(input_shape)
        self.cross_patch.build((batch, dim, tokens))
        for layer in (self.ls1, self.norm2, self.channel_mixing, self.ls2):
            layer.build(input_shape)
        self.built = True

    def call(self, inputs, training=None):
        x = inputs
        y = ops.transpose(self.norm1(x), (0, 2, 1))
        y = self.ls1(ops.transpose(self.cross_patch(y), (0, 2, 1)))
        x = x + self.drop_path(y, training=training)
        y = self.channel_mixing(self.norm2(x), training=training)
        return x + self.drop_path(self.ls2(y), training=training)

    def compute_output_shape(self, input_shape):
        return input_shape

    def count_macs(self, input_shape):
        """Multiply-accumulates of one sample of `(batch, tokens, channels)`."""
        _, tokens, dim = input_shape
        return dim * tokens * tokens + self.channel_mixing.count_macs(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "layerscale_init": self.layerscale_init,
                "mlp_ratio": self.mlp_ratio,
                "approximate_gelu": self.approximate_gelu,
                "dropout_rate": self.dropout_rate,
                "drop_path_rate": self.drop_path_rate,
            }
        )
        return config


def ResMLP(
    patch_size,
    hidden_dim,
    num_blocks,
    mlp_ratio=4,
    layerscale_init=None,
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
    name="resmlp",
    approximate_gelu=None,
    head_dropout_rate=0.0,
    preprocessing=None,
    drop_path_schedule="uniform",
):
    """Builds a ResMLP of any size.

    Layer names: `preprocessing`, `stem`, `block_0` ... `block_{N-1}` (each
    with `norm1`, `cross_patch`, `ls1`, `norm2`, `channel_mixing`, `ls2`),
    `pre_head_norm` (an Affine), `avg_pool`, `head`, `predictions`.

    Args:
        patch_size: side of the square patches.
        hidden_dim: channels of each token.
        num_blocks: number of residual blocks.
        mlp_ratio: hidden width of the channel MLP, as a multiple of
            `hidden_dim`.
        layerscale_init: initial LayerScale value; None picks it by depth
            (see `default_layerscale_init`).
        include_top, weights, input_tensor, input_shape, pooling, classes,
        classifier_activation, include_preprocessing, dropout_rate,
        drop_path_rate, name: as in `keras_mixer.ResMLP12`.
        approximate_gelu: False uses the exact GELU, as deit; None (default)
            takes the form of the `weights`' source, else False.
        head_dropout_rate: dropout before the head (include_top only).
        preprocessing: input normalisation of `include_preprocessing`:
            "torch" (ImageNet mean/std, default), "tf" or "zero_one".
        drop_path_schedule: "uniform" (default, as deit's and timm's ResMLP):
            every block has `drop_path_rate`; "linear": the rate rises from 0
            in the first block to `drop_path_rate` in the last.

    Returns:
        A `keras.Model`.

    Example:
    >>> model = keras_mixer.ResMLP(
    ...     patch_size=4, hidden_dim=32, num_blocks=2,
    ...     input_shape=(16, 16, 3), classes=10)
    >>> model.get_layer("block_0").ls1.init_value
    0.1
    """
    preprocessing = preprocessing or "torch"
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
    checkpoint = _builder.read_weights(
        weights, ResMLPBlock.family, name,
        preprocessing if include_preprocessing else None,
    )
    if approximate_gelu is None:
        approximate_gelu = getattr(checkpoint, "approximate_gelu", False)
    if layerscale_init is None:
        layerscale_init = default_layerscale_init(num_blocks)

    inputs, x = _builder.model_inputs(input_tensor, shape)
    if include_preprocessing:
        x = _builder.preprocessing(preprocessing, shape[-1])(x)
    x = layers.PatchEmbedding(patch_size, hidden_dim, name="stem")(x)
    drop_path_rates = _builder.stochastic_depth_rates(
        drop_path_rate, num_blocks, drop_path_schedule
    )
    for i, rate in enumerate(drop_path_rates):
        x = ResMLPBlock(
            layerscale_init,
            mlp_ratio=mlp_ratio,
            approximate_gelu=approximate_gelu,
            dropout_rate=dropout_rate,
            drop_path_rate=rate,
            name=f"block_{i}",
        )(x)
    x = layers.Affine(name="pre_head_norm")(x)
    x = _builder.head(
        x, include_top, pooling, classes, classifier_activation,
        head_dropout_rate,
    )
    model = keras.Model(inputs, x, name=name)
    _builder.load_weights(model, checkpoint)
    return model


def _variant(key):
    config = MODEL_CONFIGS[key]
    return _builder.make_variant(
        ResMLP,
        config,
        f"ResMLP{key}",
        f"resmlp_{key.lower()}",
        dict(
            title=f"ResMLP-{key}",
            family="ResMLP",
            paper="Touvron et al. (2021)",
            description=(
                "{num_blocks} residual blocks of width {hidden_dim} on "
                "{patch_size}x{patch_size} patches, channel MLP ratio 4, "
                "LayerScale initialised to {layerscale_init:g}, exact GELU."
            ).format(**config),
            reference="https://arxiv.org/abs/2105.03404",
            default_size=224,
            preprocessing="torch",
            preprocessing_text="ImageNet mean and std, as deit",
            example_size=2 * config["patch_size"],
        ),
    )


ResMLP12 = _variant("12")
ResMLP24 = _variant("24")
ResMLP36 = _variant("36")
ResMLPB24 = _variant("B24")

VARIANTS = {f.__name__: f for f in (ResMLP12, ResMLP24, ResMLP36, ResMLPB24)}

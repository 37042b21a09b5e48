"""ConvMixer (Trockman & Kolter, 2022, "Patches Are All You Need?",
https://arxiv.org/abs/2201.09792), as timm builds it.

patches -> stem (Conv2D, kernel = stride = patch, then activation and
BatchNorm) -> N ConvMixer blocks -> global average pooling -> linear head;
no pre-head norm. A block (the paper's Section 2):

    X' = X + BatchNorm(act(DepthwiseConv_k(X)))     (mixes the positions)
    Y  = BatchNorm(act(PointwiseConv(X')))          (mixes the channels)

The activation comes before each BatchNorm: GELU (exact), or ReLU for
ConvMixer-768/32. The feature maps stay `(batch, height, width, channels)`
and nothing is sized by the number of patches, so one set of weights runs at
any input size whose sides are multiples of the patch (others are refused
rather than cropped, which torch's stride-p convolution would do silently).
`MODEL_CONFIGS` holds timm's three published sizes.
"""

import keras
from keras import ops

from keras_mixer import checks
from keras_mixer import layers
from keras_mixer.models import _builder

MODEL_CONFIGS = {
    # timm convmixer_1536_20, convmixer_768_32, convmixer_1024_20_ks9_p14
    "1536/20": dict(hidden_dim=1536, num_blocks=20, kernel_size=9, patch_size=7,
                    activation="gelu"),
    "768/32": dict(hidden_dim=768, num_blocks=32, kernel_size=7, patch_size=7,
                   activation="relu"),
    "1024/20": dict(hidden_dim=1024, num_blocks=20, kernel_size=9, patch_size=14,
                    activation="gelu"),
}
# timm's architecture names, as a Hub folder's config.json gives them.
TIMM_ARCHITECTURES = {
    "convmixer_1536_20": "1536/20",
    "convmixer_768_32": "768/32",
    "convmixer_1024_20_ks9_p14": "1024/20",
}
ACTIVATIONS = ("gelu", "relu")


def check_activation(activation, where=""):
    if activation not in ACTIVATIONS:
        raise ValueError(
            f"{where}Unknown `activation` {activation!r}: use 'gelu' (ConvMixer-"
            "1536/20 and -1024/20) or 'relu' (ConvMixer-768/32)."
        )


def activate(x, activation, approximate_gelu):
    if activation == "relu":
        return ops.relu(x)
    return ops.gelu(x, approximate=approximate_gelu)


def _batch_norm(epsilon, policy, name):
    # torch's BatchNorm2d: epsilon 1e-5, momentum 0.1 (Keras's 0.9).
    return keras.layers.BatchNormalization(
        epsilon=epsilon, momentum=0.9, dtype=policy, name=name
    )


@keras.saving.register_keras_serializable(package="keras_mixer")
class ConvMixerStem(keras.layers.Layer):
    """`BatchNorm(act(Conv2D(x)))` with kernel = stride = `patch_size`.

    Args:
        patch_size: int, side of the square patches.
        hidden_dim: int, channels of the output map.
        activation: "gelu" or "relu".
        approximate_gelu: bool (timm: False, the exact GELU).
        epsilon: float, BatchNorm's epsilon (1e-5, torch's).
    """

    def __init__(self, patch_size, hidden_dim, activation="gelu",
                 approximate_gelu=False, epsilon=1e-5, **kwargs):
        super().__init__(**kwargs)
        checks.check_int("patch_size", patch_size, where="ConvMixerStem")
        checks.check_int("hidden_dim", hidden_dim, where="ConvMixerStem")
        check_activation(activation, "ConvMixerStem: ")
        checks.check_positive("epsilon", epsilon, where="ConvMixerStem")
        self.patch_size = patch_size
        self.hidden_dim = hidden_dim
        self.activation = activation
        self.approximate_gelu = bool(approximate_gelu)
        self.epsilon = float(epsilon)

    def build(self, input_shape):
        _, height, width, _ = input_shape
        for side, size in (("height", height), ("width", width)):
            if size is not None:
                checks.check_patch_multiple(
                    f"ConvMixerStem: input {side}", size, self.patch_size
                )
        self.proj = keras.layers.Conv2D(
            self.hidden_dim, self.patch_size, strides=self.patch_size,
            padding="valid", data_format="channels_last",
            dtype=self.dtype_policy, name="proj",
        )
        self.norm = _batch_norm(self.epsilon, self.dtype_policy, "norm")
        self.proj.build(input_shape)
        self.norm.build(self.proj.compute_output_shape(input_shape))
        self.built = True

    def call(self, inputs, training=None):
        x = activate(self.proj(inputs), self.activation, self.approximate_gelu)
        return self.norm(x, training=training)

    def compute_output_shape(self, input_shape):
        return self.proj.compute_output_shape(input_shape)

    def count_macs(self, input_shape):
        """Multiply-accumulates of one image."""
        _, height, width, channels = input_shape
        positions = (height // self.patch_size) * (width // self.patch_size)
        return positions * self.patch_size**2 * channels * self.hidden_dim

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "patch_size": self.patch_size,
                "hidden_dim": self.hidden_dim,
                "activation": self.activation,
                "approximate_gelu": self.approximate_gelu,
                "epsilon": self.epsilon,
            }
        )
        return config


@keras.saving.register_keras_serializable(package="keras_mixer")
class ConvMixerBlock(keras.layers.Layer):
    """One ConvMixer block on a `(batch, height, width, channels)` map.

        X' = X + DropPath(norm1(act(depthwise(X))))
        Y  = norm2(act(pointwise(X')))

    `depthwise` is a k x k depthwise convolution with "same" padding (as
    torch's `padding="same"`: the extra pixel of an even kernel goes to the
    bottom and right), `pointwise` a dense layer over the channels (a 1x1
    convolution), `norm1` and `norm2` BatchNorms.

    Args:
        kernel_size: int, side of the depthwise kernel.
        activation: "gelu" or "relu".
        approximate_gelu: bool (timm: False).
        drop_path_rate: float, stochastic depth on the residual branch (not
            in the paper or timm; 0 by default).
        epsilon: float, BatchNorm's epsilon (1e-5, torch's).
    """

    family = "convmixer"
    # Nothing is sized by the patch grid: no Appendix C growth.
    token_axes = {}

    def __init__(self, kernel_size, activation="gelu", approximate_gelu=False,
                 drop_path_rate=0.0, epsilon=1e-5, **kwargs):
        super().__init__(**kwargs)
        checks.check_int("kernel_size", kernel_size, where="ConvMixerBlock")
        check_activation(activation, "ConvMixerBlock: ")
        checks.check_rate("drop_path_rate", drop_path_rate, where="ConvMixerBlock")
        checks.check_positive("epsilon", epsilon, where="ConvMixerBlock")
        self.kernel_size = kernel_size
        self.activation = activation
        self.approximate_gelu = bool(approximate_gelu)
        self.drop_path_rate = float(drop_path_rate)
        self.epsilon = float(epsilon)

    def build(self, input_shape):
        dim = input_shape[-1]
        policy = self.dtype_policy
        self.depthwise = keras.layers.DepthwiseConv2D(
            self.kernel_size, padding="same", data_format="channels_last",
            dtype=policy, name="depthwise",
        )
        self.norm1 = _batch_norm(self.epsilon, policy, "norm1")
        self.pointwise = layers.Dense(dim, dtype=policy, name="pointwise")
        self.norm2 = _batch_norm(self.epsilon, policy, "norm2")
        self.drop_path = layers.DropPath(
            self.drop_path_rate, dtype=policy, name="drop_path"
        )
        for layer in (self.depthwise, self.norm1, self.norm2):
            layer.build(input_shape)
        self.pointwise.build((None, dim))
        self.built = True

    def call(self, inputs, training=None):
        y = activate(self.depthwise(inputs), self.activation, self.approximate_gelu)
        x = inputs + self.drop_path(self.norm1(y, training=training), training=training)
        y = activate(self.pointwise(x), self.activation, self.approximate_gelu)
        return self.norm2(y, training=training)

    def compute_output_shape(self, input_shape):
        return input_shape

    def count_macs(self, input_shape):
        """Multiply-accumulates of one sample of `(batch, H, W, channels)`."""
        _, height, width, dim = input_shape
        return height * width * dim * (self.kernel_size**2 + dim)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "kernel_size": self.kernel_size,
                "activation": self.activation,
                "approximate_gelu": self.approximate_gelu,
                "drop_path_rate": self.drop_path_rate,
                "epsilon": self.epsilon,
            }
        )
        return config


def _source_activation(checkpoint):
    """The activation of the timm architecture a Hub folder names, if known."""
    key = TIMM_ARCHITECTURES.get(getattr(checkpoint, "architecture", None))
    return (checkpoint.architecture, MODEL_CONFIGS[key]["activation"]) if key else (None, None)


def ConvMixer(
    hidden_dim,
    num_blocks,
    kernel_size=9,
    patch_size=7,
    activation="gelu",
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
    name="convmixer",
    approximate_gelu=None,
    batch_norm_epsilon=1e-5,
    head_dropout_rate=0.0,
    preprocessing=None,
    drop_path_schedule="uniform",
):
    """Builds a ConvMixer of any size.

    Layer names: `preprocessing`, `stem` (`proj`, `norm`), `block_0` ...
    `block_{N-1}` (each with `depthwise`, `norm1`, `pointwise`, `norm2`),
    `avg_pool`, `head`, `predictions`.

    Args:
        hidden_dim: channels h of the feature maps.
        num_blocks: depth d.
        kernel_size: side of the depthwise kernels.
        patch_size: side of the stem's patches (its kernel and stride).
        activation: "gelu" (default, exact unless `approximate_gelu`) or
            "relu" (ConvMixer-768/32). The weights do not record it; a Hub
            folder's config.json does, and a mismatch is refused.
        include_top, weights, input_tensor, input_shape, pooling, classes,
        classifier_activation, include_preprocessing, drop_path_rate, name:
            as in `keras_mixer.ConvMixer768_32`. With `include_top=False` and
            `pooling=None` the output is the last feature map
            `(batch, H / patch, W / patch, hidden_dim)`.
        dropout_rate: must be 0: ConvMixer has no MLP (see
            `head_dropout_rate`).
        approximate_gelu: False (exact GELU, timm's); None (default): the
            form of the `weights`' source, else False.
        batch_norm_epsilon: epsilon of every BatchNorm (1e-5, torch's).
        head_dropout_rate: dropout before the head (include_top only).
        preprocessing: input normalisation of `include_preprocessing`:
            "torch" (ImageNet mean/std, timm's ConvMixer; the default), "tf"
            or "zero_one".
        drop_path_schedule: "uniform" (default) or "linear", for
            `drop_path_rate` on the blocks' residual branches (stochastic
            depth is not part of the paper's or timm's ConvMixer).

    Returns:
        A `keras.Model`.

    Example:
    >>> model = keras_mixer.ConvMixer(
    ...     hidden_dim=16, num_blocks=2, kernel_size=3, patch_size=4,
    ...     input_shape=(16, 16, 3), include_top=False)
    >>> model.output_shape
    (None, 4, 4, 16)
    """
    preprocessing = preprocessing or "torch"
    sizes = dict(
        hidden_dim=hidden_dim, num_blocks=num_blocks, kernel_size=kernel_size,
        patch_size=patch_size,
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
    check_activation(activation)
    if dropout_rate:
        raise ValueError(
            f"`dropout_rate` {dropout_rate} applies inside MLPs, and ConvMixer "
            "has none: use head_dropout_rate (before the head) or "
            "drop_path_rate (on the residual branches)."
        )
    checkpoint = _builder.read_weights(
        weights, ConvMixerBlock.family, name,
        preprocessing if include_preprocessing else None,
    )
    architecture, source_activation = _source_activation(checkpoint)
    if source_activation not in (None, activation):
        raise ValueError(
            f"{checkpoint.origin} holds timm's {architecture}, which uses "
            f"{source_activation.upper()}, but the model is built with "
            f"activation={activation!r}: pass activation={source_activation!r} "
            f"(keras_mixer.ConvMixer{TIMM_ARCHITECTURES[architecture].replace('/', '_')})."
        )
    if approximate_gelu is None:
        approximate_gelu = getattr(checkpoint, "approximate_gelu", False)

    inputs, x = _builder.model_inputs(input_tensor, shape)
    if include_preprocessing:
        x = _builder.preprocessing(preprocessing, shape[-1])(x)
    x = ConvMixerStem(
        patch_size, hidden_dim, activation, approximate_gelu,
        epsilon=batch_norm_epsilon, name="stem",
    )(x)
    drop_path_rates = _builder.stochastic_depth_rates(
        drop_path_rate, num_blocks, drop_path_schedule
    )
    for i, rate in enumerate(drop_path_rates):
        x = ConvMixerBlock(
            kernel_size,
            activation=activation,
            approximate_gelu=approximate_gelu,
            drop_path_rate=rate,
            epsilon=batch_norm_epsilon,
            name=f"block_{i}",
        )(x)
    x = _builder.head(
        x, include_top, pooling, classes, classifier_activation,
        head_dropout_rate,
    )
    model = keras.Model(inputs, x, name=name)
    _builder.load_weights(model, checkpoint)
    return model


def _variant(key):
    config = MODEL_CONFIGS[key]
    function = f"ConvMixer{key.replace('/', '_')}"
    return _builder.make_variant(
        ConvMixer,
        config,
        function,
        f"convmixer_{key.replace('/', '_')}",
        dict(
            title=f"ConvMixer-{key}",
            family="ConvMixer",
            paper="Trockman & Kolter (2022)",
            description=(
                "{num_blocks} ConvMixer blocks of width {hidden_dim} on "
                "{patch_size}x{patch_size} patches, depthwise kernels "
                "{kernel_size}x{kernel_size}, activation {activation}. "
                "ConvMixer has no MLP: `dropout_rate` must stay 0."
            ).format(**config),
            features_text=(
                "the last feature map\n        `(batch, height / {patch_size}, "
                "width / {patch_size}, {hidden_dim})`"
            ).format(**config),
            positions="positions",
            resize_text="; ConvMixer runs at any size\n        as it is",
            checkpoint_text=(
                "timm .safetensors/.pth, a Hugging Face Hub model folder\n"
                "        (`config.json` + `model.safetensors`) or "
                "\"hf://timm/<model>\""
            ),
            reference="https://arxiv.org/abs/2201.09792 (Table 1)",
            default_size=224,
            preprocessing="torch",
            preprocessing_text="ImageNet mean and std, as timm",
            example_size=4 * config["patch_size"],
        ),
    )


ConvMixer1536_20 = _variant("1536/20")
ConvMixer768_32 = _variant("768/32")
ConvMixer1024_20 = _variant("1024/20")

VARIANTS = {f.__name__: f for f in (ConvMixer1536_20, ConvMixer768_32, ConvMixer1024_20)}

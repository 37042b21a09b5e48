"""What the pyramid families (CycleMLP, Vision Permutator) share: the
convolution that keeps the map (`ConvEmbedding`: stem and downsampling), the
weights of their three token-mixing branches (`SplitAttention`,
`weighted_sum`), their block around a token mixer (`PyramidBlock`), and the
check of their per-stage arguments (`stage_lists`).

Tensors between their layers are maps `(batch, height, width, channels)`.
"""

import math

import keras
from keras import ops

from keras_mixer import checks
from keras_mixer import layers

# The official code initialises every linear layer with a truncated normal,
# std 0.02.
INIT = {"class_name": "TruncatedNormal", "config": {"stddev": 0.02}}


def stage_lists(**lists):
    """The per-stage arguments of a pyramid builder (`depths=...`,
    `widths=...`) as tuples of one common length; a ValueError naming them
    otherwise."""
    lengths = set()
    for name, value in lists.items():
        if not isinstance(value, (list, tuple)) or not value:
            raise ValueError(
                f"`{name}` must be a non-empty list with one entry per stage, "
                f"got {value!r}."
            )
        lengths.add(len(value))
    if len(lengths) > 1:
        described = ", ".join(f"{n} has {len(v)}" for n, v in lists.items())
        raise ValueError(
            f"Give one entry per stage in each of {', '.join(lists)}: "
            f"{described}."
        )
    return [tuple(v) for v in lists.values()]


@keras.saving.register_keras_serializable(package="keras_mixer")
class ConvEmbedding(keras.layers.Layer):
    """A convolution with symmetric zero padding that keeps the map
    `(batch, height, width, channels)`: the stem and the downsampling layers
    of the pyramid families.

    `padding` pixels of zeros on every side, then a VALID convolution, as
    PyTorch's `Conv2d(padding=p)`. Keras's `padding="same"` would pad
    asymmetrically (more at the bottom and right) and shift every output.

    Args:
        filters: int, output channels.
        kernel_size: int, side of the square kernel.
        strides: int.
        padding: int, zeros added on each side.
    """

    def __init__(self, filters, kernel_size, strides, padding=0, **kwargs):
        super().__init__(**kwargs)
        for name, value, minimum in (
            ("filters", filters, 1), ("kernel_size", kernel_size, 1),
            ("strides", strides, 1), ("padding", padding, 0),
        ):
            checks.check_int(name, value, minimum, where="ConvEmbedding")
        self.filters = filters
        self.kernel_size = kernel_size
        self.strides = strides
        self.padding = padding

    def build(self, input_shape):
        self.proj = keras.layers.Conv2D(
            self.filters,
            self.kernel_size,
            strides=self.strides,
            padding="valid",
            data_format="channels_last",
            kernel_initializer="lecun_normal",
            dtype=self.dtype_policy,
            name="proj",
        )
        self.proj.build(self._padded(input_shape))
        self.built = True

    def _padded(self, shape):
        batch, height, width, channels = shape
        pad = 2 * self.padding
        return (
            batch,
            None if height is None else height + pad,
            None if width is None else width + pad,
            channels,
        )

    def call(self, inputs):
        p = self.padding
        x = ops.pad(inputs, ((0, 0), (p, p), (p, p), (0, 0))) if p else inputs
        return self.proj(x)

    def compute_output_shape(self, input_shape):
        return self.proj.compute_output_shape(self._padded(input_shape))

    def count_macs(self, input_shape):
        """Multiply-accumulates of one image."""
        _, height, width, _ = self.compute_output_shape(input_shape)
        return height * width * math.prod(self.proj.kernel.shape)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "filters": self.filters,
                "kernel_size": self.kernel_size,
                "strides": self.strides,
                "padding": self.padding,
            }
        )
        return config


@keras.saving.register_keras_serializable(package="keras_mixer")
class SplitAttention(keras.layers.Layer):
    """The weights of the token-mixing branches of CycleMLP and Vision
    Permutator (their `reweight`, after ResNeSt's split attention).

    From the spatial mean `(batch, channels)` of the branches' sum:
    fc1 (`channels // 4` units) -> exact GELU -> fc2 (`branches * channels`
    units), read as `(batch, channels, branches)`, unit `branches * c + k`
    being branch k of channel c, then a softmax over the branches. The
    mixer weighs each branch's channel c by its `[:, c, k]`
    (`weighted_sum`).

    Args:
        branches: int, number of branches (3 in both families).
        approximate_gelu: bool, see `MlpBlock` (the official code of both
            families uses the exact GELU, the default).
        kernel_initializer: initializer of fc1 and fc2.
    """

    def __init__(self, branches=3, approximate_gelu=False,
                 kernel_initializer="glorot_uniform", **kwargs):
        super().__init__(**kwargs)
        checks.check_int("branches", branches, where="SplitAttention")
        self.branches = branches
        self.approximate_gelu = bool(approximate_gelu)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)

    def build(self, input_shape):
        channels = input_shape[-1]
        if channels < 4:
            raise ValueError(
                f"SplitAttention: {channels} channels leave no hidden unit "
                "(channels // 4 = 0); use at least 4 channels."
            )
        for name, units, width in (
            ("fc1", channels // 4, channels),
            ("fc2", self.branches * channels, channels // 4),
        ):
            dense = layers.Dense(
                units,
                kernel_initializer=keras.initializers.get(
                    keras.initializers.serialize(self.kernel_initializer)
                ),
                dtype=self.dtype_policy,
                name=name,
            )
            dense.build((None, width))
            setattr(self, name, dense)
        self.built = True

    def call(self, inputs):
        channels = inputs.shape[-1]
        h = ops.gelu(self.fc1.on_rows(inputs), approximate=self.approximate_gelu)
        logits = ops.reshape(self.fc2.on_rows(h), (-1, channels, self.branches))
        return ops.softmax(logits, axis=-1)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[-1], self.branches)

    def count_macs(self, input_shape):
        """Multiply-accumulates of one sample."""
        channels = input_shape[-1]
        return (1 + self.branches) * channels * (channels // 4)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "branches": self.branches,
                "approximate_gelu": self.approximate_gelu,
                "kernel_initializer": keras.initializers.serialize(
                    self.kernel_initializer
                ),
            }
        )
        return config


def weighted_sum(branches, weights):
    """`sum_k branches[k] * weights[:, c, k]` per channel c, for maps
    `(batch, height, width, channels)` and the `SplitAttention` weights
    `(batch, channels, len(branches))`; every tensor stays 4-D or less."""
    channels = branches[0].shape[-1]
    total = 0
    for k, branch in enumerate(branches):
        # `k:k + 1`, not `k`: LiteRT's XNNPACK delegate runs no STRIDED_SLICE
        # that drops an axis, and each one left out splits its graph.
        weight = ops.reshape(weights[:, :, k:k + 1], (-1, 1, 1, channels))
        total = total + branch * weight
    return total


@keras.saving.register_keras_serializable(package="keras_mixer")
class PyramidBlock(keras.layers.Layer):
    """The block of both pyramid families around their token mixer:

        Z = X + DropPath(TokenMixer(LayerNorm(X)))
        Y = Z + DropPath(MLP(LayerNorm(Z)))

    on maps `(batch, height, width, channels)`, LayerNorm epsilon 1e-5 (as
    PyTorch), MLP = Dense(mlp_ratio * C) -> GELU -> Dense(C). A family's
    block (`CycleBlock`, `PermutatorBlock`) gives the token mixer through
    `token_mixer(policy)`.

    Args:
        mlp_ratio: int or float, hidden width of the MLP over the channels.
        approximate_gelu: bool, see `keras_mixer.layers.MlpBlock` (the
            official code uses the exact GELU, the default).
        dropout_rate: float, dropout inside the MLP.
        drop_path_rate: float, stochastic depth rate of this block.
        layer_norm_epsilon: float.
    """

    def __init__(
        self,
        mlp_ratio=4,
        approximate_gelu=False,
        dropout_rate=0.0,
        drop_path_rate=0.0,
        layer_norm_epsilon=1e-5,
        **kwargs,
    ):
        super().__init__(**kwargs)
        where = type(self).__name__
        checks.check_positive("mlp_ratio", mlp_ratio, where=where)
        checks.check_rate("drop_path_rate", drop_path_rate, where=where)
        self.mlp_ratio = mlp_ratio
        self.approximate_gelu = bool(approximate_gelu)
        self.dropout_rate = float(dropout_rate)
        self.drop_path_rate = float(drop_path_rate)
        self.layer_norm_epsilon = float(layer_norm_epsilon)

    def token_mixer(self, policy):
        """The layer named `token_mixing` that mixes the positions."""
        raise NotImplementedError

    def build(self, input_shape):
        dim = input_shape[-1]
        policy = self.dtype_policy
        self.norm1 = layers.LayerNorm(self.layer_norm_epsilon, dtype=policy,
                                      name="norm1")
        self.token_mixing = self.token_mixer(policy)
        self.norm2 = layers.LayerNorm(self.layer_norm_epsilon, dtype=policy,
                                      name="norm2")
        self.channel_mixing = layers.MlpBlock(
            int(dim * self.mlp_ratio),
            approximate_gelu=self.approximate_gelu,
            dropout_rate=self.dropout_rate,
            kernel_initializer=INIT,
            dtype=policy,
            name="channel_mixing",
        )
        self.drop_path = layers.DropPath(self.drop_path_rate, dtype=policy,
                                         name="drop_path")
        for layer in (self.norm1, self.token_mixing, self.norm2,
                      self.channel_mixing):
            layer.build(input_shape)
        self.built = True

    def call(self, inputs, training=None):
        x = inputs
        y = self.token_mixing(self.norm1(x))
        x = x + self.drop_path(y, training=training)
        y = self.channel_mixing(self.norm2(x), training=training)
        return x + self.drop_path(y, training=training)

    def compute_output_shape(self, input_shape):
        return input_shape

    def count_macs(self, input_shape):
        """Multiply-accumulates of one map `(batch, height, width, C)`."""
        return self.token_mixing.count_macs(
            input_shape
        ) + self.channel_mixing.count_macs(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "mlp_ratio": self.mlp_ratio,
                "approximate_gelu": self.approximate_gelu,
                "dropout_rate": self.dropout_rate,
                "drop_path_rate": self.drop_path_rate,
                "layer_norm_epsilon": self.layer_norm_epsilon,
            }
        )
        return config

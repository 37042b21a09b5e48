"""Layers of MLP-Mixer and ResMLP, written with `keras.ops`.

Two backend branches, both for speed (see BENCHMARKS.md): `_bias_add` is
`tf.nn.bias_add` on TensorFlow (a fusion its graph optimizer needs) and a
plain add elsewhere; `LayerNorm` leaves PyTorch to Keras's own path, which
calls `torch.nn.functional.layer_norm`.

Every layer here runs unchanged on the TensorFlow, JAX and PyTorch backends, is
registered for serialization under the `keras_mixer` package and round-trips
through `get_config` / `from_config`.

Tensors between layers are token tables of shape `(batch, tokens, channels)`.
Tokens are the patches of the image in raster order (row by row), as produced by
`PatchEmbedding`.

References:
- Tolstikhin et al., "MLP-Mixer: An all-MLP Architecture for Vision", 2021,
  https://arxiv.org/abs/2105.01601 (eq. 1 for the Mixer block).
- Touvron et al., "ResMLP: Feedforward networks for image classification with
  data-efficient training", 2021, https://arxiv.org/abs/2105.03404 (eq. 1-3).
"""

import keras
from keras import ops

_PACKAGE = "keras_mixer"


def _bias_add(x, bias):
    """`x + bias` over the last axis.

    On TensorFlow this is `tf.nn.bias_add`: its graph optimizer fuses MatMul,
    BiasAdd and GELU into one oneDNN kernel, which it does not do for a
    broadcast AddV2 (see BENCHMARKS.md). Other backends add.
    """
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        return tf.nn.bias_add(x, bias)
    return ops.add(x, bias)


def dense_2d(x, kernel, bias, gelu=None, dtype=None):
    """`x @ kernel + bias` over the last axis, then GELU if `gelu` is a bool
    (its `approximate`), computed as one 2-D matmul of `(-1, in)` rows.

    Same numbers as `keras.layers.Dense` on `x`; the 2-D form with a separate
    bias add is what lets XLA-less TensorFlow fuse the three ops. `dtype`:
    the compute dtype the variables are cast to (default: `x`'s).
    """
    dtype = dtype or x.dtype
    kernel = ops.cast(kernel, dtype)
    units = kernel.shape[-1]
    rows = ops.reshape(x, (-1, x.shape[-1]))
    y = _bias_add(ops.matmul(rows, kernel), ops.cast(bias, dtype))
    if gelu is not None:
        y = ops.gelu(y, approximate=gelu)
    leading = [d if d is not None else -1 for d in x.shape[:-1]]
    if leading.count(-1) > 1:
        leading = list(ops.shape(x)[:-1])
    return ops.reshape(y, tuple(leading) + (units,))


def _check_positive(name, value, layer):
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ValueError(
            f"{layer}: `{name}` must be a positive integer, got {value!r}."
        )


def _check_rate(name, value, layer):
    if not 0.0 <= float(value) < 1.0:
        raise ValueError(
            f"{layer}: `{name}` must be in [0, 1), got {value!r}."
        )


@keras.saving.register_keras_serializable(package=_PACKAGE)
class Normalize(keras.layers.Layer):
    """Maps pixels to the model's input range: `(x / 255 - mean) / std`.

    `mean` and `std` are given for pixels scaled to [0, 1] (the convention of
    the weights tables of timm and torchvision); each is a float, or a list with
    one entry per channel. The layer has no trainable weights.

    Args:
        mean: float or list of floats.
        std: float or list of positive floats.

    Example:
    >>> layer = Normalize(mean=0.5, std=0.5)  # [0, 255] -> [-1, 1]
    >>> [float(v) for v in layer(np.array([[0.0, 127.5, 255.0]]))[0]]
    [-1.0, 0.0, 1.0]
    """

    def __init__(self, mean, std, **kwargs):
        super().__init__(**kwargs)
        self.mean = [float(m) for m in mean] if _is_seq(mean) else float(mean)
        self.std = [float(s) for s in std] if _is_seq(std) else float(std)
        stds = self.std if _is_seq(self.std) else [self.std]
        if any(s <= 0 for s in stds):
            raise ValueError(f"Normalize: `std` must be positive, got {std!r}.")

    def build(self, input_shape):
        channels = input_shape[-1]
        for name, value in (("mean", self.mean), ("std", self.std)):
            if _is_seq(value) and len(value) != channels:
                raise ValueError(
                    f"Normalize: `{name}` has {len(value)} entries but the "
                    f"input has {channels} channels. Give one value per channel "
                    "or a single float."
                )
        self.built = True

    def call(self, inputs):
        mean = ops.convert_to_tensor(self.mean, dtype=self.compute_dtype)
        std = ops.convert_to_tensor(self.std, dtype=self.compute_dtype)
        scale = 1.0 / (255.0 * std)
        return inputs * scale - mean / std

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update({"mean": self.mean, "std": self.std})
        return config


def _is_seq(value):
    return isinstance(value, (list, tuple))


@keras.saving.register_keras_serializable(package=_PACKAGE)
class PatchEmbedding(keras.layers.Layer):
    """Cuts the image into patches and projects each linearly (the stem).

    A Conv2D with kernel = stride = `patch_size` and VALID padding, reshaped
    from `(batch, H/p, W/p, hidden_dim)` to `(batch, tokens, hidden_dim)` with
    tokens in raster order.

    Args:
        patch_size: int, side of the square patches.
        hidden_dim: int, channels of each token.
    """

    def __init__(self, patch_size, hidden_dim, **kwargs):
        super().__init__(**kwargs)
        _check_positive("patch_size", patch_size, "PatchEmbedding")
        _check_positive("hidden_dim", hidden_dim, "PatchEmbedding")
        self.patch_size = patch_size
        self.hidden_dim = hidden_dim

    def build(self, input_shape):
        _, height, width, _ = input_shape
        for side, size in (("height", height), ("width", width)):
            if size is not None and size % self.patch_size:
                raise ValueError(
                    f"PatchEmbedding: input {side} {size} is not a multiple of "
                    f"the patch size {self.patch_size}."
                )
        self.proj = keras.layers.Conv2D(
            self.hidden_dim,
            self.patch_size,
            strides=self.patch_size,
            padding="valid",
            data_format="channels_last",
            kernel_initializer="lecun_normal",
            dtype=self.dtype_policy,
            name="proj",
        )
        self.proj.build(input_shape)
        self.built = True

    def call(self, inputs):
        x = self.proj(inputs)
        shape = ops.shape(x)
        return ops.reshape(x, (shape[0], shape[1] * shape[2], shape[3]))

    def compute_output_shape(self, input_shape):
        batch, height, width, _ = input_shape
        tokens = None
        if height is not None and width is not None:
            tokens = (height // self.patch_size) * (width // self.patch_size)
        return (batch, tokens, self.hidden_dim)

    def get_config(self):
        config = super().get_config()
        config.update(
            {"patch_size": self.patch_size, "hidden_dim": self.hidden_dim}
        )
        return config


@keras.saving.register_keras_serializable(package=_PACKAGE)
class TokenDense(keras.layers.Layer):
    """A dense layer applied along the tokens axis, the same for every channel.

    `y[b, s, c] = sum_t x[b, t, c] * kernel[t, s] + bias[s]`: exactly
    `Dense(units)` applied to `x` with its last two axes swapped, then swapped
    back (`dense_2d` between two transposes, which TensorFlow runs faster than
    a broadcast matmul `kernel^T @ x`: see BENCHMARKS.md). The kernel has
    Keras's `(in, out)` layout, `(tokens, units)`.

    Args:
        units: int, number of output tokens.
        kernel_initializer, bias_initializer: initializers.
    """

    def __init__(
        self,
        units,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        **kwargs,
    ):
        super().__init__(**kwargs)
        _check_positive("units", units, "TokenDense")
        self.units = units
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)

    def build(self, input_shape):
        tokens = input_shape[-2]
        if tokens is None:
            raise ValueError(
                "TokenDense: the number of tokens (axis -2) must be known when "
                "the layer is built; give the model a fixed input size."
            )
        self.kernel = self.add_weight(
            name="kernel",
            shape=(tokens, self.units),
            initializer=self.kernel_initializer,
        )
        self.bias = self.add_weight(
            name="bias", shape=(self.units,), initializer=self.bias_initializer
        )
        self.built = True

    def call(self, inputs):
        # Tokens last, one 2-D matmul with a fusable bias add, tokens back.
        x = ops.transpose(inputs, (0, 2, 1))
        x = dense_2d(x, self.kernel, self.bias, dtype=self.compute_dtype)
        return ops.transpose(x, (0, 2, 1))

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-2]) + (self.units, input_shape[-1])

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "units": self.units,
                "kernel_initializer": keras.initializers.serialize(
                    self.kernel_initializer
                ),
                "bias_initializer": keras.initializers.serialize(
                    self.bias_initializer
                ),
            }
        )
        return config


@keras.saving.register_keras_serializable(package=_PACKAGE)
class MlpBlock(keras.layers.Layer):
    """Dense -> GELU -> Dropout -> Dense -> Dropout.

    The output has the width of the input along the mixed axis.

    Args:
        mlp_dim: int, hidden width.
        axis: `-1` mixes channels (a per-token MLP); `1` mixes tokens (a
            per-channel MLP over the patches, with `TokenDense`).
        approximate_gelu: bool. `True` is the tanh approximation used by the
            official Flax Mixer (flax's default); `False` is the exact erf
            form used by timm and deit.
        dropout_rate: float, dropout after the activation and after the
            second dense layer.
        kernel_initializer, bias_initializer: initializers of both dense
            layers.
    """

    def __init__(
        self,
        mlp_dim,
        axis=-1,
        approximate_gelu=False,
        dropout_rate=0.0,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        **kwargs,
    ):
        super().__init__(**kwargs)
        _check_positive("mlp_dim", mlp_dim, "MlpBlock")
        if axis not in (1, -1):
            raise ValueError(
                f"MlpBlock: `axis` must be -1 (channels) or 1 (tokens), got "
                f"{axis!r}."
            )
        _check_rate("dropout_rate", dropout_rate, "MlpBlock")
        self.mlp_dim = mlp_dim
        self.axis = axis
        self.approximate_gelu = bool(approximate_gelu)
        self.dropout_rate = float(dropout_rate)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)

    def _dense(self, units, name):
        kwargs = dict(
            kernel_initializer=keras.initializers.get(
                keras.initializers.serialize(self.kernel_initializer)
            ),
            bias_initializer=keras.initializers.get(
                keras.initializers.serialize(self.bias_initializer)
            ),
            dtype=self.dtype_policy,
            name=name,
        )
        if self.axis == 1:
            return TokenDense(units, **kwargs)
        return keras.layers.Dense(units, **kwargs)

    def build(self, input_shape):
        width = input_shape[self.axis]
        self.fc1 = self._dense(self.mlp_dim, "fc1")
        self.fc1.build(input_shape)
        hidden_shape = list(input_shape)
        hidden_shape[self.axis] = self.mlp_dim
        self.fc2 = self._dense(width, "fc2")
        self.fc2.build(tuple(hidden_shape))
        self.drop1 = keras.layers.Dropout(
            self.dropout_rate, dtype=self.dtype_policy, name="drop1"
        )
        self.drop2 = keras.layers.Dropout(
            self.dropout_rate, dtype=self.dtype_policy, name="drop2"
        )
        self.built = True

    def call(self, inputs, training=None):
        # fc1 -> GELU -> drop1 -> fc2 -> drop2, each dense as `dense_2d` on the
        # sublayers' variables (the token MLP with tokens moved last once for
        # both). Same numbers as calling the sublayers; faster on TensorFlow.
        x = inputs
        if self.axis == 1:
            x = ops.transpose(x, (0, 2, 1))
        dtype = self.compute_dtype
        x = dense_2d(x, self.fc1.kernel, self.fc1.bias,
                     gelu=self.approximate_gelu, dtype=dtype)
        x = self.drop1(x, training=training)
        x = dense_2d(x, self.fc2.kernel, self.fc2.bias, dtype=dtype)
        x = self.drop2(x, training=training)
        if self.axis == 1:
            x = ops.transpose(x, (0, 2, 1))
        return x

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "mlp_dim": self.mlp_dim,
                "axis": self.axis,
                "approximate_gelu": self.approximate_gelu,
                "dropout_rate": self.dropout_rate,
                "kernel_initializer": keras.initializers.serialize(
                    self.kernel_initializer
                ),
                "bias_initializer": keras.initializers.serialize(
                    self.bias_initializer
                ),
            }
        )
        return config


@keras.saving.register_keras_serializable(package=_PACKAGE)
class DropPath(keras.layers.Layer):
    """Stochastic depth: drops a whole residual branch per sample.

    In training, each sample's input is zeroed with probability `rate` and the
    kept ones are scaled by `1 / (1 - rate)`; at inference it is the identity.

    Args:
        rate: float in [0, 1).
        seed: optional int for the random draws.
    """

    def __init__(self, rate=0.0, seed=None, **kwargs):
        super().__init__(**kwargs)
        _check_rate("rate", rate, "DropPath")
        self.rate = float(rate)
        self.seed = seed
        if self.rate > 0:
            self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, inputs, training=None):
        if not training or self.rate == 0.0:
            return inputs
        keep = 1.0 - self.rate
        shape = (ops.shape(inputs)[0],) + (1,) * (len(inputs.shape) - 1)
        noise = keras.random.uniform(
            shape, dtype=inputs.dtype, seed=self.seed_generator
        )
        mask = ops.cast(noise < keep, inputs.dtype)
        return inputs * mask / ops.cast(keep, inputs.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update({"rate": self.rate, "seed": self.seed})
        return config


@keras.saving.register_keras_serializable(package=_PACKAGE)
class LayerNorm(keras.layers.LayerNormalization):
    """`keras.layers.LayerNormalization` over the last axis, in fewer passes.

    Same weights (`gamma`, `beta`) and config as the Keras layer, and the
    same numbers up to float32 rounding: statistics and the affine step are
    computed in at least float32 and the result is cast to the compute
    dtype. The Mixer blocks use it for `norm1` and `norm2`. The Keras form,
    `x * inv + (beta - mean * inv)` with `inv = gamma / sqrt(var + eps)`,
    touches the full tensor more often than `(x - mean) / sqrt(var + eps) *
    gamma + beta` written here. On B/16's activations this layer measured
    1.3x (float32) to 1.7x (`mixed_bfloat16`) faster than Keras's on
    TensorFlow (`benchmarks/layernorm.py`, BENCHMARKS.md).

    Other axes, `rms_scaling`, `center=False` / `scale=False` and the PyTorch
    backend (where Keras calls `torch.nn.functional.layer_norm`) take the Keras
    path unchanged.
    """

    def __init__(self, epsilon=1e-6, **kwargs):
        super().__init__(epsilon=epsilon, **kwargs)

    def _last_axis_only(self, ndim):
        axis = self.axis if isinstance(self.axis, (list, tuple)) else [self.axis]
        return [a % ndim for a in axis] == [ndim - 1]

    def call(self, inputs):
        if (
            not self._last_axis_only(len(inputs.shape))
            or self.rms_scaling
            or not (self.center and self.scale)
            or keras.backend.backend() == "torch"
        ):
            return super().call(inputs)
        dtype = keras.backend.result_type(inputs.dtype, "float32")
        x = ops.cast(inputs, dtype)
        centered = x - ops.mean(x, axis=-1, keepdims=True)
        variance = ops.mean(ops.square(centered), axis=-1, keepdims=True)
        y = centered * ops.rsqrt(variance + self.epsilon)
        y = y * ops.cast(self.gamma, dtype) + ops.cast(self.beta, dtype)
        return ops.cast(y, self.compute_dtype)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class MixerBlock(keras.layers.Layer):
    """The Mixer layer of eq. (1) of the MLP-Mixer paper.

        U = X + TokenMLP(LayerNorm(X)^T)^T
        Y = U + ChannelMLP(LayerNorm(U))

    with one LayerNorm (epsilon 1e-6) per sublayer, stochastic depth on both
    residual branches, and the token MLP applied along the tokens axis directly
    (`MlpBlock(axis=1)`), which equals the paper's transpose-MLP-transpose.

    Args:
        tokens_mlp_dim: int, hidden width `D_S` of the token-mixing MLP.
        channels_mlp_dim: int, hidden width `D_C` of the channel-mixing MLP.
        approximate_gelu: bool, see `MlpBlock`.
        dropout_rate: float, dropout inside both MLPs.
        drop_path_rate: float, stochastic depth rate of this block.
        layer_norm_epsilon: float.
    """

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
        _check_positive("tokens_mlp_dim", tokens_mlp_dim, "MixerBlock")
        _check_positive("channels_mlp_dim", channels_mlp_dim, "MixerBlock")
        _check_rate("drop_path_rate", drop_path_rate, "MixerBlock")
        self.tokens_mlp_dim = tokens_mlp_dim
        self.channels_mlp_dim = channels_mlp_dim
        self.approximate_gelu = bool(approximate_gelu)
        self.dropout_rate = float(dropout_rate)
        self.drop_path_rate = float(drop_path_rate)
        self.layer_norm_epsilon = float(layer_norm_epsilon)

    def build(self, input_shape):
        policy = self.dtype_policy
        self.norm1 = LayerNorm(
            epsilon=self.layer_norm_epsilon, dtype=policy, name="norm1"
        )
        self.token_mixing = MlpBlock(
            self.tokens_mlp_dim,
            axis=1,
            approximate_gelu=self.approximate_gelu,
            dropout_rate=self.dropout_rate,
            dtype=policy,
            name="token_mixing",
        )
        self.norm2 = LayerNorm(
            epsilon=self.layer_norm_epsilon, dtype=policy, name="norm2"
        )
        self.channel_mixing = MlpBlock(
            self.channels_mlp_dim,
            axis=-1,
            approximate_gelu=self.approximate_gelu,
            dropout_rate=self.dropout_rate,
            dtype=policy,
            name="channel_mixing",
        )
        self.drop_path = DropPath(
            self.drop_path_rate, dtype=policy, name="drop_path"
        )
        for layer in (
            self.norm1,
            self.token_mixing,
            self.norm2,
            self.channel_mixing,
        ):
            layer.build(input_shape)
        self.built = True

    def call(self, inputs, training=None):
        x = inputs
        y = self.token_mixing(self.norm1(x), training=training)
        x = x + self.drop_path(y, training=training)
        y = self.channel_mixing(self.norm2(x), training=training)
        return x + self.drop_path(y, training=training)

    def compute_output_shape(self, input_shape):
        return input_shape

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


@keras.saving.register_keras_serializable(package=_PACKAGE)
class Affine(keras.layers.Layer):
    """ResMLP's normalisation: `alpha * x + beta` per channel.

    `alpha` starts at 1 and `beta` at 0, so the layer starts as the identity.
    It has no statistics, so it behaves the same in training and inference.
    """

    def build(self, input_shape):
        dim = input_shape[-1]
        self.alpha = self.add_weight(
            name="alpha", shape=(dim,), initializer="ones"
        )
        self.beta = self.add_weight(
            name="beta", shape=(dim,), initializer="zeros"
        )
        self.built = True

    def call(self, inputs):
        alpha = ops.cast(self.alpha, inputs.dtype)
        beta = ops.cast(self.beta, inputs.dtype)
        return inputs * alpha + beta

    def compute_output_shape(self, input_shape):
        return input_shape


@keras.saving.register_keras_serializable(package=_PACKAGE)
class LayerScale(keras.layers.Layer):
    """Multiplies each channel by a learned factor initialised to `init_value`.

    Args:
        init_value: float, the initial value of every factor.
    """

    def __init__(self, init_value, **kwargs):
        super().__init__(**kwargs)
        self.init_value = float(init_value)

    def build(self, input_shape):
        self.gamma = self.add_weight(
            name="gamma",
            shape=(input_shape[-1],),
            initializer=keras.initializers.Constant(self.init_value),
        )
        self.built = True

    def call(self, inputs):
        return inputs * ops.cast(self.gamma, inputs.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update({"init_value": self.init_value})
        return config


@keras.saving.register_keras_serializable(package=_PACKAGE)
class ResMLPBlock(keras.layers.Layer):
    """The residual block of ResMLP (eq. 1-3 of the ResMLP paper).

        Z = X + DropPath(ls1 * CrossPatch(Affine1(X)^T)^T)
        Y = Z + DropPath(ls2 * MLP(Affine2(Z)))

    `CrossPatch` is one linear layer over the tokens (no activation); `MLP` is
    Dense(mlp_ratio * dim) -> GELU -> Dense(dim); `ls1`, `ls2` are LayerScale
    factors.

    Args:
        layerscale_init: float, initial LayerScale value.
        mlp_ratio: int or float, hidden width of the MLP over the channels.
        approximate_gelu: bool, see `MlpBlock` (deit uses the exact GELU).
        dropout_rate: float, dropout inside the channel MLP.
        drop_path_rate: float, stochastic depth rate of this block.
    """

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
        if float(mlp_ratio) <= 0:
            raise ValueError(
                f"ResMLPBlock: `mlp_ratio` must be positive, got {mlp_ratio!r}."
            )
        _check_rate("drop_path_rate", drop_path_rate, "ResMLPBlock")
        self.layerscale_init = float(layerscale_init)
        self.mlp_ratio = mlp_ratio
        self.approximate_gelu = bool(approximate_gelu)
        self.dropout_rate = float(dropout_rate)
        self.drop_path_rate = float(drop_path_rate)

    def build(self, input_shape):
        policy = self.dtype_policy
        tokens, dim = input_shape[-2], input_shape[-1]
        if tokens is None:
            raise ValueError(
                "ResMLPBlock: the number of tokens must be known; give the "
                "model a fixed input size."
            )
        self.norm1 = Affine(dtype=policy, name="norm1")
        # deit initialises every linear layer with a truncated normal, std 0.02.
        init = {"class_name": "TruncatedNormal", "config": {"stddev": 0.02}}
        self.cross_patch = TokenDense(
            tokens, kernel_initializer=init, dtype=policy, name="cross_patch"
        )
        self.ls1 = LayerScale(self.layerscale_init, dtype=policy, name="ls1")
        self.norm2 = Affine(dtype=policy, name="norm2")
        self.channel_mixing = MlpBlock(
            int(self.mlp_ratio * dim),
            axis=-1,
            approximate_gelu=self.approximate_gelu,
            dropout_rate=self.dropout_rate,
            kernel_initializer=init,
            dtype=policy,
            name="channel_mixing",
        )
        self.ls2 = LayerScale(self.layerscale_init, dtype=policy, name="ls2")
        self.drop_path = DropPath(
            self.drop_path_rate, dtype=policy, name="drop_path"
        )
        for layer in (
            self.norm1,
            self.cross_patch,
            self.ls1,
            self.norm2,
            self.channel_mixing,
            self.ls2,
        ):
            layer.build(input_shape)
        self.built = True

    def call(self, inputs, training=None):
        x = inputs
        y = self.ls1(self.cross_patch(self.norm1(x)))
        x = x + self.drop_path(y, training=training)
        y = self.channel_mixing(self.norm2(x), training=training)
        return x + self.drop_path(self.ls2(y), training=training)

    def compute_output_shape(self, input_shape):
        return input_shape

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

"""Layers that all-MLP vision models share, written with `keras.ops`.

The blocks of each family live with their model (`keras_mixer.models.mixer`,
`keras_mixer.models.resmlp`); this module holds what they are built from:
`Normalize` (pixel scaling), `PatchEmbedding` (the stem), `Dense` (a dense
layer as one 2-D matmul), `MlpBlock`, `GluMlp`, `DropPath`, `LayerNorm`,
`Affine` and `LayerScale`.

Every layer runs unchanged on the TensorFlow, JAX and PyTorch backends, is
registered for serialization under the `keras_mixer` package and round-trips
through `get_config` / `from_config`. Two branches depend on the backend, both
for speed (BENCHMARKS.md): `_bias_add` is `tf.nn.bias_add` on TensorFlow, a
plain add elsewhere; `LayerNorm` leaves PyTorch to Keras's own path, which
calls `torch.nn.functional.layer_norm`.

Tensors between layers are token tables of shape `(batch, tokens, channels)`,
tokens being the patches of the image in raster order (row by row), as
`PatchEmbedding` produces them; the pyramid families keep maps
`(batch, height, width, channels)`.
"""

import keras
from keras import ops

from keras_mixer import checks

_PACKAGE = "keras_mixer"


def _bias_add(x, bias):
    """`x + bias` over the last axis.

    On TensorFlow this is `tf.nn.bias_add`: its graph optimizer fuses MatMul,
    BiasAdd and a following GELU into one oneDNN kernel, which it does not do
    for a broadcast AddV2. Other backends add.
    """
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        return tf.nn.bias_add(x, bias)
    return ops.add(x, bias)


def to_rows(x):
    """`x` as a 2-D table of rows `(-1, channels)`."""
    return ops.reshape(x, (-1, x.shape[-1]))


def from_rows(rows, like):
    """`rows` reshaped back to the leading axes of `like`."""
    leading = [d if d is not None else -1 for d in like.shape[:-1]]
    if leading.count(-1) > 1:
        leading = list(ops.shape(like)[:-1])
    return ops.reshape(rows, tuple(leading) + (rows.shape[-1],))


def known_tokens(input_shape, where):
    """The number of tokens (axis -2) of `input_shape`; a ValueError when it
    is unknown, since token-mixing weights are sized by it."""
    tokens = input_shape[-2]
    if tokens is None:
        raise ValueError(
            f"{where}: the number of tokens (axis -2) must be known when the "
            "layer is built; give the model a fixed input size."
        )
    return tokens


def _is_seq(value):
    return isinstance(value, (list, tuple))


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
        checks.check_int("patch_size", patch_size, where="PatchEmbedding")
        checks.check_int("hidden_dim", hidden_dim, where="PatchEmbedding")
        self.patch_size = patch_size
        self.hidden_dim = hidden_dim

    def build(self, input_shape):
        _, height, width, _ = input_shape
        for side, size in (("height", height), ("width", width)):
            if size is not None:
                checks.check_patch_multiple(
                    f"PatchEmbedding: input {side}", size, self.patch_size
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
        _, height, width, channels = x.shape
        if height is None or width is None:
            shape = ops.shape(x)
            return ops.reshape(x, (shape[0], shape[1] * shape[2], shape[3]))
        # A constant target shape: a TFLite RESHAPE computed from the input's
        # shape is left outside the XNNPACK delegate, splitting the graph.
        return ops.reshape(x, (-1, height * width, channels))

    def compute_output_shape(self, input_shape):
        batch, height, width, _ = input_shape
        tokens = None
        if height is not None and width is not None:
            tokens = (height // self.patch_size) * (width // self.patch_size)
        return (batch, tokens, self.hidden_dim)

    def count_macs(self, input_shape):
        """Multiply-accumulates of one image."""
        _, height, width, channels = input_shape
        tokens = (height // self.patch_size) * (width // self.patch_size)
        return tokens * self.patch_size**2 * channels * self.hidden_dim

    def get_config(self):
        config = super().get_config()
        config.update(
            {"patch_size": self.patch_size, "hidden_dim": self.hidden_dim}
        )
        return config


@keras.saving.register_keras_serializable(package=_PACKAGE)
class Dense(keras.layers.Dense):
    """`keras.layers.Dense` computed as one 2-D matmul and a separate bias add.

    Same weights, config and numbers as Keras's layer. An input of rank > 2 is
    reshaped to rows `(-1, in)` for the matmul and back. On TensorFlow the
    bias add is `tf.nn.bias_add`, which lets its graph optimizer fuse MatMul,
    BiasAdd and a GELU that follows into one kernel; it does not fuse the
    broadcast matmul and add of Keras's layer on a 3-D input (BENCHMARKS.md,
    "Dense layers as 2-D MatMul + BiasAdd"). `self.kernel` includes a LoRA
    update when one is enabled; a quantized layer never reaches `call` (Keras
    runs its `quantized_call`).
    """

    def call(self, inputs, training=None):
        rows = inputs if len(inputs.shape) == 2 else to_rows(inputs)
        y = self.on_rows(rows)
        return y if len(inputs.shape) == 2 else from_rows(y, inputs)

    def on_rows(self, rows):
        """This layer on a 2-D table `rows`, for a parent layer's `call`.

        The parent calls this method rather than the layer: on TensorFlow,
        a MatMul + BiasAdd + GELU built inside the sublayer's own call was
        not fused by the graph optimizer when the GELU follows in the
        parent, which cost 13% of a Mixer block in float32 (BENCHMARKS.md,
        "The models/ + checkpoints/ layout"). Casts to the compute dtype as
        Keras's call would; a quantized layer goes through Keras's call.
        """
        if self.quantization_mode is not None:
            return self(rows)
        dtype = self.compute_dtype
        y = ops.matmul(ops.cast(rows, dtype), ops.cast(self.kernel, dtype))
        if self.use_bias:
            y = _bias_add(y, ops.cast(self.bias, dtype))
        if self.activation is not None:
            y = self.activation(y)
        return y


@keras.saving.register_keras_serializable(package=_PACKAGE)
class MlpBlock(keras.layers.Layer):
    """fc1 -> GELU -> dropout -> fc2 -> dropout, over one axis.

    The output has the width of the input along the mixed axis. The token
    table is reshaped to rows once, so that both dense layers run as 2-D
    matmuls (see `Dense`).

    Args:
        mlp_dim: int, hidden width.
        axis: the axis to mix, `-1` (default) or `1`. The blocks of
            `keras_mixer.models` mix the last axis and transpose around the
            MLP where they mix tokens; `1` moves axis 1 last and back.
        approximate_gelu: bool. `True` is the tanh approximation used by the
            official Flax Mixer (flax's default); `False` (default) is the
            exact erf form used by timm, deit and Keras.
        dropout_rate: float, dropout after the activation and after fc2.
        kernel_initializer, bias_initializer: initializers of fc1 and fc2.
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
        checks.check_int("mlp_dim", mlp_dim, where="MlpBlock")
        if axis not in (1, -1):
            raise ValueError(
                f"MlpBlock: `axis` must be -1 (the last axis) or 1, got "
                f"{axis!r}."
            )
        checks.check_rate("dropout_rate", dropout_rate, where="MlpBlock")
        self.mlp_dim = mlp_dim
        self.axis = axis
        self.approximate_gelu = bool(approximate_gelu)
        self.dropout_rate = float(dropout_rate)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)

    def _dense(self, units, name):
        # A fresh initializer object per layer: a seeded one shared by fc1
        # and fc2 would draw the same values for both.
        return Dense(
            units,
            kernel_initializer=keras.initializers.get(
                keras.initializers.serialize(self.kernel_initializer)
            ),
            bias_initializer=keras.initializers.get(
                keras.initializers.serialize(self.bias_initializer)
            ),
            dtype=self.dtype_policy,
            name=name,
        )

    def build(self, input_shape):
        width = input_shape[self.axis]
        self.fc1 = self._dense(self.mlp_dim, "fc1")
        self.fc1.build((None, width))
        self.fc2 = self._dense(width, "fc2")
        self.fc2.build((None, self.mlp_dim))
        self.drop1 = keras.layers.Dropout(
            self.dropout_rate, dtype=self.dtype_policy, name="drop1"
        )
        self.drop2 = keras.layers.Dropout(
            self.dropout_rate, dtype=self.dtype_policy, name="drop2"
        )
        self.built = True

    def call(self, inputs, training=None):
        x = inputs if self.axis == -1 else ops.moveaxis(inputs, self.axis, -1)
        rows = to_rows(x)
        h = self.fc1.on_rows(rows)
        h = ops.gelu(h, approximate=self.approximate_gelu)
        h = self.drop1(h, training=training)
        h = self.fc2.on_rows(h)
        h = self.drop2(h, training=training)
        y = from_rows(h, x)
        return y if self.axis == -1 else ops.moveaxis(y, -1, self.axis)

    def compute_output_shape(self, input_shape):
        return input_shape

    def count_macs(self, input_shape):
        """Multiply-accumulates of one sample of `input_shape`."""
        width = input_shape[self.axis]
        rows = 1
        for axis, size in enumerate(input_shape[1:], start=1):
            if axis != self.axis % len(input_shape):
                rows *= size
        return rows * 2 * width * self.mlp_dim

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
class GluMlp(keras.layers.Layer):
    """fc1 -> value * activation(gate) -> dropout -> fc2 -> dropout, over the
    last axis: timm's `GluMlp` (`gate_last=True`), the MLP of gMixer.

    fc1 has `mlp_dim` outputs, split into halves: the first half is the
    value, the second the gate (timm's `chunk(2)` order), so fc2 takes
    `mlp_dim / 2` inputs. With `activation="silu"` (gMixer's) this is the
    SwiGLU of Shazeer (2020); "sigmoid" is the original GLU.

    Args:
        mlp_dim: int, even, the width of fc1 (value and gate together).
        activation: "silu" (default) or "sigmoid", applied to the gate.
        dropout_rate: float, dropout after the gating and after fc2.
        kernel_initializer, bias_initializer: initializers of fc1 and fc2.
    """

    ACTIVATIONS = ("silu", "sigmoid")

    def __init__(
        self,
        mlp_dim,
        activation="silu",
        dropout_rate=0.0,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        **kwargs,
    ):
        super().__init__(**kwargs)
        checks.check_int("mlp_dim", mlp_dim, where="GluMlp")
        if mlp_dim % 2:
            raise ValueError(
                f"GluMlp: `mlp_dim` {mlp_dim} must be even: fc1's outputs are "
                "split into a value half and a gate half."
            )
        if activation not in self.ACTIVATIONS:
            raise ValueError(
                f"GluMlp: `activation` must be one of {self.ACTIVATIONS}, got "
                f"{activation!r}."
            )
        checks.check_rate("dropout_rate", dropout_rate, where="GluMlp")
        self.mlp_dim = mlp_dim
        self.activation = activation
        self.dropout_rate = float(dropout_rate)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)

    _dense = MlpBlock._dense

    def build(self, input_shape):
        width = input_shape[-1]
        self.fc1 = self._dense(self.mlp_dim, "fc1")
        self.fc1.build((None, width))
        self.fc2 = self._dense(width, "fc2")
        self.fc2.build((None, self.mlp_dim // 2))
        self.drop1 = keras.layers.Dropout(
            self.dropout_rate, dtype=self.dtype_policy, name="drop1"
        )
        self.drop2 = keras.layers.Dropout(
            self.dropout_rate, dtype=self.dtype_policy, name="drop2"
        )
        self.built = True

    def call(self, inputs, training=None):
        rows = to_rows(inputs)
        value, gate = ops.split(self.fc1(rows), 2, axis=-1)
        gate = ops.silu(gate) if self.activation == "silu" else ops.sigmoid(gate)
        h = self.drop1(value * gate, training=training)
        h = self.drop2(self.fc2(h), training=training)
        return from_rows(h, inputs)

    def compute_output_shape(self, input_shape):
        return input_shape

    def count_macs(self, input_shape):
        """Multiply-accumulates of one sample of `input_shape`."""
        width = input_shape[-1]
        rows = 1
        for size in input_shape[1:-1]:
            rows *= size
        return rows * width * (self.mlp_dim + self.mlp_dim // 2)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "mlp_dim": self.mlp_dim,
                "activation": self.activation,
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
        checks.check_rate("rate", rate, where="DropPath")
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
    dtype. Keras computes `x * inv + (beta - mean * inv)` with
    `inv = gamma / sqrt(var + eps)`, which reads the full tensor more often
    than `(x - mean) / sqrt(var + eps) * gamma + beta` written here
    (`benchmarks/layernorm.py`, BENCHMARKS.md).

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


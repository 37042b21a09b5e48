"""CycleMLP (Chen et al., 2021, https://arxiv.org/abs/2107.10224).

A four-stage pyramid: a 7x7 stride-4 convolution stem, stages of CycleMLP
blocks at strides 4, 8, 16 and 32 with a 3x3 stride-2 convolution before each
later stage, a LayerNorm on every position, global average pooling and a
linear head. A block is `x + CycleMixing(LN(x))`, then `x + MLP(LN(x))`.
`MODEL_CONFIGS` follows the official `cycle_mlp.py` (ShoufaChen/CycleMLP).

The official Cycle FC is torchvision's `deform_conv2d` with a 1x1 kernel and
a fixed integer offset per input channel. With integer offsets every
bilinear sample falls on a pixel, so it is exactly a per-channel shift of the
map (zeros shifted in at the border) followed by a 1x1 fully-connected layer.
`CycleFC` computes it that way with slices, pads and multiplies: no gathers,
no 5-D tensors, builtin TFLite ops, every backend.
"""

import numpy as np

import keras
from keras import ops

from keras_mixer import checks
from keras_mixer import layers
from keras_mixer.models import _builder
from keras_mixer.models import _pyramid

MODEL_CONFIGS = {
    "B1": dict(depths=(2, 2, 4, 2), widths=(64, 128, 320, 512), mlp_ratios=(4, 4, 4, 4)),
    "B2": dict(depths=(2, 3, 10, 3), widths=(64, 128, 320, 512), mlp_ratios=(4, 4, 4, 4)),
    "B3": dict(depths=(3, 4, 18, 3), widths=(64, 128, 320, 512), mlp_ratios=(8, 8, 4, 4)),
    "B4": dict(depths=(3, 8, 27, 3), widths=(64, 128, 320, 512), mlp_ratios=(8, 8, 4, 4)),
    "B5": dict(depths=(3, 4, 24, 3), widths=(96, 192, 384, 768), mlp_ratios=(4, 4, 4, 4)),
}

# The pseudo-kernels of a block's two Cycle FCs, as in the official code:
# `sfc_h` (1 x 3) shifts along the width and `sfc_w` (3 x 1) along the
# height; the names point the other way, and checkpoints are mapped by name.
CYCLE_KERNELS = {"sfc_h": (1, 3), "sfc_w": (3, 1)}

# deit-style initialisation of the official code: truncated normal, std 0.02.


def cycle_shifts(channels, kernel_size):
    """The fixed displacement of each input channel of a Cycle FC along the
    long side k of its pseudo-kernel `(1, k)` or `(k, 1)`: channel c reads
    position `p + ((c + k // 2) mod k) - k // 2` (the official `gen_offset`,
    whose start index is `(kh * kw) // 2`). For k = 3: 0, +1, -1 for
    c mod 3 = 0, 1, 2."""
    kh, kw = kernel_size
    k = max(kh, kw)
    c = np.arange(channels)
    return (c + (kh * kw) // 2) % k - k // 2


def cycle_offsets(channels, kernel_size):
    """The official `offset` buffer of a Cycle FC, `(1, 2 C, 1, 1)` float32:
    `[dy_0, dx_0, dy_1, dx_1, ...]` (torchvision's (row, column) order)."""
    shifts = cycle_shifts(channels, kernel_size).astype(np.float32)
    zeros = np.zeros_like(shifts)
    pairs = (zeros, shifts) if kernel_size[0] == 1 else (shifts, zeros)
    return np.stack(pairs, axis=1).reshape(1, 2 * channels, 1, 1)


def check_offsets(checkpoint):
    """Refuses a checkpoint whose Cycle FC offset buffers differ from the
    fixed pattern, naming the tensor (before the model is built)."""
    for path, value in getattr(checkpoint, "buffers", {}).items():
        layer, _ = path.rsplit("/", 1)  # .../token_mixing/sfc_h
        fc = layer.rsplit("/", 1)[-1]
        channels = checkpoint.tensors[f"{layer}/kernel"].shape[0]
        expected = cycle_offsets(channels, CYCLE_KERNELS[fc])
        if value.shape != expected.shape or not np.array_equal(value, expected):
            key = checkpoint.source_keys.get(path, path)
            raise ValueError(
                f"{checkpoint.origin}: the Cycle FC offsets {key!r} (shape "
                f"{value.shape}) differ from CycleMLP's fixed pattern for "
                f"{channels} channels, where channel c of a {fc} with kernel "
                f"{CYCLE_KERNELS[fc]} reads ((c + 1) mod 3) - 1 positions "
                "away. keras_mixer implements that pattern only: the file "
                "is altered, damaged or of another model."
            )


@keras.saving.register_keras_serializable(package="keras_mixer")
class CycleFC(layers.Dense):
    """A Cycle FC: each input channel shifted by its fixed displacement along
    one axis (zeros shifted in), then a dense layer over the channels.

        s[b, i, j, c] = x[b, i, j + d(c), c]     kernel_size (1, k)
        s[b, i, j, c] = x[b, i + d(c), j, c]     kernel_size (k, 1)
        y = s W + b

    with `d = cycle_shifts(channels, kernel_size)`; equal to the official
    `deform_conv2d` with a 1x1 weight and the fixed offsets. The input is a
    map `(batch, height, width, channels)`.

    Args:
        units: int, output channels.
        kernel_size: `(1, k)` (shifts along the width) or `(k, 1)` (along
            the height).
        **kwargs: those of `keras.layers.Dense`.
    """

    def __init__(self, units, kernel_size=(1, 3), **kwargs):
        super().__init__(units, **kwargs)
        kernel_size = tuple(kernel_size)
        if (
            len(kernel_size) != 2
            or 1 not in kernel_size
            or not all(isinstance(k, int) and k >= 1 for k in kernel_size)
        ):
            raise ValueError(
                f"CycleFC: `kernel_size` must be (1, k) or (k, 1) with k a "
                f"positive integer, got {kernel_size!r}."
            )
        self.kernel_size = kernel_size

    @property
    def shift_axis(self):
        """The axis of the map the channels move along: 2 (width) for a
        `(1, k)` kernel, 1 (height) for `(k, 1)`."""
        return 2 if self.kernel_size[0] == 1 else 1

    def build(self, input_shape):
        super().build(input_shape)
        self.shifts = cycle_shifts(input_shape[-1], self.kernel_size)

    def shift(self, x):
        """`x` with each channel moved by its displacement."""
        axis = self.shift_axis
        size = x.shape[axis]
        total = 0
        for d in sorted(set(self.shifts.tolist())):
            if size is not None and abs(d) >= size:
                # Every position of these channels reads outside the map: zero.
                # (The slice would be empty, which LiteRT's XNNPACK delegate
                # cannot reshape, e.g. on the 1x1 map of a 32x32 input.)
                continue
            mask = ops.convert_to_tensor(self.shifts == d, dtype=x.dtype)
            n = abs(d)
            index = [slice(None)] * 4
            pad = [(0, 0)] * 4
            if d > 0:  # position p reads p + d: the content moves to lower p
                index[axis], pad[axis] = slice(n, None), (0, n)
            elif d < 0:
                index[axis], pad[axis] = slice(None, -n), (n, 0)
            moved = ops.pad(x[tuple(index)], pad) if d else x
            total = total + moved * mask
        return total

    def call(self, inputs, training=None):
        return super().call(self.shift(inputs))

    def get_config(self):
        config = super().get_config()
        config["kernel_size"] = list(self.kernel_size)
        return config


@keras.saving.register_keras_serializable(package="keras_mixer")
class CycleMixing(keras.layers.Layer):
    """The token mixer of CycleMLP (the official `CycleMLP` module):

        h = sfc_h(x)                        Cycle FC along the width
        w = sfc_w(x)                        Cycle FC along the height
        c = mlp_c(x)                        channel FC without bias
        a = reweight(mean over positions of h + w + c)
        y = proj(a_h * h + a_w * w + a_c * c)

    on maps `(batch, height, width, channels)`; `reweight` is
    `_pyramid.SplitAttention` (a softmax over the three branches per channel).

    Args:
        approximate_gelu: bool, the GELU form of `reweight` (exact by
            default, as the official code).
    """

    def __init__(self, approximate_gelu=False, **kwargs):
        super().__init__(**kwargs)
        self.approximate_gelu = bool(approximate_gelu)

    def build(self, input_shape):
        dim = input_shape[-1]
        policy = self.dtype_policy
        for name in ("sfc_h", "sfc_w"):
            fc = CycleFC(dim, CYCLE_KERNELS[name],
                         kernel_initializer=_pyramid.INIT, dtype=policy,
                         name=name)
            fc.build(input_shape)
            setattr(self, name, fc)
        self.mlp_c = layers.Dense(dim, use_bias=False,
                                  kernel_initializer=_pyramid.INIT,
                                  dtype=policy, name="mlp_c")
        self.reweight = _pyramid.SplitAttention(
            3, approximate_gelu=self.approximate_gelu,
            kernel_initializer=_pyramid.INIT, dtype=policy, name="reweight",
        )
        self.proj = layers.Dense(dim, kernel_initializer=_pyramid.INIT,
                                 dtype=policy, name="proj")
        self.mlp_c.build(input_shape)
        self.reweight.build((input_shape[0], dim))
        self.proj.build(input_shape)
        self.built = True

    def call(self, inputs):
        h = self.sfc_h(inputs)
        w = self.sfc_w(inputs)
        c = self.mlp_c(inputs)
        weights = self.reweight(ops.mean(h + w + c, axis=(1, 2)))
        return self.proj(_pyramid.weighted_sum((h, w, c), weights))

    def compute_output_shape(self, input_shape):
        return input_shape

    def count_macs(self, input_shape):
        """Multiply-accumulates of one map: four C x C products per position
        (sfc_h, sfc_w, mlp_c, proj), and the reweighting."""
        _, height, width, dim = input_shape
        return 4 * height * width * dim * dim + self.reweight.count_macs((1, dim))

    def get_config(self):
        config = super().get_config()
        config["approximate_gelu"] = self.approximate_gelu
        return config


@keras.saving.register_keras_serializable(package="keras_mixer")
class CycleBlock(_pyramid.PyramidBlock):
    """The block of CycleMLP (the official `CycleBlock`): a
    `_pyramid.PyramidBlock` whose token mixer is `CycleMixing`.

        Z = X + DropPath(CycleMixing(LayerNorm(X)))
        Y = Z + DropPath(MLP(LayerNorm(Z)))

    Args: those of `_pyramid.PyramidBlock` (`mlp_ratio` default 4).
    """

    family = "cyclemlp"

    def token_mixer(self, policy):
        return CycleMixing(self.approximate_gelu, dtype=policy,
                           name="token_mixing")


def size_rule(num_stages):
    """Input sides: multiples of the total stride `4 * 2 ** (stages - 1)`
    (32 for four stages), so that every stage's map is exactly
    `side / stride`."""
    return checks.SizeRule(4 * 2 ** (num_stages - 1), unit="total stride")


def CycleMLP(
    depths,
    widths,
    mlp_ratios,
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
    name="cyclemlp",
    approximate_gelu=None,
    layer_norm_epsilon=1e-5,
    head_dropout_rate=0.0,
    preprocessing=None,
):
    """Builds a CycleMLP of any size.

    Layer names: `preprocessing`, `stem` (7x7 convolution, stride 4, padding
    2), `stage_{s}_block_{j}` (each with `norm1`, `token_mixing` (`sfc_h`,
    `sfc_w`, `mlp_c`, `reweight`, `proj`), `norm2`, `channel_mixing`),
    `downsample_{s}` before every stage s > 0 (3x3 convolution, stride 2,
    padding 1), `pre_head_norm`, `avg_pool`, `head`, `predictions`.
    `keras_mixer.feature_extractor(model)` returns the stage outputs.

    Args:
        depths: blocks per stage.
        widths: channels per stage (at least 4).
        mlp_ratios: hidden width of each stage's channel MLP, as a multiple
            of its width: one number for every stage, or one per stage.
        include_top, weights, input_tensor, input_shape, pooling, classes,
        classifier_activation, include_preprocessing, dropout_rate,
        drop_path_rate, name: as in `keras_mixer.CycleMLPB1`. The input
            sides must be multiples of the total stride (32 for four
            stages).
        approximate_gelu: True uses the tanh approximation of GELU; None
            (default) and False the exact erf GELU of the official code.
        layer_norm_epsilon: epsilon of every LayerNorm (1e-5 as PyTorch).
        head_dropout_rate: dropout before the head (include_top only).
        preprocessing: input normalisation of `include_preprocessing`:
            "torch" (ImageNet mean/std, the official pipeline; the default),
            "tf" or "zero_one".

    Returns:
        A `keras.Model`.

    Example:
    >>> model = keras_mixer.CycleMLP(
    ...     depths=(1, 1), widths=(8, 16), mlp_ratios=(2, 2),
    ...     input_shape=(32, 64, 3), classes=10)
    >>> features = keras_mixer.feature_extractor(model)
    >>> {k: tuple(v.shape[1:]) for k, v in features.output.items()}
    {'stage_0': (8, 16, 8), 'stage_1': (4, 8, 16)}
    """
    preprocessing = preprocessing or "torch"
    if isinstance(mlp_ratios, (int, float)) and isinstance(depths, (list, tuple)):
        mlp_ratios = (mlp_ratios,) * len(depths)
    depths, widths, mlp_ratios = _pyramid.stage_lists(
        depths=depths, widths=widths, mlp_ratios=mlp_ratios
    )
    sizes = {f"depths[{i}]": d for i, d in enumerate(depths)}
    sizes.update({f"widths[{i}]": w for i, w in enumerate(widths)})
    rates = dict(
        dropout_rate=dropout_rate, drop_path_rate=drop_path_rate,
        head_dropout_rate=head_dropout_rate,
    )
    shape = _builder.check_arguments(
        sizes, rates, include_top, input_tensor, input_shape, pooling,
        classes, classifier_activation, include_preprocessing, preprocessing,
        size_rule=size_rule(len(depths)),
    )
    for i, (width, ratio) in enumerate(zip(widths, mlp_ratios)):
        checks.check_int(f"widths[{i}]", width, minimum=4)
        checks.check_positive(f"mlp_ratios[{i}]", ratio)
    checkpoint = _builder.read_weights(weights, CycleBlock.family, name)
    check_offsets(checkpoint)
    approximate_gelu = bool(approximate_gelu)

    inputs, x = _builder.model_inputs(input_tensor, shape)
    if include_preprocessing:
        x = _builder.preprocessing(preprocessing, shape[-1])(x)
    x = _pyramid.ConvEmbedding(widths[0], 7, strides=4, padding=2, name="stem")(x)
    drop_path_rates = iter(
        _builder.stochastic_depth_rates(drop_path_rate, sum(depths))
    )
    for s, (depth, width, ratio) in enumerate(zip(depths, widths, mlp_ratios)):
        if s > 0:
            x = _pyramid.ConvEmbedding(
                width, 3, strides=2, padding=1, name=f"downsample_{s}"
            )(x)
        for j in range(depth):
            x = CycleBlock(
                ratio,
                approximate_gelu=approximate_gelu,
                dropout_rate=dropout_rate,
                drop_path_rate=next(drop_path_rates),
                layer_norm_epsilon=layer_norm_epsilon,
                name=f"stage_{s}_block_{j}",
            )(x)
    x = layers.LayerNorm(layer_norm_epsilon, name="pre_head_norm")(x)
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
        CycleMLP,
        config,
        f"CycleMLP{key}",
        f"cyclemlp_{key.lower()}",
        dict(
            title=f"CycleMLP-{key}",
            family="CycleMLP",
            paper="Chen et al. (2021)",
            description=(
                "Four stages of {depths} CycleMLP blocks of widths {widths} "
                "at strides 4, 8, 16 and 32, channel MLP ratios "
                "{mlp_ratios}, exact GELU."
            ).format(**config),
            reference="https://arxiv.org/abs/2107.10224",
            default_size=224,
            preprocessing="torch",
            preprocessing_text="ImageNet mean and std, as the official code",
            example_size=64,
            checkpoint_text=(
                "the official CycleMLP_{key}.pth release file".format(key=key)
            ),
            resize_text=(
                "; no\n        weight depends on the input size, so they load "
                "at any valid size"
            ),
            size_text=(
                "Height and width must be\n        multiples of the total "
                "stride 32"
            ),
            features_text=(
                "the map\n        `(batch, height / 32, width / 32, "
                f"{config['widths'][-1]})` (`keras_mixer.feature_extractor` "
                "gives\n        the four stage outputs)"
            ),
            positions="positions",
        ),
        size_rule=size_rule(len(config["depths"])),
    )


CycleMLPB1 = _variant("B1")
CycleMLPB2 = _variant("B2")
CycleMLPB3 = _variant("B3")
CycleMLPB4 = _variant("B4")
CycleMLPB5 = _variant("B5")

VARIANTS = {
    f.__name__: f
    for f in (CycleMLPB1, CycleMLPB2, CycleMLPB3, CycleMLPB4, CycleMLPB5)
}

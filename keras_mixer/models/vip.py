"""Vision Permutator (Hou et al., 2021, https://arxiv.org/abs/2106.12368).

A convolution stem (kernel = stride = patch size), four stages of
Permutator blocks with a stride-2 convolution where the official
`transitions` say so, a LayerNorm on every position, global average pooling
and a linear head. A block is `x + PermuteMixing(LN(x))`, then
`x + MLP(LN(x))` with MLP ratio 3. `MODEL_CONFIGS` follows the official
`models/vip.py` (Andrew-Qibin/VisionPermutator).

Permute-MLP cuts the C channels into `segment_dim` segments of
`N = C / segment_dim` channels. Its height branch takes, for every column and
every segment, the H x N values of the segment's channels in all rows as one
vector and multiplies it by a (C, C) matrix; that needs H * N = C, i.e.
H == segment_dim, and the same for the width. The weights therefore exist for
one map size per stage: a model is tied to the resolution it was built for
(224 x 224 for the released variants), and the builders refuse any other.
"""

import keras
from keras import ops

from keras_mixer import checks
from keras_mixer import layers
from keras_mixer.models import _builder
from keras_mixer.models import _pyramid

MODEL_CONFIGS = {
    "S14": dict(patch_size=14, depths=(4, 3, 8, 3), widths=(384, 384, 384, 384),
                transitions=(False, False, False, False),
                segment_dims=(16, 16, 16, 16)),
    "S7": dict(patch_size=7, depths=(4, 3, 8, 3), widths=(192, 384, 384, 384),
               transitions=(True, False, False, False),
               segment_dims=(32, 16, 16, 16)),
    "M7": dict(patch_size=7, depths=(4, 3, 14, 3), widths=(256, 256, 512, 512),
               transitions=(False, True, False, False),
               segment_dims=(32, 32, 16, 16)),
    "L7": dict(patch_size=7, depths=(8, 8, 16, 4), widths=(256, 512, 512, 512),
               transitions=(True, False, False, False),
               segment_dims=(32, 16, 16, 16)),
}

# deit-style initialisation of the official code: truncated normal, std 0.02.


def permute_branch(x, dense, segment_dim, axis):
    """ViP's height (`axis` 1) or width (`axis` 2) branch on a map
    `(batch, H, W, C)`: for every position along the other axis and every
    segment, the L x N block (L positions along `axis`, the segment's N
    channels), flattened as `l * N + n`, goes through `dense` (C -> C) and
    back to its place. Every intermediate tensor is 4-D or less."""
    channels = x.shape[-1]
    n = channels // segment_dim
    if axis == 1:
        x = ops.transpose(x, (0, 2, 1, 3))
    _, other, length, _ = x.shape
    y = ops.reshape(x, (-1, length, segment_dim, n))
    y = ops.transpose(y, (0, 2, 1, 3))  # (batch * other, G, L, N)
    y = dense(ops.reshape(y, (-1, length * n)))
    y = ops.transpose(ops.reshape(y, (-1, segment_dim, length, n)), (0, 2, 1, 3))
    y = ops.reshape(y, (-1, other, length, channels))
    return ops.transpose(y, (0, 2, 1, 3)) if axis == 1 else y


@keras.saving.register_keras_serializable(package="keras_mixer")
class PermuteMixing(keras.layers.Layer):
    """The token mixer of Vision Permutator (the official
    `WeightedPermuteMLP`):

        h = permute_branch(x, mlp_h, axis=height)
        w = permute_branch(x, mlp_w, axis=width)
        c = mlp_c(x)
        a = reweight(mean over positions of h + w + c)
        y = proj(a_h * h + a_w * w + a_c * c)

    `mlp_h`, `mlp_w`, `mlp_c` are (C, C) without bias; `reweight` is
    `_pyramid.SplitAttention`. The map must be `segment_dim` x `segment_dim`.

    Args:
        segment_dim: int, the number of channel segments, which must equal
            the height and the width of the map.
        approximate_gelu: bool, the GELU form of `reweight` (exact by
            default, as the official code).
    """

    def __init__(self, segment_dim, approximate_gelu=False, **kwargs):
        super().__init__(**kwargs)
        checks.check_int("segment_dim", segment_dim, where="PermuteMixing")
        self.segment_dim = segment_dim
        self.approximate_gelu = bool(approximate_gelu)

    def build(self, input_shape):
        _, height, width, dim = input_shape
        if dim % self.segment_dim or (height, width) != (self.segment_dim,) * 2:
            raise ValueError(
                f"PermuteMixing: a {height}x{width} map of {dim} channels "
                f"does not fit segment_dim {self.segment_dim}. The (C, C) "
                "permute matrices mix segment_dim rows (columns) x "
                "C / segment_dim channels, so the map must be segment_dim x "
                "segment_dim and C a multiple of segment_dim: Vision "
                "Permutator is tied to the input size it was built for."
            )
        policy = self.dtype_policy
        for name in ("mlp_c", "mlp_h", "mlp_w"):
            dense = layers.Dense(dim, use_bias=False,
                                 kernel_initializer=_pyramid.INIT,
                                 dtype=policy, name=name)
            dense.build((None, dim))
            setattr(self, name, dense)
        self.reweight = _pyramid.SplitAttention(
            3, approximate_gelu=self.approximate_gelu,
            kernel_initializer=_pyramid.INIT, dtype=policy, name="reweight",
        )
        self.proj = layers.Dense(dim, kernel_initializer=_pyramid.INIT,
                                 dtype=policy, name="proj")
        self.reweight.build((input_shape[0], dim))
        self.proj.build(input_shape)
        self.built = True

    def call(self, inputs):
        h = permute_branch(inputs, self.mlp_h, self.segment_dim, 1)
        w = permute_branch(inputs, self.mlp_w, self.segment_dim, 2)
        c = self.mlp_c(inputs)
        weights = self.reweight(ops.mean(h + w + c, axis=(1, 2)))
        return self.proj(_pyramid.weighted_sum((h, w, c), weights))

    def compute_output_shape(self, input_shape):
        return input_shape

    def count_macs(self, input_shape):
        """Multiply-accumulates of one map: four C x C products per position
        (mlp_h, mlp_w, mlp_c, proj), and the reweighting."""
        _, height, width, dim = input_shape
        return 4 * height * width * dim * dim + self.reweight.count_macs((1, dim))

    def get_config(self):
        config = super().get_config()
        config.update(
            {"segment_dim": self.segment_dim,
             "approximate_gelu": self.approximate_gelu}
        )
        return config


@keras.saving.register_keras_serializable(package="keras_mixer")
class PermutatorBlock(_pyramid.PyramidBlock):
    """The block of Vision Permutator (the official `PermutatorBlock`): a
    `_pyramid.PyramidBlock` whose token mixer is `PermuteMixing`, on maps
    `(batch, segment_dim, segment_dim, channels)`.

        Z = X + DropPath(PermuteMixing(LayerNorm(X)))
        Y = Z + DropPath(MLP(LayerNorm(Z)))

    Args:
        segment_dim: int, see `PermuteMixing`.
        mlp_ratio: default 3; the rest: see `_pyramid.PyramidBlock`.
    """

    family = "vip"

    def __init__(self, segment_dim, mlp_ratio=3, **kwargs):
        super().__init__(mlp_ratio=mlp_ratio, **kwargs)
        checks.check_int("segment_dim", segment_dim, where="PermutatorBlock")
        self.segment_dim = segment_dim

    def token_mixer(self, policy):
        return PermuteMixing(self.segment_dim, self.approximate_gelu,
                             dtype=policy, name="token_mixing")

    def get_config(self):
        config = super().get_config()
        config["segment_dim"] = self.segment_dim
        return config


def downsample_kernels(widths, transitions):
    """{stage s: kernel} of the convolution before stage s, as the official
    code places them: after stage s - 1 when `transitions[s - 1]` (kernel =
    stride = 2) or when the width changes (kernel 1); the last transition is
    unused."""
    kernels = {}
    for s in range(1, len(widths)):
        if transitions[s - 1] or widths[s] != widths[s - 1]:
            kernels[s] = 2 if transitions[s - 1] else 1
    return kernels


def size_rule(patch_size, segment_dims):
    """The one input side a Vision Permutator takes: `segment_dims[0]`
    patches of `patch_size` pixels."""
    side = segment_dims[0] * patch_size
    return checks.SizeRule(
        only=side,
        reason=(
            f"Vision Permutator's permute layers are (C, C) matrices over "
            f"segment_dim = {segment_dims[0]} rows and columns of "
            f"{patch_size}-pixel patches, so its weights exist for "
            f"{side}x{side} inputs only; the official code defines no "
            "resizing"
        ),
    )


def check_segments(widths, transitions, segment_dims):
    """Refuses segment dims that cannot be each stage's map side."""
    side = segment_dims[0]
    for s, (width, segment_dim) in enumerate(zip(widths, segment_dims)):
        if s > 0 and transitions[s - 1]:
            side //= 2
        if segment_dim != side or width % segment_dim:
            raise ValueError(
                f"segment_dims[{s}] = {segment_dim} cannot be used: stage "
                f"{s}'s map is {side}x{side} (segment_dims[0] = "
                f"{segment_dims[0]}, halved at each transition) and has "
                f"{width} channels; Vision Permutator needs each stage's "
                "segment_dim equal to its map side and dividing its width."
            )


def VisionPermutator(
    patch_size,
    depths,
    widths,
    transitions,
    segment_dims,
    mlp_ratios=3,
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
    name="vision_permutator",
    approximate_gelu=None,
    layer_norm_epsilon=1e-5,
    head_dropout_rate=0.0,
    preprocessing=None,
):
    """Builds a Vision Permutator of any size.

    Layer names: `preprocessing`, `stem` (patch_size x patch_size
    convolution, stride patch_size), `stage_{s}_block_{j}` (each with
    `norm1`, `token_mixing` (`mlp_c`, `mlp_h`, `mlp_w`, `reweight`, `proj`),
    `norm2`, `channel_mixing`), `downsample_{s}` where a convolution comes
    before stage s (see `downsample_kernels`), `pre_head_norm`, `avg_pool`,
    `head`, `predictions`. `keras_mixer.feature_extractor(model)` returns
    the stage outputs.

    Args:
        patch_size: side of the stem's patches.
        depths: blocks per stage.
        widths: channels per stage.
        transitions: per stage, whether a stride-2 convolution follows it.
        segment_dims: per stage, the number of channel segments, which must
            be the stage's map side: `segment_dims[0] * patch_size` is the
            one input side the model takes.
        mlp_ratios: hidden width of each stage's channel MLP, as a multiple
            of its width: one number for every stage (3, the official
            variants' value) or one per stage.
        include_top, weights, input_tensor, input_shape, pooling, classes,
        classifier_activation, include_preprocessing, dropout_rate,
        drop_path_rate, name: as in `keras_mixer.ViPS7`.
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
    >>> model = keras_mixer.VisionPermutator(
    ...     patch_size=4, depths=(1, 1), widths=(16, 32),
    ...     transitions=(True, False), segment_dims=(8, 4), classes=10)
    >>> model.input_shape
    (None, 32, 32, 3)
    >>> keras_mixer.VisionPermutator(
    ...     patch_size=4, depths=(1, 1), widths=(16, 32),
    ...     transitions=(True, False), segment_dims=(8, 4),
    ...     input_shape=(64, 64, 3))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ValueError: Input height 64: the input side must be 32 (Vision Permutator's permute layers ...
    """
    preprocessing = preprocessing or "torch"
    if isinstance(mlp_ratios, (int, float)) and isinstance(depths, (list, tuple)):
        mlp_ratios = (mlp_ratios,) * len(depths)
    depths, widths, transitions, segment_dims, mlp_ratios = _pyramid.stage_lists(
        depths=depths, widths=widths, transitions=transitions,
        segment_dims=segment_dims, mlp_ratios=mlp_ratios,
    )
    sizes = dict(patch_size=patch_size)
    for key, values in (("depths", depths), ("widths", widths),
                        ("segment_dims", segment_dims)):
        sizes.update({f"{key}[{i}]": v for i, v in enumerate(values)})
    rates = dict(
        dropout_rate=dropout_rate, drop_path_rate=drop_path_rate,
        head_dropout_rate=head_dropout_rate,
    )
    shape = _builder.check_arguments(
        sizes, rates, include_top, input_tensor, input_shape, pooling,
        classes, classifier_activation, include_preprocessing, preprocessing,
        size_rule=size_rule(patch_size, segment_dims),
    )
    for i, (width, ratio) in enumerate(zip(widths, mlp_ratios)):
        checks.check_int(f"widths[{i}]", width, minimum=4)
        checks.check_positive(f"mlp_ratios[{i}]", ratio)
    check_segments(widths, transitions, segment_dims)
    checkpoint = _builder.read_weights(weights, PermutatorBlock.family, name)
    approximate_gelu = bool(approximate_gelu)
    kernels = downsample_kernels(widths, transitions)

    inputs, x = _builder.model_inputs(input_tensor, shape)
    if include_preprocessing:
        x = _builder.preprocessing(preprocessing, shape[-1])(x)
    x = _pyramid.ConvEmbedding(widths[0], patch_size, strides=patch_size,
                             name="stem")(x)
    drop_path_rates = iter(
        _builder.stochastic_depth_rates(drop_path_rate, sum(depths))
    )
    stages = zip(depths, widths, segment_dims, mlp_ratios)
    for s, (depth, width, segment_dim, ratio) in enumerate(stages):
        if s in kernels:
            x = _pyramid.ConvEmbedding(width, kernels[s], strides=kernels[s],
                                     name=f"downsample_{s}")(x)
        for j in range(depth):
            x = PermutatorBlock(
                segment_dim,
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
    side = config["segment_dims"][0] * config["patch_size"]
    size, patch = key[0], key[1:]
    return _builder.make_variant(
        VisionPermutator,
        config,
        f"ViP{key}",
        f"vip_{key.lower()}",
        dict(
            title=f"ViP-{size}/{patch}",
            family="Vision Permutator",
            paper="Hou et al. (2021)",
            description=(
                "Four stages of {depths} Permutator blocks of widths {widths} "
                "on {patch_size}x{patch_size} patches, segment dims "
                "{segment_dims}, channel MLP ratio 3, exact GELU."
            ).format(**config),
            reference="https://arxiv.org/abs/2106.12368",
            default_size=side,
            preprocessing="torch",
            preprocessing_text="ImageNet mean and std, as the official code",
            example_size=side,
            checkpoint_text=f"the official ViP-{size}/{patch} .pth file",
            resize_text="",
            size_text=(
                f"The only size is {side}x{side}:\n        the permute "
                "layers' weights are sized by the training resolution"
            ),
            features_text=(
                "the map\n        `(batch, {s}, {s}, {c})` "
                "(`keras_mixer.feature_extractor` gives the four\n        "
                "stage outputs)"
            ).format(s=config["segment_dims"][-1], c=config["widths"][-1]),
            positions="positions",
        ),
        size_rule=size_rule(config["patch_size"], config["segment_dims"]),
    )


ViPS14 = _variant("S14")
ViPS7 = _variant("S7")
ViPM7 = _variant("M7")
ViPL7 = _variant("L7")

VARIANTS = {f.__name__: f for f in (ViPS14, ViPS7, ViPM7, ViPL7)}

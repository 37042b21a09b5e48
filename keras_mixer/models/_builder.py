"""What the model families' builders share: argument checks, inputs and
preprocessing, the pooling and head, weights loading and the variant factory.

A family module (`mixer.py`, `resmlp.py`) holds its blocks, a builder whose
body reads stem -> blocks -> pre-head norm -> head, its `MODEL_CONFIGS` and
its variants (`make_variant`). The builders take the arguments of
`keras.applications` (same names, checked in the same order by
`check_arguments`), so a user of `keras.applications.ResNet50` finds the same
constructor.

A family's block layer tells the shared code what it needs through
attributes, so that a new family edits neither this module nor `_tools`:
- `family`: the family name, compared with a checkpoint's before building.
- `token_axes`: its variables that grow with the patch grid, by path within
  the block, with the role of each axis (`keras_mixer.checkpoints.resize`).
- `count_macs(input_shape)`: its multiply-accumulates (`_tools.count_flops`).
- `grown_config(parts)`, where a width grows with the grid: its config for
  `parts` times as many patches (`_tools.resize_token_mixing`).
"""

import inspect
import os

import numpy as np

import keras
from keras import ops

from keras_mixer import checks
from keras_mixer import layers
from keras_mixer.checkpoints import Checkpoint
from keras_mixer.checkpoints import assign
from keras_mixer.checkpoints import download
from keras_mixer.checkpoints import hub
from keras_mixer.checkpoints import read_checkpoint
from keras_mixer.checkpoints import resize

# Mean and std of the pixels scaled to [0, 1], per input-range convention.
# The names follow `keras.applications.imagenet_utils.preprocess_input`.
PREPROCESSING_MODES = {
    # [0, 255] -> [-1, 1]: the official MLP-Mixer input pipeline.
    "tf": (0.5, 0.5),
    # ImageNet mean and std: deit's ResMLP (and torchvision).
    "torch": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    # [0, 255] -> [0, 1].
    "zero_one": (0.0, 1.0),
}

POOLINGS = (None, "avg", "max")

# Per-block stochastic depth rates: "linear" rises from 0 in the first block
# to the rate in the last (big_vision's Mixer); "uniform" gives every block
# the rate (deit's ResMLP; timm's MlpMixer family).
DROP_PATH_SCHEDULES = ("linear", "uniform")

DEFAULT_SIZE = 224


# ----------------------------------------------------------------------------
# Argument checks, run once by each builder before any work.
# ----------------------------------------------------------------------------


def check_preprocessing(mode):
    if mode not in PREPROCESSING_MODES:
        raise ValueError(
            f"Unknown preprocessing mode {mode!r}. Use one of "
            f"{sorted(PREPROCESSING_MODES)}: 'tf' maps [0, 255] to [-1, 1] "
            "(MLP-Mixer), 'torch' subtracts the ImageNet mean and divides by "
            "its std (ResMLP), 'zero_one' maps to [0, 1]."
        )


def resolve_input_shape(input_tensor, input_shape, size_rule, default_size):
    """Checks the input arguments and returns the `(H, W, C)` input shape;
    `size_rule` (a `checks.SizeRule`) says which sides the model takes."""
    if keras.config.image_data_format() != "channels_last":
        raise ValueError(
            "keras_mixer models take channels_last images (batch, height, "
            "width, channels), but keras.config.image_data_format() is "
            f"{keras.config.image_data_format()!r}. Call "
            "keras.config.set_image_data_format('channels_last') before "
            "building the model, and transpose channels_first data with "
            "keras.ops.transpose(x, (0, 2, 3, 1))."
        )
    tensor_shape = None
    if input_tensor is not None:
        if not keras.backend.is_keras_tensor(input_tensor):
            raise ValueError(
                "`input_tensor` must be a symbolic Keras tensor, such as the "
                "output of keras.Input(shape=(224, 224, 3)); got "
                f"{type(input_tensor).__name__}. To run the model on data, "
                "build it and call it: model(x)."
            )
        tensor_shape = tuple(input_tensor.shape[1:])
        if len(tensor_shape) != 3:
            raise ValueError(
                "`input_tensor` must have shape (batch, height, width, "
                f"channels); got {tuple(input_tensor.shape)}."
            )
    if input_shape is None:
        default_size = size_rule.only or default_size
        input_shape = tensor_shape or (default_size, default_size, 3)
    input_shape = tuple(input_shape)
    if len(input_shape) != 3:
        raise ValueError(
            "`input_shape` must be (height, width, channels), channels last, "
            f"without the batch axis; got {input_shape!r}."
        )
    for axis, size in zip(("height", "width", "channels"), input_shape):
        if size is None:
            raise ValueError(
                f"`input_shape` {input_shape!r} leaves the {axis} undefined. "
                "The token-mixing weights depend on the number of patches, so "
                "the input size must be fixed: give all three sizes, e.g. "
                f"({default_size}, {default_size}, 3)."
            )
        if not isinstance(size, (int, np.integer)) or size <= 0:
            raise ValueError(
                f"`input_shape` {input_shape!r} has a non-positive or "
                f"non-integer {axis} ({size!r}); every size must be a "
                "positive integer."
            )
    if tensor_shape is not None:
        agree = all(
            t is None or t == s for t, s in zip(tensor_shape, input_shape)
        )
        if not agree:
            raise ValueError(
                f"`input_tensor` has shape (batch,) + {tensor_shape} but "
                f"`input_shape` is {input_shape}. Pass only one of them, or "
                "make them agree."
            )
    for axis, size in zip(("height", "width"), input_shape[:2]):
        size_rule.check(f"Input {axis}", size)
    return tuple(int(s) for s in input_shape)


def check_head_arguments(include_top, pooling, classes, activation):
    """The keras.applications argument checks, in their order."""
    if pooling not in POOLINGS:
        raise ValueError(
            f"Unknown `pooling` {pooling!r}. Use None (the token table "
            "(batch, tokens, channels)), 'avg' (mean over tokens) or 'max' "
            "(max over tokens); it applies with include_top=False."
        )
    if include_top:
        if pooling == "max":
            raise ValueError(
                "pooling='max' applies only with include_top=False: the "
                "classifier head averages the tokens (global average "
                "pooling). Use pooling=None or 'avg' with include_top=True."
            )
        checks.check_int("classes", classes)
        try:
            keras.activations.get(activation)
        except ValueError as error:
            raise ValueError(
                f"Unknown `classifier_activation` {activation!r}: {error} Use "
                "'softmax', None (logits) or another Keras activation."
            ) from None


def check_arguments(
    sizes,
    rates,
    include_top,
    input_tensor,
    input_shape,
    pooling,
    classes,
    classifier_activation,
    include_preprocessing,
    preprocessing,
    drop_path_schedule="linear",
    size_rule=None,
):
    """Every argument check of a builder; returns the `(H, W, C)` input shape.

    Args:
        sizes: {name: value} of the architecture's integer sizes.
        rates: {name: value} of its dropout-like rates.
        size_rule: the `checks.SizeRule` of the input sides; default:
            multiples of `sizes["patch_size"]`.
        (the rest: see the public constructors.)
    """
    for name, value in sizes.items():
        checks.check_int(name, value)
    for name, value in rates.items():
        checks.check_rate(name, value)
    if drop_path_schedule not in DROP_PATH_SCHEDULES:
        raise ValueError(
            f"Unknown `drop_path_schedule` {drop_path_schedule!r}. Use "
            "'linear' (0 in the first block rising to drop_path_rate in the "
            "last, as big_vision's Mixer) or 'uniform' (drop_path_rate in "
            "every block, as deit's ResMLP and timm)."
        )
    check_head_arguments(include_top, pooling, classes, classifier_activation)
    if include_preprocessing:
        check_preprocessing(preprocessing)
    if size_rule is None:
        size_rule = checks.SizeRule(sizes["patch_size"])
    return resolve_input_shape(input_tensor, input_shape, size_rule, DEFAULT_SIZE)


# ----------------------------------------------------------------------------
# Pieces of a builder's body.
# ----------------------------------------------------------------------------


def preprocessing_constants(mode, channels=3):
    """Returns `(mean, std)` of `mode` for images with `channels` channels.

    Per-channel constants (mode "torch") are given for RGB. For another number
    of channels (grayscale data) every channel gets the average of the three.
    """
    mean, std = PREPROCESSING_MODES[mode]
    if isinstance(mean, tuple) and channels != len(mean):
        mean, std = float(np.mean(mean)), float(np.mean(std))
    return mean, std


def preprocess_input(x, mode="tf"):
    """Normalises RGB pixels in [0, 255] as a model built with
    `include_preprocessing=False` expects them.

    Args:
        x: array or tensor of shape `(..., height, width, channels)`, values in
            [0, 255].
        mode: "tf" for MLP-Mixer (to [-1, 1]), "torch" for ResMLP (ImageNet
            mean and std), "zero_one" (to [0, 1]).

    Returns:
        A float32 NumPy array for NumPy input, else a backend tensor.

    Example:
    >>> keras_mixer.preprocess_input(np.array([0.0, 255.0]), mode="tf")
    array([-1.,  1.], dtype=float32)
    """
    check_preprocessing(mode)
    mean, std = preprocessing_constants(mode, int(np.shape(x)[-1]))
    mean = np.asarray(mean, "float32")
    std = np.asarray(std, "float32")
    if isinstance(x, (np.ndarray, list, tuple, float, int)):
        x = np.asarray(x, "float32")
        return (x / np.float32(255.0) - mean) / std
    x = ops.cast(x, "float32")
    return (x / 255.0 - mean) / std


def model_inputs(input_tensor, shape):
    """`(the model's inputs, the tensor the model starts from)`: a new input
    named `images`, or `input_tensor` and the inputs it comes from."""
    if input_tensor is None:
        inputs = keras.Input(shape=shape, name="images")
        return inputs, inputs
    inputs = keras.utils.get_source_inputs(input_tensor)
    return (inputs[0] if len(inputs) == 1 else inputs), input_tensor


def preprocessing(mode, channels):
    """The `Normalize` layer named "preprocessing" of `mode`."""
    mean, std = preprocessing_constants(mode, channels)
    return layers.Normalize(mean, std, name="preprocessing")


def stochastic_depth_rates(drop_path_rate, num_blocks, schedule="linear"):
    """Per-block stochastic depth rates: "linear" rises from 0 in the first
    block to `drop_path_rate` in the last (one block: 0), "uniform" is
    `drop_path_rate` in every block."""
    if schedule == "uniform":
        return [float(drop_path_rate)] * num_blocks
    if num_blocks == 1:
        return [0.0]
    return [float(r) for r in np.linspace(0.0, drop_path_rate, num_blocks)]


def head_dtype():
    """The dtype policy of the pooling, head and softmax: float32 under a
    mixed-precision policy (numerically safe logits), else the global one."""
    policy = keras.config.dtype_policy()
    if policy.compute_dtype in ("float16", "bfloat16"):
        return "float32"
    return None


def head(x, include_top, pooling, classes, classifier_activation, dropout_rate):
    """The tail after the pre-head norm: pooling over the positions (the
    tokens of a `(batch, tokens, channels)` table, or the pixels of a
    `(batch, height, width, channels)` map), then (with `include_top`)
    dropout, the dense head and its activation."""
    dtype = head_dtype()
    rank = len(x.shape)
    if rank not in (3, 4):
        raise ValueError(f"head: expected a rank 3 or 4 tensor, got {x.shape}.")
    average, maximum = {
        3: (keras.layers.GlobalAveragePooling1D, keras.layers.GlobalMaxPooling1D),
        4: (keras.layers.GlobalAveragePooling2D, keras.layers.GlobalMaxPooling2D),
    }[rank]
    if include_top or pooling == "avg":
        x = average(dtype=dtype, name="avg_pool")(x)
    elif pooling == "max":
        x = maximum(dtype=dtype, name="max_pool")(x)
    if not include_top:
        return x
    if dropout_rate > 0:
        x = keras.layers.Dropout(dropout_rate, dtype=dtype, name="head_dropout")(x)
    x = keras.layers.Dense(
        classes, kernel_initializer="zeros", dtype=dtype, name="head"
    )(x)
    return keras.layers.Activation(
        classifier_activation, dtype=dtype, name="predictions"
    )(x)


# ----------------------------------------------------------------------------
# Weights.
# ----------------------------------------------------------------------------


def read_weights(weights, family, name, preprocessing=None):
    """Reads the `weights` of a builder before the model is built.

    Args:
        weights: None, a `download.PresetWeights` or `hub.HubWeights`
            (fetched here), "hf://<org>/<name>[@revision]", or the path of a
            checkpoint file or of a Hugging Face Hub model folder.
        family: the builder's family; a checkpoint of another is refused.
        name: the model's name, for messages.
        preprocessing: the model's input normalisation mode, or None when it
            normalises nothing; a Hub folder whose config.json names another
            mean and std is refused.

    Returns:
        None, the path of a `.weights.h5` file, or a `Checkpoint` of `family`.
    """
    if weights is None:
        return None
    if hub.is_hub_name(weights):
        weights = hub.HubWeights.parse(weights)
    if isinstance(weights, (download.PresetWeights, hub.HubWeights)):
        weights = weights.fetch()
    if isinstance(weights, os.PathLike):
        weights = os.fspath(weights)
    if not isinstance(weights, str) or not os.path.exists(weights):
        raise ValueError(
            f"`weights` {weights!r} is not an existing file. The generic "
            "builders take None, a file path (an official .npz, a timm "
            ".safetensors/.pth, a deit, CycleMLP or ViP .pth or a "
            ".weights.h5), a Hugging Face Hub model folder or "
            "'hf://timm/<model>'; weights names such as "
            "'imagenet1k' belong to the named variants, e.g. "
            "keras_mixer.MixerB16(weights='imagenet1k')."
        )
    if weights.endswith(".weights.h5"):
        return weights
    checkpoint = read_checkpoint(weights)
    if checkpoint.family != family:
        raise ValueError(
            f"{weights} is a {checkpoint.family} checkpoint "
            f"({checkpoint.source} layout) but {name!r} is a {family} model."
        )
    if preprocessing is not None and checkpoint.mean_std is not None:
        _check_source_normalisation(checkpoint, preprocessing)
    return checkpoint


def _normalisation(mode, channels):
    """`[mean, std]` of a preprocessing mode, per channel, float64."""
    mean, std = PREPROCESSING_MODES[mode]
    return np.stack([np.broadcast_to(mean, (channels,)),
                     np.broadcast_to(std, (channels,))]).astype(np.float64)


def _check_source_normalisation(checkpoint, mode):
    """Refuses a model whose input normalisation differs from the one the
    checkpoint's own metadata (a Hub config.json) names."""
    wanted = np.asarray(checkpoint.mean_std, np.float64)
    channels = wanted.shape[-1]
    if np.allclose(_normalisation(mode, channels), wanted, atol=1e-4):
        return
    same = [m for m in PREPROCESSING_MODES
            if np.allclose(_normalisation(m, channels), wanted, atol=1e-4)]
    fix = (
        f"build the model with preprocessing={same[0]!r}" if same else
        "build it with include_preprocessing=False and normalise the input "
        "yourself"
    )

    def show(values):
        return "(" + ", ".join(f"{v:g}" for v in values) + ")"

    mean, std = _normalisation(mode, channels)
    raise ValueError(
        f"{checkpoint.origin}: its config.json normalises the input with mean "
        f"{show(wanted[0])} and std {show(wanted[1])}, but the model's "
        f"preprocessing={mode!r} uses mean {show(mean)} and std {show(std)}: "
        f"{fix}."
    )


def load_weights(model, weights):
    """Loads what `read_weights` returned into the built `model`."""
    if weights is None:
        return
    if isinstance(weights, str):
        model.load_weights(weights)
        assign.check_finite(model, weights)
        return
    assign.assign_checkpoint(model, weights, **grid_growth(model))


def patch_grid(model):
    """The patch grid `(rows, cols)` of a keras_mixer model."""
    stem = model.get_layer("stem")
    _, height, width, _ = stem.input.shape
    return height // stem.patch_size, width // stem.patch_size


def grid_growth(model):
    """The model's patch grid and the token-mixing variables its blocks
    declare, as `assign_checkpoint` takes them (no grid for a model whose
    weights do not depend on the input size)."""
    token_axes = {}
    for layer in model.layers:
        for path, axes in getattr(layer, "token_axes", {}).items():
            token_axes[f"{layer.name}/{path}"] = axes
    return dict(grid=patch_grid(model) if token_axes else None,
                token_axes=token_axes)


def checkpoint_parts(checkpoint, tokens_path, patch_size, shape):
    """`K_h * K_w` when a model built at `shape` has a patch grid K_h x K_w
    times `checkpoint`'s (paper Appendix C), else 1. `tokens_path`: a
    variable whose first axis is the checkpoint's tokens."""
    if not isinstance(checkpoint, Checkpoint) or checkpoint.patch_size != patch_size:
        return 1
    tokens = checkpoint.tensors[tokens_path].shape[0]
    old = checkpoint.grid or resize.checkpoint_grid(tokens, checkpoint.origin)
    kh, kw = resize.factors(old, (shape[0] // patch_size, shape[1] // patch_size))
    return kh * kw


# ----------------------------------------------------------------------------
# Variants.
# ----------------------------------------------------------------------------


VARIANT_DOCSTRING = """Builds {title}, a {family} model of {paper}.

{description}

Reference: {reference}

Args:
    include_top: whether to end with the classifier (global average pooling
        and a dense head of `classes` units). False ends at the pre-head norm.
    weights: None (random initialisation, the default: several pretrained
        weight sets exist and none is fetched silently), a name from
        `keras_mixer.list_weights("{function}")`, or the path of a checkpoint
        ({checkpoint_text}, or a `.weights.h5` saved from keras_mixer). With
        `include_top=False` or another number of `classes` all but the head
        are loaded and the head is fresh{resize_text}.
    input_tensor: optional symbolic tensor (from `keras.Input`) to use as the
        model's input.
    input_shape: `(height, width, channels)`, default
        `({default_size}, {default_size}, 3)`. {size_text}; any channel count works.
    pooling: with `include_top=False`: None returns {features_text}, "avg" /
        "max" pool over the {positions}.
    classes: number of classes of the head.
    classifier_activation: activation of the head's output ("softmax", or
        None for logits). It runs in float32 under mixed precision.
    include_preprocessing: True: the model takes RGB pixels in [0, 255] and
        normalises them inside ({preprocessing_text}). False: it takes
        already-normalised input, e.g. from
        `keras_mixer.preprocess_input(x, mode="{preprocessing}")`.
    dropout_rate: dropout rate inside every MLP of every block.
    drop_path_rate: {drop_path_text}.
    name: name of the model.
    **kwargs: any other keyword argument of `keras_mixer.{generic}`.

Returns:
    A `keras.Model`.

Example:
>>> model = keras_mixer.{function}(input_shape=({example_size}, {example_size}, 3), classes=10)
>>> tuple(model(np.zeros((2, {example_size}, {example_size}, 3))).shape)
(2, 10)
"""


_SCHEDULE_TEXT = {
    "linear": "default 'linear': 0 in the first block, rising to the rate in "
    "the last, as big_vision's Mixer; 'uniform': the rate in every block",
    "uniform": "default 'uniform': the rate in every block, as deit and timm; "
    "'linear': 0 in the first block, rising to the rate in the last",
}

# The parts of VARIANT_DOCSTRING that differ between families, as the
# patch-based families fill them; a family's `docstring_fields` override them.
_PATCH_FAMILY_TEXT = dict(
    checkpoint_text=(
        "official .npz, timm .safetensors/.pth, deit .pth, a Hugging Face\n"
        "        Hub model folder (`config.json` + `model.safetensors`) or\n"
        "        \"hf://timm/<model>\" (downloaded by huggingface_hub)"
    ),
    resize_text=(
        "; at K\n        times the checkpoint's resolution per side the token "
        "mixing grows\n        block-diagonally (MLP-Mixer paper, Appendix C)"
    ),
    size_text=(
        "Height and width must be\n        multiples of the patch size "
        "{patch_size}"
    ),
    features_text="the token table\n        `(batch, tokens, {hidden_dim})`",
    positions="tokens",
)


def make_variant(builder, config, function, default_name, docstring_fields,
                 defaults=None, size_rule=None):
    """Returns a public keras.applications-style constructor for one variant.

    The constructor only turns a weights name into `download.PresetWeights`
    (and takes the entry's GELU form and preprocessing); `builder` checks
    every argument, then fetches the file. `defaults`: keyword arguments of
    `builder` this variant defaults otherwise (a caller's value wins).
    `size_rule` (a `checks.SizeRule`; default: multiples of
    `config["patch_size"]`) becomes the constructor's `size_rule`, which
    `train` and `benchmark` check image sizes with.
    """
    defaults = dict(defaults or {})

    def constructor(
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
        name=default_name,
        **kwargs,
    ):
        weights, entry = download.resolve(function, weights)
        if entry is not None:
            kwargs.setdefault("approximate_gelu", entry["approximate_gelu"])
            kwargs.setdefault("preprocessing", entry["preprocessing"])
        for key, value in defaults.items():
            kwargs.setdefault(key, value)
        return builder(
            **config,
            include_top=include_top,
            weights=weights,
            input_tensor=input_tensor,
            input_shape=input_shape,
            pooling=pooling,
            classes=classes,
            classifier_activation=classifier_activation,
            include_preprocessing=include_preprocessing,
            dropout_rate=dropout_rate,
            drop_path_rate=drop_path_rate,
            name=name,
            **kwargs,
        )

    constructor.__name__ = constructor.__qualname__ = function
    # Read by train and benchmark to check an image size before any work.
    constructor.size_rule = size_rule or checks.SizeRule(config["patch_size"])
    parameter = inspect.signature(builder).parameters.get("drop_path_schedule")
    if parameter is None:
        drop_path_text = ("stochastic depth rate of the last block; per-block "
                          "rates\n        rise linearly from 0")
    else:
        schedule = defaults.get("drop_path_schedule", parameter.default)
        drop_path_text = (
            "stochastic depth rate; per block as `drop_path_schedule`\n"
            f"        says ({_SCHEDULE_TEXT[schedule]})")
    fields = {
        key: text.format(**config)
        for key, text in _PATCH_FAMILY_TEXT.items()
        if key not in docstring_fields
    }
    fields.update(docstring_fields, drop_path_text=drop_path_text)
    constructor.__doc__ = VARIANT_DOCSTRING.format(
        function=function, generic=builder.__name__, **config, **fields
    )
    return constructor

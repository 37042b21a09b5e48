"""What MLP-Mixer and ResMLP share: inputs, preprocessing, head, features.

The models are Keras functional models assembled by `build_model` with the
argument checks of `keras.applications` (same names, same order), so a user of
`keras.applications.ResNet50` finds the same constructor.
"""

import os

import numpy as np

import keras
from keras import ops

from keras_mixer import layers as mixer_layers

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


def preprocessing_constants(mode, channels=3):
    """Returns `(mean, std)` of `mode` for images with `channels` channels.

    Per-channel constants (mode "torch") are given for RGB. For another number
    of channels (grayscale data) every channel gets the average of the three.
    """
    if mode not in PREPROCESSING_MODES:
        raise ValueError(
            f"Unknown preprocessing mode {mode!r}. Use one of "
            f"{sorted(PREPROCESSING_MODES)}: 'tf' maps [0, 255] to [-1, 1] "
            "(MLP-Mixer), 'torch' subtracts the ImageNet mean and divides by "
            "its std (ResMLP), 'zero_one' maps to [0, 1]."
        )
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
    channels = int(np.shape(x)[-1])
    mean, std = preprocessing_constants(mode, channels)
    mean = np.asarray(mean, "float32")
    std = np.asarray(std, "float32")
    if isinstance(x, (np.ndarray, list, tuple, float, int)):
        x = np.asarray(x, "float32")
        return (x / np.float32(255.0) - mean) / std
    x = ops.cast(x, "float32")
    return (x / 255.0 - mean) / std


def head_dtype():
    """The dtype policy of the pooling, head and softmax: float32 under a
    mixed-precision policy (numerically safe logits), else the global one."""
    policy = keras.config.dtype_policy()
    if policy.compute_dtype in ("float16", "bfloat16"):
        return "float32"
    return None


def _check_positive_int(name, value):
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool):
        raise ValueError(f"`{name}` must be a positive integer, got {value!r}.")
    if value <= 0:
        raise ValueError(f"`{name}` must be a positive integer, got {value!r}.")


def resolve_input_shape(input_tensor, input_shape, patch_size, default_size):
    """Checks the input arguments and returns the `(H, W, C)` input shape."""
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
        if size % patch_size:
            lower = max(patch_size, size // patch_size * patch_size)
            raise ValueError(
                f"Input {axis} {size} is not a multiple of the patch size "
                f"{patch_size}. Resize or crop the images so that both sides "
                f"are multiples of {patch_size} (e.g. {lower} or "
                f"{lower + patch_size})."
            )
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
        _check_positive_int("classes", classes)
        try:
            keras.activations.get(activation)
        except ValueError as error:
            raise ValueError(
                f"Unknown `classifier_activation` {activation!r}: {error} Use "
                "'softmax', None (logits) or another Keras activation."
            ) from None


def build_model(
    *,
    trunk,
    pre_head_norm,
    patch_size,
    hidden_dim,
    include_top,
    weights,
    input_tensor,
    input_shape,
    pooling,
    classes,
    classifier_activation,
    include_preprocessing,
    preprocessing,
    head_dropout_rate,
    default_size,
    name,
):
    """Assembles a classifier or backbone around `trunk`.

    Args:
        trunk: callable mapping the token table after the stem to the token
            table after the last block.
        pre_head_norm: the normalisation layer named "pre_head_norm".
        (the rest: see the public constructors.)
    """
    check_head_arguments(include_top, pooling, classes, classifier_activation)
    _check_positive_int("patch_size", patch_size)
    _check_positive_int("hidden_dim", hidden_dim)
    if not 0.0 <= head_dropout_rate < 1.0:
        raise ValueError(
            f"`head_dropout_rate` must be in [0, 1), got {head_dropout_rate!r}."
        )
    shape = resolve_input_shape(
        input_tensor, input_shape, patch_size, default_size
    )
    if input_tensor is None:
        inputs = keras.Input(shape=shape, name="images")
        x = inputs
    else:
        inputs = keras.utils.get_source_inputs(input_tensor)
        inputs = inputs[0] if len(inputs) == 1 else inputs
        x = input_tensor
    if include_preprocessing:
        mean, std = preprocessing_constants(preprocessing, shape[-1])
        x = mixer_layers.Normalize(mean, std, name="preprocessing")(x)
    x = mixer_layers.PatchEmbedding(patch_size, hidden_dim, name="stem")(x)
    x = trunk(x)
    x = pre_head_norm(x)
    if include_top or pooling == "avg":
        x = keras.layers.GlobalAveragePooling1D(
            dtype=head_dtype(), name="avg_pool"
        )(x)
    elif pooling == "max":
        x = keras.layers.GlobalMaxPooling1D(
            dtype=head_dtype(), name="max_pool"
        )(x)
    if include_top:
        if head_dropout_rate > 0:
            x = keras.layers.Dropout(
                head_dropout_rate, dtype=head_dtype(), name="head_dropout"
            )(x)
        x = keras.layers.Dense(
            classes,
            kernel_initializer="zeros",
            dtype=head_dtype(),
            name="head",
        )(x)
        x = keras.layers.Activation(
            classifier_activation, dtype=head_dtype(), name="predictions"
        )(x)
    model = keras.Model(inputs, x, name=name)
    if weights is not None:
        from keras_mixer import weights as weights_lib

        weights_lib.assign_or_load(model, weights)
    return model


def read_weights(weights):
    """Reads the `weights` of a generic builder before the model is built.

    Returns None, the path of a `.weights.h5` file, or a
    `keras_mixer.convert.Checkpoint` (official .npz, timm, deit files).
    """
    if weights is None:
        return None
    if isinstance(weights, os.PathLike):
        weights = os.fspath(weights)
    if not isinstance(weights, str) or not os.path.exists(weights):
        raise ValueError(
            f"`weights` {weights!r} is not an existing file. The generic "
            "builders take None or a file path (an official .npz, a timm "
            ".safetensors/.pth, a deit .pth or a .weights.h5); weights names "
            "such as 'imagenet1k' belong to the named variants, e.g. "
            "keras_mixer.MixerB16(weights='imagenet1k')."
        )
    if weights.endswith(".weights.h5"):
        return weights
    from keras_mixer import convert

    checkpoint = convert.read_checkpoint(weights)
    checkpoint.origin = weights
    return checkpoint


def grown_tokens_mlp_dim(checkpoint, tokens_mlp_dim, patch_size, shape):
    """The token-mixing hidden width of a Mixer built at `shape` from
    `checkpoint`: K_h * K_w * D_S when the patch grid is K_h x K_w times the
    checkpoint's (paper Appendix C), else unchanged."""
    from keras_mixer import resize

    if (
        checkpoint is None
        or isinstance(checkpoint, str)
        or checkpoint.family != "mixer"
        or checkpoint.patch_size != patch_size
    ):
        return tokens_mlp_dim
    grid = (shape[0] // patch_size, shape[1] // patch_size)
    old = checkpoint.grid or resize.checkpoint_grid(
        checkpoint.num_tokens, checkpoint.origin
    )
    kh, kw = resize.factors(old, grid)
    return tokens_mlp_dim * kh * kw


def stochastic_depth_rates(drop_path_rate, num_blocks):
    """Per-block stochastic depth rates rising linearly from 0 to the rate."""
    if not 0.0 <= drop_path_rate < 1.0:
        raise ValueError(
            f"`drop_path_rate` must be in [0, 1), got {drop_path_rate!r}."
        )
    if num_blocks == 1:
        return [0.0]
    return [float(r) for r in np.linspace(0.0, drop_path_rate, num_blocks)]


def block_names(model):
    """The names of the model's blocks, `block_0`, `block_1`, ... in order."""
    names = [layer.name for layer in model.layers]
    blocks = [n for n in names if n.startswith("block_")]
    return sorted(blocks, key=lambda n: int(n.split("_")[1]))


def feature_extractor(model, layer_names=None):
    """A model with the same inputs that returns intermediate token tables.

    Args:
        model: a keras_mixer model (with or without its top).
        layer_names: names of layers whose outputs to return; by default the
            stem, every block and the pre-head norm.

    Returns:
        A `keras.Model` whose output is a dict `{layer name: tensor}`; each
        tensor has shape `(batch, tokens, hidden_dim)`, tokens in raster order
        (reshape to `(batch, H / patch, W / patch, hidden_dim)` for dense tasks).

    Example:
    >>> model = keras_mixer.MixerS32(input_shape=(64, 64, 3))
    >>> features = keras_mixer.feature_extractor(model)
    >>> outputs = features(np.zeros((1, 64, 64, 3)))
    >>> tuple(outputs["block_7"].shape)
    (1, 4, 512)
    """
    if layer_names is None:
        layer_names = ["stem", *block_names(model), "pre_head_norm"]
    missing = [n for n in layer_names if n not in {l.name for l in model.layers}]
    if missing:
        raise ValueError(
            f"Model {model.name!r} has no layers named {missing}. Its layers "
            f"are {[l.name for l in model.layers]}."
        )
    outputs = {n: model.get_layer(n).output for n in layer_names}
    return keras.Model(model.input, outputs, name=f"{model.name}_features")


def count_flops(model):
    """Multiply-add FLOPs (2 per multiply-accumulate) of one image's forward
    pass, counted analytically from the matmuls of the stem, the blocks and
    the head; element-wise work (norms, GELU, residuals) is not counted."""
    macs = 0
    for layer in model.layers:
        if isinstance(layer, mixer_layers.PatchEmbedding):
            _, h, w, c = layer.input.shape
            tokens = (h // layer.patch_size) * (w // layer.patch_size)
            macs += tokens * layer.patch_size**2 * c * layer.hidden_dim
        elif isinstance(layer, mixer_layers.MixerBlock):
            _, tokens, dim = layer.input.shape
            macs += 2 * tokens * layer.tokens_mlp_dim * dim
            macs += 2 * tokens * dim * layer.channels_mlp_dim
        elif isinstance(layer, mixer_layers.ResMLPBlock):
            _, tokens, dim = layer.input.shape
            macs += tokens * tokens * dim
            macs += 2 * tokens * dim * int(layer.mlp_ratio * dim)
        elif isinstance(layer, keras.layers.Dense):
            macs += int(np.prod(layer.kernel.shape))
    return 2 * macs


VARIANT_DOCSTRING = """Builds {title}, a {family} model of {paper}.

{description}

Reference: {reference}

Args:
    include_top: whether to end with the classifier (global average pooling
        and a dense head of `classes` units). False ends at the pre-head norm.
    weights: None (random initialisation, the default: several pretrained
        weight sets exist and none is fetched silently), a name from
        `keras_mixer.list_weights("{function}")`, or the path of a checkpoint
        (official .npz, timm .safetensors/.pth, deit .pth, or a `.weights.h5`
        saved from keras_mixer). With `include_top=False` or another number
        of `classes` all but the head are loaded and the head is fresh; at K
        times the checkpoint's resolution per side the token mixing grows
        block-diagonally (MLP-Mixer paper, Appendix C).
    input_tensor: optional symbolic tensor (from `keras.Input`) to use as the
        model's input.
    input_shape: `(height, width, channels)`, default
        `({default_size}, {default_size}, 3)`. Height and width must be
        multiples of the patch size {patch_size}; any channel count works.
    pooling: with `include_top=False`: None returns the token table
        `(batch, tokens, {hidden_dim})`, "avg" / "max" pool over the tokens.
    classes: number of classes of the head.
    classifier_activation: activation of the head's output ("softmax", or
        None for logits). It runs in float32 under mixed precision.
    include_preprocessing: True: the model takes RGB pixels in [0, 255] and
        normalises them inside ({preprocessing_text}). False: it takes
        already-normalised input, e.g. from
        `keras_mixer.preprocess_input(x, mode="{preprocessing}")`.
    dropout_rate: dropout rate inside every MLP of every block.
    drop_path_rate: stochastic depth rate of the last block; per-block rates
        rise linearly from 0.
    name: name of the model.
    **kwargs: any other keyword argument of `keras_mixer.{generic}`.

Returns:
    A `keras.Model`.

Example:
>>> model = keras_mixer.{function}(input_shape=({example_size}, {example_size}, 3), classes=10)
>>> tuple(model(np.zeros((2, {example_size}, {example_size}, 3))).shape)
(2, 10)
"""


def make_variant(builder, config, function, default_name, docstring_fields):
    """Returns a public keras.applications-style constructor for one variant."""

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
        from keras_mixer import weights as weights_lib

        # Cheap checks first, then any download.
        check_head_arguments(include_top, pooling, classes, classifier_activation)
        resolve_input_shape(
            input_tensor, input_shape, config["patch_size"], 224
        )
        path, entry = weights_lib.resolve(function, weights)
        if entry is not None:
            kwargs.setdefault("approximate_gelu", entry["approximate_gelu"])
            kwargs.setdefault("preprocessing", entry["preprocessing"])
        return builder(
            **config,
            include_top=include_top,
            weights=path,
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
    constructor.patch_size = config["patch_size"]
    constructor.__doc__ = VARIANT_DOCSTRING.format(
        function=function, generic=builder.__name__, **config, **docstring_fields
    )
    return constructor

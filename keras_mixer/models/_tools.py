"""Operations on a built keras_mixer model: its family, intermediate and
pre-logits features, FLOPs, and the Appendix C resize to a larger input."""

import re

import numpy as np

import keras

from keras_mixer import checks
from keras_mixer.checkpoints import Checkpoint
from keras_mixer.checkpoints import assign
from keras_mixer.checkpoints import resize
from keras_mixer.models import _builder


def model_family(model):
    """The family of a keras_mixer model ("mixer", "resmlp", "gmlp",
    "convmixer"), from its blocks."""
    for layer in model.layers:
        family = getattr(layer, "family", None)
        if family is not None:
            return family
    raise ValueError(f"{model.name!r} is not a keras_mixer model (no blocks).")


def block_names(model):
    """The names of the model's blocks, `block_0`, `block_1`, ... in order."""
    names = [layer.name for layer in model.layers]
    blocks = [n for n in names if n.startswith("block_")]
    return sorted(blocks, key=lambda n: int(n.split("_")[1]))


def stage_outputs(model):
    """`{"stage_0": name of the stage's last block, ...}` of a pyramid model
    (CycleMLP, Vision Permutator: blocks named `stage_{s}_block_{j}`); empty
    for the other families."""
    last = {}
    for layer in model.layers:
        match = re.fullmatch(r"stage_(\d+)_block_(\d+)", layer.name)
        if match:
            stage, block = int(match.group(1)), int(match.group(2))
            if block >= last.get(stage, (-1, None))[0]:
                last[stage] = (block, layer.name)
    return {f"stage_{s}": last[s][1] for s in sorted(last)}


def feature_extractor(model, layer_names=None):
    """A model with the same inputs that returns intermediate features.

    Args:
        model: a keras_mixer model (with or without its top).
        layer_names: names of layers whose outputs to return. By default,
            for the pyramid families (CycleMLP, Vision Permutator) the output
            of every stage, keyed `stage_0`, `stage_1`, ...: maps
            `(batch, H / stride, W / stride, channels)` (CycleMLP: strides 4,
            8, 16, 32), before any norm, for dense prediction; for the other
            families the stem, every block and the pre-head norm (where the
            family has one).

    Returns:
        A `keras.Model` whose output is a dict `{name: tensor}`. For MLP-Mixer,
        ResMLP, gMLP and gMixer each tensor has shape `(batch, tokens,
        hidden_dim)`, tokens in raster order (reshape to `(batch, H / patch,
        W / patch, hidden_dim)` for dense tasks); for ConvMixer the maps
        `(batch, H / patch, W / patch, hidden_dim)` themselves.

    Example:
    >>> model = keras_mixer.MixerS32(input_shape=(64, 64, 3))
    >>> features = keras_mixer.feature_extractor(model)
    >>> outputs = features(np.zeros((1, 64, 64, 3)))
    >>> tuple(outputs["block_7"].shape)
    (1, 4, 512)
    """
    stages = stage_outputs(model)
    if layer_names is None and stages:
        outputs = {k: model.get_layer(n).output for k, n in stages.items()}
        return keras.Model(model.input, outputs, name=f"{model.name}_features")
    names = {layer.name for layer in model.layers}
    if layer_names is None:
        layer_names = ["stem", *block_names(model)]
        layer_names += ["pre_head_norm"] if "pre_head_norm" in names else []
    missing = [n for n in layer_names if n not in names]
    if missing:
        raise ValueError(
            f"Model {model.name!r} has no layers named {missing}. Its layers "
            f"are {[l.name for l in model.layers]}."
        )
    outputs = {n: model.get_layer(n).output for n in layer_names}
    return keras.Model(model.input, outputs, name=f"{model.name}_features")


def count_flops(model):
    """Multiply-add FLOPs (2 per multiply-accumulate) of one image's forward
    pass, counted analytically from the matmuls: each layer with a
    `count_macs` method (the stem, the blocks) reports its own, a Keras
    `Dense` (the head) its kernel per position; element-wise work (norms,
    GELU, residuals) is not counted."""
    macs = 0
    for layer in model.layers:
        if hasattr(layer, "count_macs"):
            macs += layer.count_macs(tuple(layer.input.shape))
        elif isinstance(layer, keras.layers.Dense):
            positions = int(np.prod(layer.input.shape[1:-1]))
            macs += positions * int(np.prod(layer.kernel.shape))
    return 2 * macs


def resize_token_mixing(model, new_input_shape):
    """A copy of `model` at a larger input size with block-diagonally grown
    token mixing (paper Appendix C); every other weight is copied.

    Args:
        model: a keras_mixer MLP-Mixer or ResMLP model.
        new_input_shape: `(height, width, channels)`; each side's patch grid
            must be an integer multiple of the model's.

    Returns:
        A new `keras.Model`. For Mixer, each block's `tokens_mlp_dim` is
        multiplied by K_h * K_w.

    Example:
    >>> small = keras_mixer.MixerS32(input_shape=(64, 64, 3), classes=10)
    >>> large = keras_mixer.resize_token_mixing(small, (128, 128, 3))
    >>> large.get_layer("block_0").tokens_mlp_dim
    1024
    """
    new_input_shape = tuple(int(s) for s in new_input_shape)
    if not _builder.grid_growth(model)["token_axes"]:
        raise ValueError(
            f"{model.name} ({model_family(model)}) has no token-mixing weights "
            "sized by the input, so there is nothing to grow: build the model "
            "at the new size and copy the weights (model.get_weights()), or "
            "pass the same weights= file."
        )
    stem = model.get_layer("stem")
    if new_input_shape[-1] != stem.input.shape[-1]:
        raise ValueError(
            f"The model takes {stem.input.shape[-1]} channels; the new input "
            f"shape {new_input_shape} has {new_input_shape[-1]}."
        )
    for side, size in zip(("height", "width"), new_input_shape[:2]):
        checks.check_patch_multiple(f"New input {side}", size, stem.patch_size)
    old_grid = _builder.patch_grid(model)
    new_grid = tuple(s // stem.patch_size for s in new_input_shape[:2])
    kh, kw = resize.factors(old_grid, new_grid)
    config = model.get_config()
    for layer in config["layers"]:
        # Layers are rebuilt on the new shapes, not the recorded ones.
        layer.pop("build_config", None)
        if layer["class_name"] == "InputLayer":
            layer["config"]["batch_shape"] = [None, *new_input_shape]
            continue
        grown_config = getattr(model.get_layer(layer["name"]), "grown_config", None)
        if grown_config is not None:
            layer["config"] = grown_config(kh * kw)
    resized = keras.Model.from_config(config)
    checkpoint = Checkpoint(
        tensors={v.path: np.asarray(v) for v in model.weights},
        family=model_family(model),
        source="keras",
        approximate_gelu=None,
        grid=old_grid,
        origin=model.name,
    )
    assign.assign_checkpoint(resized, checkpoint, **_builder.grid_growth(resized))
    return resized


def prelogits_model(model):
    """A model from `model`'s input to its pooled pre-logits features."""
    for name in ("avg_pool", "max_pool"):
        try:
            layer = model.get_layer(name)
        except ValueError:
            continue
        return keras.Model(model.input, layer.output, name="prelogits")
    raise ValueError(
        f"Model {model.name!r} has no 'avg_pool' or 'max_pool' layer: give a "
        "keras_mixer classifier (or a model built with pooling='avg')."
    )

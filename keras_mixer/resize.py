"""Fine-tuning at a higher resolution: MLP-Mixer paper, Appendix C.

At K times the pre-training resolution per side, the patch grid grows from
g x g to Kg x Kg and the token-mixing MLP must take K^2 times as many tokens.
The paper grows its hidden width D_S to K^2 D_S and initialises it
block-diagonally with copies of the pretrained weights, so that each of the
K x K spatial parts of the image goes through the pretrained MLP on its own.
ResMLP's cross-patch linear layer (tokens x tokens) grows the same way.

Tokens are in raster order over the whole image, so the tokens of one part are
not contiguous: the blocks are placed through an index map (a permutation),
not on the diagonal itself. With these weights, an image made of K x K tiled
copies of an image gives exactly the logits of the original model on it.
Height and width may grow by different integer factors.
"""

import math

import numpy as np

import keras


def checkpoint_grid(num_tokens, origin="checkpoint"):
    """The side g of a checkpoint's square patch grid of `num_tokens`."""
    side = math.isqrt(num_tokens)
    if side * side != num_tokens:
        raise ValueError(
            f"{origin} mixes {num_tokens} tokens, not a square grid; "
            "keras_mixer resizes checkpoints trained on square images only."
        )
    return side, side


def model_grid(model):
    """The patch grid `(rows, cols)` of a keras_mixer model."""
    stem = model.get_layer("stem")
    _, height, width, _ = stem.input.shape
    return height // stem.patch_size, width // stem.patch_size


def factors(old_grid, new_grid):
    """Integer growth factors `(K_h, K_w)` from `old_grid` to `new_grid`."""
    (gh, gw), (nh, nw) = old_grid, new_grid
    if nh % gh or nw % gw:
        raise ValueError(
            f"Cannot resize the token mixing from a {gh}x{gw} patch grid to "
            f"{nh}x{nw}: each side must grow by an integer factor K (paper "
            "Appendix C: the new image is K x K parts of the old size). With "
            f"this checkpoint, use input sides that are multiples of "
            f"{gh} patches, e.g. {gh * 2}x{gw * 2} patches."
        )
    return nh // gh, nw // gw


def token_index_map(old_grid, new_grid):
    """For each token of `new_grid` (raster order), its part and its token
    index within the part's `old_grid`: two int arrays of length rows*cols."""
    (gh, gw), (nh, nw) = old_grid, new_grid
    kh, kw = factors(old_grid, new_grid)
    rows, cols = np.divmod(np.arange(nh * nw), nw)
    part = (rows // gh) * kw + cols // gw
    local = (rows % gh) * gw + cols % gw
    return part, local


def is_token_mixing(path):
    return "/token_mixing/" in path or "/cross_patch/" in path


def expand(path, value, old_grid, new_grid):
    """Grows one token-mixing tensor (by its variable path) block-diagonally."""
    part, local = token_index_map(old_grid, new_grid)
    parts = int(part.max()) + 1
    tokens = len(part)
    value = np.asarray(value)
    if path.endswith("token_mixing/fc1/kernel"):  # (T, D_S)
        width = value.shape[1]
        out = np.zeros((tokens, parts * width), value.dtype)
        for p in range(parts):
            rows = np.flatnonzero(part == p)
            out[rows, p * width : (p + 1) * width] = value[local[rows]]
        return out
    if path.endswith("token_mixing/fc1/bias"):  # (D_S,)
        return np.tile(value, parts)
    if path.endswith("token_mixing/fc2/kernel"):  # (D_S, T)
        width = value.shape[0]
        out = np.zeros((parts * width, tokens), value.dtype)
        for p in range(parts):
            cols = np.flatnonzero(part == p)
            out[p * width : (p + 1) * width, cols] = value[:, local[cols]]
        return out
    if path.endswith("cross_patch/kernel"):  # (T, T)
        out = np.zeros((tokens, tokens), value.dtype)
        for p in range(parts):
            idx = np.flatnonzero(part == p)
            out[np.ix_(idx, idx)] = value[np.ix_(local[idx], local[idx])]
        return out
    if path.endswith(("token_mixing/fc2/bias", "cross_patch/bias")):  # (T,)
        return value[local]
    raise ValueError(f"Not a token-mixing tensor: {path!r}.")


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
    from keras_mixer import convert
    from keras_mixer import weights as weights_lib

    new_input_shape = tuple(int(s) for s in new_input_shape)
    old_grid = model_grid(model)
    stem = model.get_layer("stem")
    if new_input_shape[-1] != stem.input.shape[-1]:
        raise ValueError(
            f"The model takes {stem.input.shape[-1]} channels; the new input "
            f"shape {new_input_shape} has {new_input_shape[-1]}."
        )
    for side in new_input_shape[:2]:
        if side % stem.patch_size:
            raise ValueError(
                f"New input side {side} is not a multiple of the patch size "
                f"{stem.patch_size}."
            )
    new_grid = tuple(s // stem.patch_size for s in new_input_shape[:2])
    kh, kw = factors(old_grid, new_grid)
    config = model.get_config()
    for layer in config["layers"]:
        # Layers are rebuilt on the new shapes, not the recorded ones.
        layer.pop("build_config", None)
        if layer["class_name"] == "InputLayer":
            layer["config"]["batch_shape"] = [None, *new_input_shape]
        if layer["class_name"] == "MixerBlock":
            layer["config"]["tokens_mlp_dim"] *= kh * kw
    resized = keras.Model.from_config(config)
    checkpoint = convert.Checkpoint(
        tensors={v.path: np.asarray(v) for v in model.weights},
        family=weights_lib.model_family(model),
        source="keras",
        approximate_gelu=None,
        grid=old_grid,
    )
    weights_lib.assign_checkpoint(resized, checkpoint, origin=model.name)
    return resized

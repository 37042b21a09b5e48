"""Fine-tuning at a higher resolution: MLP-Mixer paper, Appendix C.

At K times the pre-training resolution per side, the patch grid grows from
g x g to Kg x Kg and the token-mixing weights must take K^2 times as many
tokens. The paper grows the token MLP's hidden width D_S to K^2 D_S and
initialises it block-diagonally with copies of the pretrained weights, so that
each of the K x K spatial parts of the image goes through the pretrained MLP
on its own. ResMLP's cross-patch linear layer (tokens x tokens) grows the same
way.

Tokens are in raster order over the whole image, so the tokens of one part are
not contiguous: the blocks are placed through an index map (a permutation),
not on the diagonal itself. With these weights, an image made of K x K tiled
copies of an image gives exactly the logits of the original model on it.
Height and width may grow by different integer factors.

What grows is described per axis of each tensor, by the block that owns it
(its `token_axes`): `TOKENS`, an axis over the patches; `HIDDEN`, a width that
grows with the number of parts; `GATED`, a hidden width made of a value half
then a gate half (a GLU's fc1, split by position), each half growing with the
parts so that all values still come before all gates; None, an axis that
keeps its size.
"""

import math

import numpy as np

TOKENS = "tokens"
HIDDEN = "hidden"
GATED = "gated"


def checkpoint_grid(num_tokens, origin="checkpoint"):
    """The side g of a checkpoint's square patch grid of `num_tokens`."""
    side = math.isqrt(num_tokens)
    if side * side != num_tokens:
        raise ValueError(
            f"{origin} mixes {num_tokens} tokens, not a square grid; "
            "keras_mixer resizes checkpoints trained on square images only."
        )
    return side, side


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
    _, kw = factors(old_grid, new_grid)
    rows, cols = np.divmod(np.arange(nh * nw), nw)
    part = (rows // gh) * kw + cols // gw
    local = (rows % gh) * gw + cols % gw
    return part, local


def expand(value, axes, old_grid, new_grid):
    """Grows one token-mixing tensor block-diagonally.

    Args:
        value: the tensor trained on `old_grid`.
        axes: the role of each axis of `value`: `TOKENS`, `HIDDEN`, `GATED`
            or None.
        old_grid, new_grid: patch grids `(rows, cols)`.

    Returns:
        The tensor for `new_grid`: entry `[i, j, ...]` is the pretrained
        entry of the tokens' and units' positions within their part when all
        of them belong to the same part, else 0.
    """
    value = np.asarray(value)
    if len(axes) != value.ndim:
        raise ValueError(
            f"{len(axes)} axis roles {axes} for a tensor of shape {value.shape}."
        )
    part, local = token_index_map(old_grid, new_grid)
    parts = int(part.max()) + 1
    index, owner = [], []  # per axis: source position, and its part (or None)
    for size, role in zip(value.shape, axes):
        if role == TOKENS:
            index.append(local)
            owner.append(part)
        elif role == HIDDEN:
            position = np.arange(parts * size)
            index.append(position % size)
            owner.append(position // size)
        elif role == GATED:
            # [values of part 0 .. parts-1 | gates of part 0 .. parts-1]
            half = size // 2
            half_of, within = np.divmod(np.arange(parts * size), parts * half)
            index.append(half_of * half + within % half)
            owner.append(within // half)
        else:
            index.append(np.arange(size))
            owner.append(None)
    out = value[np.ix_(*index)]
    owned = [
        o.reshape([-1 if a == axis else 1 for a in range(value.ndim)])
        for axis, o in enumerate(owner)
        if o is not None
    ]
    keep = np.ones(out.shape, bool)
    for first, second in zip(owned, owned[1:]):
        keep &= first == second
    return np.where(keep, out, 0).astype(value.dtype)

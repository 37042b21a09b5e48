"""A `Checkpoint` into a model's variables, exactly, by variable path.

The model's variables are the one description of the shapes a checkpoint
must have: every variable is looked up by its path and compared with the
tensor found there, and every tensor must be used. Two departures are
allowed, each logged or described: the head, skipped when the model has none
or another number of classes; and the token-mixing tensors named in
`token_axes`, grown block-diagonally when the model's patch grid is an
integer multiple of the checkpoint's (`keras_mixer.checkpoints.resize`).
NaN and Inf values are refused, naming the tensor.
"""

import logging

import numpy as np

import keras

from keras_mixer.checkpoints import resize
from keras_mixer.checkpoints._plan import HEAD_KEYS

logger = logging.getLogger("keras_mixer")


def check_finite(tensors, origin):
    """Refuses NaN or Inf values: `tensors` is a model (its weights) or a
    {name: array} dict. The ValueError names the first such tensor."""
    if hasattr(tensors, "weights"):
        items = ((v.path, v) for v in tensors.weights)
    else:
        items = tensors.items()
    for name, value in items:
        array = np.asarray(keras.ops.convert_to_numpy(value))
        if not np.issubdtype(array.dtype, np.floating):
            continue
        finite = np.isfinite(array)
        if not finite.all():
            raise ValueError(
                f"{origin}: tensor {name!r} holds {array.size - finite.sum()} "
                f"NaN/Inf value(s) of {array.size}; refused. The file is "
                "damaged or comes from a run that diverged: use another "
                "checkpoint (e.g. best.keras, or an earlier one)."
            )


def _skip_head(model, checkpoint):
    """Whether the checkpoint's head stays out of `model`; logs why."""
    has_head = any(v.path in HEAD_KEYS for v in model.weights)
    if not has_head and set(HEAD_KEYS) & set(checkpoint.tensors):
        logger.warning(
            "%s: the model has no head (include_top=False); the checkpoint's "
            "%d-class head was not loaded.", model.name, checkpoint.num_classes
        )
        return True
    if has_head and "head/kernel" not in checkpoint.tensors:
        logger.warning(
            "%s: the checkpoint has no head (e.g. self-supervised weights); "
            "the head is fresh (zero-initialised).", model.name
        )
        return True
    if has_head:
        classes = int(model.get_layer("head").kernel.shape[-1])
        if classes != checkpoint.num_classes:
            logger.warning(
                "%s: the checkpoint's head has %d classes, the model %d; all "
                "weights but the head were loaded and the head is fresh "
                "(zero-initialised, as the paper fine-tunes).",
                model.name, checkpoint.num_classes, classes,
            )
            return True
    return False


def _trained_grid(checkpoint, token_axes):
    """The patch grid of the checkpoint's training resolution: its `grid`,
    or the square of the tokens of its first token-mixing tensor."""
    if checkpoint.grid:
        return checkpoint.grid
    for path, axes in token_axes.items():
        if path in checkpoint.tensors and resize.TOKENS in axes:
            tokens = checkpoint.tensors[path].shape[axes.index(resize.TOKENS)]
            return resize.checkpoint_grid(tokens, checkpoint.origin)
    raise ValueError(f"{checkpoint.origin} has no token-mixing tensor.")


def assign_checkpoint(model, checkpoint, grid=None, token_axes=None):
    """Assigns `checkpoint.tensors` to `model`'s variables, exactly.

    Args:
        model: a built keras model.
        checkpoint: a `keras_mixer.checkpoints.Checkpoint`.
        grid: the model's patch grid `(rows, cols)`; needed only to grow
            token mixing.
        token_axes: {variable path: role of each axis} of the variables that
            grow with the patch grid (see `resize.expand`); the blocks of
            `keras_mixer.models` declare theirs.

    Raises:
        ValueError: naming the first missing or mismatched tensor with the
            expected and found shapes, or the tensors left unused.
    """
    origin = checkpoint.origin
    token_axes = token_axes or {}
    tensors = dict(checkpoint.tensors)
    skip_head = _skip_head(model, checkpoint)
    if skip_head:
        for path in HEAD_KEYS:
            tensors.pop(path, None)
    # Every name and shape first, against the variables; nothing is read yet
    # where the tensors are lazy (an .npz's arrays decompress below).
    planned = []
    for variable in model.weights:
        path = variable.path
        if skip_head and path in HEAD_KEYS:
            continue
        expected = tuple(variable.shape)
        if path not in tensors:
            raise ValueError(
                f"{origin} has no tensor for {path!r} (expected shape "
                f"{expected}): it is a checkpoint of another architecture or "
                "a truncated file."
            )
        value = tensors.pop(path)
        grows = (value.shape != expected and path in token_axes
                 and grid is not None and _divides(value.shape, expected))
        if value.shape != expected and not grows:
            raise _mismatch(checkpoint, path, value.shape, expected)
        planned.append((variable, value, grows))
    if tensors:
        extra = sorted(tensors)
        raise ValueError(
            f"{origin} has {len(extra)} tensors the model does not use, e.g. "
            f"{extra[:3]}: it is a checkpoint of another architecture (e.g. "
            "more blocks)."
        )
    # Then one tensor at a time: read, check, grow, assign.
    for variable, value, grows in planned:
        path, expected = variable.path, tuple(variable.shape)
        value = np.asarray(value)
        check_finite({path: value}, origin)
        if grows:
            old_grid = _trained_grid(checkpoint, token_axes)
            value = resize.expand(value, token_axes[path], old_grid, grid)
            if value.shape != expected:
                raise _mismatch(checkpoint, path, value.shape, expected)
        variable.assign(value.astype(variable.dtype))


def _divides(found, expected):
    """Whether each side of `found` divides the same side of `expected` (a
    tensor that can grow into the variable)."""
    return len(found) == len(expected) and all(
        f and e % f == 0 for f, e in zip(found, expected))


def _mismatch(checkpoint, path, found, expected):
    key = checkpoint.source_keys.get(path)
    found_as = f" (source key {key!r})" if key else ""
    return ValueError(
        f"{checkpoint.origin}: tensor {path!r}{found_as} has shape "
        f"{tuple(found)}, the model expects {expected}: the checkpoint is of "
        "another architecture (size, patch or depth)."
    )

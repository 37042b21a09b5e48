"""Helpers shared by the checkpoint converters (private).

A converter builds a *plan*: for every source key it expects, the Keras
variable path it becomes and the function that brings the array to Keras
layout. `apply_plan` checks the source dict against the plan (unknown keys,
missing keys, a half-present head) and `check_shapes` checks the converted
tensors against each other, so that a checkpoint of another architecture fails
with a message naming keys rather than deep inside Keras.
"""

import re

import numpy as np

HEAD_KEYS = ("head/kernel", "head/bias")


def format_keys(keys, limit=8):
    """`['a', 'b', ...] and N more` for error messages."""
    keys = sorted(keys)
    shown = ", ".join(repr(k) for k in keys[:limit])
    if len(keys) > limit:
        shown += f", ... and {len(keys) - limit} more"
    return f"[{shown}]"


def guess_architecture(keys):
    """A short description of what a checkpoint with `keys` looks like, for
    error messages; None when nothing is recognised."""
    keys = list(keys)
    joined = "\n".join(keys)

    def has(pattern):
        return re.search(pattern, joined, re.MULTILINE) is not None

    if has(r"(^|/)Transformer/") or has(r"(^|/)encoderblock_\d+/"):
        return "a Vision Transformer (ViT, Flax layout)"
    if has(r"(^|\.)(cls_token|pos_embed|dist_token)$") or has(r"\.attn\.qkv\."):
        return "a Vision Transformer (ViT/DeiT, PyTorch layout)"
    if has(r"(^|/)MixerBlock_\d+/"):
        return "an MLP-Mixer in Flax layout (Google's official .npz)"
    if has(r"^blocks\.\d+\.mlp_tokens\."):
        return "an MLP-Mixer in timm layout"
    if has(r"^blocks\.\d+\.linear_tokens\."):
        return "a ResMLP in timm layout"
    if has(r"^blocks\.\d+\.attn\.weight$") and has(r"^blocks\.\d+\.gamma_1$"):
        return "a ResMLP in deit layout"
    if has(r"\.mlp_channels\.gate\.") or has(r"\.gate\.proj\."):
        return "a gMLP (timm), which keras_mixer does not implement"
    if has(r"^(layer\d|conv1|bn1)\.") or has(r"(^|/)(block\d+|conv_root)/"):
        return "a convolutional network (ResNet-like)"
    return None


def wrong_architecture_hint(keys):
    guess = guess_architecture(keys)
    return f" It looks like {guess}." if guess else ""


def block_indices(keys, pattern):
    """Sorted integer indices captured by `pattern` (one group) in `keys`."""
    regex = re.compile(pattern)
    found = set()
    for key in keys:
        match = regex.match(key)
        if match:
            found.add(int(match.group(1)))
    return sorted(found)


def identity(array):
    return array


def linear(array):
    """torch.nn.Linear weight (out, in) -> Keras kernel (in, out)."""
    if array.ndim != 2:
        raise ValueError(f"expected a 2-D linear weight, got shape {array.shape}")
    return array.T


def conv_oihw_to_hwio(array):
    """torch.nn.Conv2d weight (out, in, h, w) -> Keras kernel (h, w, in, out)."""
    if array.ndim != 4:
        raise ValueError(f"expected a 4-D conv weight, got shape {array.shape}")
    return array.transpose(2, 3, 1, 0)


def vector(array):
    """(1, 1, D) or (D,) -> (D,); any other shape is an error."""
    if array.ndim == 0 or any(d != 1 for d in array.shape[:-1]):
        raise ValueError(f"expected a per-channel vector, got shape {array.shape}")
    return array.reshape(array.shape[-1])


def as_float32(array):
    array = np.asarray(array)
    if not np.issubdtype(array.dtype, np.floating):
        raise ValueError(f"expected floating-point values, got dtype {array.dtype}")
    return np.ascontiguousarray(array, dtype=np.float32)


def check_keys(present, plan, what, optional=HEAD_KEYS):
    """Refuses source keys `present` that do not match `plan` (unknown keys,
    missing keys, a half-present head); see `apply_plan`."""
    present = set(present)
    unknown = present - set(plan)
    optional_sources = {s for s, (k, _) in plan.items() if k in optional}
    missing = [s for s in plan if s not in present and s not in optional_sources]
    if unknown:
        message = (
            f"not a {what} checkpoint: it has {len(unknown)} keys that a "
            f"{what} does not have: {format_keys(unknown)}."
        )
        if missing:
            message += (
                f" It also lacks {len(missing)} keys a {what} has: "
                f"{format_keys(missing)}."
            )
        raise ValueError(message + wrong_architecture_hint(unknown))
    if missing:
        raise ValueError(
            f"incomplete {what} checkpoint: missing {format_keys(missing)}. "
            "The file may be damaged, or hold a model of another "
            "architecture."
        )
    head_present = optional_sources & present
    if head_present and head_present != optional_sources:
        raise ValueError(
            f"incomplete {what} checkpoint: it has {format_keys(head_present)} "
            f"but not {format_keys(optional_sources - head_present)}."
        )


def apply_plan(arrays, plan, what, optional=HEAD_KEYS):
    """Converts `arrays` ({source key: array}) with `plan`.

    Args:
        arrays: the source dict.
        plan: {source key: (keras path, transform)} for every key expected.
        what: e.g. "timm MLP-Mixer", for messages.
        optional: Keras paths that may be absent, all together (the head).

    Returns:
        ({keras path: float32 array}, {keras path: source key}).
    """
    check_keys(arrays, plan, what, optional)
    present = set(arrays)
    tensors, origin = {}, {}
    for source, (path, transform) in plan.items():
        if source not in present:
            continue
        try:
            tensors[path] = as_float32(transform(np.asarray(arrays[source])))
        except ValueError as error:
            raise ValueError(
                f"{what} checkpoint: key {source!r}: {error}."
            ) from None
        origin[path] = source
    return tensors, origin


def _expected_shapes(tensors, family):
    """Shapes every tensor must have, given the stem and first block; the
    tensors are arrays or anything with `shape` and `ndim` (the array specs
    read from a file's headers)."""
    kernel = tensors["stem/proj/kernel"]
    if kernel.ndim != 4 or kernel.shape[0] != kernel.shape[1]:
        return {"stem/proj/kernel": "(p, p, channels, dim) with a square patch"}
    dim = kernel.shape[-1]
    shapes = {"stem/proj/bias": (dim,)}
    blocks = block_indices(tensors, r"block_(\d+)/")
    if family == "mixer":
        for name in ("gamma", "beta"):
            shapes[f"pre_head_norm/{name}"] = (dim,)
        first = tensors["block_0/token_mixing/fc1/kernel"]
        hidden = tensors["block_0/channel_mixing/fc1/kernel"]
        if first.ndim != 2 or hidden.ndim != 2:
            return {"block_0/token_mixing/fc1/kernel": "2-D"}
        tokens, tokens_mlp = first.shape
        channels_mlp = hidden.shape[1]
        for i in blocks:
            b = f"block_{i}"
            for norm in ("norm1", "norm2"):
                shapes[f"{b}/{norm}/gamma"] = (dim,)
                shapes[f"{b}/{norm}/beta"] = (dim,)
            shapes[f"{b}/token_mixing/fc1/kernel"] = (tokens, tokens_mlp)
            shapes[f"{b}/token_mixing/fc1/bias"] = (tokens_mlp,)
            shapes[f"{b}/token_mixing/fc2/kernel"] = (tokens_mlp, tokens)
            shapes[f"{b}/token_mixing/fc2/bias"] = (tokens,)
            shapes[f"{b}/channel_mixing/fc1/kernel"] = (dim, channels_mlp)
            shapes[f"{b}/channel_mixing/fc1/bias"] = (channels_mlp,)
            shapes[f"{b}/channel_mixing/fc2/kernel"] = (channels_mlp, dim)
            shapes[f"{b}/channel_mixing/fc2/bias"] = (dim,)
    else:
        for name in ("alpha", "beta"):
            shapes[f"pre_head_norm/{name}"] = (dim,)
        first = tensors["block_0/cross_patch/kernel"]
        hidden = tensors["block_0/channel_mixing/fc1/kernel"]
        if first.ndim != 2 or hidden.ndim != 2:
            return {"block_0/cross_patch/kernel": "2-D"}
        tokens = first.shape[0]
        mlp = hidden.shape[1]
        for i in blocks:
            b = f"block_{i}"
            for norm in ("norm1", "norm2"):
                shapes[f"{b}/{norm}/alpha"] = (dim,)
                shapes[f"{b}/{norm}/beta"] = (dim,)
            shapes[f"{b}/cross_patch/kernel"] = (tokens, tokens)
            shapes[f"{b}/cross_patch/bias"] = (tokens,)
            shapes[f"{b}/ls1/gamma"] = (dim,)
            shapes[f"{b}/ls2/gamma"] = (dim,)
            shapes[f"{b}/channel_mixing/fc1/kernel"] = (dim, mlp)
            shapes[f"{b}/channel_mixing/fc1/bias"] = (mlp,)
            shapes[f"{b}/channel_mixing/fc2/kernel"] = (mlp, dim)
            shapes[f"{b}/channel_mixing/fc2/bias"] = (dim,)
    if "head/kernel" in tensors:
        head = tensors["head/kernel"]
        classes = head.shape[-1] if head.ndim == 2 else -1
        shapes["head/kernel"] = (dim, classes)
        shapes["head/bias"] = (classes,)
    return shapes


def check_shapes(tensors, family, origin, what):
    """Raises ValueError when the converted tensors do not fit together as one
    model of `family` (e.g. a gated MLP whose fc1 is twice as wide as fc2's
    input, or a head of another width)."""
    for path, expected in _expected_shapes(tensors, family).items():
        found = tensors[path].shape
        if found != expected:
            raise ValueError(
                f"{what} checkpoint: {origin.get(path, path)!r} (Keras "
                f"{path!r}) has shape {tuple(found)} after conversion, "
                f"expected {expected}: the tensors do not form one "
                f"{'MLP-Mixer' if family == 'mixer' else 'ResMLP'}."
            )

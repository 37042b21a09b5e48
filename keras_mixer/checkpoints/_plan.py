"""What the key maps share: the `Checkpoint` they return and the plan they
apply.

A key map builds a *plan*: for every source key it expects, the Keras
variable path it becomes and the function that brings the array to Keras
layout (`linear`, `conv_oihw_to_hwio`, `vector`, `identity`). `apply_plan`
checks the source dict against the plan (unknown keys, missing keys, a
half-present head), so that a checkpoint of another layout fails with a
message naming keys. Shapes are checked once, against the model's own
variables, when the tensors are assigned (`keras_mixer.checkpoints.assign`).
"""

import dataclasses
import re

import numpy as np

HEAD_KEYS = ("head/kernel", "head/bias")


@dataclasses.dataclass
class Checkpoint:
    """Converted weights.

    Attributes:
        tensors: {keras variable path: np.ndarray in Keras layout, or a
            `LazyArray` read on first use}.
        family: the model family the tensors are for ("mixer", "resmlp",
            "gmlp", "convmixer", "cyclemlp", "vip"),
            compared with the model's before anything is built.
        source: the layout they were read from ("flax", "timm", "deit",
            "keras").
        approximate_gelu: the GELU form the source computes with (True: tanh
            approximation, Google's Flax code; False: exact erf, timm/deit;
            None: not known).
        grid: the patch grid (rows, cols) the checkpoint was trained on; None
            means square, derived from the number of tokens.
        origin: where the tensors came from, for error messages (a path).
        source_keys: {keras variable path: the source's key}, for error
            messages.
        architecture: the source's name of the architecture when the file
            comes with it (a Hub folder's config.json), else None.
        mean_std: `(mean, std)` per channel of the input normalisation the
            source names (a Hub folder's config.json), else None.
        buffers: {keras path: np.ndarray} of tensors the source stores but
            the Keras model holds as constants (CycleMLP's Cycle FC offsets);
            the model's builder checks them against its own.
    """

    tensors: dict
    family: str
    source: str
    approximate_gelu: bool
    grid: tuple = None
    origin: str = "checkpoint"
    source_keys: dict = dataclasses.field(default_factory=dict)
    architecture: str = None
    mean_std: tuple = None
    buffers: dict = dataclasses.field(default_factory=dict)

    @property
    def num_classes(self):
        """Classes of the checkpoint's head, or None if it has none."""
        head = self.tensors.get("head/kernel")
        return None if head is None else int(head.shape[-1])

    @property
    def num_blocks(self):
        return len({k.split("/")[0] for k in self.tensors if k.startswith("block_")})

    @property
    def patch_size(self):
        """The side of the stem's patches."""
        return int(self.tensors["stem/proj/kernel"].shape[0])

    @property
    def hidden_dim(self):
        return int(self.tensors["stem/proj/kernel"].shape[-1])


class LazyArray:
    """An array known by its shape and dtype and read on first use
    (`np.asarray`): an `.npz` member, whose shape is checked against the
    model's variable before anything is decompressed."""

    def __init__(self, shape, dtype, read):
        self.shape = tuple(int(d) for d in shape)
        self.dtype = np.dtype(dtype)
        self._read = read

    @property
    def ndim(self):
        return len(self.shape)

    def __array__(self, dtype=None, copy=None):
        array = self._read()
        return array if dtype is None else array.astype(dtype, copy=False)

    def then(self, transform):
        """This array through a layout `transform`, still unread: the new
        shape comes from the transform of a view that holds no data."""
        if not np.issubdtype(self.dtype, np.floating):
            raise ValueError(
                f"expected floating-point values, got dtype {self.dtype}")
        view = np.broadcast_to(np.zeros((), self.dtype), self.shape)
        return LazyArray(transform(view).shape, np.float32,
                         lambda: as_float32(transform(self._read())))


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
        return "a gMLP in timm layout"
    if has(r"^stem\.0\.weight$") and has(r"^blocks\.\d+\.0\.fn\.0\.weight$"):
        return "a ConvMixer in timm layout"
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
    """Refuses source keys `present` that do not match `plan`.

    Every key present must be in the plan and every key of the plan present,
    except the `optional` ones, which are absent or present all together.
    Works on names alone, so a reader can check them before it decompresses
    anything.
    """
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
    """Converts `arrays` ({source key: array}) with `plan`, after
    `check_keys`.

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
            array = arrays[source]
            tensors[path] = (
                array.then(transform) if isinstance(array, LazyArray)
                else as_float32(transform(np.asarray(array))))
        except ValueError as error:
            raise ValueError(
                f"{what} checkpoint: key {source!r}: {error}."
            ) from None
        origin[path] = source
    return tensors, origin

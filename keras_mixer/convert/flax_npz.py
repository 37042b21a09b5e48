"""Google's official MLP-Mixer checkpoints (`.npz`, Flax parameter names).

The files at https://storage.googleapis.com/mixer_models/ hold one array per
parameter of `vit_jax/models_mixer.py`, the parameter tree flattened with '/'
(`vit_jax/checkpoint.py` splits the names on '/' when it loads them):

    stem/kernel                                (p, p, C_in, D)  HWIO, as Keras
    stem/bias                                  (D,)
    MixerBlock_{i}/LayerNorm_0/scale|bias      (D,)  before token mixing
    MixerBlock_{i}/token_mixing/Dense_0/kernel (S, D_S)  bias (D_S,)
    MixerBlock_{i}/token_mixing/Dense_1/kernel (D_S, S)  bias (S,)
    MixerBlock_{i}/LayerNorm_1/scale|bias      (D,)  before channel mixing
    MixerBlock_{i}/channel_mixing/Dense_0/kernel (D, D_C)  bias (D_C,)
    MixerBlock_{i}/channel_mixing/Dense_1/kernel (D_C, D)  bias (D,)
    pre_head_layer_norm/scale|bias             (D,)
    head/kernel (D, classes), head/bias (classes,)   (optional)

Flax kernels are `(in, out)` like Keras, and the token-mixing Dense layers act
on the tokens axis of the swapped token table, so their kernels are
`(tokens_in, tokens_out)` as `keras_mixer.layers.TokenDense`: no array is
transposed. Flax's `nn.gelu` is the tanh approximation and its LayerNorm
epsilon is 1e-6.

Tolerated variations: a `params/` or `opt/target/` prefix (the latter from a
Flax optimizer checkpoint, whose `opt/state/...` arrays are ignored), names
flattened with '.' instead of '/', and pre-Linen module numbering (e.g.
`LayerNorm_0`, `LayerNorm_2`), renumbered per module class in name order as
`flax.training.checkpoints.convert_pre_linen` does.

Reading is bounded: the archive's names, and each array's dtype and shape,
are taken from the zip directory and the `.npy` headers, and checked (no
object arrays, at most `MAX_MEMBER_BYTES` per array, the size the header
declares, and, for Flax names, the names and shapes of one MLP-Mixer) before
any array is decompressed.
"""

import re
import typing
import zipfile

import numpy as np

from keras_mixer.convert import Checkpoint
from keras_mixer.convert import _common
from keras_mixer.convert import detect_layout

PREFIXES = ("opt/target/", "optimizer/target/", "params/")
_MODULE_NUM = re.compile(r"^(.*)_(\d+)$")
# The largest array read from an .npz, decompressed: 1 GiB (the largest
# official array, Mixer-L/16's 21k-class head, is 89 MB).
MAX_MEMBER_BYTES = 1 << 30


class ArraySpec(typing.NamedTuple):
    """An array's shape and dtype, as its `.npy` header declares them."""

    shape: tuple
    dtype: np.dtype

    @property
    def ndim(self):
        return len(self.shape)


def read_specs(path, max_member_bytes=MAX_MEMBER_BYTES):
    """{name: ArraySpec} of an `.npz` file, from its zip directory and the
    `.npy` headers only (a few bytes of each member are decompressed).

    Raises:
        ValueError: not a readable zip of `.npy` arrays, an object array
            (pickle), an array over `max_member_bytes` decompressed, or a
            member whose size is not what its header declares.
    """
    try:
        archive = zipfile.ZipFile(path)
    except FileNotFoundError:
        raise
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as error:
        raise _unreadable(path, error) from None
    specs = {}
    with archive:
        for info in archive.infolist():
            member = info.filename
            if not member.endswith(".npy") or member[:-4] in specs:
                raise _unreadable(path, f"member {member!r} is not a unique "
                                  ".npy array")
            if info.compress_type not in (zipfile.ZIP_STORED,
                                          zipfile.ZIP_DEFLATED):
                raise _unreadable(path, f"member {member!r} uses zip "
                                  f"compression {info.compress_type}")
            if info.file_size > max_member_bytes:
                raise ValueError(
                    f"{path}: array {member[:-4]!r} decompresses to "
                    f"{info.file_size:,} bytes, over the limit of "
                    f"{max_member_bytes:,} (MAX_MEMBER_BYTES); refused before "
                    "decompressing it. Official MLP-Mixer arrays are under "
                    "100 MB."
                )
            try:
                with archive.open(info) as f:
                    version = np.lib.format.read_magic(f)
                    if version == (1, 0):
                        shape, _, dtype = np.lib.format.read_array_header_1_0(f)
                    elif version == (2, 0):
                        shape, _, dtype = np.lib.format.read_array_header_2_0(f)
                    else:
                        raise ValueError(f".npy format {version} unsupported")
                    offset = f.tell()
            except Exception as error:  # noqa: BLE001 - zlib, format errors
                raise _unreadable(path, f"member {member!r}: {error}") from None
            if dtype.hasobject:
                raise _refused_or_unreadable(
                    path, ValueError("Object arrays need allow_pickle"))
            declared = offset + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
            if declared != info.file_size:
                raise _unreadable(
                    path, f"member {member!r} declares {shape} {dtype} "
                    f"({declared:,} bytes) but holds {info.file_size:,} bytes")
            specs[member[:-4]] = ArraySpec(tuple(shape), dtype)
    return specs


def read(path, max_member_bytes=MAX_MEMBER_BYTES):
    """Reads an `.npz` file into {name: array}, never unpickling anything.

    The names, dtypes and shapes are checked first from the headers
    (`read_specs`; for Flax names also as one MLP-Mixer, `check_specs`),
    then the arrays are read.

    Raises:
        ValueError: the file is not a readable `.npz` (truncated, corrupt, not
            a zip of `.npy` arrays), holds pickled Python objects or an array
            over `max_member_bytes`, or its Flax arrays are not those of an
            MLP-Mixer.
    """
    specs = read_specs(path, max_member_bytes)
    if detect_layout(specs) == "flax":
        try:
            check_specs(specs)
        except ValueError as error:
            raise ValueError(f"{path}: {error}") from None
    try:
        data = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise
    except Exception as error:  # noqa: BLE001 - every decoding failure
        raise _refused_or_unreadable(path, error) from None
    if not isinstance(data, np.lib.npyio.NpzFile):
        raise _unreadable(path, "it holds a single array, not an archive")
    try:
        with data:
            return {name: np.asarray(data[name]) for name in data.files}
    except Exception as error:  # noqa: BLE001 - e.g. zlib.error, EOFError
        raise _refused_or_unreadable(path, error) from None


def _refused_or_unreadable(path, error):
    if isinstance(error, ValueError) and "allow_pickle" in str(error):
        return ValueError(
            f"{path} holds pickled Python objects (object arrays or a "
            "pickle); keras_mixer reads .npz files with allow_pickle=False "
            "and refuses them. Official MLP-Mixer checkpoints hold numeric "
            "arrays only."
        )
    return _unreadable(path, error)


def _unreadable(path, error):
    return ValueError(
        f"{path} is not a readable .npz file ({error}). It may be truncated "
        "or corrupt: download it again (official MLP-Mixer checkpoints are at "
        "https://storage.googleapis.com/mixer_models/)."
    )


def _natural_key(name):
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def _renumber(tree):
    """convert_pre_linen: renumber `Module_N` children per class, in natural
    name order, at every level. Linen names are left unchanged."""
    if not isinstance(tree, dict):
        return tree
    counts, out = {}, {}
    for name in sorted(tree, key=_natural_key):
        new = name
        match = _MODULE_NUM.match(name)
        if match:
            module = match.group(1)
            new = f"{module}_{counts.get(module, 0)}"
            counts[module] = counts.get(module, 0) + 1
        out[new] = _renumber(tree[name])
    return out


def _flatten(tree, prefix=""):
    for name, value in tree.items():
        if isinstance(value, dict):
            yield from _flatten(value, f"{prefix}{name}/")
        else:
            yield f"{prefix}{name}", value


def normalize_names(arrays):
    """{flat name: array} -> {Linen '/' name without prefix: array}."""
    arrays = dict(arrays)
    if arrays and not any("/" in k for k in arrays) and any("." in k for k in arrays):
        arrays = {k.replace(".", "/"): v for k, v in arrays.items()}
    for prefix in PREFIXES:
        if any(k.startswith(prefix) for k in arrays):
            root = prefix.split("/")[0] + "/"
            kept = {}
            for key, value in arrays.items():
                if key.startswith(prefix):
                    kept[key[len(prefix):]] = value
                elif not key.startswith(root):
                    kept[key] = value  # left for the unknown-key check
                # else: optimizer state (e.g. opt/state/...), ignored.
            arrays = kept
            break
    tree = {}
    for key, value in arrays.items():
        node = tree
        parts = key.split("/")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ValueError(f"name {key!r} nests under an array")
        node[parts[-1]] = value
    return dict(_flatten(_renumber(tree)))


def _plan(names):
    plan = {
        "stem/kernel": ("stem/proj/kernel", _common.identity),
        "stem/bias": ("stem/proj/bias", _common.identity),
        "pre_head_layer_norm/scale": ("pre_head_norm/gamma", _common.identity),
        "pre_head_layer_norm/bias": ("pre_head_norm/beta", _common.identity),
        "head/kernel": ("head/kernel", _common.identity),
        "head/bias": ("head/bias", _common.identity),
    }
    blocks = _common.block_indices(names, r"MixerBlock_(\d+)/")
    for i in range(max(blocks) + 1 if blocks else 0):
        src, dst = f"MixerBlock_{i}", f"block_{i}"
        for norm, target in (("LayerNorm_0", "norm1"), ("LayerNorm_1", "norm2")):
            plan[f"{src}/{norm}/scale"] = (f"{dst}/{target}/gamma", _common.identity)
            plan[f"{src}/{norm}/bias"] = (f"{dst}/{target}/beta", _common.identity)
        for mlp in ("token_mixing", "channel_mixing"):
            for dense, fc in (("Dense_0", "fc1"), ("Dense_1", "fc2")):
                for param in ("kernel", "bias"):
                    plan[f"{src}/{mlp}/{dense}/{param}"] = (
                        f"{dst}/{mlp}/{fc}/{param}",
                        _common.identity,
                    )
    return plan, blocks


def check_specs(arrays):
    """Checks that {name: array or ArraySpec} are the arrays of one
    MLP-Mixer (names, then shapes; Flax arrays need no transform, so their
    shapes are the Keras ones). Returns (normalized names, plan).

    Raises:
        ValueError: another architecture, missing or extra arrays, shapes that
            do not fit together.
    """
    original = list(arrays)
    try:
        names = normalize_names(arrays)
    except ValueError as error:
        raise ValueError(f"not a Flax MLP-Mixer checkpoint: {error}.") from None
    plan, blocks = _plan(names)
    if not blocks or "stem/kernel" not in names:
        raise ValueError(
            "not an MLP-Mixer checkpoint in Flax layout: expected arrays "
            "'stem/kernel' and 'MixerBlock_0/...', found "
            f"{_common.format_keys(original)}."
            + _common.wrong_architecture_hint(original)
        )
    what = "Flax MLP-Mixer"
    _common.check_keys(names, plan, what)
    shapes, origin = {}, {}
    for source, (path, _) in plan.items():
        if source in names:
            shapes[path], origin[path] = names[source], source
    _common.check_shapes(shapes, "mixer", origin, what)
    return names, plan


def convert(arrays):
    """Converts the arrays of an official MLP-Mixer `.npz` to a Checkpoint.

    Args:
        arrays: {name: array} as returned by `read`.

    Returns:
        `Checkpoint(family="mixer", source="flax", approximate_gelu=True)`.

    Raises:
        ValueError: the arrays are not those of one MLP-Mixer (another
            architecture such as a ViT, missing or extra arrays, shapes that do
            not fit together).
    """
    names, plan = check_specs(arrays)
    tensors, origin = _common.apply_plan(names, plan, "Flax MLP-Mixer")
    return Checkpoint(
        tensors=tensors, family="mixer", source="flax", approximate_gelu=True
    )

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
`(tokens_in, tokens_out)`, as Keras's Dense on the transposed table: no array
is transposed. Flax's `nn.gelu` is the tanh approximation and its LayerNorm
epsilon is 1e-6.

Tolerated variations: a `params/` or `opt/target/` prefix (the latter from a
Flax optimizer checkpoint, whose `opt/state/...` arrays are ignored), names
flattened with '.' instead of '/', and pre-Linen module numbering (e.g.
`LayerNorm_0`, `LayerNorm_2`), renumbered per module class in name order as
`flax.training.checkpoints.convert_pre_linen` does.
"""

import re

from keras_mixer.checkpoints import _plan

# What `read_checkpoint` says a file of this layout has, when none matches.
EXPECTED = "Flax names ('stem/kernel', 'MixerBlock_0/...')"
WHAT = "Flax MLP-Mixer"
PREFIXES = ("opt/target/", "optimizer/target/", "params/")
_MODULE_NUM = re.compile(r"^(.*)_(\d+)$")


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


def matches(keys):
    """True for names of the Flax layout, '/'-separated or flattened with
    '.' (`MixerBlock_0.LayerNorm_0.scale`, `stem.kernel`)."""
    return any(
        "/" in k or k.startswith("MixerBlock_") or k in ("stem.kernel", "stem.bias")
        for k in keys
    )


def _key_plan(names):
    plan = {
        "stem/kernel": ("stem/proj/kernel", _plan.identity),
        "stem/bias": ("stem/proj/bias", _plan.identity),
        "pre_head_layer_norm/scale": ("pre_head_norm/gamma", _plan.identity),
        "pre_head_layer_norm/bias": ("pre_head_norm/beta", _plan.identity),
        "head/kernel": ("head/kernel", _plan.identity),
        "head/bias": ("head/bias", _plan.identity),
    }
    blocks = _plan.block_indices(names, r"MixerBlock_(\d+)/")
    for i in range(max(blocks) + 1 if blocks else 0):
        src, dst = f"MixerBlock_{i}", f"block_{i}"
        for norm, target in (("LayerNorm_0", "norm1"), ("LayerNorm_1", "norm2")):
            plan[f"{src}/{norm}/scale"] = (f"{dst}/{target}/gamma", _plan.identity)
            plan[f"{src}/{norm}/bias"] = (f"{dst}/{target}/beta", _plan.identity)
        for mlp in ("token_mixing", "channel_mixing"):
            for dense, fc in (("Dense_0", "fc1"), ("Dense_1", "fc2")):
                for param in ("kernel", "bias"):
                    plan[f"{src}/{mlp}/{dense}/{param}"] = (
                        f"{dst}/{mlp}/{fc}/{param}",
                        _plan.identity,
                    )
    return plan, blocks


def check_keys(arrays):
    """Checks that the names of {name: array or header spec} are those of one
    MLP-Mixer in Flax layout; returns `(normalized {name: value}, plan)`.
    Names only: `keras_mixer.checkpoints` calls it on an `.npz`'s headers
    before any array is decompressed.

    Raises:
        ValueError: another architecture (such as a ViT), missing or extra
            arrays.
    """
    original = list(arrays)
    try:
        names = normalize_names(arrays)
    except ValueError as error:
        raise ValueError(f"not a Flax MLP-Mixer checkpoint: {error}.") from None
    plan, blocks = _key_plan(names)
    if not blocks or "stem/kernel" not in names:
        raise ValueError(
            "not an MLP-Mixer checkpoint in Flax layout: expected arrays "
            "'stem/kernel' and 'MixerBlock_0/...', found "
            f"{_plan.format_keys(original)}."
            + _plan.wrong_architecture_hint(original)
        )
    _plan.check_keys(names, plan, WHAT)
    return names, plan


def convert(arrays):
    """Converts the arrays of an official MLP-Mixer `.npz` to a Checkpoint.

    Args:
        arrays: {name: array}, e.g. from `readers.read_npz`.

    Returns:
        `Checkpoint(family="mixer", source="flax", approximate_gelu=True)`.

    Raises:
        ValueError: the arrays are not those of one MLP-Mixer (another
            architecture such as a ViT, missing or extra arrays).
    """
    names, plan = check_keys(arrays)
    tensors, origin = _plan.apply_plan(names, plan, WHAT)
    return _plan.Checkpoint(
        tensors=tensors, family="mixer", source="flax", approximate_gelu=True,
        source_keys=origin,
    )

"""timm state dicts of `ConvMixer` (`timm/models/convmixer.py`).

Key names of timm's `ConvMixer` (`stem` and each block are `nn.Sequential`s,
hence the numbers), with the Keras variable each becomes:

    stem.0.weight (D, C_in, p, p) OIHW -> stem/proj/kernel (p, p, C_in, D)
    stem.0.bias                        -> stem/proj/bias
    stem.2.<bn>                        -> stem/norm/<keras bn>     (stem.1 is the activation)
  block i (`Sequential(Residual(Sequential(dw, act, bn)), pw, act, bn)`):
    blocks.i.0.fn.0.weight (D, 1, k, k) -> block_i/depthwise/kernel (k, k, D, 1)
    blocks.i.0.fn.0.bias                -> block_i/depthwise/bias
    blocks.i.0.fn.2.<bn>                -> block_i/norm1/<keras bn>
    blocks.i.1.weight (D, D, 1, 1)      -> block_i/pointwise/kernel (D, D) (a Dense: [:, :, 0, 0].T)
    blocks.i.1.bias                     -> block_i/pointwise/bias
    blocks.i.3.<bn>                     -> block_i/norm2/<keras bn>
  head.weight (classes, D) -> head/kernel (D, classes); head.bias (optional)

A BatchNorm2d's entries map to Keras's `BatchNormalization`: weight ->
gamma, bias -> beta, running_mean -> moving_mean, running_var ->
moving_variance. Its `num_batches_tracked` (an int64 step counter, no effect
at inference) is skipped by name. The activation (GELU, or ReLU for
ConvMixer-768/32) is not in the file: the model's constructor decides it.
"""

from keras_mixer.checkpoints import _plan

# What `read_checkpoint` says a file of this layout has, when none matches.
EXPECTED = "timm ConvMixer keys ('stem.0.weight', 'blocks.0.0.fn.0.weight')"

BATCH_NORM = (
    ("weight", "gamma"), ("bias", "beta"),
    ("running_mean", "moving_mean"), ("running_var", "moving_variance"),
)
# BatchNorm2d's step counter: state, unused at inference.
SKIPPED = "num_batches_tracked"


def matches(keys):
    """True for the keys of a timm `ConvMixer` state dict."""
    return "stem.0.weight" in set(keys)


def depthwise(array):
    """Depthwise Conv2d weight (D, 1, k, k) -> DepthwiseConv2D (k, k, D, 1)."""
    if array.ndim != 4 or array.shape[1] != 1:
        raise ValueError(f"expected a (D, 1, k, k) depthwise weight, got shape {array.shape}")
    return array.transpose(2, 3, 0, 1)


def pointwise(array):
    """1x1 Conv2d weight (out, in, 1, 1) -> Dense kernel (in, out)."""
    if array.ndim != 4 or array.shape[2:] != (1, 1):
        raise ValueError(f"expected a (D, D, 1, 1) pointwise weight, got shape {array.shape}")
    return array[:, :, 0, 0].T


def key_plan(keys):
    ident = _plan.identity
    plan = {
        "stem.0.weight": ("stem/proj/kernel", _plan.conv_oihw_to_hwio),
        "stem.0.bias": ("stem/proj/bias", ident),
        "head.weight": ("head/kernel", _plan.linear),
        "head.bias": ("head/bias", ident),
    }
    norms = {"stem.2": "stem/norm"}
    blocks = _plan.block_indices(keys, r"blocks\.(\d+)\.")
    for i in range(max(blocks) + 1 if blocks else 0):
        src, dst = f"blocks.{i}", f"block_{i}"
        plan[f"{src}.0.fn.0.weight"] = (f"{dst}/depthwise/kernel", depthwise)
        plan[f"{src}.0.fn.0.bias"] = (f"{dst}/depthwise/bias", ident)
        plan[f"{src}.1.weight"] = (f"{dst}/pointwise/kernel", pointwise)
        plan[f"{src}.1.bias"] = (f"{dst}/pointwise/bias", ident)
        norms[f"{src}.0.fn.2"] = f"{dst}/norm1"
        norms[f"{src}.3"] = f"{dst}/norm2"
    for source, target in norms.items():
        for torch_name, keras_name in BATCH_NORM:
            plan[f"{source}.{torch_name}"] = (f"{target}/{keras_name}", ident)
    return plan, norms, blocks


def convert(state_dict):
    """Converts a timm `ConvMixer` state dict.

    Returns:
        `Checkpoint(family="convmixer", source="timm", approximate_gelu=False)`.

    Raises:
        ValueError: not a timm ConvMixer (keys missing or unknown).
    """
    keys = list(state_dict)
    plan, norms, blocks = key_plan(keys)
    if not blocks:
        raise ValueError(
            "not a timm ConvMixer state dict: expected keys 'stem.0.weight' "
            f"and 'blocks.0.0.fn.0.weight', found {_plan.format_keys(keys)}."
            + _plan.wrong_architecture_hint(keys)
        )
    skipped = {f"{norm}.{SKIPPED}" for norm in norms}
    arrays = {k: v for k, v in state_dict.items() if k not in skipped}
    tensors, origin = _plan.apply_plan(arrays, plan, "timm ConvMixer")
    return _plan.Checkpoint(
        tensors=tensors, family="convmixer", source="timm",
        approximate_gelu=False, source_keys=origin,
    )


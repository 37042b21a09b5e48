"""Facebook's original ResMLP layout (facebookresearch/deit, `resmlp_models.py`).

Key names of `resmlp_models` and its `layers_scale_mlp_blocks`, with the Keras
variable each becomes:

    patch_embed.proj.weight (D, C_in, p, p) OIHW -> stem/proj/kernel (p, p, C_in, D)
    patch_embed.proj.bias                   -> stem/proj/bias
  block i:
    blocks.i.norm1.alpha|beta (D,)          -> block_i/norm1/alpha|beta
    blocks.i.attn.weight (S, S)             -> block_i/cross_patch/kernel (transposed)
    blocks.i.attn.bias (S,)                 -> block_i/cross_patch/bias
    blocks.i.gamma_1 (D,)                   -> block_i/ls1/gamma
    blocks.i.norm2.alpha|beta               -> block_i/norm2/alpha|beta
    blocks.i.mlp.fc1|fc2.weight             -> block_i/channel_mixing/fc1|fc2/kernel (transposed)
    blocks.i.mlp.fc1|fc2.bias               -> block_i/channel_mixing/fc1|fc2/bias
    blocks.i.gamma_2 (D,)                   -> block_i/ls2/gamma
    norm.alpha|beta (D,)                    -> pre_head_norm/alpha|beta
    head.weight (classes, D) -> head/kernel (D, classes); head.bias (optional)

`attn` is not attention: it is the linear layer across patches. The published
`.pth` files are state dicts, either flat or nested under `model` (deit's
training checkpoints); `keras_mixer.convert.timm.read_torch` unwraps both.
deit computes the exact (erf) GELU.
"""

from keras_mixer.convert import Checkpoint
from keras_mixer.convert import _common


def is_deit_layout(keys):
    """True when the keys are those of deit's ResMLP (or another deit model,
    which `convert` then rejects with a message)."""
    return "patch_embed.proj.weight" in set(keys)


def _plan(keys):
    lin, vec, ident = _common.linear, _common.vector, _common.identity
    plan = {
        "patch_embed.proj.weight": ("stem/proj/kernel", _common.conv_oihw_to_hwio),
        "patch_embed.proj.bias": ("stem/proj/bias", ident),
        "norm.alpha": ("pre_head_norm/alpha", vec),
        "norm.beta": ("pre_head_norm/beta", vec),
        "head.weight": ("head/kernel", lin),
        "head.bias": ("head/bias", ident),
    }
    blocks = _common.block_indices(keys, r"blocks\.(\d+)\.")
    for i in range(max(blocks) + 1 if blocks else 0):
        src, dst = f"blocks.{i}", f"block_{i}"
        for norm in ("norm1", "norm2"):
            plan[f"{src}.{norm}.alpha"] = (f"{dst}/{norm}/alpha", vec)
            plan[f"{src}.{norm}.beta"] = (f"{dst}/{norm}/beta", vec)
        plan[f"{src}.attn.weight"] = (f"{dst}/cross_patch/kernel", lin)
        plan[f"{src}.attn.bias"] = (f"{dst}/cross_patch/bias", ident)
        plan[f"{src}.gamma_1"] = (f"{dst}/ls1/gamma", vec)
        plan[f"{src}.gamma_2"] = (f"{dst}/ls2/gamma", vec)
        for fc in ("fc1", "fc2"):
            plan[f"{src}.mlp.{fc}.weight"] = (f"{dst}/channel_mixing/{fc}/kernel", lin)
            plan[f"{src}.mlp.{fc}.bias"] = (f"{dst}/channel_mixing/{fc}/bias", ident)
    return plan, blocks


def convert(state_dict):
    """Converts a deit-layout ResMLP state dict to a Checkpoint.

    Args:
        state_dict: {key: array}, or `{'model': {key: array}, ...}` as deit's
            training checkpoints.

    Returns:
        `Checkpoint(family="resmlp", source="deit", approximate_gelu=False)`.

    Raises:
        ValueError: not a deit ResMLP (e.g. a deit ViT, whose `cls_token`,
            `pos_embed` and `attn.qkv` keys are named).
    """
    if isinstance(state_dict.get("model"), dict):
        state_dict = state_dict["model"]
    keys = list(state_dict)
    plan, blocks = _plan(keys)
    if not blocks or not is_deit_layout(keys):
        raise ValueError(
            "not a deit ResMLP state dict: expected keys "
            "'patch_embed.proj.weight' and 'blocks.0.attn.weight', found "
            f"{_common.format_keys(keys)}." + _common.wrong_architecture_hint(keys)
        )
    tensors, origin = _common.apply_plan(state_dict, plan, "deit ResMLP")
    _common.check_shapes(tensors, "resmlp", origin, "deit ResMLP")
    return Checkpoint(
        tensors=tensors, family="resmlp", source="deit", approximate_gelu=False
    )

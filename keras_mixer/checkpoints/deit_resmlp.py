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
training checkpoints); `keras_mixer.checkpoints.readers.read_torch` unwraps
both. deit computes the exact (erf) GELU.
"""

from keras_mixer.checkpoints import _plan
from keras_mixer.checkpoints import timm_mlp_mixer

# What `read_checkpoint` says a file of this layout has, when none matches.
EXPECTED = "deit keys ('patch_embed.proj.weight', 'blocks.0.attn.weight')"


def matches(keys):
    """True when the keys are those of deit's ResMLP (or another deit model,
    which `convert` then rejects with a message)."""
    return "patch_embed.proj.weight" in set(keys)


# deit's names are timm's ResMLP names under other words (timm converts deit
# files the same way): the plan is timm's, with the keys renamed back.
_TIMM_TO_DEIT = (
    ("stem.", "patch_embed."),
    (".linear_tokens.", ".attn."),
    (".mlp_channels.", ".mlp."),
    (".ls1", ".gamma_1"),
    (".ls2", ".gamma_2"),
)


def _to_timm(key):
    for timm_name, deit_name in _TIMM_TO_DEIT:
        key = key.replace(deit_name, timm_name)
    return key


def _to_deit(key):
    for timm_name, deit_name in _TIMM_TO_DEIT:
        key = key.replace(timm_name, deit_name)
    return key


def _key_plan(keys):
    plan, blocks = timm_mlp_mixer.key_plan([_to_timm(k) for k in keys], "resmlp")
    return {_to_deit(k): target for k, target in plan.items()}, blocks


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
    plan, blocks = _key_plan(keys)
    if not blocks or not matches(keys):
        raise ValueError(
            "not a deit ResMLP state dict: expected keys "
            "'patch_embed.proj.weight' and 'blocks.0.attn.weight', found "
            f"{_plan.format_keys(keys)}." + _plan.wrong_architecture_hint(keys)
        )
    tensors, origin = _plan.apply_plan(state_dict, plan, "deit ResMLP")
    return _plan.Checkpoint(
        tensors=tensors, family="resmlp", source="deit", approximate_gelu=False,
        source_keys=origin,
    )

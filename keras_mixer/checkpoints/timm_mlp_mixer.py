"""timm state dicts of `MlpMixer` (MLP-Mixer) and `ResMlp` blocks (ResMLP).

Key names of `timm/models/mlp_mixer.py` (`MlpMixer`, `MixerBlock`,
`ResBlock`, `Affine`, timm's `PatchEmbed` and `Mlp`), with the Keras variable
each becomes:

    stem.proj.weight  (D, C_in, p, p) OIHW -> stem/proj/kernel (p, p, C_in, D)
    stem.proj.bias                         -> stem/proj/bias
  MLP-Mixer (`MixerBlock`), block i:
    blocks.i.norm1.weight|bias             -> block_i/norm1/gamma|beta
    blocks.i.mlp_tokens.fc1.weight (D_S, S) -> block_i/token_mixing/fc1/kernel (S, D_S)
    blocks.i.mlp_tokens.fc2.weight (S, D_S) -> block_i/token_mixing/fc2/kernel (D_S, S)
    blocks.i.norm2.weight|bias             -> block_i/norm2/gamma|beta
    blocks.i.mlp_channels.fc1|fc2.weight   -> block_i/channel_mixing/fc1|fc2/kernel (transposed)
    norm.weight|bias                       -> pre_head_norm/gamma|beta
  ResMLP (`ResBlock`), block i:
    blocks.i.norm1.alpha|beta (1, 1, D)    -> block_i/norm1/alpha|beta (D,)
    blocks.i.linear_tokens.weight (S, S)   -> block_i/cross_patch/kernel (transposed)
    blocks.i.ls1 (D,)                      -> block_i/ls1/gamma
    blocks.i.norm2.alpha|beta              -> block_i/norm2/alpha|beta
    blocks.i.mlp_channels.fc1|fc2.weight   -> block_i/channel_mixing/fc1|fc2/kernel (transposed)
    blocks.i.ls2 (D,)                      -> block_i/ls2/gamma
    norm.alpha|beta (1, 1, D)              -> pre_head_norm/alpha|beta (D,)
  Both:
    head.weight (classes, D) -> head/kernel (D, classes); head.bias (optional)

Every `.bias` keeps its shape; every Linear weight is transposed from torch's
`(out, in)` to Keras's `(in, out)`. timm computes the exact (erf) GELU.

The files are read by `keras_mixer.checkpoints.readers` (safetensors, or
`.pth` through `torch.load(weights_only=True)`).
"""

from keras_mixer.checkpoints import _plan

# What `read_checkpoint` says a file of this layout has, when none matches.
EXPECTED = (
    "timm keys ('stem.proj.weight', 'blocks.0.mlp_tokens.*' or "
    "'blocks.0.linear_tokens.*')"
)


def matches(keys):
    """True for the keys of a timm `MlpMixer` state dict."""
    return "stem.proj.weight" in keys


def detect_family(keys):
    """"mixer", "resmlp" or None, from timm key names."""
    keys = list(keys)
    if any(".mlp_tokens." in k for k in keys):
        return "mixer"
    if any(".linear_tokens." in k for k in keys):
        return "resmlp"
    return None


def key_plan(keys, family):
    lin, vec, ident = _plan.linear, _plan.vector, _plan.identity
    plan = {
        "stem.proj.weight": ("stem/proj/kernel", _plan.conv_oihw_to_hwio),
        "stem.proj.bias": ("stem/proj/bias", ident),
        "head.weight": ("head/kernel", lin),
        "head.bias": ("head/bias", ident),
    }
    blocks = _plan.block_indices(keys, r"blocks\.(\d+)\.")
    for i in range(max(blocks) + 1 if blocks else 0):
        src, dst = f"blocks.{i}", f"block_{i}"
        if family == "mixer":
            for norm in ("norm1", "norm2"):
                plan[f"{src}.{norm}.weight"] = (f"{dst}/{norm}/gamma", ident)
                plan[f"{src}.{norm}.bias"] = (f"{dst}/{norm}/beta", ident)
            mlps = (("mlp_tokens", "token_mixing"), ("mlp_channels", "channel_mixing"))
        else:
            for norm in ("norm1", "norm2"):
                plan[f"{src}.{norm}.alpha"] = (f"{dst}/{norm}/alpha", vec)
                plan[f"{src}.{norm}.beta"] = (f"{dst}/{norm}/beta", vec)
            plan[f"{src}.linear_tokens.weight"] = (f"{dst}/cross_patch/kernel", lin)
            plan[f"{src}.linear_tokens.bias"] = (f"{dst}/cross_patch/bias", ident)
            plan[f"{src}.ls1"] = (f"{dst}/ls1/gamma", vec)
            plan[f"{src}.ls2"] = (f"{dst}/ls2/gamma", vec)
            mlps = (("mlp_channels", "channel_mixing"),)
        for source_mlp, keras_mlp in mlps:
            for fc in ("fc1", "fc2"):
                plan[f"{src}.{source_mlp}.{fc}.weight"] = (
                    f"{dst}/{keras_mlp}/{fc}/kernel", lin)
                plan[f"{src}.{source_mlp}.{fc}.bias"] = (
                    f"{dst}/{keras_mlp}/{fc}/bias", ident)
    if family == "mixer":
        plan["norm.weight"] = ("pre_head_norm/gamma", ident)
        plan["norm.bias"] = ("pre_head_norm/beta", ident)
    else:
        plan["norm.alpha"] = ("pre_head_norm/alpha", vec)
        plan["norm.beta"] = ("pre_head_norm/beta", vec)
    return plan, blocks


def convert(state_dict):
    """Converts a timm `MlpMixer` state dict (Mixer or ResMLP blocks).

    Args:
        state_dict: {key: array} (NumPy arrays, or anything `np.asarray`
            takes), e.g. from `readers.read_safetensors` or
            `readers.read_torch`.

    Returns:
        `Checkpoint(source="timm", approximate_gelu=False)`, family "mixer" or
        "resmlp" from the keys.

    Raises:
        ValueError: not one timm MLP-Mixer / ResMLP (e.g. a gMLP, a ViT, a
            deit-layout ResMLP: use `keras_mixer.checkpoints.deit_resmlp`).
    """
    keys = list(state_dict)
    family = detect_family(keys)
    if family is None or "stem.proj.weight" not in state_dict:
        raise ValueError(
            "not a timm MLP-Mixer or ResMLP state dict: expected keys "
            "'stem.proj.weight' and 'blocks.0.mlp_tokens.*' (Mixer) or "
            f"'blocks.0.linear_tokens.*' (ResMLP), found "
            f"{_plan.format_keys(keys)}." + _plan.wrong_architecture_hint(keys)
        )
    what = "timm MLP-Mixer" if family == "mixer" else "timm ResMLP"
    plan, _ = key_plan(keys, family)
    tensors, origin = _plan.apply_plan(state_dict, plan, what)
    return _plan.Checkpoint(
        tensors=tensors, family=family, source="timm", approximate_gelu=False,
        source_keys=origin,
    )

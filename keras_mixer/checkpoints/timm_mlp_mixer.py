"""timm state dicts of `MlpMixer`: MLP-Mixer, gMixer, ResMLP and gMLP blocks.

Key names of `timm/models/mlp_mixer.py` (`MlpMixer`, `MixerBlock`,
`ResBlock`, `Affine`, `SpatialGatingBlock`, timm's `PatchEmbed`, `Mlp`,
`GluMlp` and `GatedMlp`), with the Keras variable each becomes:

    stem.proj.weight  (D, C_in, p, p) OIHW -> stem/proj/kernel (p, p, C_in, D)
    stem.proj.bias                         -> stem/proj/bias
  MLP-Mixer (`MixerBlock`), block i:
    blocks.i.norm1.weight|bias             -> block_i/norm1/gamma|beta
    blocks.i.mlp_tokens.fc1.weight (D_S, S) -> block_i/token_mixing/fc1/kernel (S, D_S)
    blocks.i.mlp_tokens.fc2.weight (S, D_S) -> block_i/token_mixing/fc2/kernel (D_S, S)
    blocks.i.norm2.weight|bias             -> block_i/norm2/gamma|beta
    blocks.i.mlp_channels.fc1|fc2.weight   -> block_i/channel_mixing/fc1|fc2/kernel (transposed)
    norm.weight|bias                       -> pre_head_norm/gamma|beta
  gMixer (`MixerBlock` with `GluMlp`): the same keys; fc1 is twice as wide
    as fc2's input (value half, then gate half), which the model's
    `mlp_layer="glu"` matches.
  ResMLP (`ResBlock`), block i:
    blocks.i.norm1.alpha|beta (1, 1, D)    -> block_i/norm1/alpha|beta (D,)
    blocks.i.linear_tokens.weight (S, S)   -> block_i/cross_patch/kernel (transposed)
    blocks.i.ls1 (D,)                      -> block_i/ls1/gamma
    blocks.i.norm2.alpha|beta              -> block_i/norm2/alpha|beta
    blocks.i.mlp_channels.fc1|fc2.weight   -> block_i/channel_mixing/fc1|fc2/kernel (transposed)
    blocks.i.ls2 (D,)                      -> block_i/ls2/gamma
    norm.alpha|beta (1, 1, D)              -> pre_head_norm/alpha|beta (D,)
  gMLP (`SpatialGatingBlock`), block i:
    blocks.i.norm.weight|bias              -> block_i/norm/gamma|beta
    blocks.i.mlp_channels.fc1.weight (2H, D) -> block_i/fc1/kernel (D, 2H)
    blocks.i.mlp_channels.gate.norm.weight|bias -> block_i/spatial_gating/norm/gamma|beta
    blocks.i.mlp_channels.gate.proj.weight (S_out, S_in)
                                           -> block_i/spatial_gating/proj/kernel (S_in, S_out)
    blocks.i.mlp_channels.fc2.weight (D, H) -> block_i/fc2/kernel (H, D)
    norm.weight|bias                       -> pre_head_norm/gamma|beta
  All:
    head.weight (classes, D) -> head/kernel (D, classes); head.bias (optional)

Every `.bias` keeps its shape; every Linear weight is transposed from torch's
`(out, in)` to Keras's `(in, out)`. timm computes the exact (erf) GELU.

The files are read by `keras_mixer.checkpoints.readers` (safetensors, or
`.pth` through `torch.load(weights_only=True)`).
"""

from keras_mixer.checkpoints import _plan

# What `read_checkpoint` says a file of this layout has, when none matches.
EXPECTED = (
    "timm keys ('stem.proj.weight', 'blocks.0.mlp_tokens.*', "
    "'blocks.0.linear_tokens.*' or 'blocks.0.mlp_channels.gate.*')"
)


def matches(keys):
    """True for the keys of a timm `MlpMixer` state dict."""
    return "stem.proj.weight" in keys


def detect_family(keys):
    """"mixer", "resmlp", "gmlp" or None, from timm key names."""
    keys = list(keys)
    if any(".mlp_channels.gate." in k for k in keys):
        return "gmlp"
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
        if family == "gmlp":
            gate, sgu = f"{src}.mlp_channels.gate", f"{dst}/spatial_gating"
            for source, target in (
                (f"{src}.norm", f"{dst}/norm"), (f"{gate}.norm", f"{sgu}/norm"),
            ):
                plan[f"{source}.weight"] = (f"{target}/gamma", ident)
                plan[f"{source}.bias"] = (f"{target}/beta", ident)
            # (S_out, S_in) -> (S_in, S_out) for a Dense on the token axis.
            plan[f"{gate}.proj.weight"] = (f"{sgu}/proj/kernel", lin)
            plan[f"{gate}.proj.bias"] = (f"{sgu}/proj/bias", ident)
            for fc in ("fc1", "fc2"):
                plan[f"{src}.mlp_channels.{fc}.weight"] = (f"{dst}/{fc}/kernel", lin)
                plan[f"{src}.mlp_channels.{fc}.bias"] = (f"{dst}/{fc}/bias", ident)
            continue
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
    if family in ("mixer", "gmlp"):
        plan["norm.weight"] = ("pre_head_norm/gamma", ident)
        plan["norm.bias"] = ("pre_head_norm/beta", ident)
    else:
        plan["norm.alpha"] = ("pre_head_norm/alpha", vec)
        plan["norm.beta"] = ("pre_head_norm/beta", vec)
    return plan, blocks


def convert(state_dict):
    """Converts a timm `MlpMixer` state dict (Mixer, gMixer, ResMLP or gMLP
    blocks).

    Args:
        state_dict: {key: array} (NumPy arrays, or anything `np.asarray`
            takes), e.g. from `readers.read_safetensors` or
            `readers.read_torch`.

    Returns:
        `Checkpoint(source="timm", approximate_gelu=False)`, family "mixer"
        (Mixer and gMixer), "resmlp" or "gmlp" from the keys.

    Raises:
        ValueError: not one timm MlpMixer (e.g. a ViT, a deit-layout ResMLP:
            use `keras_mixer.checkpoints.deit_resmlp`).
    """
    keys = list(state_dict)
    family = detect_family(keys)
    if family is None or "stem.proj.weight" not in state_dict:
        raise ValueError(
            "not a timm MLP-Mixer or ResMLP state dict: expected keys "
            "'stem.proj.weight' and 'blocks.0.mlp_tokens.*' (Mixer), "
            "'blocks.0.linear_tokens.*' (ResMLP) or "
            "'blocks.0.mlp_channels.gate.*' (gMLP), found "
            f"{_plan.format_keys(keys)}." + _plan.wrong_architecture_hint(keys)
        )
    what = {"mixer": "timm MLP-Mixer", "resmlp": "timm ResMLP",
            "gmlp": "timm gMLP"}[family]
    plan, _ = key_plan(keys, family)
    tensors, origin = _plan.apply_plan(state_dict, plan, what)
    return _plan.Checkpoint(
        tensors=tensors, family=family, source="timm", approximate_gelu=False,
        source_keys=origin,
    )

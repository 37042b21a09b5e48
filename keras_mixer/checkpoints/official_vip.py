"""The official Vision Permutator files (Andrew-Qibin/VisionPermutator,
`models/vip.py`; ViP-S/7, M/7, L/7 on Google Drive).

They are timm checkpoints (the official `validate.py` reads them with timm's
`load_checkpoint`): the state dict bare or under `state_dict` (or
`state_dict_ema`, or `model`), its keys possibly prefixed `module.`;
`keras_mixer.checkpoints.readers.read_torch` unwraps them. The official
loader is not strict; this one is: every key must map and every variable
must be found. Keys, with the Keras variable each becomes:

    patch_embed.proj.weight (D0, 3, p, p) -> stem/proj/kernel (p, p, 3, D0)
    patch_embed.proj.bias                 -> stem/proj/bias
  `network.{i}`, in order: a stage of blocks, or a convolution between two
  stages (`network.{i}.proj`, which becomes `downsample_{s}` before stage
  s). Block j of stage s:
    network.{i}.{j}.norm1.weight|bias     -> stage_{s}_block_{j}/norm1/gamma|beta
    ....attn.mlp_c|mlp_h|mlp_w.weight (C, C) -> .../token_mixing/mlp_c|mlp_h|mlp_w/kernel (transposed)
    ....attn.reweight.fc1|fc2.weight|bias -> .../token_mixing/reweight/fc1|fc2/kernel|bias
    ....attn.proj.weight|bias             -> .../token_mixing/proj/kernel|bias
    ....norm2.weight|bias                 -> .../norm2/gamma|beta
    ....mlp.fc1|fc2.weight|bias           -> .../channel_mixing/fc1|fc2/kernel|bias
    network.{i}.proj.weight (D', D, k, k) -> downsample_{s}/proj/kernel (k, k, D, D')
    norm.weight|bias                      -> pre_head_norm/gamma|beta
    head.weight (classes, D) -> head/kernel (D, classes); head.bias (optional)

`pyramid_plan` reads the `network` layout from the keys; the CycleMLP key
map (`official_cyclemlp`) uses it too, with its own token-mixer keys.
"""

from keras_mixer.checkpoints import _plan

# What `read_checkpoint` says a file of this layout has, when none matches.
EXPECTED = (
    "official Vision Permutator keys ('patch_embed.proj.weight', "
    "'network.0.0.attn.mlp_h.weight')"
)

# The token mixer's keys under `attn.`, with their Keras sublayer and layout.
MIXER_KEYS = {
    "mlp_c.weight": ("mlp_c/kernel", _plan.linear),
    "mlp_h.weight": ("mlp_h/kernel", _plan.linear),
    "mlp_w.weight": ("mlp_w/kernel", _plan.linear),
    "reweight.fc1.weight": ("reweight/fc1/kernel", _plan.linear),
    "reweight.fc1.bias": ("reweight/fc1/bias", _plan.identity),
    "reweight.fc2.weight": ("reweight/fc2/kernel", _plan.linear),
    "reweight.fc2.bias": ("reweight/fc2/bias", _plan.identity),
    "proj.weight": ("proj/kernel", _plan.linear),
    "proj.bias": ("proj/bias", _plan.identity),
}


def matches(keys):
    """True for the keys of the official Vision Permutator."""
    keys = list(keys)
    return "patch_embed.proj.weight" in keys and any(
        ".attn.mlp_h." in k for k in keys
    )


def network_layout(keys, what):
    """The `network` list read from the keys: `[("stage", i, blocks) or
    ("downsample", i, None), ...]`, stages and downsamplings alternating as
    the official models build them; a ValueError otherwise."""
    keys = list(keys)
    indices = _plan.block_indices(keys, r"network\.(\d+)\.")
    if indices != list(range(len(indices))) or not indices:
        raise ValueError(
            f"not a {what} checkpoint: its `network` entries are {indices}, "
            "not 0, 1, 2, ..."
        )
    layout = []
    for i in indices:
        if f"network.{i}.proj.weight" in keys:
            if not layout or layout[-1][0] != "stage":
                raise ValueError(
                    f"not a {what} checkpoint: network.{i} is a downsampling "
                    "convolution that follows no stage."
                )
            layout.append(("downsample", i, None))
            continue
        blocks = _plan.block_indices(keys, rf"network\.{i}\.(\d+)\.")
        if blocks != list(range(len(blocks))) or not blocks:
            raise ValueError(
                f"not a {what} checkpoint: network.{i} has blocks {blocks}, "
                "not 0, 1, 2, ..."
            )
        layout.append(("stage", i, len(blocks)))
    if layout[-1][0] != "stage":
        raise ValueError(f"not a {what} checkpoint: it ends in a downsampling.")
    return layout


def pyramid_plan(keys, mixer_keys, what):
    """The plan of a CycleMLP or Vision Permutator state dict: stem,
    `network` (blocks with `mixer_keys` under `attn.`, downsamplings),
    norm and head."""
    ident, lin = _plan.identity, _plan.linear
    plan = {
        "patch_embed.proj.weight": ("stem/proj/kernel", _plan.conv_oihw_to_hwio),
        "patch_embed.proj.bias": ("stem/proj/bias", ident),
    }
    stage = 0
    for kind, i, blocks in network_layout(keys, what):
        if kind == "downsample":
            dst = f"downsample_{stage}"
            plan[f"network.{i}.proj.weight"] = (
                f"{dst}/proj/kernel", _plan.conv_oihw_to_hwio)
            plan[f"network.{i}.proj.bias"] = (f"{dst}/proj/bias", ident)
            continue
        for j in range(blocks):
            src, dst = f"network.{i}.{j}", f"stage_{stage}_block_{j}"
            for norm in ("norm1", "norm2"):
                plan[f"{src}.{norm}.weight"] = (f"{dst}/{norm}/gamma", ident)
                plan[f"{src}.{norm}.bias"] = (f"{dst}/{norm}/beta", ident)
            for key, (path, transform) in mixer_keys.items():
                plan[f"{src}.attn.{key}"] = (f"{dst}/token_mixing/{path}", transform)
            for fc in ("fc1", "fc2"):
                plan[f"{src}.mlp.{fc}.weight"] = (
                    f"{dst}/channel_mixing/{fc}/kernel", lin)
                plan[f"{src}.mlp.{fc}.bias"] = (
                    f"{dst}/channel_mixing/{fc}/bias", ident)
        stage += 1
    plan.update({
        "norm.weight": ("pre_head_norm/gamma", ident),
        "norm.bias": ("pre_head_norm/beta", ident),
        "head.weight": ("head/kernel", lin),
        "head.bias": ("head/bias", ident),
    })
    return plan


def convert(state_dict):
    """Converts an official Vision Permutator state dict (unwrapped).

    Returns:
        `Checkpoint(family="vip", source="official ViP",
        approximate_gelu=False)`.

    Raises:
        ValueError: keys missing or left over (a ViP with `qkv_bias`, which
            no released file has, a truncated file, another model), named.
    """
    what = "Vision Permutator"
    plan = pyramid_plan(state_dict, MIXER_KEYS, what)
    tensors, origin = _plan.apply_plan(state_dict, plan, what)
    return _plan.Checkpoint(
        tensors=tensors, family="vip", source="official ViP",
        approximate_gelu=False, source_keys=origin,
    )

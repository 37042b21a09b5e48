"""The official CycleMLP release files (ShoufaChen/CycleMLP, `cycle_mlp.py`;
`CycleMLP_B1.pth` ... `CycleMLP_B5.pth` on the v0.1 GitHub release).

A file holds `{'model': state_dict, ...}`, which the official `main.py
--eval --resume` loads strictly; `keras_mixer.checkpoints.readers.read_torch`
unwraps it. The layout is Vision Permutator's (`official_vip.pyramid_plan`:
stem, `network` of stages and downsamplings, norm, head) with this token
mixer under `network.{i}.{j}.attn.`:

    mlp_c.weight (C, C)                 -> .../token_mixing/mlp_c/kernel (transposed)
    sfc_h.weight (C, C, 1, 1)           -> .../token_mixing/sfc_h/kernel (C, C)
    sfc_h.bias (C,)                     -> .../token_mixing/sfc_h/bias
    sfc_h.offset (1, 2 C, 1, 1)         -> `Checkpoint.buffers` (not a variable)
    sfc_w.weight | bias | offset        -> .../token_mixing/sfc_w/...
    reweight.fc1|fc2.weight|bias        -> .../token_mixing/reweight/fc1|fc2/kernel|bias
    proj.weight|bias                    -> .../token_mixing/proj/kernel|bias

The `offset` buffers are the Cycle FCs' fixed sampling offsets, which the
Keras model holds as constants: the model's builder compares them with its
pattern (`keras_mixer.models.cyclemlp.check_offsets`) and refuses a file
whose offsets differ, naming the tensor. The downsamplings are 3x3
convolutions (`network.{1,3,5}.proj`).
"""

from keras_mixer.checkpoints import _plan
from keras_mixer.checkpoints import official_vip

# What `read_checkpoint` says a file of this layout has, when none matches.
EXPECTED = (
    "official CycleMLP keys ('patch_embed.proj.weight', "
    "'network.0.0.attn.sfc_h.weight')"
)


def pointwise(array):
    """A 1x1 convolution weight (out, in, 1, 1) -> Keras Dense kernel (in, out)."""
    if array.ndim != 4 or array.shape[2:] != (1, 1):
        raise ValueError(
            f"expected a (out, in, 1, 1) Cycle FC weight, got shape {array.shape}"
        )
    return array[:, :, 0, 0].T


MIXER_KEYS = {
    "mlp_c.weight": ("mlp_c/kernel", _plan.linear),
    "reweight.fc1.weight": ("reweight/fc1/kernel", _plan.linear),
    "reweight.fc1.bias": ("reweight/fc1/bias", _plan.identity),
    "reweight.fc2.weight": ("reweight/fc2/kernel", _plan.linear),
    "reweight.fc2.bias": ("reweight/fc2/bias", _plan.identity),
    "proj.weight": ("proj/kernel", _plan.linear),
    "proj.bias": ("proj/bias", _plan.identity),
}
for _fc in ("sfc_h", "sfc_w"):
    MIXER_KEYS[f"{_fc}.weight"] = (f"{_fc}/kernel", pointwise)
    MIXER_KEYS[f"{_fc}.bias"] = (f"{_fc}/bias", _plan.identity)
    MIXER_KEYS[f"{_fc}.offset"] = (f"{_fc}/offset", _plan.identity)


def matches(keys):
    """True for the keys of the official CycleMLP."""
    keys = list(keys)
    return "patch_embed.proj.weight" in keys and any(
        ".attn.sfc_h." in k for k in keys
    )


def convert(state_dict):
    """Converts an official CycleMLP state dict (or `{'model': state_dict}`).

    Returns:
        `Checkpoint(family="cyclemlp", source="official CycleMLP",
        approximate_gelu=False)`, the offset buffers in `buffers`.

    Raises:
        ValueError: keys missing or left over, named.
    """
    if isinstance(state_dict.get("model"), dict):
        state_dict = state_dict["model"]
    what = "CycleMLP"
    plan = official_vip.pyramid_plan(state_dict, MIXER_KEYS, what)
    tensors, origin = _plan.apply_plan(state_dict, plan, what)
    buffers = {p: tensors.pop(p) for p in list(tensors) if p.endswith("/offset")}
    return _plan.Checkpoint(
        tensors=tensors, family="cyclemlp", source="official CycleMLP",
        approximate_gelu=False, source_keys=origin, buffers=buffers,
    )

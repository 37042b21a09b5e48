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

The reader functions return {key: np.ndarray}: `read_safetensors` with
`safetensors.numpy` (no torch needed), `read_torch` with
`torch.load(weights_only=True)` (torch imported only there).
"""

from keras_mixer.convert import Checkpoint
from keras_mixer.convert import _common


class MissingDependencyError(ImportError, ValueError):
    """A package needed to read a file is not installed (also a ValueError,
    so that callers handling unreadable files handle it too)."""


def read_safetensors(path):
    """Reads a `.safetensors` file into {key: np.ndarray}.

    Raises:
        ValueError: the file is truncated, corrupt or not safetensors.
    """
    try:
        from safetensors.numpy import load_file
    except ImportError:
        raise MissingDependencyError(
            f"Reading {path} needs the safetensors package: "
            "`pip install safetensors`."
        ) from None
    try:
        return dict(load_file(str(path)))
    except FileNotFoundError:
        raise
    except Exception as error:  # noqa: BLE001 - SafetensorError and others
        raise ValueError(
            f"{path} is not a readable safetensors file ({error}). It may be "
            "truncated or corrupt: download it again."
        ) from None


def _tensor_to_numpy(torch, value):
    value = value.detach().cpu()
    if value.is_floating_point():
        value = value.to(torch.float32)
    return value.numpy()


def unwrap_state_dict(obj, path="checkpoint"):
    """The state dict inside a loaded checkpoint object.

    Training checkpoints nest it: deit's `{'model': ..., 'optimizer': ...}`,
    `{'state_dict': ...}`, timm's EMA `{'model_ema': ...}` (tried in that
    order when the top level is not itself a state dict). A `module.` prefix
    (DistributedDataParallel) on every key is removed.
    """
    if not isinstance(obj, dict):
        raise ValueError(
            f"{path} holds a {type(obj).__name__}, not a state dict (a dict "
            "of tensors)."
        )

    def is_state_dict(d):
        return bool(d) and all(not isinstance(v, dict) for v in d.values())

    if not is_state_dict(obj):
        for key in ("model", "state_dict", "model_ema", "state_dict_ema"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
        else:
            raise ValueError(
                f"{path} holds a dict with keys {_common.format_keys(obj)} and "
                "no state dict under 'model', 'state_dict' or 'model_ema'."
            )
    if obj and all(k.startswith("module.") for k in obj):
        obj = {k[len("module."):]: v for k, v in obj.items()}
    return obj


def read_torch(path):
    """Reads a PyTorch checkpoint (`.pth`, `.pt`, `.bin`) into {key: array}.

    Uses `torch.load(path, map_location="cpu", weights_only=True)`, which
    unpickles tensors and plain containers only. Tensors become NumPy arrays,
    floating point ones float32.

    Raises:
        MissingDependencyError (an ImportError and a ValueError): torch is not
            installed.
        ValueError: the file is truncated, corrupt, holds other Python
            objects, or no state dict.
    """
    try:
        import torch
    except ImportError:
        raise MissingDependencyError(
            f"{path} is a PyTorch checkpoint; reading it needs torch: "
            "`pip install torch` (the CPU build is enough). Or convert it to "
            "safetensors where torch is installed (safetensors.torch."
            "save_file(state_dict, 'model.safetensors')); keras_mixer reads "
            "safetensors without torch. timm's weights are also published as "
            "model.safetensors on the Hugging Face Hub (hf.co/timm)."
        ) from None
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as error:  # noqa: BLE001 - UnpicklingError, RuntimeError...
        text = str(error)
        if "weights_only" in text or "Weights only" in text:
            raise ValueError(
                f"{path} holds Python objects other than tensors and plain "
                "containers; keras_mixer loads PyTorch files with "
                "torch.load(weights_only=True) and refuses to unpickle them. "
                f"({text.splitlines()[0] if text else type(error).__name__})"
            ) from None
        raise ValueError(
            f"{path} is not a readable PyTorch checkpoint ({type(error).__name__}: "
            f"{text.splitlines()[0] if text else ''}). It may be truncated or "
            "corrupt: download it again."
        ) from None
    state_dict = unwrap_state_dict(obj, path)
    arrays = {}
    for key, value in state_dict.items():
        if not isinstance(value, torch.Tensor):
            raise ValueError(
                f"{path}: entry {key!r} of the state dict is a "
                f"{type(value).__name__}, not a tensor."
            )
        arrays[key] = _tensor_to_numpy(torch, value)
    return arrays


def detect_family(keys):
    """"mixer", "resmlp" or None, from timm key names."""
    keys = list(keys)
    if any(".mlp_tokens." in k for k in keys):
        return "mixer"
    if any(".linear_tokens." in k for k in keys):
        return "resmlp"
    return None


def _plan(keys, family):
    lin, vec, ident = _common.linear, _common.vector, _common.identity
    plan = {
        "stem.proj.weight": ("stem/proj/kernel", _common.conv_oihw_to_hwio),
        "stem.proj.bias": ("stem/proj/bias", ident),
        "head.weight": ("head/kernel", lin),
        "head.bias": ("head/bias", ident),
    }
    blocks = _common.block_indices(keys, r"blocks\.(\d+)\.")
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
            takes), e.g. from `read_safetensors` or `read_torch`.

    Returns:
        `Checkpoint(source="timm", approximate_gelu=False)`, family "mixer" or
        "resmlp" from the keys.

    Raises:
        ValueError: not one timm MLP-Mixer / ResMLP (e.g. a gMLP, a ViT, a
            deit-layout ResMLP: use `keras_mixer.convert.deit`).
    """
    keys = list(state_dict)
    family = detect_family(keys)
    if family is None or "stem.proj.weight" not in state_dict:
        raise ValueError(
            "not a timm MLP-Mixer or ResMLP state dict: expected keys "
            "'stem.proj.weight' and 'blocks.0.mlp_tokens.*' (Mixer) or "
            f"'blocks.0.linear_tokens.*' (ResMLP), found "
            f"{_common.format_keys(keys)}." + _common.wrong_architecture_hint(keys)
        )
    what = "timm MLP-Mixer" if family == "mixer" else "timm ResMLP"
    plan, _ = _plan(keys, family)
    tensors, origin = _common.apply_plan(state_dict, plan, what)
    _common.check_shapes(tensors, family, origin, what)
    return Checkpoint(
        tensors=tensors, family=family, source="timm", approximate_gelu=False
    )

"""Published checkpoints, from a file on disk to a model's variables.

The path of one checkpoint, module by module:

1. `download`: a weights name of the presets table becomes a local file
   (cache, checksum); `hub`: "hf://..." becomes a local Hugging Face Hub
   model folder (config.json + model.safetensors), through huggingface_hub.
2. `readers`: the file becomes {name: np.ndarray} (npz, safetensors, torch),
   read safely; the container is detected from its first bytes. A Hub
   folder's config.json adds the source's architecture name and input
   normalisation (`hub`).
3. One key map per source layout (`KEY_MAPS`) renames and transposes the
   arrays into a `Checkpoint`: arrays keyed by keras_mixer variable path in
   Keras layout (`stem/proj/kernel` HWIO, dense kernels `(in, out)`).
4. `assign`: the tensors are assigned to the model's variables by path,
   exactly; `resize` grows token-mixing tensors for a larger patch grid
   (MLP-Mixer paper, Appendix C).

Nothing here imports the models: the checkpoint side works on variable paths
and arrays, and `keras_mixer.models` calls it for `weights=`.

A key map is a module with `EXPECTED` (a phrase naming its keys, for
messages), `matches(keys)` and `convert(state_dict) -> Checkpoint`.
"""

import os

from keras_mixer.checkpoints import deit_resmlp
from keras_mixer.checkpoints import flax_mixer
from keras_mixer.checkpoints import hub
from keras_mixer.checkpoints import official_cyclemlp
from keras_mixer.checkpoints import official_vip
from keras_mixer.checkpoints import readers
from keras_mixer.checkpoints import timm_convmixer
from keras_mixer.checkpoints import timm_mlp_mixer
from keras_mixer.checkpoints._plan import Checkpoint
from keras_mixer.checkpoints._plan import format_keys
from keras_mixer.checkpoints._plan import wrong_architecture_hint
from keras_mixer.checkpoints.readers import ACCEPTED_FORMATS
from keras_mixer.checkpoints.readers import detect_container

# Every source layout read: Google's Flax MLP-Mixer, timm's MlpMixer (Mixer,
# gMixer, ResMLP and gMLP blocks), the official CycleMLP and Vision
# Permutator, deit's ResMLP, timm's ConvMixer. The first whose `matches` is
# true converts: the CycleMLP and ViP maps come before deit's, which takes
# any `patch_embed.proj.weight`.
KEY_MAPS = (flax_mixer, timm_mlp_mixer, official_cyclemlp, official_vip,
            deit_resmlp, timm_convmixer)

__all__ = [
    "ACCEPTED_FORMATS",
    "Checkpoint",
    "KEY_MAPS",
    "convert_arrays",
    "detect_container",
    "read_checkpoint",
]


def convert_arrays(arrays, origin="checkpoint"):
    """Converts {name: array} in any supported layout to a Checkpoint."""
    keys = list(arrays)
    for key_map in KEY_MAPS:
        if key_map.matches(keys):
            try:
                return key_map.convert(arrays)
            except ValueError as error:
                raise ValueError(f"{origin}: {error}") from None
    expected = ", ".join(key_map.EXPECTED for key_map in KEY_MAPS)
    raise ValueError(
        f"{origin} is not a checkpoint of a known layout: expected {expected}; "
        f"found {format_keys(keys)}." + wrong_architecture_hint(keys)
    )


def read_checkpoint(path):
    """Reads a published checkpoint of any supported format and layout, or a
    Hugging Face Hub model folder (config.json + model.safetensors or
    pytorch_model.bin).

    The container is detected from the file's first bytes (safetensors: an
    8-byte little-endian header length then '{'; a zip of `.npy` members: an
    `.npz`; a zip holding `data.pkl`, or a pickle: a PyTorch file), then the
    layout from the tensor names. Nothing is unpickled beyond what
    `torch.load(weights_only=True)` allows; torch is imported only for PyTorch
    files.

    Args:
        path: str or os.PathLike, a file or a Hub folder.

    Returns:
        A `Checkpoint` whose `origin` is `path`.

    Raises:
        ValueError: the file is empty, truncated, corrupt, of another format
            or of another architecture; the message names the file.
        ImportError (also a ValueError): a PyTorch file without torch
            installed.
    """
    if os.path.isdir(path):
        arrays, config, weights = hub.read_folder(path)
        checkpoint = convert_arrays(arrays, origin=weights)
        checkpoint.architecture, checkpoint.mean_std = hub.describe(config, path)
    else:
        checkpoint = convert_arrays(readers.read_arrays(path), origin=path)
    checkpoint.origin = str(path)
    return checkpoint

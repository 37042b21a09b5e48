"""Readers of published checkpoints, one module per source format.

Each format module reads a file safely (`np.load(allow_pickle=False)`,
safetensors, `torch.load(weights_only=True)`) and converts its tensors to a
`Checkpoint`: arrays keyed by keras_mixer variable path in Keras layout
(`stem/proj/kernel` HWIO, dense kernels `(in, out)`, token-mixing kernels
`(tokens_in, tokens_out)`), plus what the source's numerics are.

- `flax_npz`: Google's official MLP-Mixer `.npz` (Flax names).
- `timm`: timm state dicts of `MlpMixer` and `ResMlp` (safetensors, or `.pth`
  through torch when installed).
- `deit`: Facebook's original ResMLP layout (`resmlp_models.py`).

`read_checkpoint(path)` detects the format from the file's bytes and keys.
"""

import dataclasses

import numpy as np


@dataclasses.dataclass
class Checkpoint:
    """Converted weights.

    Attributes:
        tensors: {keras variable path: np.ndarray in Keras layout}.
        family: "mixer" or "resmlp".
        source: "flax", "timm" or "deit".
        approximate_gelu: the GELU form the source computes with (True: tanh
            approximation, Google's Flax code; False: exact erf, timm/deit).
    """

    tensors: dict
    family: str
    source: str
    approximate_gelu: bool
    # The patch grid (rows, cols) the checkpoint was trained on; None means
    # square, derived from the number of tokens.
    grid: tuple = None
    # Where the tensors came from, for error messages (a file path).
    origin: str = "checkpoint"

    @property
    def num_classes(self):
        """Classes of the checkpoint's head, or None if it has none."""
        head = self.tensors.get("head/kernel")
        return None if head is None else int(head.shape[-1])

    @property
    def num_blocks(self):
        return len({k.split("/")[0] for k in self.tensors if k.startswith("block_")})

    @property
    def num_tokens(self):
        """Tokens of the checkpoint's training resolution."""
        key = (
            "block_0/token_mixing/fc1/kernel"
            if self.family == "mixer"
            else "block_0/cross_patch/kernel"
        )
        return int(self.tensors[key].shape[0])

    @property
    def patch_size(self):
        return int(self.tensors["stem/proj/kernel"].shape[0])

    @property
    def hidden_dim(self):
        return int(self.tensors["stem/proj/kernel"].shape[-1])


# ----------------------------------------------------------------------------
# Reading any supported file.
# ----------------------------------------------------------------------------

ACCEPTED_FORMATS = (
    "a Flax .npz of Google's official MLP-Mixer checkpoints "
    "(storage.googleapis.com/mixer_models); "
    "a .safetensors file of a timm MLP-Mixer / ResMLP or a deit ResMLP; "
    "a PyTorch .pth/.pt/.bin file (zip or legacy pickle, read with "
    "torch.load(weights_only=True); needs torch) of a timm MLP-Mixer / ResMLP "
    "or a deit ResMLP"
)


def _zip_member_names(path, head):
    """(names, intact): the members of a zip file, or, when its central
    directory is unreadable (truncated file), the name of the first local
    file header only."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as archive:
            return archive.namelist(), True
    except (zipfile.BadZipFile, OSError, EOFError, ValueError):
        pass
    names = []
    if head.startswith(b"PK\x03\x04") and len(head) >= 30:
        name_length = int.from_bytes(head[26:28], "little")
        names = [head[30:30 + name_length].decode("utf-8", "replace")]
    return names, False


def detect_container(path):
    """"npz", "safetensors" or "torch", from the first bytes of the file.

    Raises:
        ValueError: the file is empty, truncated, or of no accepted format
            (the message names the file and lists the accepted formats).
    """
    import os

    path = os.fspath(path)
    size = os.path.getsize(path)
    if size == 0:
        raise ValueError(
            f"{path} is empty (0 bytes): the download or copy did not "
            "complete. Download it again."
        )
    with open(path, "rb") as f:
        head = f.read(1024)
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        names, intact = _zip_member_names(path, head)
        if any(n == "data.pkl" or n.endswith("/data.pkl") for n in names):
            kind = "torch"
        elif names and all(n.endswith(".npy") for n in names):
            kind = "npz"
        elif not intact:
            kind = None
        else:
            raise ValueError(
                f"{path} is a zip archive but neither an .npz of arrays nor a "
                f"PyTorch checkpoint (members: {names[:5]}). Accepted "
                f"formats: {ACCEPTED_FORMATS}."
            )
        if not intact:
            what = {"torch": "PyTorch checkpoint (zip)", "npz": ".npz file"}
            raise ValueError(
                f"{path} is a truncated or corrupt "
                f"{what.get(kind, 'zip archive')} ({size} bytes; its zip "
                "directory is unreadable). Download it again."
            )
        return kind
    if len(head) >= 9 and head[8:9] == b"{":
        header = int.from_bytes(head[:8], "little")
        if 8 + header > size:
            raise ValueError(
                f"{path} is a truncated safetensors file: its header announces "
                f"{header} bytes of metadata but the file has {size} bytes. "
                "Download it again."
            )
        return "safetensors"
    if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:
        return "torch"  # legacy (non-zip) torch.save pickle
    raise ValueError(
        f"{path} is not a checkpoint format keras_mixer reads (first bytes "
        f"{head[:8]!r}), or it is truncated. Accepted formats: "
        f"{ACCEPTED_FORMATS}."
    )


def detect_layout(keys):
    """"flax", "timm", "deit" or None, from the names of the tensors."""
    keys = list(keys)
    if "stem.proj.weight" in keys:
        return "timm"
    if "patch_embed.proj.weight" in keys:
        return "deit"
    if any("/" in k for k in keys) or any(
        k.startswith("MixerBlock_") or k.startswith("stem.") for k in keys
    ):
        return "flax"
    return None


def convert_arrays(arrays, origin="checkpoint"):
    """Converts {name: array} in any supported layout to a Checkpoint."""
    from keras_mixer.convert import _common
    from keras_mixer.convert import deit
    from keras_mixer.convert import flax_npz
    from keras_mixer.convert import timm

    layout = detect_layout(arrays)
    converters = {"flax": flax_npz, "timm": timm, "deit": deit}
    if layout is None:
        raise ValueError(
            f"{origin} is not an MLP-Mixer or ResMLP checkpoint of a known "
            "layout: expected Flax names ('stem/kernel', 'MixerBlock_0/...'), "
            "timm keys ('stem.proj.weight', 'blocks.0.mlp_tokens.*' or "
            "'blocks.0.linear_tokens.*') or deit keys "
            "('patch_embed.proj.weight', 'blocks.0.attn.weight'); found "
            f"{_common.format_keys(arrays)}."
            + _common.wrong_architecture_hint(arrays)
        )
    try:
        return converters[layout].convert(arrays)
    except ValueError as error:
        raise ValueError(f"{origin}: {error}") from None


def read_checkpoint(path):
    """Reads a published MLP-Mixer / ResMLP checkpoint of any supported format.

    The container is detected from the file's first bytes (safetensors: an
    8-byte little-endian header length then '{'; a zip of `.npy` members: an
    `.npz`; a zip holding `data.pkl`, or a pickle: a PyTorch file), then the
    layout from the tensor names (Flax, timm or deit). Nothing is unpickled
    beyond what `torch.load(weights_only=True)` allows; torch is imported only
    for PyTorch files.

    Args:
        path: str or os.PathLike.

    Returns:
        A `Checkpoint`.

    Raises:
        ValueError: the file is empty, truncated, corrupt, of another format
            or of another architecture; the message names the file.
        ImportError (also a ValueError): a PyTorch file without torch
            installed.
    """
    import os

    from keras_mixer.convert import flax_npz
    from keras_mixer.convert import timm

    path = os.fspath(path)
    container = detect_container(path)
    if container == "npz":
        arrays = flax_npz.read(path)
    elif container == "safetensors":
        arrays = timm.read_safetensors(path)
    else:
        arrays = timm.read_torch(path)
    checkpoint = convert_arrays(arrays, origin=path)
    checkpoint.origin = path
    return checkpoint

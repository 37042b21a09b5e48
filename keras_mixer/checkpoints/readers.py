"""Reading checkpoint files into {name: np.ndarray}, safely.

- `.npz` (Google's Flax checkpoints): `np.load(allow_pickle=False)`.
- `.safetensors`: `safetensors.numpy`, no torch needed.
- PyTorch `.pth`/`.pt`/`.bin` (zip or legacy pickle):
  `torch.load(weights_only=True)`; torch is imported only for these files.

`read_arrays(path)` detects the container from the file's first bytes
(`detect_container`) and calls its reader. The readers know nothing of model
layouts: the key maps (`flax_mixer`, `timm_mlp_mixer`, `deit_resmlp`,
`timm_convmixer`) turn the names into variable paths.
"""

import argparse
import functools
import os
import zipfile

import numpy as np

from keras_mixer.checkpoints._plan import LazyArray
from keras_mixer.checkpoints._plan import format_keys


ACCEPTED_FORMATS = (
    "a Flax .npz of Google's official MLP-Mixer checkpoints "
    "(storage.googleapis.com/mixer_models); "
    "a .safetensors file of a timm MLP-Mixer / ResMLP / gMLP / gMixer / "
    "ConvMixer or a deit ResMLP; "
    "a PyTorch .pth/.pt/.bin file (zip or legacy pickle, read with "
    "torch.load(weights_only=True); needs torch) of the same, an official "
    "CycleMLP or Vision Permutator"
)


def is_web_page(head):
    """Whether the first bytes of a file are an HTML page (what a site such
    as Google Drive sends instead of a large file, or a login page)."""
    start = head.lstrip()[:256].lower()
    return start.startswith((b"<!doctype html", b"<html")) or b"<html" in start


def _zip_member_names(path, head):
    """(names, intact): the members of a zip file, or, when its central
    directory is unreadable (truncated file), the name of the first local
    file header only."""
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
    if is_web_page(head):
        raise ValueError(
            f"{path} is an HTML web page, not a checkpoint: the download "
            "saved the page a site sent instead of the file (Google Drive "
            "sends a confirmation page for large files). Open the link in a "
            "browser, download the file itself and pass its path. Accepted "
            f"formats: {ACCEPTED_FORMATS}."
        )
    raise ValueError(
        f"{path} is not a checkpoint format keras_mixer reads (first bytes "
        f"{head[:8]!r}), or it is truncated. Accepted formats: "
        f"{ACCEPTED_FORMATS}."
    )


# The largest array read from an .npz, decompressed: 1 GiB (the largest
# official array, Mixer-L/16's 21k-class head, is 89 MB), and the largest
# archive: 4 GiB (the largest official file holds 0.9 GB).
MAX_MEMBER_BYTES = 1 << 30
MAX_NPZ_BYTES = 4 << 30


def _npy_header(f):
    version = np.lib.format.read_magic(f)
    if version == (1, 0):
        shape, _, dtype = np.lib.format.read_array_header_1_0(f)
    elif version == (2, 0):
        shape, _, dtype = np.lib.format.read_array_header_2_0(f)
    else:
        raise ValueError(f".npy format {version} unsupported")
    return tuple(shape), dtype


def read_npz(path, max_member_bytes=MAX_MEMBER_BYTES,
             max_total_bytes=MAX_NPZ_BYTES):
    """{name: LazyArray} of an `.npz` file, never unpickling anything.

    Only the zip directory and the `.npy` headers are read here (a few bytes
    of each member decompressed); each array is read from the file, with
    `np.load(allow_pickle=False)`, when it is first used, after its name and
    shape were checked against the model.

    Raises:
        ValueError: not a readable zip of unique `.npy` arrays, an object
            array (a pickle), an array over `max_member_bytes` or arrays over
            `max_total_bytes` decompressed, or a member whose size is not the
            one its header declares.
    """
    try:
        archive = zipfile.ZipFile(path)
    except FileNotFoundError:
        raise
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as error:
        raise _unreadable(path, error) from None
    specs, total = {}, 0
    with archive:
        for info in archive.infolist():
            member = info.filename
            if not member.endswith(".npy") or member[:-4] in specs:
                raise _unreadable(
                    path, f"member {member!r} is not a unique .npy array")
            if info.compress_type not in (zipfile.ZIP_STORED,
                                          zipfile.ZIP_DEFLATED):
                raise _unreadable(
                    path, f"member {member!r} uses zip compression "
                    f"{info.compress_type}")
            total += info.file_size
            for size, limit, what in (
                (info.file_size, max_member_bytes,
                 f"array {member[:-4]!r} decompresses"),
                (total, max_total_bytes, "its arrays decompress"),
            ):
                if size > limit:
                    raise ValueError(
                        f"{path}: {what} to {size:,} bytes, over "
                        f"the limit of {limit:,}; refused before "
                        "decompressing. Official MLP-Mixer files hold under "
                        "1 GB, none of their arrays over 100 MB."
                    )
            try:
                with archive.open(info) as f:
                    shape, dtype = _npy_header(f)
                    offset = f.tell()
            except Exception as error:  # noqa: BLE001 - zlib, format errors
                raise _unreadable(path, f"member {member!r}: {error}") from None
            if dtype.hasobject:
                raise _refused_or_unreadable(
                    path, ValueError("Object arrays need allow_pickle"))
            declared = offset + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
            if declared != info.file_size:
                raise _unreadable(
                    path, f"member {member!r} declares {shape} {dtype} "
                    f"({declared:,} bytes) but holds {info.file_size:,} bytes")
            name = member[:-4]
            specs[name] = LazyArray(
                shape, dtype, functools.partial(_read_member, path, name))
    return specs


def _read_member(path, name):
    try:
        with np.load(path, allow_pickle=False) as data:
            return np.asarray(data[name])
    except FileNotFoundError:
        raise
    except Exception as error:  # noqa: BLE001 - e.g. zlib.error, EOFError
        raise _refused_or_unreadable(path, error) from None


def _refused_or_unreadable(path, error):
    if isinstance(error, ValueError) and "allow_pickle" in str(error):
        return ValueError(
            f"{path} holds pickled Python objects (object arrays or a "
            "pickle); keras_mixer reads .npz files with allow_pickle=False "
            "and refuses them. Official MLP-Mixer checkpoints hold numeric "
            "arrays only."
        )
    return _unreadable(path, error)


def _unreadable(path, error):
    return ValueError(
        f"{path} is not a readable .npz file ({error}). It may be truncated "
        "or corrupt: download it again (official MLP-Mixer checkpoints are at "
        "https://storage.googleapis.com/mixer_models/)."
    )


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
                f"{path} holds a dict with keys {format_keys(obj)} and "
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
        # Training checkpoints (deit's and CycleMLP's main.py, timm's saver)
        # also store their argparse arguments: a plain attribute bag, allowed
        # beside tensors and containers.
        with torch.serialization.safe_globals([argparse.Namespace]):
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


READERS = {"npz": read_npz, "safetensors": read_safetensors, "torch": read_torch}


def read_arrays(path):
    """{name: np.ndarray} of a checkpoint file of any accepted container."""
    return READERS[detect_container(path)](os.fspath(path))

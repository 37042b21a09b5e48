"""Weights names to local files: the cache, downloads and checksums.

A name of `keras_mixer.presets.WEIGHTS` is resolved to a local file
(`KERAS_MIXER_WEIGHTS_DIR`, then the Keras cache, then a download through
`keras.utils.get_file`) whose sha256 (or the hash prefix in its published
name) is verified. An HTML page saved in place of the file (a host's
download confirmation) is refused with the way to get the file.
"""

import dataclasses
import hashlib
import os
import re

import keras

from keras_mixer import presets
from keras_mixer.checkpoints import readers


def expected_hash(entry):
    """`(full sha256 or None, hash prefix from the file name or None)`."""
    match = re.search(r"-([0-9a-f]{8,})\.[a-z0-9]+$", entry["url"])
    return entry.get("sha256"), match.group(1) if match else None


def _sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_file(path, entry):
    """Checks the file against the entry's sha256 or hash prefix; a mismatch
    removes the file and raises ValueError."""
    full, prefix = expected_hash(entry)
    if not full and not prefix:
        return
    actual = _sha256(path)
    if (full and actual != full) or (prefix and not actual.startswith(prefix)):
        os.remove(path)
        raise ValueError(
            f"Checksum mismatch for {path} (from {entry['url']}): expected "
            f"sha256 {full or prefix + '...'}, got {actual}. The file was "
            "removed; download it again (a partial or altered download)."
        )


def refuse_web_page(path, entry, remove):
    """Raises when `path` holds an HTML page instead of the weights (Google
    Drive answers a download of a large file with a confirmation page),
    saying how to get the file; `remove` deletes that page from the cache
    first, so that the next call downloads again."""
    with open(path, "rb") as f:
        head = f.read(1024)
    if not readers.is_web_page(head):
        return
    if remove:
        os.remove(path)
    page = entry.get("page", entry["url"])
    raise ValueError(
        f"{entry['url']} sent an HTML page, not the weights file"
        f"{' (removed from the cache)' if remove else f' ({path})'}: the "
        "host asks a person to confirm the download (Google Drive does so for "
        f"large files). Open {page} in a browser, download the file, and put "
        f"it at {os.path.join(cache_dir(), entry['filename'])} (or in the "
        "folder named by KERAS_MIXER_WEIGHTS_DIR, as "
        f"{entry['filename']}), or pass its path as weights=..."
    )


def cache_dir():
    """Where downloaded weights are kept: `$KERAS_HOME/models/keras_mixer`."""
    home = os.environ.get("KERAS_HOME", os.path.join(os.path.expanduser("~"), ".keras"))
    return os.path.join(home, "models", "keras_mixer")


def fetch(model_name, weights_name):
    """Returns the local path of a table entry's file, downloading it if
    needed. `KERAS_MIXER_WEIGHTS_DIR` is looked at first, then the Keras
    cache; a download goes through `keras.utils.get_file`."""
    entry = presets.WEIGHTS[model_name][weights_name]
    local_dir = os.environ.get("KERAS_MIXER_WEIGHTS_DIR")
    if local_dir:
        path = os.path.join(local_dir, entry["filename"])
        if os.path.exists(path):
            refuse_web_page(path, entry, remove=False)
            verify_file(path, entry)
            return path
    cached = os.path.join(cache_dir(), entry["filename"])
    if os.path.exists(cached):
        refuse_web_page(cached, entry, remove=True)
        verify_file(cached, entry)
        return cached
    # get_file falls back to /tmp/.keras when the folder does not exist yet.
    os.makedirs(cache_dir(), exist_ok=True)
    try:
        path = keras.utils.get_file(
            fname=entry["filename"],
            origin=entry["url"],
            cache_dir=os.path.dirname(os.path.dirname(cache_dir())),
            cache_subdir=os.path.join("models", "keras_mixer"),
        )
    except Exception as error:  # get_file raises bare Exceptions
        raise ValueError(
            f"Could not download the {model_name} weights {weights_name!r} "
            f"from {entry['url']} ({error}). Without network access, download "
            f"that file elsewhere and put it at {cached} (or in the folder "
            f"named by KERAS_MIXER_WEIGHTS_DIR, as {entry['filename']}), or "
            "pass its path as weights=..."
        ) from None
    refuse_web_page(path, entry, remove=True)
    verify_file(path, entry)
    return path


@dataclasses.dataclass(frozen=True)
class PresetWeights:
    """A weights name of a variant, fetched only when the model's builder
    has checked every other argument (no download for a model that cannot
    be built)."""

    model_name: str
    weights_name: str

    @property
    def entry(self):
        return presets.WEIGHTS[self.model_name][self.weights_name]

    def fetch(self):
        return fetch(self.model_name, self.weights_name)


def resolve(model_name, weights):
    """Classifies a variant's `weights`: `(PresetWeights, its table entry)`
    for a weights name of `model_name`, `(weights, None)` for None or the
    path of an existing file; a ValueError listing the names for anything
    else."""
    if weights is None:
        return None, None
    if isinstance(weights, os.PathLike):
        weights = os.fspath(weights)
    if not isinstance(weights, str):
        raise ValueError(
            f"`weights` must be None, a weights name or a file path; got "
            f"{type(weights).__name__}."
        )
    table = presets.WEIGHTS.get(model_name, {})
    if weights in table:
        preset = PresetWeights(model_name, weights)
        return preset, preset.entry
    if os.path.exists(weights):
        return weights, None
    names = ", ".join(table) or "none are published for this model"
    raise ValueError(
        f"`weights` {weights!r} is neither a weights name of {model_name} "
        f"({names}) nor an existing file. Pass None, a name, or the path of "
        "a checkpoint (official .npz, timm .safetensors/.pth, deit, CycleMLP "
        "or ViP .pth) or a .weights.h5 file."
    )

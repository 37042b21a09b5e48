"""Weights names to local files: the cache, downloads and checksums.

A name of `keras_mixer.presets.WEIGHTS` is resolved to a local file
(`KERAS_MIXER_WEIGHTS_DIR`, then the Keras cache, then a download through
`keras.utils.get_file`) whose sha256 (or the hash prefix in its published
name) is verified. A file keras_mixer downloaded itself carries a record
(`<file>.download.json`): a damaged download of its own is fetched again,
while a mismatching file the user placed is reported and never removed. An
HTML page in place of the file (a host's download confirmation) is refused
with the way to get the file.
"""

import dataclasses
import hashlib
import json
import logging
import os
import re

import keras

from keras_mixer import atomic
from keras_mixer import presets
from keras_mixer.checkpoints import hub
from keras_mixer.checkpoints import readers

logger = logging.getLogger("keras_mixer")


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


# Beside each file keras_mixer downloaded itself: `<file>.download.json`, its
# URL, sha256 and identity (device, inode, mtime) when it was written.
DOWNLOAD_RECORD = ".download.json"


def _identity(path):
    stat = os.stat(path)
    return [stat.st_dev, stat.st_ino, stat.st_mtime_ns, stat.st_size]


def download_record(path):
    """The record of a file keras_mixer downloaded itself and nothing has
    replaced since, or None: a file placed by the user, a symlink, a file
    copied over the download."""
    if os.path.islink(path) or not os.path.isfile(path):
        return None
    try:
        with open(path + DOWNLOAD_RECORD) as f:
            record = json.load(f)
    except (OSError, ValueError):
        return None
    if record.get("identity") != _identity(path):
        return None
    return record


def checksum_problem(path, entry, record=None, actual=None):
    """None when `path` matches the entry's sha256 or hash prefix (and, for a
    download, the sha256 recorded when it was fetched), else what is wrong.
    `actual`: the file's sha256 when already computed."""
    full, prefix = expected_hash(entry)
    recorded = record.get("sha256") if record else None
    if not (full or prefix or recorded):
        return None
    actual = actual or _sha256(path)
    for expected in (full, recorded):
        if expected and actual != expected:
            return f"expected sha256 {expected}, got {actual}"
    if prefix and not actual.startswith(prefix):
        return f"expected sha256 {prefix}..., got {actual}"
    return None


def verify_file(path, entry):
    """Checks a file the user placed against the entry's sha256 or hash
    prefix; a mismatch raises ValueError and leaves the file alone."""
    problem = checksum_problem(path, entry)
    if problem:
        raise ValueError(
            f"Checksum mismatch for {path} ({problem}); it should be "
            f"{entry['url']}. keras_mixer did not download this file, so it "
            "was left in place: replace it with a good copy, or remove it "
            "to download the file."
        )


def refuse_web_page(path, entry, downloaded):
    """Raises when `path` holds an HTML page instead of the weights (Google
    Drive answers a download of a large file with a confirmation page),
    saying how to get the file. The file is left where it is: a download's
    temporary is removed by its caller, a user's file is the user's."""
    with open(path, "rb") as f:
        head = f.read(1024)
    if not readers.is_web_page(head):
        return
    page = entry.get("page", entry["url"])
    where = "(nothing was kept)" if downloaded else f"({path})"
    raise ValueError(
        f"{entry['url']} sent an HTML page, not the weights file {where}: the "
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


def _download(model_name, weights_name, entry):
    """Downloads to a temporary name, verifies, records, renames; a
    mismatching download is removed (it is ours) and nothing is kept."""
    path = os.path.join(cache_dir(), entry["filename"])
    # get_file falls back to /tmp/.keras when the folder does not exist yet.
    os.makedirs(cache_dir(), exist_ok=True)
    atomic.remove_temporaries(cache_dir(), stale_only=True)

    def verify(tmp):
        refuse_web_page(tmp, entry, downloaded=True)
        actual = _sha256(tmp)
        problem = checksum_problem(tmp, entry, actual=actual)
        if problem:
            raise ValueError(
                f"Checksum mismatch for the download of {entry['url']} "
                f"({problem}): a partial or altered download. It was "
                "discarded; nothing was kept. Try again, or download the file "
                f"elsewhere and put it at {path}."
            )
        record = {"url": entry["url"], "sha256": actual,
                  "identity": _identity(tmp)}  # a rename keeps the identity
        atomic.write_text(path + DOWNLOAD_RECORD, json.dumps(record))

    with atomic.writing(path, check=verify) as tmp:
        try:
            keras.utils.get_file(
                fname=os.path.basename(tmp),
                origin=entry["url"],
                cache_dir=os.path.dirname(os.path.dirname(cache_dir())),
                cache_subdir=os.path.join("models", "keras_mixer"),
            )
        except Exception as error:  # get_file raises bare Exceptions
            raise ValueError(
                f"Could not download the {model_name} weights "
                f"{weights_name!r} from {entry['url']} ({error}). Without "
                f"network access, download that file elsewhere and put it at "
                f"{path} (or in the folder named by KERAS_MIXER_WEIGHTS_DIR, "
                f"as {entry['filename']}), or pass its path as weights=..."
            ) from None
    return path


def fetch(model_name, weights_name):
    """Returns the local path of a table entry's file, downloading it if
    needed. `KERAS_MIXER_WEIGHTS_DIR` is looked at first, then the Keras
    cache; a download goes through `keras.utils.get_file`.

    Checksums: the entry's sha256 or hash prefix, and for a file keras_mixer
    downloaded itself also the sha256 recorded then. A mismatching download
    of keras_mixer's own is removed and fetched again; a mismatching file the
    user placed (or a symlink) is reported and never removed."""
    entry = presets.WEIGHTS[model_name][weights_name]
    local_dir = os.environ.get("KERAS_MIXER_WEIGHTS_DIR")
    if local_dir:
        path = os.path.join(local_dir, entry["filename"])
        if os.path.exists(path):
            refuse_web_page(path, entry, downloaded=False)
            verify_file(path, entry)
            return path
    cached = os.path.join(cache_dir(), entry["filename"])
    if os.path.exists(cached):
        record = download_record(cached)
        if record is None:
            refuse_web_page(cached, entry, downloaded=False)
            verify_file(cached, entry)
            return cached
        problem = checksum_problem(cached, entry, record)
        if not problem:
            return cached
        logger.warning("%s, downloaded by keras_mixer, is damaged (%s); "
                       "downloading it again.", cached, problem)
        os.remove(cached)
        os.remove(cached + DOWNLOAD_RECORD)
    return _download(model_name, weights_name, entry)


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
    for a weights name of `model_name`; `(hub.HubWeights, the entry of that
    Hub repository or None)` for "hf://..."; `(weights, None)` for None or
    the path of an existing file or folder; a ValueError listing the names
    for anything else."""
    if weights is None:
        return None, None
    if hub.is_hub_name(weights):
        repository = hub.HubWeights.parse(weights)
        entries = presets.WEIGHTS.get(model_name, {}).values()
        entry = [e for e in entries if e.get("hf_hub_id") == repository.repo_id]
        return repository, (entry[0] if entry else None)
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
        f"({names}) nor an existing file. Pass None, a name, the path of "
        "a checkpoint (official .npz, timm .safetensors/.pth, deit, CycleMLP "
        "or ViP .pth) or a .weights.h5 file, a Hugging Face Hub model folder, "
        "or 'hf://timm/<model>'."
    )

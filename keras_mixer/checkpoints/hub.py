"""timm models as the Hugging Face Hub lays them out.

A timm model repository (`timm/<architecture>.<tag>`, e.g.
`timm/gmlp_s16_224.ra3_in1k`) holds `config.json` and the state dict as
`model.safetensors` (and often `pytorch_model.bin`). keras_mixer reads:

- a local folder with these files (`weights="/path/to/folder"`), and
- `weights="hf://timm/<architecture>.<tag>[@revision]"`, fetched by
  `huggingface_hub.hf_hub_download` (an optional dependency:
  `pip install "keras-mixer[hub]"`) into its cache. Its environment applies:
  `HF_HUB_CACHE` (where), `HF_HUB_OFFLINE=1` (cached files only, no
  network), `HF_ENDPOINT` (another server).

From `config.json` keras_mixer takes the `architecture` and the input
normalisation (`pretrained_cfg.mean` / `std`; older files put them at the top
level); every other field is ignored. The state dict goes through the key
maps like any file.
"""

import dataclasses
import json
import os
import re

from keras_mixer.checkpoints import readers

PREFIX = "hf://"
CONFIG = "config.json"
# In the order timm's own loader tries them (the safe format first).
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
# A timm config.json is about 1 kB; anything far larger is not one.
MAX_CONFIG_BYTES = 1 << 20
_REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*")


def is_hub_name(weights):
    """Whether `weights` is an "hf://..." name."""
    return isinstance(weights, str) and weights.startswith(PREFIX)


@dataclasses.dataclass(frozen=True)
class HubWeights:
    """A Hub repository, fetched only when the model's builder has checked
    every other argument."""

    repo_id: str
    revision: str = None

    @classmethod
    def parse(cls, name):
        """`"hf://org/name[@revision]"` -> HubWeights; a ValueError for
        anything else."""
        body = name[len(PREFIX):] if is_hub_name(name) else ""
        repo_id, _, revision = body.partition("@")
        if not _REPO_ID.fullmatch(repo_id) or (revision == "" and "@" in body):
            raise ValueError(
                f"`weights` {name!r} is not a Hugging Face Hub name: use "
                "'hf://<organisation>/<repository>' with an optional "
                "'@<revision>', e.g. 'hf://timm/gmlp_s16_224.ra3_in1k'."
            )
        return cls(repo_id, revision or None)

    @property
    def name(self):
        return PREFIX + self.repo_id + (f"@{self.revision}" if self.revision else "")

    def fetch(self):
        """The local folder holding the repository's config.json and
        weights (the huggingface_hub cache's snapshot)."""
        return fetch(self.repo_id, self.revision, self.name)


def _hub():
    try:
        import huggingface_hub
        from huggingface_hub import errors
    except ImportError:
        raise readers.MissingDependencyError(
            "weights='hf://...' downloads through the huggingface_hub package, "
            "which is not installed: `pip install \"keras-mixer[hub]\"` (or "
            "`pip install huggingface_hub`). Without it, download the "
            "model's folder (config.json and model.safetensors) and pass its "
            "path as weights=..."
        ) from None
    return huggingface_hub, errors


def fetch(repo_id, revision=None, name=None):
    """Downloads (or finds in the cache) `config.json` and the weights of a
    Hub repository; returns the folder holding both.

    Raises:
        MissingDependencyError: huggingface_hub is not installed.
        ValueError: the repository, revision or files cannot be had (not
            cached in offline mode, unknown, network down); the message says
            which and what to do.
    """
    huggingface_hub, errors = _hub()
    name = name or PREFIX + repo_id

    def download(filename):
        return huggingface_hub.hf_hub_download(
            repo_id, filename, revision=revision, library_name="keras-mixer"
        )

    try:
        config = download(CONFIG)
        weights, missing = None, []
        for filename in WEIGHT_FILES:
            try:
                weights = download(filename)
                break
            except errors.EntryNotFoundError as error:
                missing.append(error)
        if weights is None:
            if any(isinstance(e, errors.LocalEntryNotFoundError) for e in missing):
                raise missing[0]
            raise ValueError(
                f"{name} has neither of {list(WEIGHT_FILES)}: it is not a timm "
                "model repository."
            )
    except errors.LocalEntryNotFoundError as error:
        offline = os.environ.get("HF_HUB_OFFLINE", "").upper() in (
            "1", "ON", "YES", "TRUE")
        why = (
            "HF_HUB_OFFLINE is set and it is not in the Hugging Face cache"
            if offline else
            "it is not in the Hugging Face cache and the Hub cannot be "
            "reached"
        )
        raise ValueError(
            f"Cannot load {name}: {why} ({type(error).__name__}). Download it "
            "once with network access (unset HF_HUB_OFFLINE), point "
            "HF_HUB_CACHE at a cache that holds it, or download the folder "
            "(config.json and model.safetensors) elsewhere and pass its path "
            "as weights=..."
        ) from None
    except errors.RepositoryNotFoundError:
        raise ValueError(
            f"{name}: the Hub has no repository {repo_id!r} (or it is "
            "private). timm's are named 'timm/<architecture>.<tag>', e.g. "
            "'hf://timm/gmlp_s16_224.ra3_in1k'."
        ) from None
    except errors.RevisionNotFoundError:
        raise ValueError(
            f"{name}: the repository has no revision {revision!r}."
        ) from None
    except errors.EntryNotFoundError:
        raise ValueError(
            f"{name} has no {CONFIG}: it is not a timm model repository."
        ) from None
    except (OSError, errors.HfHubHTTPError) as error:
        raise ValueError(
            f"Could not download {name} ({type(error).__name__}: {error}). "
            "Without network access, set HF_HUB_OFFLINE=1 to use the cache, "
            "or pass the path of a downloaded folder as weights=..."
        ) from None
    folder = os.path.dirname(weights)
    if os.path.dirname(config) != folder:  # one snapshot holds both
        raise ValueError(f"{name}: {config} and {weights} are in different folders.")
    return folder


def read_config(path):
    """A config.json as a dict, read with a size bound."""
    size = os.path.getsize(path)
    if size > MAX_CONFIG_BYTES:
        raise ValueError(
            f"{path} has {size} bytes; a timm config.json has about a "
            "thousand. It is not one."
        )
    try:
        with open(path, encoding="utf-8") as f:
            config = json.load(f)
    except (ValueError, UnicodeDecodeError) as error:
        raise ValueError(f"{path} is not a readable JSON file ({error}).") from None
    if not isinstance(config, dict):
        raise ValueError(f"{path} holds a JSON {type(config).__name__}, not an object.")
    return config


def read_folder(path):
    """`(arrays, config, weights file)` of a Hub model folder.

    Raises:
        ValueError: the folder lacks config.json or a weights file, or a
            file is unreadable; the message names the folder.
    """
    path = os.fspath(path)
    present = [f for f in WEIGHT_FILES if os.path.isfile(os.path.join(path, f))]
    if not os.path.isfile(os.path.join(path, CONFIG)) or not present:
        raise ValueError(
            f"{path} is a folder but not a Hugging Face Hub model folder: it "
            f"needs {CONFIG} and one of {list(WEIGHT_FILES)}, and has "
            f"{sorted(os.listdir(path))[:10]}. Pass the weights file itself, "
            "or the folder as the Hub lays it out."
        )
    config = read_config(os.path.join(path, CONFIG))
    weights = os.path.join(path, present[0])
    return readers.read_arrays(weights), config, weights


def describe(config, origin):
    """`(architecture or None, (mean, std) or None)` from a config.json."""
    pretrained = config.get("pretrained_cfg")
    if not isinstance(pretrained, dict):
        pretrained = config  # older files: a flat dict
    architecture = config.get("architecture")
    mean, std = pretrained.get("mean"), pretrained.get("std")
    if mean is None and std is None:
        return architecture, None

    def floats(value, what):
        if (not isinstance(value, list) or not value
                or not all(isinstance(v, (int, float)) for v in value)):
            raise ValueError(
                f"{origin}: config.json's {what} must be a list of numbers, "
                f"got {value!r}."
            )
        return tuple(float(v) for v in value)

    mean, std = floats(mean, "mean"), floats(std, "std")
    if len(mean) != len(std) or not all(s > 0 for s in std):
        raise ValueError(
            f"{origin}: config.json's mean {mean} and std {std} do not pair "
            "up (same length, positive std)."
        )
    return architecture, (mean, std)

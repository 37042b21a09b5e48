"""Pretrained weights: the table, downloading, and exact loading into models.

`WEIGHTS` maps each named variant to its published checkpoints. A name is
resolved to a local file (`KERAS_MIXER_WEIGHTS_DIR`, then the Keras cache, then
a download through `keras.utils.get_file`), read by the format's converter
(`keras_mixer.convert`), checked tensor by tensor against the model, and
assigned. A model built at K times the checkpoint's resolution per side gets
the block-diagonal token-mixing weights of the MLP-Mixer paper, Appendix C
(`keras_mixer.resize`).
"""

import hashlib
import json
import logging
import os
import re

import numpy as np

import keras

from keras_mixer import atomic
from keras_mixer import resize as resize_lib

logger = logging.getLogger("keras_mixer")

_GOOGLE = "https://storage.googleapis.com/mixer_models"
_TIMM = "https://github.com/rwightman/pytorch-image-models/releases/download"
_DEIT = "https://dl.fbaipublicfiles.com/deit"
_APACHE = "Apache-2.0"


def _google(collection, size, patch, classes, description):
    return dict(
        url=f"{_GOOGLE}/{collection}/Mixer-{size}_{patch}.npz",
        filename=f"mixer_{collection}_Mixer-{size}_{patch}.npz",
        format="flax_npz",
        source="Google (official Flax MLP-Mixer, google-research/vision_transformer)",
        license=_APACHE,
        classes=classes,
        resolution=224,
        preprocessing="tf",
        approximate_gelu=True,
        sha256=None,
        description=description,
    )


def _timm_mixer(tag, release_file, classes, preprocessing, description):
    return dict(
        url=f"{_TIMM}/{release_file}",
        filename=release_file.split("/")[-1],
        format="torch",
        source=f"timm ({tag}; also hf.co/timm/{tag} as model.safetensors)",
        license=_APACHE,
        classes=classes,
        resolution=224,
        preprocessing=preprocessing,
        approximate_gelu=False,
        sha256=None,
        description=description,
    )


def _deit(file, classes, description):
    return dict(
        url=f"{_DEIT}/{file}",
        filename=file,
        format="torch",
        source="Facebook (deit, ResMLP paper)",
        license=_APACHE,
        classes=classes,
        resolution=224,
        preprocessing="torch",
        approximate_gelu=False,
        sha256=None,
        description=description,
    )


_GSAM = "Trained on ImageNet-1k with the GSAM optimizer (Zhuang et al., 2022)."
_SAM = "Trained on ImageNet-1k with the SAM optimizer (Chen et al., 2021)."
_I1K = (
    "Official paper checkpoint of the gs://mixer_models/imagenet1k collection, "
    "ImageNet-1k classifier (the collection is described as trained on "
    "ImageNet; timm labels its conversion in21k_ft_in1k, see timm PR #651)."
)
_I21K = "Official paper checkpoint pre-trained on ImageNet-21k (21,843 classes)."
_GOOG_FT = (
    "Google's Mixer weights converted by timm (jx_ release file); timm tags "
    "them ImageNet-21k pre-trained, ImageNet-1k fine-tuned."
)
_MIIL = (
    "Alibaba-MIIL ImageNet-21K-P pre-training (Ridnik et al., 2021), timm "
    "release; inputs in [0, 1] without mean/std."
)

# {variant: {weights name: entry}}. Entries: url, filename (cache name),
# format, source, license, classes, resolution, preprocessing (a mode of
# keras_mixer.preprocess_input), approximate_gelu (the source's GELU), sha256
# (None where the publisher gives none; a hash prefix in a file name such as
# timm's `-76587d61.pth` is verified), description.
WEIGHTS = {
    "MixerS8": {"gsam": _google("gsam", "S", 8, 1000, _GSAM)},
    "MixerS16": {"gsam": _google("gsam", "S", 16, 1000, _GSAM)},
    "MixerS32": {"gsam": _google("gsam", "S", 32, 1000, _GSAM)},
    "MixerB32": {
        "sam": _google("sam", "B", 32, 1000, _SAM),
        "gsam": _google("gsam", "B", 32, 1000, _GSAM),
    },
    "MixerB16": {
        "imagenet1k": _google("imagenet1k", "B", 16, 1000, _I1K),
        "imagenet21k": _google("imagenet21k", "B", 16, 21843, _I21K),
        "sam": _google("sam", "B", 16, 1000, _SAM),
        "gsam": _google("gsam", "B", 16, 1000, _GSAM),
        "goog_in21k_ft_in1k": _timm_mixer(
            "mixer_b16_224.goog_in21k_ft_in1k",
            "v0.1-vitjx/jx_mixer_b16_224-76587d61.pth",
            1000, "tf", _GOOG_FT,
        ),
        "goog_in21k": _timm_mixer(
            "mixer_b16_224.goog_in21k",
            "v0.1-vitjx/jx_mixer_b16_224_in21k-617b3de2.pth",
            21843, "tf", "Google's ImageNet-21k Mixer weights converted by timm.",
        ),
        "miil_in21k_ft_in1k": _timm_mixer(
            "mixer_b16_224.miil_in21k_ft_in1k",
            "v0.1-tresnet/mixer_b16_224_miil-9229a591.pth",
            1000, "zero_one", _MIIL + " Fine-tuned on ImageNet-1k.",
        ),
        "miil_in21k": _timm_mixer(
            "mixer_b16_224.miil_in21k",
            "v0.1-tresnet/mixer_b16_224_miil_in21k-2a558a71.pth",
            11221, "zero_one", _MIIL + " ImageNet-21K-P head (11,221 classes).",
        ),
    },
    "MixerL16": {
        "imagenet1k": _google("imagenet1k", "L", 16, 1000, _I1K),
        "imagenet21k": _google("imagenet21k", "L", 16, 21843, _I21K),
        "goog_in21k_ft_in1k": _timm_mixer(
            "mixer_l16_224.goog_in21k_ft_in1k",
            "v0.1-vitjx/jx_mixer_l16_224-92f9adc4.pth",
            1000, "tf", _GOOG_FT,
        ),
        "goog_in21k": _timm_mixer(
            "mixer_l16_224.goog_in21k",
            "v0.1-vitjx/jx_mixer_l16_224_in21k-846aa33c.pth",
            21843, "tf", "Google's ImageNet-21k Mixer weights converted by timm.",
        ),
    },
}
for _depth, _prefix in (("12", "resmlp_12"), ("24", "resmlp_24"), ("36", "resmlp_36"), ("B24", "resmlpB_24")):
    WEIGHTS[f"ResMLP{_depth}"] = {
        "imagenet1k": _deit(f"{_prefix}_no_dist.pth", 1000, "ImageNet-1k, no distillation (ResMLP paper)."),
        "imagenet1k_distilled": _deit(f"{_prefix}_dist.pth", 1000, "ImageNet-1k with DeiT-style distillation from a RegNetY-16GF teacher."),
    }
WEIGHTS["ResMLPB24"]["imagenet22k_ft_in1k"] = _deit(
    "resmlpB_24_22k.pth", 1000, "Pre-trained on ImageNet-22k, fine-tuned on ImageNet-1k."
)
for _depth in ("12", "24"):
    WEIGHTS[f"ResMLP{_depth}"]["dino"] = _deit(
        f"resmlp_{_depth}_dino.pth", 1000,
        "Self-supervised with DINO, no fine-tuning: a backbone for features "
        "or fine-tuning; its head, if present, is not a trained classifier.",
    )


def list_weights(model_name=None, file=None):
    """Prints the weights table (all variants, or one) and returns it.

    Example:
    >>> table = keras_mixer.list_weights("MixerS32")  # doctest: +ELLIPSIS
    MixerS32
      gsam: ...
    """
    names = [model_name] if model_name else sorted(WEIGHTS)
    for name in names:
        if name not in WEIGHTS:
            raise ValueError(
                f"No pretrained weights are published for {name!r}. Models "
                f"with weights: {', '.join(sorted(WEIGHTS))}."
            )
        print(name, file=file)
        for key, entry in WEIGHTS[name].items():
            print(
                f"  {key}: {entry['classes']} classes, {entry['resolution']}px, "
                f"{entry['format']}, preprocessing={entry['preprocessing']}, "
                f"{'tanh' if entry['approximate_gelu'] else 'exact'} GELU, "
                f"{entry['license']}\n    {entry['url']}\n    "
                f"{entry['description']}",
                file=file,
            )
    return {n: WEIGHTS[n] for n in names}


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


def cache_dir():
    """Where downloaded weights are kept: `$KERAS_HOME/models/keras_mixer`."""
    home = os.environ.get("KERAS_HOME", os.path.join(os.path.expanduser("~"), ".keras"))
    return os.path.join(home, "models", "keras_mixer")


def _download(model_name, weights_name, entry):
    """Downloads to a temporary name, verifies, records, renames; a
    mismatching download is removed (it is ours) and nothing is kept."""
    cached = os.path.join(cache_dir(), entry["filename"])
    # get_file falls back to /tmp/.keras when the folder does not exist yet.
    os.makedirs(cache_dir(), exist_ok=True)
    atomic.remove_temporaries(cache_dir(), stale_only=True)
    name = os.path.basename(atomic.temporary_name(cached))
    try:
        tmp = keras.utils.get_file(
            fname=name,
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
    path = os.path.join(os.path.dirname(tmp), entry["filename"])
    try:
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
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def fetch(model_name, weights_name):
    """Returns the local path of a table entry's file, downloading it if
    needed. `KERAS_MIXER_WEIGHTS_DIR` is looked at first, then the Keras
    cache; a download goes through `keras.utils.get_file`.

    Checksums: the entry's sha256 or hash prefix, and for a file keras_mixer
    downloaded itself also the sha256 recorded then. A mismatching download
    of keras_mixer's own is removed and fetched again; a mismatching file the
    user placed (or a symlink) is reported and never removed."""
    entry = WEIGHTS[model_name][weights_name]
    local_dir = os.environ.get("KERAS_MIXER_WEIGHTS_DIR")
    if local_dir:
        path = os.path.join(local_dir, entry["filename"])
        if os.path.exists(path):
            verify_file(path, entry)
            return path
    cached = os.path.join(cache_dir(), entry["filename"])
    if os.path.exists(cached):
        record = download_record(cached)
        if record is None:
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


def resolve(model_name, weights):
    """Turns a constructor's `weights` into `(local path or None, entry or
    None)`: a table name of `model_name`, or a path to an existing file."""
    if weights is None:
        return None, None
    if isinstance(weights, os.PathLike):
        weights = os.fspath(weights)
    if not isinstance(weights, str):
        raise ValueError(
            f"`weights` must be None, a weights name or a file path; got "
            f"{type(weights).__name__}."
        )
    table = WEIGHTS.get(model_name, {})
    if weights in table:
        return fetch(model_name, weights), table[weights]
    if os.path.exists(weights):
        return weights, None
    names = ", ".join(table) or "none are published for this model"
    raise ValueError(
        f"`weights` {weights!r} is neither a weights name of {model_name} "
        f"({names}) nor an existing file. Pass None, a name, or the path of "
        "an official .npz, a timm .safetensors/.pth, a deit .pth or a "
        ".weights.h5 file."
    )


def model_family(model):
    from keras_mixer import layers as mixer_layers

    for layer in model.layers:
        if isinstance(layer, mixer_layers.MixerBlock):
            return "mixer"
        if isinstance(layer, mixer_layers.ResMLPBlock):
            return "resmlp"
    raise ValueError(f"{model.name!r} is not a keras_mixer MLP-Mixer or ResMLP model.")


def check_finite(tensors, origin):
    """Refuses NaN or Inf values: `tensors` is a model (its weights) or a
    {name: array} dict. The ValueError names the first such tensor."""
    if hasattr(tensors, "weights"):
        items = ((v.path, v) for v in tensors.weights)
    else:
        items = tensors.items()
    for name, value in items:
        array = np.asarray(keras.ops.convert_to_numpy(value))
        if not np.issubdtype(array.dtype, np.floating):
            continue
        finite = np.isfinite(array)
        if not finite.all():
            raise ValueError(
                f"{origin}: tensor {name!r} holds {array.size - finite.sum()} "
                f"NaN/Inf value(s) of {array.size}; refused. The file is "
                "damaged or comes from a run that diverged: use another "
                "checkpoint (e.g. best.keras, or an earlier one)."
            )


def assign_checkpoint(model, checkpoint, origin="checkpoint"):
    """Assigns a `keras_mixer.convert.Checkpoint` to `model`, exactly.

    Every model variable must be in the checkpoint with the same shape, except:
    the head, which is skipped (and left zero-initialised) when the model has
    no head or another number of classes; and the token-mixing weights, which
    are grown block-diagonally when the model's patch grid is an integer
    multiple of the checkpoint's (paper Appendix C). Every checkpoint tensor
    must be used (besides a skipped head). Raises ValueError naming the first
    missing or mismatched tensor with expected and found shapes.
    """
    family = model_family(model)
    if checkpoint.family != family:
        raise ValueError(
            f"{origin} is a {checkpoint.family} checkpoint ({checkpoint.source} "
            f"layout) but {model.name!r} is a {family} model."
        )
    tensors = dict(checkpoint.tensors)
    head_paths = {"head/kernel", "head/bias"}
    has_head = any(v.path in head_paths for v in model.weights)
    skip_head = False
    if not has_head and head_paths & set(tensors):
        skip_head = True
        logger.warning(
            "%s: the model has no head (include_top=False); the checkpoint's "
            "%d-class head was not loaded.", model.name, checkpoint.num_classes
        )
    elif has_head and "head/kernel" not in tensors:
        skip_head = True
        logger.warning(
            "%s: the checkpoint has no head (e.g. self-supervised weights); "
            "the head is fresh (zero-initialised).", model.name
        )
    elif has_head and "head/kernel" in tensors:
        classes = int(model.get_layer("head").kernel.shape[-1])
        if classes != checkpoint.num_classes:
            skip_head = True
            logger.warning(
                "%s: the checkpoint's head has %d classes, the model %d; all "
                "weights but the head were loaded and the head is fresh "
                "(zero-initialised, as the paper fine-tunes).",
                model.name, checkpoint.num_classes, classes,
            )
    if skip_head:
        for path in head_paths:
            tensors.pop(path, None)
    check_finite(tensors, origin)
    old_grid = checkpoint.grid or resize_lib.checkpoint_grid(
        checkpoint.num_tokens, origin
    )
    new_grid = resize_lib.model_grid(model)
    for variable in model.weights:
        path = variable.path
        if skip_head and path in head_paths:
            continue
        if path not in tensors:
            raise ValueError(
                f"{origin} has no tensor for {path!r} (expected shape "
                f"{tuple(variable.shape)}): it is a checkpoint of another "
                "architecture or a truncated file."
            )
        value = tensors.pop(path)
        expected = tuple(variable.shape)
        if value.shape != expected and resize_lib.is_token_mixing(path):
            value = resize_lib.expand(path, value, old_grid, new_grid)
        if value.shape != expected:
            raise ValueError(
                f"{origin}: tensor {path!r} has shape {value.shape}, the model "
                f"expects {expected}: the checkpoint is of another "
                "architecture (size, patch or depth)."
            )
        variable.assign(value.astype(variable.dtype))
    if tensors:
        extra = sorted(tensors)
        raise ValueError(
            f"{origin} has {len(extra)} tensors the model does not use, e.g. "
            f"{extra[:3]}: it is a checkpoint of another architecture (e.g. "
            "more blocks)."
        )


def assign_or_load(model, weights):
    """`weights`: the path of a `.weights.h5` file, or a Checkpoint."""
    if isinstance(weights, str):
        model.load_weights(weights)
        check_finite(model, weights)
    else:
        assign_checkpoint(model, weights, origin=weights.origin)

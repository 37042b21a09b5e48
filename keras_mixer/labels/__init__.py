"""Class names of the heads of the published checkpoints.

The lists are WordNet synsets with their lemmas, in each head's class order:
`imagenet1k.txt` (1,000 classes, the ILSVRC-2012 order), `imagenet21k_goog.txt`
(21,843 classes, the order of Google's ImageNet-21k checkpoints) and
`imagenet21k_miil.txt` (11,221 classes, ImageNet-21K-P of Alibaba-MIIL). They
were taken from timm's `timm/data/_info` (Apache-2.0), which ships the synset
orders and the WordNet lemmas.

A trained model's own class names travel in a `labels.txt` beside it (one
name per line, in class order): `keras-mixer train` writes one into its run
folder, `keras-mixer export` one beside the TFLite files, and export, predict
and evaluate read it (`labels_beside`, `read_labels`).
"""

import functools
import os

import numpy as np

LABEL_SETS = {
    1000: "imagenet1k.txt",
    21843: "imagenet21k_goog.txt",
    11221: "imagenet21k_miil.txt",
}
# The class names of a trained model, beside its file.
LABELS_FILE = "labels.txt"


def format_labels(names):
    """The text of a labels file: one name per line, in class order.

    >>> keras_mixer.labels.format_labels(["cat", "dog"])
    'cat\\ndog\\n'
    """
    names = [str(name) for name in names]
    bad = [name for name in names if not name.strip() or "\n" in name
           or "\r" in name]
    if bad:
        raise ValueError(
            f"Class names {bad[:3]} cannot go one per line into a labels "
            "file: rename those classes (e.g. their folders)."
        )
    return "".join(f"{name}\n" for name in names)


def read_labels(path):
    """The class names of a labels file (one per line, blank lines skipped)."""
    with open(path, encoding="utf-8") as f:
        return [line.rstrip("\r\n") for line in f if line.strip()]


def labels_beside(model_path):
    """The `labels.txt` in the folder of a model file (or of a SavedModel
    version folder's parent), or None."""
    path = os.path.abspath(model_path)
    folders = [os.path.dirname(path)]
    if os.path.isdir(path):
        folders.insert(0, path)
    for folder in folders:
        candidate = os.path.join(folder, LABELS_FILE)
        if os.path.isfile(candidate):
            return candidate
    return None


@functools.lru_cache(maxsize=None)
def class_names(num_classes=1000):
    """`[(wnid, name), ...]` for a head of `num_classes` (1000, 21843, 11221)."""
    if num_classes not in LABEL_SETS:
        raise ValueError(
            f"No class names are shipped for a {num_classes}-class head; "
            f"known heads: {sorted(LABEL_SETS)} (ImageNet-1k, Google's "
            "ImageNet-21k, MIIL ImageNet-21K-P). For your own classes, map "
            "the indices yourself."
        )
    path = os.path.join(os.path.dirname(__file__), LABEL_SETS[num_classes])
    with open(path, encoding="utf-8") as f:
        rows = [line.rstrip("\n").split("\t", 1) for line in f if line.strip()]
    return tuple((wnid, lemmas.split(",")[0].strip()) for wnid, lemmas in rows)


def decode_predictions(preds, top=5):
    """Decodes a batch of class scores into `(wnid, name, score)` lists.

    The label set is chosen by the number of classes: 1,000 (ImageNet-1k),
    21,843 (ImageNet-21k heads of Google's checkpoints) or 11,221 (MIIL).

    Args:
        preds: array of shape `(batch, classes)`.
        top: how many classes per image.

    Returns:
        A list (one per image) of lists of `(wnid, name, score)`, best first.

    Example:
    >>> scores = np.zeros((1, 1000)); scores[0, 207] = 1.0
    >>> keras_mixer.decode_predictions(scores, top=1)
    [[('n02099601', 'golden retriever', 1.0)]]
    """
    preds = np.asarray(preds)
    if preds.ndim != 2:
        raise ValueError(
            f"`preds` must have shape (batch, classes); got {preds.shape}."
        )
    names = class_names(preds.shape[1])
    results = []
    for row in preds:
        best = np.argsort(-row, kind="stable")[:top]
        results.append([(*names[i], float(row[i])) for i in best])
    return results

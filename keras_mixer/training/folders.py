"""Image folders as a source: one sub-folder per class, either directly
under PATH (a validation share is held out) or under PATH/train and
PATH/val|validation.

Files are checked by their head and tail bytes when the folder is scanned;
images are decoded with `keras_mixer.images.decode_image`'s bound, at most
`DECODE_PARALLELISM` at a time, and shrunk at once so that their shorter side
is at most `FOLDER_SIDE_FACTOR` times the model's image size: the pipeline
(and its cache) holds the shrunk images only. An image that cannot be read
(corrupt, over the limit) is skipped, logged with its path and counted in
`DatasetInfo.skipped_files`.
"""

import logging
import os
import pathlib
import re
import threading

import numpy as np
import tensorflow as tf

from keras_mixer.images import decode_image
from keras_mixer.images import max_image_pixels
from keras_mixer.images import shrink
from keras_mixer.training.sources import DatasetInfo

logger = logging.getLogger("keras_mixer")

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".gif", ".bmp")
# Folder images decoded at once (each up to images.MAX_IMAGE_PIXELS).
DECODE_PARALLELISM = min(4, os.cpu_count() or 1)
# Folder images are shrunk on reading to a shorter side of at most this many
# times the model's image size (room for the inception crop's zoom).
FOLDER_SIDE_FACTOR = 2
# Folder datasets are cached (shrunk images) when they fit in this many bytes.
FOLDER_CACHE_BYTES = 2 << 30


def _looks_like_image(path):
    """A cheap check of an image file's head and tail (no decoding).

    Catches empty, truncated and mislabelled files before training; files
    that pass but still fail to decode are skipped while the pipeline reads
    them (see `folder_source`).
    """
    try:
        size = os.path.getsize(path)
        if size < 16:
            return False
        with open(path, "rb") as f:
            head = f.read(16)
            f.seek(max(0, size - 1024))
            tail = f.read()
    except OSError:
        return False
    if head.startswith(b"\xff\xd8\xff"):  # JPEG ends with EOI (maybe padded).
        return b"\xff\xd9" in tail
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return b"IEND" in tail
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return b"\x3b" in tail[-16:]
    if head.startswith(b"BM"):
        return int.from_bytes(head[2:6], "little") <= size
    return False


def _class_folders(root):
    classes = sorted(
        d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith(".")
    )
    if not classes:
        raise ValueError(
            f"Image folder {root} has no class sub-folders. Lay it out as "
            f"{root}/<class name>/<image>.jpg (one sub-folder per class), "
            f"optionally under {root}/train and {root}/val."
        )
    return classes


def _no_readable_image(root, empty):
    return ValueError(
        f"Image folder {root}: class folder(s) {', '.join(empty)} hold no "
        f"readable image ({', '.join(IMAGE_EXTENSIONS)}). Add images to them "
        "or remove them."
    )


def scan_image_folder(root):
    """Files and labels of an image folder: `(paths, labels, classes,
    skipped)`, `skipped` the paths of files that are not images.

    Raises a ValueError for a missing folder, a folder without class
    sub-folders, or a class folder without any readable image file. Files
    that are not readable JPEG/PNG/GIF/BMP images (by their head and tail
    bytes) are skipped and logged, each with its path.
    """
    root = pathlib.Path(root)
    if not root.is_dir():
        raise ValueError(f"Image folder {root} does not exist.")
    classes = _class_folders(root)
    paths, labels, bad = [], [], []
    for label, name in enumerate(classes):
        for path in sorted((root / name).rglob("*")):
            if not path.is_file() or path.name.startswith("."):
                continue
            if path.suffix.lower() not in IMAGE_EXTENSIONS:
                bad.append(str(path))
            elif _looks_like_image(path):
                paths.append(str(path))
                labels.append(label)
            else:
                bad.append(str(path))
    if not paths:
        raise ValueError(
            f"Image folder {root} has class sub-folders {classes[:5]} but no "
            f"readable image ({', '.join(IMAGE_EXTENSIONS)}). Put the images "
            f"of each class in {root}/<class name>/."
        )
    empty = [classes[c] for c in range(len(classes)) if c not in set(labels)]
    if empty:
        raise _no_readable_image(root, empty)
    if bad:
        logger.warning(
            "Skipped %d file(s) of %s that are not readable images "
            "(corrupt, empty or not JPEG/PNG/GIF/BMP):", len(bad), root)
        for path in bad:
            logger.warning("  skipped %s", path)
    return paths, np.asarray(labels, np.int32), classes, bad


def _folder_root_and_split(root, split):
    """(folder holding class sub-folders, held-out part or None)."""
    root = pathlib.Path(root)
    if not root.is_dir():
        raise ValueError(
            f"Image folder {root} does not exist. Give a directory with one "
            "sub-folder per class."
        )
    if (root / "train").is_dir():
        if split == "train":
            return root / "train", None
        for name in ("val", "validation", "test"):
            if (root / name).is_dir():
                return root / name, None
        raise ValueError(
            f"Image folder {root} has train/ but no val/, validation/ or "
            "test/ folder to evaluate on."
        )
    # One folder: hold out 10% of each class for validation.
    return root, ("train" if split == "train" else "validation")


class _Skips:
    """Records files that failed to decode in a running pipeline (called
    from tf.data through tf.py_function, only when some did)."""

    lock = threading.Lock()

    def __init__(self, skipped, max_pixels):
        self.skipped = skipped
        self.max_pixels = max_pixels

    def __call__(self, paths):
        """Logs and counts `paths` (a string tensor); returns True."""
        for path in paths.numpy():
            path = path.decode("utf-8", "replace")
            with self.lock:
                if path in self.skipped:
                    continue
                self.skipped.add(path)
            try:  # decode again, eagerly, for the reason
                decode_image(tf.io.read_file(path), self.max_pixels,
                                    what=path)
                reason = "it could not be read"
            except (tf.errors.OpError, OSError) as error:
                reason = getattr(error, "message", str(error)).splitlines()[0]
                # TensorFlow's op errors: "{{function_node ...}} text [Op:X]".
                reason = re.sub(r"\{\{.*?\}\}|\[Op:.*$", "", reason).strip()
            logger.warning("Skipped unreadable image %s: %s", path, reason)
        return True


def folder_source(root, split, image_size=None, validation_fraction=0.1,
                   max_pixels=None):
    folder, part = _folder_root_and_split(root, split)
    paths, labels, classes, skipped = scan_image_folder(folder)
    if part is not None:
        order = np.random.default_rng(0).permutation(len(paths))
        held = np.zeros(len(paths), bool)
        for c in range(len(classes)):
            members = order[labels[order] == c]
            held[members[: int(round(len(members) * validation_fraction))]] = True
        keep = ~held if part == "train" else held
        paths = [p for p, k in zip(paths, keep) if k]
        labels = labels[keep]
        if not paths:
            raise ValueError(
                f"Image folder {root} is too small to hold out a validation "
                "share: add images, or give train/ and val/ folders."
            )
    max_pixels = int(max_pixels or max_image_pixels())
    info = DatasetInfo(f"folder:{root}", split, len(classes), len(paths),
                       classes, flip=True, skipped=set(skipped),
                       folder=str(folder))
    record = _Skips(info.skipped, max_pixels)
    count = len(paths)
    all_paths = tf.constant(paths)

    def load(index, path, label):
        image = decode_image(tf.io.read_file(path), max_pixels,
                                    what=path)
        if image_size:
            image = shrink(image, FOLDER_SIDE_FACTOR * image_size)
        return index, image, label

    # Files that fail to decode are dropped (`ignore_errors`); the indices
    # that come out, in order, tell which ones, and those are recorded. An
    # end marker catches failures after the last good image.
    ds = tf.data.Dataset.from_tensor_slices(
        (tf.range(count, dtype=tf.int64), paths, labels))
    ds = ds.map(load, num_parallel_calls=DECODE_PARALLELISM,
                deterministic=True).ignore_errors()
    ds = ds.concatenate(tf.data.Dataset.from_tensors(
        (tf.constant(count, tf.int64), tf.zeros((1, 1, 3), tf.uint8),
         tf.constant(-1, labels.dtype))))

    def find_gaps(previous, element):
        index, image, label = element
        missing = all_paths[previous + 1:index]
        recorded = tf.cond(tf.size(missing) > 0,
                           lambda: tf.py_function(record, [missing], tf.bool),
                           lambda: tf.constant(True))
        return index, (image, label, tf.logical_and(recorded, index < count))

    ds = ds.scan(tf.constant(-1, tf.int64), find_gaps)
    ds = ds.filter(lambda image, label, keep: keep).map(
        lambda image, label, keep: (image, label))
    return ds, info


def folder_path(name):
    """The PATH of a "folder:PATH" dataset name; refuses an empty one."""
    path = name[len("folder:"):]
    if not path.strip():
        raise ValueError(
            f"--dataset {name!r} names no folder: give folder:PATH, PATH a "
            "directory with one sub-folder per class (folder:. for the "
            "current directory)."
        )
    return path


def fits_in_cache(num_examples, image_size):
    """Whether `num_examples` folder images, shrunk for `image_size`, fit in
    `FOLDER_CACHE_BYTES` (3 bytes a pixel of a 4:3 image whose shorter side
    is `FOLDER_SIDE_FACTOR * image_size`)."""
    side = FOLDER_SIDE_FACTOR * image_size
    return num_examples * side * side * 4 <= FOLDER_CACHE_BYTES


def read_once(cached, info, split):
    """Reads a cached folder dataset to its end (filling the cache, logging
    and counting unreadable images), declaring its length; a training split
    that leaves a class without any image is refused."""
    counts = np.zeros(info.num_classes, np.int64)
    for _, label in cached:
        counts[int(label)] += 1
    empty = [info.class_names[c] for c in np.flatnonzero(counts == 0)]
    if empty and split == "train":
        raise _no_readable_image(info.folder, empty)
    if empty:
        logger.warning("%s (%s split) has no readable image of class(es) %s.",
                       info.folder, split, ", ".join(empty))
    # Counted: Keras then knows where an epoch ends.
    return cached.apply(
        tf.data.experimental.assert_cardinality(int(counts.sum())))

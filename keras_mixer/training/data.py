"""Input pipelines (tf.data): tensorflow-datasets, image folders, bundled digits.

TensorFlow-only, like `distribute.py` and `train.py`; the models never import
it. Every pipeline yields `(images, labels)` batches: float32 RGB pixels in
[0, 255] (the models normalise inside) and float32 one-hot labels (so MixUp and
CutMix can mix them).

Sources, by `name`:
    "digits"             the 1,797 8x8 handwritten digits that scikit-learn
                         ships (UCI, CC BY 4.0), bundled in the package and
                         upsampled to the model's size: offline.
    a tfds name          a tensorflow-datasets dataset prepared in `data_dir`
                         (`tfds build NAME --data_dir DIR`; nothing is
                         downloaded here), see `TFDS_DATASETS`.
    "folder:PATH" or an  an image folder: one sub-folder per class, either
    existing directory   directly under PATH (a validation share is held out)
                         or under PATH/train and PATH/val|validation.

Image files are decoded with a bound (`decode_image`): the width and height
are read from the file's header first, and an image of more than
`max_image_pixels()` pixels (default `MAX_IMAGE_PIXELS`, 64 Mpx, or the
environment variable KERAS_MIXER_MAX_IMAGE_PIXELS) is refused with an
InvalidArgumentError naming the limit, before any pixel is decoded. The
serving signature and `keras-mixer predict` decode through the same function.
Folder images are decoded at most `DECODE_PARALLELISM` at a time and shrunk
at once so that their shorter side is at most `FOLDER_SIDE_FACTOR` times the
model's image size; the pipeline (and its cache) holds the shrunk images only.
An image that cannot be read (corrupt, over the limit) is skipped, logged with
its path and counted in `DatasetInfo.skipped_files`.

Training: inception crop (random resized crop), horizontal flip (not for
digits), RandAugment, then MixUp / CutMix on batches, all from Keras core.
Evaluation (the paper's Appendix C): "resmall_crop" (shorter side to
size·256/224, central crop) or "resize_crop" (resize to a square of side
size·256/224, central crop).
"""

import dataclasses
import gzip
import logging
import os
import pathlib
import re
import threading

import numpy as np
import tensorflow as tf

import keras

logger = logging.getLogger("keras_mixer")

ASSETS = pathlib.Path(__file__).parents[1] / "assets"
DIGITS_FILE = ASSETS / "digits.csv.gz"
DIGITS_SHA256 = "09f66e6debdee2cd2b5ae59e0d6abbb73fc2b0e0185d2e1957e9ebb51e23aa22"
# Digits held out for validation: a fixed 20% draw (seeded permutation).
DIGITS_VALIDATION = 360

# tfds names known to work, with their train and evaluation splits. Any other
# tfds name is accepted if tfds knows it and it has "image" and "label".
TFDS_DATASETS = {
    "imagenet2012": {"train": "train[:99%]", "minival": "train[99%:]",
                     "eval": "validation"},
    "imagenet_v2": {"eval": "test"},
    # ReaL labels: the "real_label" feature is a list of correct classes.
    "imagenet2012_real": {"eval": "validation", "label_key": "real_label"},
    "imagenet2012_subset": {"train": "train", "eval": "validation"},
    "cifar10": {"train": "train[:98%]", "minival": "train[98%:]",
                "eval": "test"},
    "cifar100": {"train": "train[:98%]", "minival": "train[98%:]",
                 "eval": "test"},
    "oxford_iiit_pet": {"train": "train[:90%]", "minival": "train[90%:]",
                        "eval": "test"},
    "oxford_flowers102": {"train": "train", "minival": "validation",
                          "eval": "test"},
    "caltech101": {"train": "train", "eval": "test"},
    "dtd": {"train": "train", "minival": "validation", "eval": "test"},
    "food101": {"train": "train", "eval": "validation"},
    "sun397": {"train": "train", "minival": "validation", "eval": "test"},
    "mnist": {"train": "train", "eval": "test"},
    "fashion_mnist": {"train": "train", "eval": "test"},
}
EVAL_CROPS = ("resmall_crop", "resize_crop")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".gif", ".bmp")
# Largest image decoded, in pixels (width x height): 64 Mpx, e.g. 8192x8192
# or a 61 Mpx camera's 9504x6336. Decoding takes 3 bytes per pixel, so one
# image at the limit needs 192 MB. KERAS_MIXER_MAX_IMAGE_PIXELS overrides it.
MAX_IMAGE_PIXELS = 1 << 26
MAX_PIXELS_ENV = "KERAS_MIXER_MAX_IMAGE_PIXELS"
# Folder images decoded at once (each up to MAX_IMAGE_PIXELS).
DECODE_PARALLELISM = min(4, os.cpu_count() or 1)
# Folder images are shrunk on reading to a shorter side of at most this many
# times the model's image size (room for the inception crop's zoom).
FOLDER_SIDE_FACTOR = 2
# Folder datasets are cached (shrunk images) when they fit in this many bytes.
FOLDER_CACHE_BYTES = 2 << 30
# Datasets whose labels change under a horizontal flip.
NO_FLIP = ("digits", "mnist", "fashion_mnist")
AUTOTUNE = tf.data.AUTOTUNE


@dataclasses.dataclass
class DatasetInfo:
    """What a pipeline knows of its source."""

    name: str
    split: str
    num_classes: int
    num_examples: int | None
    class_names: list | None = None
    flip: bool = True
    # Paths of the files skipped (not images, unreadable, over the pixel
    # limit); decoding adds to it while the pipeline runs.
    skipped: set = dataclasses.field(default_factory=set)
    multi_label: bool = False
    folder: str | None = None  # the scanned image folder

    @property
    def skipped_files(self):
        return len(self.skipped)


# ----------------------------------------------------------------------------
# Bundled digits.


def load_digits():
    """The 1,797 handwritten digits: `(images, labels)`.

    `images` is uint8 `(1797, 8, 8)` with values 0..16 (counts of set pixels in
    4x4 blocks of a 32x32 bitmap), `labels` int32 `(1797,)` in 0..9. The file
    is scikit-learn's `digits.csv.gz`, bundled with its checksum verified.

    >>> images, labels = keras_mixer.data.load_digits()
    >>> images.shape, int(images.max()), np.bincount(labels)[:3].tolist()
    ((1797, 8, 8), 16, [178, 182, 177])
    """
    import hashlib

    raw = DIGITS_FILE.read_bytes()
    digest = hashlib.sha256(raw).hexdigest()
    if digest != DIGITS_SHA256:
        raise OSError(
            f"{DIGITS_FILE} is corrupt (sha256 {digest}, expected "
            f"{DIGITS_SHA256}). Reinstall keras-mixer."
        )
    table = np.loadtxt(gzip.decompress(raw).decode().splitlines(),
                       delimiter=",", dtype=np.int32)
    return table[:, :64].reshape(-1, 8, 8).astype(np.uint8), table[:, 64]


def digits_split(split):
    """Indices of the digits in "train" (1,437) or "validation" (360)."""
    order = np.random.default_rng(0).permutation(1797)
    if split == "train":
        return np.sort(order[DIGITS_VALIDATION:])
    if split in ("validation", "test", "eval"):
        return np.sort(order[:DIGITS_VALIDATION])
    raise ValueError(
        f"The digits have splits 'train' and 'validation', not {split!r}."
    )


def _digits_source(split):
    images, labels = load_digits()
    index = digits_split(split)
    # 0..16 -> 0..255, grayscale -> RGB (the models take RGB).
    images = np.round(images[index].astype(np.float32) * (255.0 / 16.0))
    images = np.repeat(images[..., None], 3, axis=-1).astype(np.uint8)
    ds = tf.data.Dataset.from_tensor_slices((images, labels[index]))
    info = DatasetInfo("digits", split, 10, len(index),
                       [str(i) for i in range(10)], flip=False)
    return ds, info


# ----------------------------------------------------------------------------
# Bounded image decoding (TensorFlow ops: runs eagerly, in tf.data and in
# exported signatures alike).


# Written with explicit tf.cond / tf.case / tf.while_loop: AutoGraph has
# nothing to convert, and skipping it saves most of the tracing time.
_graph_code = tf.autograph.experimental.do_not_convert


def max_image_pixels():
    """The decoding limit in pixels: KERAS_MIXER_MAX_IMAGE_PIXELS, else
    `MAX_IMAGE_PIXELS`."""
    value = os.environ.get(MAX_PIXELS_ENV)
    if not value:
        return MAX_IMAGE_PIXELS
    try:
        limit = int(value)
    except ValueError:
        limit = 0
    if limit < 1:
        raise ValueError(
            f"{MAX_PIXELS_ENV}={value!r}: give a positive number of pixels "
            f"(default {MAX_IMAGE_PIXELS})."
        )
    return limit


# Formats as tf.io.decode_image tells them apart (by their first bytes).
_UNKNOWN, _JPEG, _PNG, _GIF, _BMP = 0, 1, 2, 3, 4


def _bytes_at(contents, offset, length):
    """`length` bytes of `contents` from `offset`, as int64 (0 past the end)."""
    size = tf.strings.length(contents, unit="BYTE")
    offset = tf.minimum(tf.cast(offset, tf.int32), size)
    raw = tf.io.decode_raw(tf.strings.substr(contents, offset, length),
                           tf.uint8)
    raw = tf.cast(raw, tf.int64)
    return tf.pad(raw, [[0, length - tf.shape(raw)[0]]])


def _little(raw):
    return tf.reduce_sum(raw * tf.bitwise.left_shift(
        tf.constant(1, tf.int64), 8 * tf.range(tf.size(raw, tf.int64))))


def _big(raw):
    return _little(tf.reverse(raw, [0]))


@_graph_code
def _gif_first_frame(contents):
    """(end of the first frame's data, its height, its width), walking the
    GIF's blocks; end is -1 when the file has no complete first frame.

    TensorFlow's GIF decoder reads every frame before it returns the first,
    so the bounded decoder cuts the file after the first frame.
    """
    size = tf.cast(tf.strings.length(contents, unit="BYTE"), tf.int64)
    flags = _bytes_at(contents, 10, 1)[0]
    table = tf.where(flags >= 128,
                     3 * tf.bitwise.left_shift(tf.constant(2, tf.int64),
                                               flags % 8), 0)
    # stage 0: at a block; 1: in an extension's sub-blocks; 2: in the
    # image's sub-blocks; 3: done; 4: malformed.
    state = (13 + table, tf.constant(0, tf.int64), tf.constant(0, tf.int64),
             tf.constant(0, tf.int64))

    def step(pos, stage, height, width):
        head = _bytes_at(contents, pos, 10)
        byte = head[0]
        descriptor = tf.logical_and(tf.equal(stage, 0), tf.equal(byte, 0x2C))
        extension = tf.logical_and(tf.equal(stage, 0), tf.equal(byte, 0x21))
        local = tf.where(head[9] >= 128, 3 * tf.bitwise.left_shift(
            tf.constant(2, tf.int64), head[9] % 8), 0)
        in_blocks = stage > 0
        new_pos = tf.where(
            descriptor, pos + 11 + local,
            tf.where(extension, pos + 2,
                     tf.where(in_blocks, pos + 1 + byte, pos)))
        new_stage = tf.where(
            descriptor, tf.constant(2, tf.int64),
            tf.where(extension, tf.constant(1, tf.int64),
                     tf.where(tf.logical_and(in_blocks, tf.equal(byte, 0)),
                              tf.where(tf.equal(stage, 2),
                                       tf.constant(3, tf.int64),
                                       tf.constant(0, tf.int64)),
                              tf.where(in_blocks, stage,
                                       tf.constant(4, tf.int64)))))
        height = tf.where(descriptor, _little(head[7:9]), height)
        width = tf.where(descriptor, _little(head[5:7]), width)
        return new_pos, new_stage, height, width

    pos, stage, height, width = tf.while_loop(
        lambda pos, stage, h, w: tf.logical_and(stage < 3, pos < size),
        step, state)
    end = tf.where(tf.logical_and(tf.equal(stage, 3), pos <= size), pos, -1)
    return end, height, width


@_graph_code
def image_header(contents):
    """What an encoded image's header says, without decoding it:
    `(format, height, width, contents to decode)`.

    `format` is 1 JPEG, 2 PNG, 3 GIF, 4 BMP (how tf.io.decode_image tells
    them apart), 0 anything else or a header that cannot be read. A GIF is
    cut after its first frame, and its size is the larger of its screen and
    its first frame (both are allocated when it is decoded).
    """
    head = _bytes_at(contents, 0, 32)

    def starts(magic):
        return tf.reduce_all(tf.equal(head[:len(magic)], list(magic)))

    def jpeg():
        shape = tf.cast(tf.image.extract_jpeg_shape(contents), tf.int64)
        return tf.constant(_JPEG, tf.int64), shape[0], shape[1], contents

    def png():
        return (tf.constant(_PNG, tf.int64), _big(head[20:24]),
                _big(head[16:20]), contents)

    def gif():
        end, frame_height, frame_width = _gif_first_frame(contents)
        height = tf.maximum(_little(head[8:10]), frame_height)
        width = tf.maximum(_little(head[6:8]), frame_width)
        kind = tf.where(end > 0, tf.constant(_GIF, tf.int64),
                        tf.constant(_UNKNOWN, tf.int64))
        first = tf.strings.substr(contents, 0,
                                  tf.cast(tf.maximum(end, 0), tf.int32))
        return kind, height, width, first + "\x3b"

    def bmp():
        # BITMAPCOREHEADER (12 bytes): 16-bit sides; later headers: signed
        # 32-bit sides (a negative height is a top-down image).
        core = tf.equal(_little(head[14:18]), 12)

        def signed(raw):
            value = _little(raw)
            return tf.abs(tf.where(value >= 1 << 31, value - (1 << 32), value))

        height = tf.where(core, _little(head[20:22]), signed(head[22:26]))
        width = tf.where(core, _little(head[18:20]), signed(head[18:22]))
        return tf.constant(_BMP, tf.int64), height, width, contents

    def unknown():
        zero = tf.constant(0, tf.int64)
        return tf.constant(_UNKNOWN, tf.int64), zero, zero, contents

    return tf.case([
        (starts(b"\xff\xd8\xff"), jpeg),
        (starts(b"\x89PNG"), png),
        (starts(b"GIF8"), gif),
        (starts(b"BM"), bmp),
    ], default=unknown, exclusive=False)


def _message(*parts):
    """A string tensor joining strings and numbers (tensors or not)."""
    strings = []
    for part in parts:
        if isinstance(part, str):
            strings.append(part)
        else:
            part = tf.convert_to_tensor(part)
            strings.append(part if part.dtype == tf.string
                           else tf.strings.as_string(part))
    return tf.strings.join(strings)


def _require(condition, message):
    """Raises InvalidArgumentError with `message` unless `condition`: at once
    when eager, else through the returned control dependencies."""
    if tf.executing_eagerly():
        if not bool(condition):
            raise tf.errors.InvalidArgumentError(
                None, None, message.numpy().decode("utf-8", "replace"))
        return []
    return [tf.debugging.Assert(condition, [message])]


@_graph_code
def check_image_header(contents, max_pixels=None, what="image"):
    """Reads an encoded image's header and refuses it when it is no JPEG,
    PNG, GIF or BMP image, or when it has more than `max_pixels` pixels
    (default `max_image_pixels()`): tf.errors.InvalidArgumentError naming
    `what` (a path, or `image_bytes[i]`; a string or string tensor) and the
    limit. Returns `(height, width, contents to decode)`.
    """
    limit = int(max_pixels or max_image_pixels())
    kind, height, width, contents = image_header(contents)
    known = _require(tf.logical_and(kind > 0, tf.minimum(height, width) > 0),
                     _message(
        what, " is not a JPEG, PNG, GIF or BMP image (or its header is "
        "damaged)."))
    with tf.control_dependencies(known):
        bounded = _require(height * width <= limit, _message(
            what, " is ", width, "x", height, " pixels, over the decoding "
            f"limit of {limit} pixels: send a smaller image (the limit is "
            f"{MAX_PIXELS_ENV} or max_pixels=, fixed at export for a "
            "SavedModel)."))
    with tf.control_dependencies(bounded):
        return tf.identity(height), tf.identity(width), tf.identity(contents)


@_graph_code
def decode_image(contents, max_pixels=None, what="image"):
    """Decodes an encoded JPEG, PNG, GIF (first frame) or BMP image to
    uint8 RGB `[height, width, 3]`, with its size bounded.

    The header is checked first (`check_image_header`): an image of more
    than `max_pixels` pixels, or bytes that are none of those formats, fail
    with tf.errors.InvalidArgumentError naming `what` and the limit before
    anything is decoded. A corrupt image fails in the decoder, also with
    InvalidArgumentError.

    >>> png = tf.io.encode_png(tf.zeros((4, 6, 3), tf.uint8))
    >>> keras_mixer.data.decode_image(png).shape
    TensorShape([4, 6, 3])
    """
    _, _, contents = check_image_header(contents, max_pixels, what)
    image = tf.io.decode_image(contents, channels=3, expand_animations=False)
    image.set_shape([None, None, 3])
    return image


@_graph_code
def shrink(image, max_side):
    """`image` (uint8) resized, aspect kept, so that its shorter side is at
    most `max_side` (antialiased bilinear); smaller images are unchanged."""
    shape = tf.shape(image)[:2]
    shorter = tf.reduce_min(shape)

    def resize():
        scale = max_side / tf.cast(shorter, tf.float32)
        size = tf.maximum(tf.cast(tf.round(
            tf.cast(shape, tf.float32) * scale), tf.int32), 1)
        small = tf.image.resize(image, size, method="bilinear",
                                antialias=True)
        return tf.cast(tf.clip_by_value(tf.round(small), 0, 255), tf.uint8)

    return tf.cond(shorter > max_side, resize, lambda: image)


# ----------------------------------------------------------------------------
# Image folders.


def _looks_like_image(path):
    """A cheap check of an image file's head and tail (no decoding).

    Catches empty, truncated and mislabelled files before training; files
    that pass but still fail to decode are skipped while the pipeline reads
    them (see `_folder_source`).
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
                decode_image(tf.io.read_file(path), self.max_pixels, what=path)
                reason = "it could not be read"
            except (tf.errors.OpError, OSError) as error:
                reason = getattr(error, "message", str(error)).splitlines()[0]
                # TensorFlow's op errors: "{{function_node ...}} text [Op:X]".
                reason = re.sub(r"\{\{.*?\}\}|\[Op:.*$", "", reason).strip()
            logger.warning("Skipped unreadable image %s: %s", path, reason)
        return True


def _folder_source(root, split, image_size=None, validation_fraction=0.1,
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
        image = decode_image(tf.io.read_file(path), max_pixels, what=path)
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


# ----------------------------------------------------------------------------
# tensorflow-datasets.


def _import_tfds():
    try:
        import tensorflow_datasets as tfds
    except ImportError as error:
        raise ImportError(
            "tensorflow-datasets is needed for this dataset: "
            "pip install tensorflow-datasets"
        ) from error
    return tfds


def _tfds_split(name, split):
    splits = TFDS_DATASETS.get(name, {"train": "train", "eval": "test"})
    if split in splits:
        return splits[split]
    if split in ("validation", "eval"):
        return splits["eval"]
    return split  # A tfds split expression, e.g. "train[:10%]".


def _tfds_builder(name, data_dir=None):
    tfds = _import_tfds()
    try:
        return tfds.builder(name, data_dir=data_dir)
    except Exception as error:  # tfds raises its own DatasetNotFoundError.
        raise ValueError(
            f"Unknown dataset {name!r}: not 'digits', not an image folder "
            "and not a tensorflow-datasets name. Known here: digits, "
            f"folder:PATH, {', '.join(TFDS_DATASETS)} (or any tfds image "
            "classification dataset)."
        ) from error


def check_prepared(builder, name):
    """Refuses a tfds dataset that is not prepared in its data_dir, from the
    files there, before tfds would try to download it (offline that hangs
    for minutes, then fails)."""
    absl_logger = logging.getLogger("absl")
    level = absl_logger.level
    absl_logger.setLevel(logging.ERROR)  # tfds warns while it looks
    try:
        prepared = builder.is_prepared()
    finally:
        absl_logger.setLevel(level)
    if prepared:
        return
    root = builder.data_dir_root
    raise ValueError(
        f"tensorflow-datasets has no prepared copy of {name!r} in {root} "
        f"(looked for {builder.data_dir}). Prepare it once, on a machine "
        f"with network access: `tfds build {name} --data_dir {root}` "
        "(datasets such as imagenet2012 also need --manual_dir with the "
        "archives you downloaded); then pass that folder as --data_dir. Or "
        "train on your own images: --dataset folder:PATH (one sub-folder per "
        "class)."
    )


def _tfds_source(name, split, data_dir=None, download=False):
    spec = TFDS_DATASETS.get(name, {})
    builder = _tfds_builder(name, data_dir)
    features = builder.info.features
    label_key = spec.get("label_key", "label")
    if "image" not in features or label_key not in features:
        raise ValueError(
            f"tfds dataset {name!r} has no 'image' and '{label_key}' "
            "features; use an image classification dataset."
        )
    tfds_split = _tfds_split(name, split)
    if download:
        builder.download_and_prepare()
    else:
        check_prepared(builder, name)
    ds = builder.as_dataset(split=tfds_split, shuffle_files=split == "train")
    label_feature = features[label_key]
    num_classes = getattr(label_feature, "num_classes", None)
    if num_classes is None:  # ReaL: a sequence of ClassLabel.
        num_classes = label_feature.feature.num_classes
        names = label_feature.feature.names
    else:
        names = label_feature.names
    multi = label_key != "label"

    def select(example):
        image = example["image"]
        if image.shape[-1] == 1:
            image = tf.image.grayscale_to_rgb(image)
        label = example[label_key]
        return image, tf.cast(label, tf.int32)

    ds = ds.map(select, num_parallel_calls=AUTOTUNE)
    try:
        num_examples = builder.info.splits[tfds_split].num_examples
    except (KeyError, ValueError):
        num_examples = None
    info = DatasetInfo(name, split, num_classes, num_examples, list(names),
                       flip=name not in NO_FLIP, multi_label=multi)
    return ds, info


def source(name, split, data_dir=None, image_size=None, max_pixels=None):
    """`(dataset of (uint8 image, int label), DatasetInfo)` for a source name.

    Folder images are decoded with `max_pixels` (default
    `max_image_pixels()`) and, given `image_size`, shrunk to a shorter side
    of at most `FOLDER_SIDE_FACTOR * image_size`.

    Raises a ValueError naming what is known for an unknown name, before any
    download starts.
    """
    if name == "digits":
        return _digits_source(split)
    if name.startswith("folder:"):
        return _folder_source(folder_path(name), split, image_size,
                              max_pixels=max_pixels)
    if os.sep in name or os.path.isdir(name):
        return _folder_source(name, split, image_size, max_pixels=max_pixels)
    return _tfds_source(name, split, data_dir=data_dir)


def check_dataset_name(name, data_dir=None):
    """Refuses an unknown dataset name, a `folder:` without a path, or a tfds
    dataset not prepared in `data_dir`, without loading anything."""
    if name.startswith("folder:"):
        folder_path(name)
        return
    if name == "digits" or os.path.isdir(name):
        return
    if os.sep in name:
        raise ValueError(f"Image folder {name} does not exist.")
    tfds = _import_tfds()
    if (name not in TFDS_DATASETS and
            name.split(":")[0].split("/")[0] not in tfds.list_builders()):
        raise ValueError(
            f"Unknown dataset {name!r}. Use 'digits' (bundled, offline), "
            "'folder:PATH' (one sub-folder per class), or a "
            f"tensorflow-datasets name such as {', '.join(TFDS_DATASETS)}."
        )
    check_prepared(_tfds_builder(name, data_dir), name)


# ----------------------------------------------------------------------------
# Image ops (single images, uint8 or float in [0, 255]).


def inception_crop(image, size, seed, area_range=(0.05, 1.0),
                   aspect_ratio_range=(3 / 4, 4 / 3)):
    """A random crop of `area_range` of the image and an aspect ratio in
    `aspect_ratio_range`, resized to `size` x `size` (bilinear)."""
    begin, crop_size, _ = tf.image.stateless_sample_distorted_bounding_box(
        tf.shape(image),
        bounding_boxes=tf.constant([[[0.0, 0.0, 1.0, 1.0]]]),
        seed=seed,
        min_object_covered=area_range[0],
        aspect_ratio_range=aspect_ratio_range,
        area_range=area_range,
        use_image_if_no_bounding_boxes=True,
    )
    image = tf.slice(image, begin, crop_size)
    return tf.image.resize(image, (size, size), method="bilinear")


def resmall_crop(image, size, ratio=256 / 224):
    """Resize the shorter side to `round(size * ratio)`, then central crop."""
    shape = tf.cast(tf.shape(image)[:2], tf.float32)
    small = tf.round(size * ratio)
    scale = small / tf.reduce_min(shape)
    new = tf.cast(tf.round(shape * scale), tf.int32)
    new = tf.maximum(new, size)
    image = tf.image.resize(image, new, method="bilinear")
    top = (new[0] - size) // 2
    left = (new[1] - size) // 2
    return image[top: top + size, left: left + size]


def resize_crop(image, size, ratio=256 / 224):
    """Resize to a square of side `round(size * ratio)`, then central crop
    (the paper's "resize-crop", Appendix C: 256x256, then 224x224)."""
    big = int(round(size * ratio))
    image = tf.image.resize(image, (big, big), method="bilinear")
    top = (big - size) // 2
    return image[top: top + size, top: top + size]


def randaugment_factor(magnitude):
    """Keras's RandAugment `factor` for a paper magnitude m (Table 4: 10-20).

    Keras's factor spans [0, 1]; m is mapped linearly with m=20 (the largest
    the paper uses) at 1.0, so m=10 gives Keras's default 0.5.
    """
    if not 0 <= magnitude <= 20:
        raise ValueError(
            f"RandAugment magnitude {magnitude} is outside 0..20 (the paper "
            "uses 10, 15 and 20; 20 maps to Keras's strongest factor 1.0)."
        )
    return magnitude / 20.0


# ----------------------------------------------------------------------------
# Pipelines.


def build_dataset(name, split, *, image_size, batch_size, training,
                  data_dir=None, randaugment=None, mixup=0.0, cutmix=0.0,
                  crop_area=(0.05, 1.0), eval_crop="resmall_crop", seed=0,
                  cache=None, repeat=False, drop_remainder=None,
                  shuffle_buffer=10_000, max_pixels=None):
    """A batched `tf.data.Dataset` of `(images, one-hot labels)` and its info.

    Args:
        name: "digits", a tfds name, or "folder:PATH" (see module docstring).
        split: "train", "validation" (evaluation split), "minival" (held out
            of train where the dataset defines it) or a tfds split string.
        image_size: output side in pixels.
        batch_size: global batch size.
        training: random crop, flip, RandAugment, MixUp/CutMix and shuffling.
        randaugment: `(num_ops, magnitude)` or None.
        mixup, cutmix: alpha of MixUp / CutMix (0 disables; with both on,
            each batch takes one of them at random).
        crop_area: area range of the inception crop (digits and other small
            centred images want a larger minimum).
        eval_crop: "resmall_crop" or "resize_crop".
        seed: seeds shuffling and augmentation.
        cache: cache decoded images in memory; default: datasets under 50k
            images (image folders: when their shrunk images fit in
            `FOLDER_CACHE_BYTES`). A cached folder is read once here, so
            that unreadable images are logged and counted, and a class left
            without any readable image refused, before training.
        repeat: repeat forever (steps per epoch set by the caller).
        drop_remainder: default: `training`.
        max_pixels: decoding limit of folder images (default
            `max_image_pixels()`).

    Returns:
        `(dataset, DatasetInfo)`.
    """
    if eval_crop not in EVAL_CROPS:
        raise ValueError(
            f"Unknown eval_crop {eval_crop!r}; use one of {EVAL_CROPS}."
        )
    ds, info = source(name, split, data_dir=data_dir, image_size=image_size,
                      max_pixels=max_pixels)
    if cache is None:
        cache = info.num_examples is not None and info.num_examples < 50_000
        if info.folder is not None:
            side = FOLDER_SIDE_FACTOR * image_size
            # 3 bytes a pixel of a 4:3 image whose shorter side is `side`.
            cache = info.num_examples * side * side * 4 <= FOLDER_CACHE_BYTES
    if cache and info.folder is not None:
        ds = _read_folder_once(ds.cache(), info, split)
    if info.multi_label:
        ds = ds.map(lambda image, label: (image, tf.reduce_max(
            tf.one_hot(label, info.num_classes), axis=0)))
    else:
        ds = ds.map(lambda image, label: (
            image, tf.one_hot(label, info.num_classes)))
    if cache and info.folder is None:
        ds = ds.cache()
    if training:
        ds = ds.shuffle(min(shuffle_buffer, info.num_examples or shuffle_buffer),
                        seed=seed, reshuffle_each_iteration=True)
    if repeat:
        ds = ds.repeat()
    flip = training and info.flip
    if training:
        seeds = tf.data.Dataset.random(seed=seed).batch(2)
        ds = tf.data.Dataset.zip((ds, seeds))

        def augment(example, pair):
            image, label = example
            pair = tf.cast(pair, tf.int32)  # Stateless ops take int32 seeds.
            image = tf.cast(image, tf.float32)
            image = inception_crop(image, image_size, pair, area_range=crop_area)
            if flip:
                image = tf.image.stateless_random_flip_left_right(
                    image, pair[::-1]
                )
            return tf.ensure_shape(image, (image_size, image_size, 3)), label

        ds = ds.map(augment, num_parallel_calls=AUTOTUNE)
        if randaugment:
            num_ops, magnitude = randaugment
            layer = keras.layers.RandAugment(
                value_range=(0, 255), num_ops=int(num_ops),
                factor=randaugment_factor(magnitude), seed=seed,
            )
            ds = ds.map(lambda image, label: (
                tf.clip_by_value(layer(image), 0.0, 255.0), label),
                num_parallel_calls=AUTOTUNE)
    else:
        crop = resmall_crop if eval_crop == "resmall_crop" else resize_crop
        ds = ds.map(lambda image, label: (
            crop(tf.cast(image, tf.float32), image_size), label),
            num_parallel_calls=AUTOTUNE)
    ds = ds.map(lambda image, label: (tf.ensure_shape(
        image, (image_size, image_size, 3)), label))
    if drop_remainder is None:
        drop_remainder = training
    ds = ds.batch(batch_size, drop_remainder=drop_remainder,
                  num_parallel_calls=AUTOTUNE)
    if training and (mixup or cutmix):
        ds = ds.map(mixer_fn(mixup, cutmix, seed), num_parallel_calls=AUTOTUNE)
    options = tf.data.Options()
    # Same seed, same batches (element order kept through parallel maps).
    options.deterministic = True
    options.experimental_distribute.auto_shard_policy = (
        tf.data.experimental.AutoShardPolicy.DATA
    )
    return ds.with_options(options).prefetch(AUTOTUNE), info


def with_known_length(ds):
    """A finite `ds` with its number of elements declared.

    When tf.data cannot tell the length (a pipeline that may drop elements,
    e.g. with `ignore_errors`), the elements are counted in one pass (a
    cached pipeline fills its cache in it) and the count asserted, so Keras
    knows where a validation epoch ends instead of warning "Your input ran
    out of data".
    """
    if ds.cardinality() != tf.data.UNKNOWN_CARDINALITY:
        return ds
    count = ds.reduce(np.int64(0), lambda n, _: n + 1)
    return ds.apply(tf.data.experimental.assert_cardinality(count))


def _read_folder_once(cached, info, split):
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
    # Counted: Keras then knows where an epoch ends (with_known_length).
    return cached.apply(
        tf.data.experimental.assert_cardinality(int(counts.sum())))


def mixer_fn(mixup, cutmix, seed):
    """A batch map applying Keras's MixUp and/or CutMix to images and labels."""
    mixers = []
    if mixup:
        mixers.append(keras.layers.MixUp(alpha=float(mixup), seed=seed))
    if cutmix:
        mixers.append(keras.layers.CutMix(factor=float(cutmix), seed=seed + 1))

    def apply(images, labels):
        def run(layer):
            out = layer({"images": images, "labels": labels})
            return out["images"], tf.cast(out["labels"], labels.dtype)

        if len(mixers) == 1:
            return run(mixers[0])
        pick = tf.random.uniform((), seed=seed) < 0.5
        return tf.cond(pick, lambda: run(mixers[0]), lambda: run(mixers[1]))

    return apply

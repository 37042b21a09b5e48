"""What the input pipelines read: the bundled digits and tensorflow-datasets
(image folders are in `folders.py`), each as a dataset of `(uint8 image, int
label)` and a `DatasetInfo`.
"""

import dataclasses
import gzip
import hashlib
import logging
import pathlib

import numpy as np
import tensorflow as tf

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


def digits_source(split):
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
# tensorflow-datasets.


def import_tfds():
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


def tfds_builder(name, data_dir=None):
    tfds = import_tfds()
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


def tfds_source(name, split, data_dir=None, download=False):
    spec = TFDS_DATASETS.get(name, {})
    builder = tfds_builder(name, data_dir)
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

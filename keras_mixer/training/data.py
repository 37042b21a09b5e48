"""Input pipelines (tf.data): tensorflow-datasets, image folders, bundled digits.

TensorFlow-only; the models never import it. Every pipeline yields `(images,
labels)` batches: float32 RGB pixels in [0, 255] (the models normalise
inside) and float32 one-hot labels (so MixUp and CutMix can mix them).

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

The digits and tfds sources are in `sources.py`, image folders (scanning,
bounded decoding, skipped files) in `folders.py`, the decoder itself and the
evaluation crops in `keras_mixer.images`.

Training: inception crop (random resized crop), horizontal flip (not for
digits), RandAugment, then MixUp / CutMix on batches, all from Keras core.
Evaluation (the paper's Appendix C): "resmall_crop" or "resize_crop".
"""

import os

import numpy as np
import tensorflow as tf

import keras

from keras_mixer.images import EVAL_CROPS
from keras_mixer.images import resize_crop
from keras_mixer.images import resmall_crop
from keras_mixer.training import folders
from keras_mixer.training import sources
# Public names of the parts, as `keras_mixer.data.<name>`.
from keras_mixer.images import MAX_IMAGE_PIXELS  # noqa: F401
from keras_mixer.images import decode_image  # noqa: F401
from keras_mixer.images import max_image_pixels  # noqa: F401
from keras_mixer.training.folders import scan_image_folder  # noqa: F401
from keras_mixer.training.sources import TFDS_DATASETS
from keras_mixer.training.sources import DatasetInfo  # noqa: F401
from keras_mixer.training.sources import digits_split  # noqa: F401
from keras_mixer.training.sources import load_digits  # noqa: F401

AUTOTUNE = tf.data.AUTOTUNE


def source(name, split, data_dir=None, image_size=None, max_pixels=None):
    """`(dataset of (uint8 image, int label), DatasetInfo)` for a source name.

    Folder images are decoded with `max_pixels` (default
    `max_image_pixels()`) and, given `image_size`, shrunk to a shorter side
    of at most `folders.FOLDER_SIDE_FACTOR * image_size`.

    Raises a ValueError naming what is known for an unknown name, before any
    download starts.
    """
    if name == "digits":
        return sources.digits_source(split)
    if name.startswith("folder:"):
        return folders.folder_source(folders.folder_path(name), split,
                                     image_size, max_pixels=max_pixels)
    if os.sep in name or os.path.isdir(name):
        return folders.folder_source(name, split, image_size,
                                     max_pixels=max_pixels)
    return sources.tfds_source(name, split, data_dir=data_dir)


def check_dataset_name(name, data_dir=None):
    """Refuses an unknown dataset name, a `folder:` without a path, or a tfds
    dataset not prepared in `data_dir`, without loading anything."""
    if name.startswith("folder:"):
        folders.folder_path(name)
        return
    if name == "digits" or os.path.isdir(name):
        return
    if os.sep in name:
        raise ValueError(f"Image folder {name} does not exist.")
    tfds = sources.import_tfds()
    if (name not in TFDS_DATASETS and
            name.split(":")[0].split("/")[0] not in tfds.list_builders()):
        raise ValueError(
            f"Unknown dataset {name!r}. Use 'digits' (bundled, offline), "
            "'folder:PATH' (one sub-folder per class), or a "
            f"tensorflow-datasets name such as {', '.join(TFDS_DATASETS)}."
        )
    sources.check_prepared(sources.tfds_builder(name, data_dir), name)


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
            `folders.FOLDER_CACHE_BYTES`). A cached folder is read once here, so
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
            cache = folders.fits_in_cache(info.num_examples, image_size)
    if cache and info.folder is not None:
        ds = folders.read_once(ds.cache(), info, split)
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

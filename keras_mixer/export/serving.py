"""SavedModel for TF Serving, its `image_bytes` decoding, and the predictor
behind `keras-mixer predict` (SavedModel, .tflite or .keras).

`save_for_serving(model, "export/models/mixer_b16", version=1)` writes TF
Serving's layout `export/models/mixer_b16/1/` with three signatures:

    serving_default  images float32 [batch, H, W, 3], RGB 0-255
                     -> probabilities [batch, classes], top_k_indices int32,
                        top_k_scores float32, top_k_labels string (when the
                        class names are known)
    image_bytes      image_bytes string [batch]: encoded JPEG/PNG/GIF/BMP
                     (grayscale and RGBA become RGB) of up to `max_pixels`
                     pixels, decoded one at a time and resized in the graph
                     with the eval preprocessing ("resmall_crop") -> the same
                     outputs
    features         images as serving_default -> features [batch, D], the
                     pre-logits embedding

Weights live in the SavedModel's variables/ files, not in the graph
protobuf, so models far beyond its 2 GB limit (Mixer-H/14: 1.7 GB of
float32) export. An image over the pixel limit (its size is read from its
header, before decoding), a corrupt or an empty one fails its request with
InvalidArgumentError naming its index in the batch (`image_bytes[i]`);
nothing else is affected.
"""

import os

import numpy as np
import tensorflow as tf

import keras

from keras_mixer import atomic
from keras_mixer import labels as labels_lib
from keras_mixer.checkpoints import assign
from keras_mixer.export import _common
from keras_mixer.export import tflite
from keras_mixer.images import EVAL_CROPS
from keras_mixer.images import check_image_header
from keras_mixer.images import decode_image
from keras_mixer.images import max_image_pixels
from keras_mixer.images import resize_crop
from keras_mixer.images import resmall_crop
from keras_mixer.models._tools import prelogits_model

SIGNATURES = ("serving_default", "image_bytes", "features")
# Largest relative error accepted between a reloaded SavedModel and Keras.
SAVED_MODEL_TOLERANCE = 1e-4


def default_labels(num_classes):
    """Class names of a head of `num_classes`, when shipped (ImageNet-1k,
    Google's ImageNet-21k, MIIL's), else None."""
    if num_classes in labels_lib.LABEL_SETS:
        return [name for _, name in labels_lib.class_names(num_classes)]
    return None


def resolve_labels(labels, num_classes):
    """Class names: `labels` (a list, or a file with one per line) checked
    against `num_classes`, or `default_labels` when None."""
    if labels is None:
        return default_labels(num_classes)
    if isinstance(labels, (str, os.PathLike)):
        labels = labels_lib.read_labels(labels)
    labels = [str(label) for label in labels]
    if len(labels) != num_classes:
        raise ValueError(
            f"{len(labels)} labels for a {num_classes}-class model: give one "
            "name per class, in class order."
        )
    return labels


def decode_and_resize(image_bytes, height, width, eval_crop="resmall_crop",
                      max_pixels=None, what="image"):
    """One encoded image (string scalar) -> float32 [height, width, 3] in
    [0, 255], with the eval preprocessing.

    Decoding is bounded (`keras_mixer.images.decode_image`): an image over
    `max_pixels` pixels (default `images.max_image_pixels()`) or bytes that are
    no image raise tf.errors.InvalidArgumentError naming `what` before any
    pixel is decoded. The crop resizes the decoded uint8 image directly, so
    no float copy of the full-size image is made.
    """
    image = decode_image(image_bytes, max_pixels, what=what)
    crop = resmall_crop if eval_crop == "resmall_crop" else resize_crop
    if height == width:
        image = crop(image, height)
    else:
        image = tf.image.resize(image, (height, width))
    return tf.ensure_shape(tf.cast(image, tf.float32), (height, width, 3))


def decode_batch(image_bytes, height, width, eval_crop="resmall_crop",
                 max_pixels=None, parallelism=1):
    """A string [batch] of encoded images -> float32 [batch, height, width,
    3], decoded `parallelism` at a time (bounded memory).

    Every header is checked first; a bad element fails the whole batch with
    InvalidArgumentError naming its index, `image_bytes[i]` (over the pixel
    limit, not an image, or, from the decoding pass, corrupt).
    """
    count = tf.shape(image_bytes, out_type=tf.int64)[0]
    index = tf.range(count)
    names = tf.strings.join(["image_bytes[", tf.strings.as_string(index), "]"])
    limit = int(max_pixels or max_image_pixels())
    checked = tf.map_fn(
        lambda item: check_image_header(item[1], limit, what=item[0])[0],
        (names, image_bytes), fn_output_signature=tf.int64,
        parallel_iterations=1)
    with tf.control_dependencies([checked]):
        index = tf.identity(index)
    decoded = tf.data.Dataset.from_tensor_slices((index, image_bytes)).map(
        lambda i, contents: (i, decode_and_resize(
            contents, height, width, eval_crop, limit, what="image_bytes")),
        num_parallel_calls=parallelism, deterministic=True).ignore_errors()
    marker = tf.data.Dataset.from_tensors(
        (tf.constant(-1, tf.int64), tf.zeros((height, width, 3), tf.float32)))
    found, images = decoded.concatenate(marker).batch(
        count + 1).get_single_element()
    found, images = found[:-1], images[:-1]
    gaps = tf.where(tf.not_equal(found, tf.range(tf.size(found, tf.int64))))
    first = tf.cond(tf.size(gaps) > 0, lambda: gaps[0, 0],
                    lambda: tf.size(found, tf.int64))
    complete = tf.debugging.Assert(tf.equal(tf.size(found, tf.int64), count), [
        tf.strings.join([
            "image_bytes[", tf.strings.as_string(first), "] could not be "
            "decoded: a corrupt or truncated JPEG/PNG/GIF/BMP image."])])
    with tf.control_dependencies([complete]):
        return tf.identity(images)


def save_for_serving(model, directory, version=1, top_k=None, labels=None,
                     eval_crop="resmall_crop", overwrite=False,
                     max_pixels=None, check=True):
    """Writes `model` as a SavedModel in TF Serving's layout
    `<directory>/<version>/` and returns that path.

    Args:
        model: a keras_mixer classifier (RGB input of fixed size).
        directory: the model's base path (TF Serving's `base_path`).
        version: integer version folder.
        top_k: how many classes the top-k outputs hold; default min(5,
            classes).
        labels: class names (a list or a text file, one per line); default:
            the shipped ImageNet names for 1000/21843/11221 classes, else no
            `top_k_labels` output.
        eval_crop: preprocessing of `image_bytes`: "resmall_crop" or
            "resize_crop".
        overwrite: replace an existing version folder (only once the new
            one is written and checked).
        max_pixels: the largest image `image_bytes` decodes, in pixels
            (default `keras_mixer.images.max_image_pixels()`); fixed in the
            SavedModel.
        check: reload the written SavedModel and compare `serving_default`
            with the Keras model on a random image (relative error below
            `SAVED_MODEL_TOLERANCE`) before it takes the version's place.
            The check holds a second copy of the weights while it runs; pass
            False where memory cannot hold two (then check it yourself).
    """
    _common.require_tensorflow()
    height, width, is_softmax = _common.check_classifier(model)
    max_pixels = int(max_pixels or max_image_pixels())
    num_classes = model.output_shape[-1]
    if not isinstance(version, int) or version < 0:
        raise ValueError(f"version must be a non-negative integer, got {version!r}.")
    if top_k is None:
        top_k = min(5, num_classes)
    if not 1 <= top_k <= num_classes:
        raise ValueError(f"top_k must be in 1..{num_classes}, got {top_k}.")
    if eval_crop not in EVAL_CROPS:
        raise ValueError(f"eval_crop must be one of {EVAL_CROPS}.")
    labels = resolve_labels(labels, num_classes)
    path = os.path.join(directory, str(version))
    if os.path.exists(path) and not overwrite:
        raise FileExistsError(
            f"{path} exists: pass overwrite=True (--overwrite) or a new "
            "version number."
        )
    features = prelogits_model(model)
    label_table = tf.constant(labels) if labels else None

    def outputs(images):
        scores = tf.cast(model(images, training=False), tf.float32)
        probabilities = scores if is_softmax else tf.nn.softmax(scores)
        top_scores, top_indices = tf.math.top_k(probabilities, k=top_k)
        result = {"probabilities": probabilities,
                  "top_k_indices": top_indices, "top_k_scores": top_scores}
        if label_table is not None:
            result["top_k_labels"] = tf.gather(label_table, top_indices)
        return result

    images_spec = tf.TensorSpec((None, height, width, 3), tf.float32,
                                name="images")

    @tf.function(input_signature=[images_spec])
    def serve_images(images):
        return outputs(images)

    @tf.function(input_signature=[
        tf.TensorSpec((None,), tf.string, name="image_bytes")])
    def serve_image_bytes(image_bytes):
        return outputs(decode_batch(image_bytes, height, width, eval_crop,
                                    max_pixels))

    @tf.function(input_signature=[images_spec])
    def serve_features(images):
        return {"features": tf.cast(features(images, training=False), tf.float32)}

    signatures = {"serving_default": serve_images,
                  "image_bytes": serve_image_bytes, "features": serve_features}
    def compare(folder):
        served = tf.saved_model.load(folder).signatures["serving_default"]
        images = np.random.default_rng(0).uniform(
            0, 255, (1, height, width, 3)).astype(np.float32)
        got = served(images=tf.constant(images))["probabilities"].numpy()
        expected = outputs(tf.constant(images))["probabilities"].numpy()
        _common.check_agreement(got, expected, SAVED_MODEL_TOLERANCE,
                         f"The SavedModel for {path}")

    # TF Serving never sees a half-written or unchecked version.
    with atomic.writing_folder(path, check=compare if check else None) as tmp:
        _common.write_saved_model(model, tmp, signatures)
    return path


# ----------------------------------------------------------------------------
# Predicting from exported files.


def load_predictor(model_path, labels=None, eval_crop="resmall_crop",
                   top_k=None, max_pixels=None):
    """A function `(list of image file paths) -> list of [(label, score,
    index)] * top_k` for a SavedModel directory (its `image_bytes`
    signature), a `.tflite` file or a `.keras` file.

    Class names: `labels` (a list or a file), else the SavedModel's own, else
    the `labels.txt` beside the model file, else the ImageNet names for
    1000/21843/11221 classes, else the class indices. `top_k` defaults to
    min(5, classes); a SavedModel gives at most the top-k it was exported
    with.

    Images are decoded with the bound of `decode_and_resize` (`max_pixels`;
    a SavedModel applies the one fixed at its export): one over it, or one
    that is no image, raises tf.errors.InvalidArgumentError naming its path
    (its index for a SavedModel). A `.keras` model with NaN/Inf weights is
    refused.
    """
    if labels is None:
        labels = labels_lib.labels_beside(model_path)
    if os.path.isdir(model_path):
        loaded = tf.saved_model.load(model_path)
        if "image_bytes" not in loaded.signatures:
            raise ValueError(
                f"{model_path} has no 'image_bytes' signature; export it with "
                "keras_mixer.export.save_for_serving."
            )
        serve = loaded.signatures["image_bytes"]
        classes = serve.structured_outputs["probabilities"].shape[-1]
        given = (resolve_labels(labels, classes) if labels is not None
                 else None)

        def predict(paths):
            blobs = [tf.io.read_file(p) for p in paths]
            out = serve(image_bytes=tf.stack(blobs))
            names = out.get("top_k_labels")
            results = []
            for i in range(len(paths)):
                idx = out["top_k_indices"][i].numpy()[:top_k]
                scores = out["top_k_scores"][i].numpy()[:top_k]
                if given is not None:
                    label = [given[j] for j in idx]
                elif names is not None:
                    label = [n.decode() for n in names[i].numpy()[:top_k]]
                else:
                    label = [str(j) for j in idx]
                results.append(list(zip(label, scores.tolist(), idx.tolist())))
            return results

        return predict
    if model_path.endswith(".tflite"):
        interpreter = tflite.load_interpreter(model_path)
        shape = interpreter.get_input_details()[0]["shape"]
        height, width = int(shape[1]), int(shape[2])
        classes = int(interpreter.get_output_details()[0]["shape"][-1])

        def run(images):
            return tflite.run_tflite(model_path, images)
    elif model_path.endswith(".keras"):
        model = keras.saving.load_model(model_path)
        assign.check_finite(model, model_path)
        height, width = model.input_shape[1:3]
        classes = model.output_shape[-1]

        def run(images):
            return model.predict(images, verbose=0)
    else:
        raise ValueError(
            f"--model_dir {model_path}: give a SavedModel directory, a "
            ".tflite file or a .keras file."
        )
    names = resolve_labels(labels, classes)
    k = min(top_k or 5, classes)

    def predict(paths):
        images = np.stack([
            decode_and_resize(tf.io.read_file(p), height, width, eval_crop,
                              max_pixels, what=p).numpy()
            for p in paths
        ])
        probs = np.asarray(run(images))
        results = []
        for row in probs:
            idx = np.argsort(-row, kind="stable")[:k]
            results.append([(names[j] if names else str(j), float(row[j]), int(j))
                            for j in idx])
        return results

    return predict

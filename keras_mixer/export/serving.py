"""Export for serving: SavedModel for TF Serving, TFLite with builtin ops only,
and the loaders behind `keras-mixer predict`.

TensorFlow-only (run under the TensorFlow backend); the models never import
it.

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

Every export is written to a temporary name beside its destination, checked
(the SavedModel reloaded and compared with Keras; TFLite and ONNX files run
against Keras), and only then renamed into place, with the modes of `cp -r`;
a failed check leaves the previous file or version untouched. Models with
NaN or Inf weights are refused before any work.

`to_tflite(model, "m.tflite", quantization="dynamic_int8")` converts with the
TFLite builtin op set only (no Flex, no custom ops; every op of the result is
checked), keeps the batch dimension dynamic, and checks the result against
the Keras model with the LiteRT interpreter (`ai-edge-litert`).
"""

import os
import tempfile
import time

import numpy as np

import keras

from keras_mixer import atomic
from keras_mixer.images import EVAL_CROPS
from keras_mixer.images import check_image_header
from keras_mixer.images import decode_image
from keras_mixer.images import max_image_pixels
from keras_mixer.images import resize_crop
from keras_mixer.images import resmall_crop
from keras_mixer import labels as labels_lib
from keras_mixer.checkpoints import assign
from keras_mixer.training import evaluation

QUANTIZATIONS = ("none", "float16", "dynamic_int8", "int8")
# Largest relative error accepted against the Keras model (max |diff| over
# max |reference| of the probabilities); int8 modes report top-1 agreement.
TFLITE_TOLERANCE = {"none": 1e-4, "float16": 1e-2}
SIGNATURES = ("serving_default", "image_bytes", "features")
# Largest relative error accepted between a reloaded SavedModel and Keras.
SAVED_MODEL_TOLERANCE = 1e-4


def _require_tensorflow():
    if keras.backend.backend() != "tensorflow":
        raise RuntimeError(
            "Export writes TensorFlow graphs: run it under the TensorFlow "
            f"backend (KERAS_BACKEND=tensorflow), not {keras.backend.backend()!r}. "
            "A model trained on another backend can be saved as .keras and "
            "exported from there."
        )


def _check_classifier(model):
    """The model's input size and whether its output is already softmax;
    refuses a model that is no classifier or has NaN/Inf weights."""
    try:
        predictions = model.get_layer("predictions")
    except ValueError:
        raise ValueError(
            f"Model {model.name!r} has no classification head ('predictions' "
            "layer): export a keras_mixer classifier (include_top=True)."
        ) from None
    shape = model.input_shape
    if len(shape) != 4 or None in shape[1:] or shape[-1] != 3:
        raise ValueError(
            f"Export needs a fixed RGB input size; the model takes {shape}."
        )
    activation = keras.activations.serialize(predictions.activation)
    name = activation if isinstance(activation, str) else activation.get(
        "config", {}).get("name", "")
    assign.check_finite(model, f"Model {model.name!r}")
    return shape[1], shape[2], name == "softmax"


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


def _write_saved_model(model, path, signatures):
    """`tf.saved_model.save` of the signatures with the model's variables.

    Each weight is stored once, in the SavedModel's variables/ files (Keras
    3.15's ExportArchive stores every weight twice, under `variables/` and
    `_all_variables/`, which doubles an H/14 export to 3.5 GB), and none in
    the graph protobuf, so the 2 GB protobuf limit never applies.
    """
    import tensorflow as tf

    module = tf.Module()
    # With the TensorFlow backend a Keras variable wraps a tf.Variable.
    module.model_variables = [v.value for v in model.weights]
    for name, function in signatures.items():
        setattr(module, name, function)
    tf.saved_model.save(module, path, signatures=signatures)


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
    import tensorflow as tf

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
    import tensorflow as tf

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
    import tensorflow as tf

    _require_tensorflow()
    height, width, is_softmax = _check_classifier(model)
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
    features = evaluation.prelogits_model(model)
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
        _check_agreement(got, expected, SAVED_MODEL_TOLERANCE,
                         f"The SavedModel for {path}")

    # TF Serving never sees a half-written or unchecked version.
    with atomic.writing_folder(path, check=compare if check else None) as tmp:
        _write_saved_model(model, tmp, signatures)
    return path


def _relative_error(got, expected):
    got = np.asarray(got, np.float64)
    expected = np.asarray(expected, np.float64)
    if got.shape != expected.shape:
        return np.inf
    return float(np.max(np.abs(got - expected)) / np.max(np.abs(expected)))


def _check_agreement(got, expected, tolerance, what):
    error = _relative_error(got, expected)
    if not error < tolerance:
        raise RuntimeError(
            f"{what} differs from the Keras model by relative error "
            f"{error:.3g} (tolerance {tolerance}); it was not written and "
            "what was there is unchanged."
        )
    return error


# ----------------------------------------------------------------------------
# TFLite.


def _interpreter(model_path=None, model_content=None, num_threads=None):
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError as error:
        raise ImportError(
            "Checking TFLite files needs the LiteRT interpreter: "
            "pip install ai-edge-litert"
        ) from error
    return Interpreter(model_path=model_path, model_content=model_content,
                       num_threads=num_threads)


def tflite_ops(model_path=None, model_content=None):
    """The sorted op names of a TFLite model."""
    interpreter = _interpreter(model_path, model_content)
    return sorted({op["op_name"] for op in interpreter._get_ops_details()})


def check_builtin_ops(ops):
    """Raises if any op is a Flex (TensorFlow) or custom op."""
    bad = [op for op in ops if op.startswith("Flex") or op in ("CUSTOM", "DELEGATE")
           or not op.isupper()]
    if bad:
        raise RuntimeError(
            f"The TFLite model uses non-builtin ops {bad}; it would need the "
            "Flex delegate or custom kernels on device."
        )


def run_tflite(model_path, images, num_threads=None):
    """Runs a TFLite classifier on a batch (dynamic batch: resized to it).

    Images of another size than the model's are refused (ValueError): LiteRT
    would otherwise run them and silently drop or pad the border."""
    interpreter = _interpreter(model_path, num_threads=num_threads)
    inp = interpreter.get_input_details()[0]
    images = np.asarray(images, np.float32)
    expected = tuple(int(d) for d in inp["shape"][1:])
    if images.ndim != 4 or images.shape[1:] != expected:
        raise ValueError(
            f"{model_path} takes images [batch, {', '.join(map(str, expected))}]"
            f"; got shape {images.shape}. Resize (or crop) them to "
            f"{expected[0]}x{expected[1]} first, as `keras-mixer predict` "
            "does."
        )
    interpreter.resize_tensor_input(inp["index"], list(images.shape))
    interpreter.allocate_tensors()
    interpreter.set_tensor(inp["index"], images)
    interpreter.invoke()
    output = interpreter.get_output_details()[0]
    result = interpreter.get_tensor(output["index"])
    signatures = interpreter.get_signature_list().values()
    if any("logits" in sig.get("outputs", ()) for sig in signatures):
        # int8 files end at the logits (see to_tflite).
        result = np.exp(result - result.max(axis=-1, keepdims=True))
        result /= result.sum(axis=-1, keepdims=True)
    return result


def tflite_latency_ms(model_path, runs=20, num_threads=None, warmup=3):
    """Median batch-1 latency in ms (LiteRT's default CPU path, XNNPACK for
    float ops)."""
    interpreter = _interpreter(model_path, num_threads=num_threads)
    inp = interpreter.get_input_details()[0]
    shape = [1] + list(inp["shape"][1:])
    interpreter.resize_tensor_input(inp["index"], shape)
    interpreter.allocate_tensors()
    x = np.random.default_rng(0).uniform(0, 255, shape).astype(np.float32)
    times = []
    for i in range(warmup + runs):
        interpreter.set_tensor(inp["index"], x)
        start = time.perf_counter()
        interpreter.invoke()
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return 1000.0 * float(np.median(times))


def to_tflite(model, path, quantization="none", representative_data=None,
              check_data=None, measure_latency=True):
    """Converts `model` to a TFLite file with builtin ops only, checks it and
    returns a report.

    Args:
        model: a keras_mixer classifier.
        path: the `.tflite` file to write.
        quantization: "none" (float32), "float16" (float16 weights),
            "dynamic_int8" (int8 weights, float activations) or "int8" (int8
            weights and activations; needs `representative_data`; float32
            input, and float32 logits as output: a full-integer softmax
            would round flat probabilities to zero, so `run_tflite` and
            `keras-mixer predict` apply the softmax).
        representative_data: images [N, H, W, 3] in [0, 255] for "int8"
            calibration (a few hundred of the model's own data).
        check_data: images to compare LiteRT with Keras on (default: 8
            random images, or the representative data).
        measure_latency: also time batch-1 inference.

    Returns:
        A dict: path, quantization, size_bytes, ops, max_relative_error
        (max |LiteRT - Keras| / max |Keras| over the probabilities),
        top1_agreement, latency_ms_batch1. Raises if an op is not builtin, or
        if float32 / float16 miss their tolerance (1e-4 / 1e-2).
    """
    import tensorflow as tf

    _require_tensorflow()
    if quantization not in QUANTIZATIONS:
        raise ValueError(
            f"Unknown quantization {quantization!r}; use one of {QUANTIZATIONS}."
        )
    height, width, is_softmax = _check_classifier(model)
    # A full-integer softmax has steps of 1/256: a confident 1000-class
    # output survives, a flat one rounds to all zeros. So int8 files end at
    # the (int8) logits, and `run_tflite` / `predict` apply the softmax.
    logits = None
    if quantization == "int8" and is_softmax:
        logits = keras.Model(model.input, model.get_layer("head").output)
    if quantization == "int8":
        if representative_data is None or len(representative_data) == 0:
            raise ValueError(
                "quantization='int8' calibrates activations: give "
                "representative_data, a few hundred images [N, H, W, 3] in "
                "[0, 255] from the model's own data."
            )
        representative_data = np.asarray(representative_data, np.float32)
        if representative_data.shape[1:] != (height, width, 3):
            raise ValueError(
                f"representative_data has shape {representative_data.shape}; "
                f"the model takes [N, {height}, {width}, 3]."
            )
    @tf.function(input_signature=[
        tf.TensorSpec((None, height, width, 3), tf.float32, name="images")])
    def serve(images):
        if logits is not None:
            return {"logits": tf.cast(logits(images, training=False), tf.float32)}
        return {"probabilities": model(images, training=False)}

    with tempfile.TemporaryDirectory() as tmp:
        _write_saved_model(model, tmp, {"serving_default": serve})
        converter = tf.lite.TFLiteConverter.from_saved_model(tmp)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        if quantization != "none":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if quantization == "float16":
            converter.target_spec.supported_types = [tf.float16]
        if quantization == "int8":
            def representative():
                for image in representative_data:
                    yield [image[None]]

            converter.representative_dataset = representative
            converter.target_spec.supported_ops = [
                tf.lite.OpsSet.TFLITE_BUILTINS_INT8
            ]
            converter.inference_input_type = tf.float32
            converter.inference_output_type = tf.float32
        content = converter.convert()
    ops = tflite_ops(model_content=content)
    check_builtin_ops(ops)
    if check_data is None:
        check_data = (representative_data[:8] if representative_data is not None
                      else np.random.default_rng(0).uniform(
                          0, 255, (8, height, width, 3)))
    check_data = np.asarray(check_data, np.float32)
    expected = np.asarray(model.predict(check_data, verbose=0), np.float64)
    report = {"path": path, "quantization": quantization, "ops": ops}

    def compare(tmp):
        got = run_tflite(tmp, check_data).astype(np.float64)
        report["max_relative_error"] = _relative_error(got, expected)
        report["top1_agreement"] = float(
            np.mean(got.argmax(-1) == expected.argmax(-1)))
        tolerance = TFLITE_TOLERANCE.get(quantization)
        if tolerance is not None:
            _check_agreement(got, expected, tolerance,
                             f"TFLite ({quantization}) {path}")

    # Renamed into place only once the check passes.
    atomic.write_bytes(path, content, check=compare)
    report["size_bytes"] = os.path.getsize(path)
    report["latency_ms_batch1"] = (tflite_latency_ms(path) if measure_latency
                                   else None)
    return report


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
    import tensorflow as tf

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
        interpreter = _interpreter(model_path)
        shape = interpreter.get_input_details()[0]["shape"]
        height, width = int(shape[1]), int(shape[2])
        classes = int(interpreter.get_output_details()[0]["shape"][-1])

        def run(images):
            return run_tflite(model_path, images)
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


# ----------------------------------------------------------------------------
# ONNX.


def _erfc_to_onnx(ctx, node, name, args):
    """tf2onnx handler for TensorFlow's Erfc (exact GELU lowers to it since
    TF 2.x; tf2onnx 1.17 has no handler): erfc(x) = 1 - erf(x)."""
    from tf2onnx import utils

    erf = ctx.make_node("Erf", [node.input[0]])
    one = ctx.make_const(utils.make_name("one"), np.array(1.0, np.float32))
    node.type = "Sub"
    ctx.replace_inputs(node, [one.output[0], erf.output[0]])


def to_onnx(model, path, opset=17, check_data=None):
    """Converts `model` to ONNX with tf2onnx (dynamic batch) and checks it
    with onnxruntime; returns a report (path, size_bytes, ops,
    max_relative_error). Needs `pip install tf2onnx onnxruntime` (the
    `onnx` extra)."""
    import tensorflow as tf

    _require_tensorflow()
    try:
        import onnxruntime
        import tf2onnx
    except ImportError as error:
        raise ImportError(
            "ONNX export needs tf2onnx and onnxruntime: "
            'pip install "keras-mixer[onnx]"'
        ) from error
    height, width, _ = _check_classifier(model)
    spec = (tf.TensorSpec((None, height, width, 3), tf.float32, name="images"),)
    function = tf.function(lambda images: model(images, training=False),
                           input_signature=spec)
    proto, _ = tf2onnx.convert.from_function(
        function, input_signature=spec, opset=opset,
        custom_op_handlers={"Erfc": (_erfc_to_onnx, [])},
    )
    if check_data is None:
        check_data = np.random.default_rng(0).uniform(0, 255, (4, height, width, 3))
    check_data = np.asarray(check_data, np.float32)
    expected = np.asarray(model.predict(check_data, verbose=0), np.float64)
    errors = []

    def compare(tmp):
        session = onnxruntime.InferenceSession(
            tmp, providers=["CPUExecutionProvider"])
        got = session.run(None, {session.get_inputs()[0].name: check_data})[0]
        errors.append(_check_agreement(got, expected, 1e-4, f"ONNX {path}"))

    # Renamed into place only once onnxruntime agrees with Keras.
    atomic.write_bytes(path, proto.SerializeToString(), check=compare)
    error = errors[0]
    return {"path": path, "size_bytes": os.path.getsize(path),
            "ops": sorted({n.op_type for n in proto.graph.node}),
            "max_relative_error": error}

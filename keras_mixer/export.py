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
    image_bytes      image_bytes string [batch]: encoded JPEG/PNG/GIF/BMP of
                     any size (grayscale and RGBA become RGB), decoded and
                     resized in the graph with the eval preprocessing
                     ("resmall_crop") -> the same outputs
    features         images as serving_default -> features [batch, D], the
                     pre-logits embedding

Weights live in the SavedModel's variables/ files, not in the graph
protobuf, so models far beyond its 2 GB limit (Mixer-H/14: 1.7 GB of
float32) export. A corrupt or empty image fails its request with
InvalidArgumentError; nothing else is affected.

`to_tflite(model, "m.tflite", quantization="dynamic_int8")` converts with the
TFLite builtin op set only (no Flex, no custom ops; every op of the result is
checked), keeps the batch dimension dynamic, and checks the result against
the Keras model with the LiteRT interpreter (`ai-edge-litert`).
"""

import os
import shutil
import tempfile
import time

import numpy as np

import keras

from keras_mixer import data
from keras_mixer import evaluation
from keras_mixer import labels as labels_lib

QUANTIZATIONS = ("none", "float16", "dynamic_int8", "int8")
# Largest relative error accepted against the Keras model (max |diff| over
# max |reference| of the probabilities); int8 modes report top-1 agreement.
TFLITE_TOLERANCE = {"none": 1e-4, "float16": 1e-2}
SIGNATURES = ("serving_default", "image_bytes", "features")


def _require_tensorflow():
    if keras.backend.backend() != "tensorflow":
        raise RuntimeError(
            "Export writes TensorFlow graphs: run it under the TensorFlow "
            f"backend (KERAS_BACKEND=tensorflow), not {keras.backend.backend()!r}. "
            "A model trained on another backend can be saved as .keras and "
            "exported from there."
        )


def _check_classifier(model):
    """The model's input size and whether its output is already softmax."""
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


def decode_and_resize(image_bytes, height, width, eval_crop="resmall_crop"):
    """One encoded image (string scalar) -> float32 [height, width, 3] in
    [0, 255], with the eval preprocessing."""
    import tensorflow as tf

    image = tf.io.decode_image(image_bytes, channels=3,
                               expand_animations=False)
    image = tf.cast(image, tf.float32)
    crop = data.resmall_crop if eval_crop == "resmall_crop" else data.resize_crop
    if height == width:
        return crop(image, height)
    return tf.image.resize(image, (height, width))


def save_for_serving(model, directory, version=1, top_k=5, labels=None,
                     eval_crop="resmall_crop", overwrite=False):
    """Writes `model` as a SavedModel in TF Serving's layout
    `<directory>/<version>/` and returns that path.

    Args:
        model: a keras_mixer classifier (RGB input of fixed size).
        directory: the model's base path (TF Serving's `base_path`).
        version: integer version folder.
        top_k: how many classes the top-k outputs hold.
        labels: class names (a list or a text file, one per line); default:
            the shipped ImageNet names for 1000/21843/11221 classes, else no
            `top_k_labels` output.
        eval_crop: preprocessing of `image_bytes`: "resmall_crop" or
            "resize_crop".
        overwrite: replace an existing version folder.
    """
    import tensorflow as tf

    _require_tensorflow()
    height, width, is_softmax = _check_classifier(model)
    num_classes = model.output_shape[-1]
    if not isinstance(version, int) or version < 0:
        raise ValueError(f"version must be a non-negative integer, got {version!r}.")
    if not 1 <= top_k <= num_classes:
        raise ValueError(f"top_k must be in 1..{num_classes}, got {top_k}.")
    if eval_crop not in data.EVAL_CROPS:
        raise ValueError(f"eval_crop must be one of {data.EVAL_CROPS}.")
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
        images = tf.map_fn(
            lambda b: decode_and_resize(b, height, width, eval_crop),
            image_bytes,
            fn_output_signature=tf.TensorSpec((height, width, 3), tf.float32),
        )
        return outputs(images)

    @tf.function(input_signature=[images_spec])
    def serve_features(images):
        return {"features": tf.cast(features(images, training=False), tf.float32)}

    signatures = {"serving_default": serve_images,
                  "image_bytes": serve_image_bytes, "features": serve_features}
    parent = os.path.abspath(directory)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(dir=parent, prefix=f".tmp-{version}-")
    try:
        _write_saved_model(model, tmp, signatures)
        if os.path.exists(path):
            shutil.rmtree(path)
        os.replace(tmp, path)  # TF Serving never sees a half-written version
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return path


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
    """Runs a TFLite classifier on a batch (dynamic batch: resized to it)."""
    interpreter = _interpreter(model_path, num_threads=num_threads)
    inp = interpreter.get_input_details()[0]
    images = np.asarray(images, np.float32)
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
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp_path = f"{path}.tmp-{os.getpid()}"
    with open(tmp_path, "wb") as f:
        f.write(content)
    os.replace(tmp_path, path)

    if check_data is None:
        check_data = (representative_data[:8] if representative_data is not None
                      else np.random.default_rng(0).uniform(
                          0, 255, (8, height, width, 3)))
    check_data = np.asarray(check_data, np.float32)
    expected = np.asarray(model.predict(check_data, verbose=0), np.float64)
    got = run_tflite(path, check_data).astype(np.float64)
    error = float(np.max(np.abs(got - expected)) / np.max(np.abs(expected)))
    report = {
        "path": path,
        "quantization": quantization,
        "size_bytes": os.path.getsize(path),
        "ops": ops,
        "max_relative_error": error,
        "top1_agreement": float(np.mean(got.argmax(-1) == expected.argmax(-1))),
        "latency_ms_batch1": tflite_latency_ms(path) if measure_latency else None,
    }
    tolerance = TFLITE_TOLERANCE.get(quantization)
    if tolerance is not None and not error < tolerance:
        raise RuntimeError(
            f"TFLite ({quantization}) differs from Keras by relative error "
            f"{error:.3g} >= {tolerance}: {path} is not trustworthy."
        )
    return report


# ----------------------------------------------------------------------------
# Predicting from exported files.


def load_predictor(model_path, labels=None, eval_crop="resmall_crop",
                   top_k=None):
    """A function `(list of image file paths) -> list of [(label, score,
    index)] * top_k` for a SavedModel directory (its `image_bytes`
    signature), a `.tflite` file or a `.keras` file.

    Class names: `labels` (a list or a file), else the SavedModel's own, else
    the `labels.txt` beside the model file, else the ImageNet names for
    1000/21843/11221 classes, else the class indices. `top_k` defaults to
    min(5, classes); a SavedModel gives at most the top-k it was exported
    with.
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
            decode_and_resize(tf.io.read_file(p), height, width, eval_crop).numpy()
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
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    proto, _ = tf2onnx.convert.from_function(
        function, input_signature=spec, opset=opset,
        custom_op_handlers={"Erfc": (_erfc_to_onnx, [])},
    )
    tmp_path = f"{path}.tmp-{os.getpid()}"
    with open(tmp_path, "wb") as f:
        f.write(proto.SerializeToString())
    os.replace(tmp_path, path)
    if check_data is None:
        check_data = np.random.default_rng(0).uniform(0, 255, (4, height, width, 3))
    check_data = np.asarray(check_data, np.float32)
    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: check_data})[0]
    expected = np.asarray(model.predict(check_data, verbose=0), np.float64)
    error = float(np.max(np.abs(got - expected)) / np.max(np.abs(expected)))
    if not error < 1e-4:
        raise RuntimeError(
            f"ONNX differs from Keras by relative error {error:.3g}: {path} "
            "is not trustworthy."
        )
    return {"path": path, "size_bytes": os.path.getsize(path),
            "ops": sorted({n.op_type for n in proto.graph.node}),
            "max_relative_error": error}

"""TFLite files with builtin ops only, checked against Keras with the LiteRT
interpreter (`ai-edge-litert`), and running them.

`to_tflite(model, "m.tflite", quantization="dynamic_int8")` converts with the
TFLite builtin op set only (no Flex, no custom ops; every op of the result is
checked), keeps the batch dimension dynamic, and checks the result against
the Keras model before the file takes its name.
"""

import contextlib
import functools
import os
import tempfile
import time

import numpy as np
import tensorflow as tf

import keras

from keras_mixer import atomic
from keras_mixer.export import _common
from keras_mixer.models import cyclemlp

QUANTIZATIONS = ("none", "float16", "dynamic_int8", "int8")
# Largest relative error accepted against the Keras model (max |diff| over
# max |reference| of the probabilities); int8 modes report top-1 agreement.
TFLITE_TOLERANCE = {"none": 1e-4, "float16": 1e-2}


def load_interpreter(model_path=None, model_content=None, num_threads=None):
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
    interpreter = load_interpreter(model_path, model_content)
    return sorted({op["op_name"] for op in interpreter._get_ops_details()})


def ops_outside_delegate(model_path=None, model_content=None):
    """What LiteRT's default CPU delegate (XNNPACK) leaves to the builtin
    kernels: `({op name: count}, number of delegated partitions)`.

    Each op left outside splits the graph, and each partition is a separate
    delegate call. The interpreter lists the delegate's nodes after the
    model's ops but not its execution plan, so the ops still run are found
    by walking back from the graph's outputs and the delegates' inputs
    through the ops whose outputs no delegate produces.
    """
    interpreter = load_interpreter(model_path, model_content)
    interpreter.allocate_tensors()
    details = interpreter._get_ops_details()
    delegates = [op for op in details if op["op_name"] == "DELEGATE"]
    delegated = {int(t) for op in delegates for t in op["outputs"]}
    producer = {int(t): op for op in details if op["op_name"] != "DELEGATE"
                for t in op["outputs"]}
    wanted = [int(t) for op in delegates for t in op["inputs"]]
    wanted += [int(t) for t in interpreter._interpreter.OutputIndices()]
    outside, visited = {}, set()
    while wanted:
        tensor = wanted.pop()
        if tensor in delegated or tensor not in producer:
            continue
        op = producer[tensor]
        if op["index"] in visited:
            continue
        visited.add(op["index"])
        outside[op["op_name"]] = outside.get(op["op_name"], 0) + 1
        wanted.extend(int(t) for t in op["inputs"])
    return dict(sorted(outside.items())), len(delegates)


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
    interpreter = load_interpreter(model_path, num_threads=num_threads)
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
    interpreter = load_interpreter(model_path, num_threads=num_threads)
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


def _layer_norm_for_tflite(layer, inputs):
    """`layer` (a LayerNormalization over the last axis) as mean, sub, mul,
    mean, add, rsqrt, mul, add: the same function, written so that the
    converter keeps `centered * centered` a MUL."""
    x = tf.cast(inputs, tf.float32)
    centered = x - tf.reduce_mean(x, axis=-1, keepdims=True)
    variance = tf.reduce_mean(centered * centered, axis=-1, keepdims=True)
    y = centered * tf.math.rsqrt(variance + layer.epsilon)
    y = y * tf.cast(layer.gamma, tf.float32) + tf.cast(layer.beta, tf.float32)
    return tf.cast(y, layer.compute_dtype)


def _layer_norm_call(layer, keras_call, inputs):
    axis = layer.axis if isinstance(layer.axis, (list, tuple)) else [layer.axis]
    rank = len(inputs.shape)
    if [a % rank for a in axis] != [rank - 1]:
        return keras_call(inputs)
    return _layer_norm_for_tflite(layer, inputs)


@contextlib.contextmanager
def _patched(model, attribute, replacement):
    """Within the block, each sublayer of `model` for which
    `replacement(layer)` returns a function has it as its `attribute` (on
    the instance, so the class and other models are untouched); yields the
    patched layers, and removes the attribute again on leaving, also on
    error. A layer that already has `attribute` on the instance keeps it."""
    patched = []
    for layer in model._flatten_layers(include_self=False, recursive=True):
        function = None if attribute in vars(layer) else replacement(layer)
        if function is not None:
            setattr(layer, attribute, function)
            patched.append(layer)
    try:
        yield patched
    finally:
        for layer in patched:
            delattr(layer, attribute)


def layer_norms_for_xnnpack(model):
    """Within the block, every LayerNormalization of `model` over the last
    axis (with centre and scale, no RMS scaling) traces as
    `_layer_norm_for_tflite`.

    Keras computes the variance with a square of the centred input, which the
    TFLite converter turns into SQUARED_DIFFERENCE; LiteRT's XNNPACK delegate
    runs no int8 SQUARED_DIFFERENCE, so a full-integer Mixer-S/32 fell out of
    the delegate twice per LayerNorm: 6.5 ms at batch 1 against 4.2 ms with
    the MUL (BENCHMARKS.md, "Full-integer int8 TFLite"). Only the int8 RSQRT
    of one value per token stays outside. The float files get the same
    formulation (the same numbers, checked to 1e-4).
    """
    def replacement(layer):
        if (isinstance(layer, keras.layers.LayerNormalization)
                and layer.center and layer.scale and not layer.rms_scaling):
            return functools.partial(_layer_norm_call, layer,
                                     type(layer).call.__get__(layer))
        return None

    return _patched(model, "call", replacement)


def _cycle_shift_for_tflite(layer, inputs):
    """`layer.shift` (a Cycle FC's channel shift) as one depthwise
    convolution whose per-channel kernel is 1 at the channel's displacement
    and 0 elsewhere, over the zero-padded map: the same numbers (one term
    times 1, the others times 0). The slices, pads and masked sums of the
    Keras form requantize once per displacement in a full-integer file."""
    kh, kw = layer.kernel_size
    k = max(kh, kw)
    channels = inputs.shape[-1]
    kernel = np.zeros((kh, kw, channels, 1), np.float32)
    taps = layer.shifts + k // 2  # position p reads p + d = padded p + tap
    if kh == 1:
        kernel[0, taps, np.arange(channels), 0] = 1.0
        padding = [[0, 0], [0, 0], [k // 2, k - 1 - k // 2], [0, 0]]
    else:
        kernel[taps, 0, np.arange(channels), 0] = 1.0
        padding = [[0, 0], [k // 2, k - 1 - k // 2], [0, 0], [0, 0]]
    if k % 2:  # odd: "SAME" is that padding, and the converter keeps one op
        padding = "SAME"
    kernel = tf.constant(kernel, dtype=inputs.dtype)
    return tf.nn.depthwise_conv2d(inputs, kernel, [1, 1, 1, 1], padding)


def cycle_shifts_for_xnnpack(model):
    """Within the block, every Cycle FC of `model` shifts its channels
    with `_cycle_shift_for_tflite`: in a full-integer CycleMLP-B1 the masked
    shifts cost more than in float32 (BENCHMARKS.md, "Full-integer int8
    TFLite"). A layer whose `shift` is already replaced on the instance
    keeps it. A context manager yielding the patched layers; restored
    afterwards."""
    return _patched(model, "shift", lambda layer: (
        functools.partial(_cycle_shift_for_tflite, layer)
        if isinstance(layer, cyclemlp.CycleFC) else None))


# LiteRT's XNNPACK delegate ran a depthwise convolution of up to 5x5 taps at
# 33-55 GFLOP/s here and one of 6x6 or more at about 5 GFLOP/s (ConvMixer's
# 7x7: 15 ms per block at 32x32x768); in 3x3 pieces, its fastest kernel, the
# 7x7 takes 3.0 ms (BENCHMARKS.md, "Full-integer int8 TFLite").
XNNPACK_DEPTHWISE_TAPS = 25
DEPTHWISE_PIECE = 3


def _depthwise_for_tflite(layer, inputs):
    """`layer` (a stride-1 DepthwiseConv2D, channels last) as the sum of
    depthwise convolutions of its kernel's 3x3 pieces over the padded map:
    the same function, to float rounding."""
    kernel = tf.cast(layer.kernel, inputs.dtype)
    kh, kw = kernel.shape[:2]
    x = inputs
    if layer.padding == "same":
        top, left = (kh - 1) // 2, (kw - 1) // 2
        x = tf.pad(x, [[0, 0], [top, kh - 1 - top], [left, kw - 1 - left],
                       [0, 0]])
    total = 0
    for r0 in range(0, kh, DEPTHWISE_PIECE):
        r1 = min(r0 + DEPTHWISE_PIECE, kh)
        for c0 in range(0, kw, DEPTHWISE_PIECE):
            c1 = min(c0 + DEPTHWISE_PIECE, kw)
            # The rows and columns this piece reads: ends relative to the
            # map's end, so a map of unknown size works too.
            part = x[:, r0:(r1 - kh) or None, c0:(c1 - kw) or None, :]
            total = total + tf.nn.depthwise_conv2d(
                part, kernel[r0:r1, c0:c1], [1, 1, 1, 1], "VALID")
    if layer.use_bias:
        total = tf.nn.bias_add(total, tf.cast(layer.bias, inputs.dtype))
    return layer.activation(total)


def depthwise_convs_for_xnnpack(model):
    """Within the block, every DepthwiseConv2D of `model` with more than
    `XNNPACK_DEPTHWISE_TAPS` taps (stride and dilation 1, channels last)
    traces as `_depthwise_for_tflite`. A context manager yielding the
    patched layers; restored afterwards."""
    def replacement(layer):
        if (isinstance(layer, keras.layers.DepthwiseConv2D)
                and tuple(layer.strides) == (1, 1)
                and tuple(layer.dilation_rate) == (1, 1)
                and layer.data_format == "channels_last"
                and np.prod(layer.kernel_size) > XNNPACK_DEPTHWISE_TAPS):
            return functools.partial(_depthwise_for_tflite, layer)
        return None

    return _patched(model, "call", replacement)


def converter_for(model, saved_model_dir, quantization="none",
                  representative_data=None):
    """The TFLite converter `to_tflite` runs: `model` written as a SavedModel
    into `saved_model_dir` (with `layer_norms_for_xnnpack`,
    `cycle_shifts_for_xnnpack` and, but for "dynamic_int8",
    `depthwise_convs_for_xnnpack`) and the converter's options for
    `quantization`; int8 files end at the logits. The arguments are
    `to_tflite`'s, already checked."""
    height, width, is_softmax = _common.check_classifier(model)
    # A full-integer softmax has steps of 1/256: a confident 1000-class
    # output survives, a flat one rounds to all zeros. So int8 files end at
    # the (int8) logits, and `run_tflite` / `predict` apply the softmax.
    logits = None
    if quantization == "int8" and is_softmax:
        logits = keras.Model(model.input, model.get_layer("head").output)

    @tf.function(input_signature=[
        tf.TensorSpec((None, height, width, 3), tf.float32, name="images")])
    def serve(images):
        if logits is not None:
            return {"logits": tf.cast(logits(images, training=False), tf.float32)}
        return {"probabilities": model(images, training=False)}

    # With int8 weights and float activations the converter gives the pieces
    # hybrid kernels that XNNPACK leaves out, while LiteRT's own hybrid
    # kernel runs the whole 7x7 faster (3.9 ms against 10.4 in pieces).
    pieces = (contextlib.nullcontext() if quantization == "dynamic_int8"
              else depthwise_convs_for_xnnpack(model))
    with (layer_norms_for_xnnpack(model), cycle_shifts_for_xnnpack(model),
          pieces):
        _common.write_saved_model(model, saved_model_dir,
                                  {"serving_default": serve})
    converter = tf.lite.TFLiteConverter.from_saved_model(saved_model_dir)
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
    return converter


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
        top1_agreement, latency_ms_batch1, ops_outside_xnnpack and
        xnnpack_partitions (`ops_outside_delegate`). Raises if an op is not
        builtin, or if float32 / float16 miss their tolerance (1e-4 / 1e-2).
    """
    _common.require_tensorflow()
    if quantization not in QUANTIZATIONS:
        raise ValueError(
            f"Unknown quantization {quantization!r}; use one of {QUANTIZATIONS}."
        )
    height, width, _ = _common.check_classifier(model)
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
    with tempfile.TemporaryDirectory() as tmp:
        content = converter_for(model, tmp, quantization,
                                representative_data).convert()
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
        report["max_relative_error"] = _common.relative_error(got, expected)
        report["top1_agreement"] = float(
            np.mean(got.argmax(-1) == expected.argmax(-1)))
        tolerance = TFLITE_TOLERANCE.get(quantization)
        if tolerance is not None:
            _common.check_agreement(got, expected, tolerance,
                             f"TFLite ({quantization}) {path}")

    # Renamed into place only once the check passes.
    atomic.write_bytes(path, content, check=compare)
    report["size_bytes"] = os.path.getsize(path)
    report["ops_outside_xnnpack"], report["xnnpack_partitions"] = (
        ops_outside_delegate(path))
    report["latency_ms_batch1"] = (tflite_latency_ms(path) if measure_latency
                                   else None)
    return report

"""ONNX files (tf2onnx, dynamic batch), checked with onnxruntime. Needs
`pip install tf2onnx onnxruntime` (the `onnx` extra)."""

import os

import numpy as np
import tensorflow as tf

from keras_mixer import atomic
from keras_mixer.export import _common


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
    _common.require_tensorflow()
    try:
        import onnxruntime
        import tf2onnx
    except ImportError as error:
        raise ImportError(
            "ONNX export needs tf2onnx and onnxruntime: "
            'pip install "keras-mixer[onnx]"'
        ) from error
    height, width, _ = _common.check_classifier(model)
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
        errors.append(_common.check_agreement(got, expected, 1e-4, f"ONNX {path}"))

    # Renamed into place only once onnxruntime agrees with Keras.
    atomic.write_bytes(path, proto.SerializeToString(), check=compare)
    error = errors[0]
    return {"path": path, "size_bytes": os.path.getsize(path),
            "ops": sorted({n.op_type for n in proto.graph.node}),
            "max_relative_error": error}

"""LayerNorm and GELU formulations in a full-integer int8 TFLite file: a
Mixer-S/32-shaped TensorFlow graph (49 tokens, 512 channels, 8 blocks, random
weights) converted per formulation, batch-1 latency in LiteRT (XNNPACK) and
the number of XNNPACK partitions. Each formulation converts in a fresh
process (several conversions in one process crashed the converter).

    python benchmarks/tflite_int8_graph.py tf:erf:int8 mul:erf:int8 \
        none:relu:int8 none:erf:int8 mul:relu:int8 tf:relu:int8

Each argument is LN:ACT:QUANT. LN: "tf" (tf.nn.moments, as Keras), "mul"
(the variance from centered * centered, as keras_mixer's TFLite export), "fc"
(mean and variance as matmuls with a 1/C column), "none". ACT: "erf"
(exact GELU), "tanh", "relu", "sig" (x * sigmoid(1.702 x)). QUANT: "int8",
"dyn" (dynamic range), "none".
"""
import subprocess
import sys
import time

import numpy as np

TOKENS, CHANNELS, TOKEN_MLP, CHANNEL_MLP, BLOCKS = 49, 512, 256, 2048, 8


def build(norm, activation):
    """The forward function, its weights drawn once (seed 0)."""
    import tensorflow as tf

    rng = np.random.default_rng(0)

    def weight(shape, std):
        return tf.constant(rng.normal(0, std, shape).astype("float32"))

    def layer_norm():
        gamma, beta = weight((CHANNELS,), 0.5) + 1.0, weight((CHANNELS,), 0.02)

        def apply(x):
            if norm == "none":
                return x
            if norm == "tf":
                mean, variance = tf.nn.moments(x, -1, keepdims=True)
                centered = x - mean
            elif norm == "mul":
                centered = x - tf.reduce_mean(x, -1, keepdims=True)
                variance = tf.reduce_mean(centered * centered, -1, keepdims=True)
            elif norm == "fc":
                column = tf.fill((CHANNELS, 1), 1.0 / CHANNELS)
                rows = tf.reshape(x, (-1, CHANNELS))
                centered = rows - tf.matmul(rows, column)
                variance = tf.matmul(centered * centered, column)
                centered = tf.reshape(centered, tf.shape(x))
                variance = tf.reshape(variance, (-1, TOKENS, 1))
            else:
                raise ValueError(norm)
            return centered * tf.math.rsqrt(variance + 1e-6) * gamma + beta
        return apply

    def act(x):
        if activation in ("erf", "tanh"):
            return tf.nn.gelu(x, approximate=activation == "tanh")
        if activation == "relu":
            return tf.nn.relu(x)
        if activation == "sig":
            return x * tf.sigmoid(1.702 * x)
        raise ValueError(activation)

    def dense(units_in, units_out):
        kernel = weight((units_in, units_out), units_in ** -0.5)
        bias = weight((units_out,), 0.02)
        return lambda x: tf.nn.bias_add(tf.matmul(x, kernel), bias)

    stem = weight((32, 32, 3, CHANNELS), 0.02)
    blocks = [(layer_norm(), dense(TOKENS, TOKEN_MLP), dense(TOKEN_MLP, TOKENS),
               layer_norm(), dense(CHANNELS, CHANNEL_MLP),
               dense(CHANNEL_MLP, CHANNELS)) for _ in range(BLOCKS)]
    final_norm, head = layer_norm(), dense(CHANNELS, 1000)

    def forward(images):
        x = tf.nn.conv2d(images / 255.0, stem, 32, "VALID")
        x = tf.reshape(x, (-1, TOKENS, CHANNELS))
        for norm1, t1, t2, norm2, c1, c2 in blocks:
            y = tf.reshape(tf.transpose(norm1(x), (0, 2, 1)), (-1, TOKENS))
            y = t2(act(t1(y)))
            x = x + tf.transpose(tf.reshape(y, (-1, CHANNELS, TOKENS)), (0, 2, 1))
            y = c2(act(c1(tf.reshape(norm2(x), (-1, CHANNELS)))))
            x = x + tf.reshape(y, (-1, TOKENS, CHANNELS))
        return head(tf.reduce_mean(final_norm(x), 1))
    return forward


def convert(norm, activation, quantization):
    import tensorflow as tf

    function = tf.function(build(norm, activation), input_signature=[
        tf.TensorSpec((1, 224, 224, 3), tf.float32)])
    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [function.get_concrete_function()], function)
    if quantization != "none":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if quantization == "int8":
        calibration = np.random.default_rng(1).uniform(0, 255, (16, 224, 224, 3))
        converter.representative_dataset = lambda: (
            [image[None].astype("float32")] for image in calibration)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    return converter.convert()


def latency(content, runs=20, warmup=3):
    """(median ms of `runs` batch-1 invocations, XNNPACK partitions)."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=content)
    interpreter.allocate_tensors()
    index = interpreter.get_input_details()[0]["index"]
    image = np.random.default_rng(2).uniform(0, 255, (1, 224, 224, 3))
    interpreter.set_tensor(index, image.astype("float32"))
    times = []
    for _ in range(warmup + runs):
        start = time.perf_counter()
        interpreter.invoke()
        times.append(time.perf_counter() - start)
    partitions = sum(op["op_name"] == "DELEGATE"
                     for op in interpreter._get_ops_details())
    return 1000 * float(np.median(times[warmup:])), partitions


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "--one":
        ms, partitions = latency(convert(*sys.argv[2].split(":")))
        print(f"RESULT {sys.argv[2]:<16}{ms:8.2f} ms  {partitions} XNNPACK partitions")
        return
    for spec in sys.argv[1:] or ["tf:erf:int8", "mul:erf:int8"]:
        out = subprocess.run([sys.executable, __file__, "--one", spec],
                             capture_output=True, text=True, check=True).stdout
        print([line for line in out.splitlines() if line.startswith("RESULT")][0][7:])


if __name__ == "__main__":
    main()

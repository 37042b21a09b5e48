"""One depthwise convolution (+ bias, ReLU) on ConvMixer-768/32's map
(1 x 32 x 32 x 768) in LiteRT, whole and as the sum of its 3x3 pieces
(`keras_mixer.export.tflite._depthwise_for_tflite`'s form): batch-1 latency,
GFLOP/s and the ops XNNPACK leaves out. Each conversion runs in a fresh
process (several conversions in one process crashed the converter).

    python benchmarks/tflite_depthwise.py 3:whole:none 5:whole:none \
        7:whole:none 7:pieces:none 7:whole:int8 7:pieces:int8 \
        7:whole:dyn 7:pieces:dyn 9:whole:none 9:pieces:none

Each argument is K:FORM:QUANT: the kernel side K, FORM "whole" (one
DEPTHWISE_CONV_2D, SAME padding) or "pieces", QUANT "none", "int8" (full
integer) or "dyn" (dynamic range).
"""
import os
import subprocess
import sys
import tempfile

import numpy as np

SIDE, CHANNELS = 32, 768


def convert(k, form, quantization):
    import tensorflow as tf

    rng = np.random.default_rng(0)
    kernel = rng.normal(0, 0.1, (k, k, CHANNELS, 1)).astype("float32")
    bias = tf.constant(rng.normal(0, 0.1, CHANNELS).astype("float32"))

    def pieces(x):
        top = (k - 1) // 2
        x = tf.pad(x, [[0, 0], [top, k - 1 - top], [top, k - 1 - top], [0, 0]])
        total = 0
        for r0 in range(0, k, 3):
            r1 = min(r0 + 3, k)
            for c0 in range(0, k, 3):
                c1 = min(c0 + 3, k)
                part = x[:, r0:(r1 - k) or None, c0:(c1 - k) or None, :]
                total = total + tf.nn.depthwise_conv2d(
                    part, tf.constant(kernel[r0:r1, c0:c1]), [1] * 4, "VALID")
        return total

    def whole(x):
        return tf.nn.depthwise_conv2d(x, tf.constant(kernel), [1] * 4, "SAME")

    @tf.function(input_signature=[
        tf.TensorSpec((1, SIDE, SIDE, CHANNELS), tf.float32)])
    def forward(x):
        return tf.nn.relu((pieces if form == "pieces" else whole)(x) + bias)

    x = rng.normal(size=(1, SIDE, SIDE, CHANNELS)).astype("float32")
    want = tf.nn.relu(whole(x) + bias).numpy()
    assert np.abs(forward(x).numpy() - want).max() < 1e-5 * np.abs(want).max()
    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [forward.get_concrete_function()], forward)
    if quantization != "none":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if quantization == "int8":
        converter.representative_dataset = lambda: (
            [rng.normal(size=(1, SIDE, SIDE, CHANNELS)).astype("float32")]
            for _ in range(8))
        converter.target_spec.supported_ops = [
            tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.float32
        converter.inference_output_type = tf.float32
    return converter.convert()


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "--one":
        from keras_mixer.export import tflite

        k, form, quantization = sys.argv[2].split(":")
        k = int(k)
        content = convert(k, form, quantization)
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "m.tflite")
            with open(path, "wb") as f:
                f.write(content)
            ms = tflite.tflite_latency_ms(path, runs=20)
            outside, partitions = tflite.ops_outside_delegate(path)
        gflops = 2 * SIDE * SIDE * CHANNELS * k * k / ms / 1e6
        print(f"RESULT {sys.argv[2]:<16}{ms:8.2f} ms {gflops:7.1f} GFLOP/s  "
              f"outside XNNPACK {outside or '-'} ({partitions} partitions)")
        return
    for spec in sys.argv[1:] or ["7:whole:none", "7:pieces:none"]:
        out = subprocess.run([sys.executable, __file__, "--one", spec],
                             capture_output=True, text=True, check=True).stdout
        print([line for line in out.splitlines()
               if line.startswith("RESULT")][0][7:], flush=True)


if __name__ == "__main__":
    main()

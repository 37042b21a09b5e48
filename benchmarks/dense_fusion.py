"""Why `layers.Dense.on_rows` exists: TensorFlow's graph optimizer
(Grappler's remapper) fuses MatMul + BiasAdd + GELU into one oneDNN kernel
when the parent layer's `call` computes the dense layer itself, but not when
it calls the `Dense` sublayer (`self.fc1(rows)`) and applies the GELU after,
although the two GraphDefs have the same nodes.

Times, in one process, interleaved, best of `--repeats` per round:
- MixerB16's first block, channel MLP (32 x 196 tokens, 768 -> 3072 -> 768):
  "layer call" (fc1/fc2 called as layers, as the models/ layout first did),
  "on_rows" (today's `MlpBlock`), and hand-written TensorFlow on the same
  variables;
- GMLPS16's first block: its `call` with `self.fc1(...)` against today's.

    python benchmarks/dense_fusion.py
    python benchmarks/dense_fusion.py --no_remapping   # all variants equal
    python benchmarks/dense_fusion.py --bfloat16
"""

import argparse
import time

import keras
import numpy as np
import tensorflow as tf
from keras import ops


def _best(function, x, repeats):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function(x).numpy()
        times.append(time.perf_counter() - start)
    return min(times)


def mixer_variants():
    import keras_mixer
    from keras_mixer import layers

    model = keras_mixer.MixerB16(input_shape=(224, 224, 3))
    mlp = model.get_layer("block_0").channel_mixing

    def layer_call(t):
        y = ops.gelu(mlp.fc1(layers.to_rows(t)), approximate=mlp.approximate_gelu)
        return layers.from_rows(mlp.fc2(y), t)

    kernel1, bias1 = mlp.fc1.kernel, mlp.fc1.bias
    kernel2, bias2 = mlp.fc2.kernel, mlp.fc2.bias

    def handwritten(t):
        dtype = mlp.compute_dtype
        rows = tf.reshape(t, (-1, t.shape[-1]))
        y = tf.nn.bias_add(tf.matmul(rows, tf.cast(kernel1, dtype)), tf.cast(bias1, dtype))
        y = tf.nn.gelu(y, approximate=mlp.approximate_gelu)
        y = tf.nn.bias_add(tf.matmul(y, tf.cast(kernel2, dtype)), tf.cast(bias2, dtype))
        return tf.reshape(y, tf.shape(t))

    x = tf.random.normal((32, 196, 768), dtype=mlp.compute_dtype)
    return x, {"MixerB16 channel MLP, layer call": layer_call,
               "MixerB16 channel MLP, on_rows": lambda t: mlp(t, training=False),
               "MixerB16 channel MLP, hand-written TF": handwritten}


def gmlp_variants():
    import keras_mixer

    model = keras_mixer.GMLPS16(input_shape=(224, 224, 3))
    block = model.get_layer("block_0")

    def layer_call(t):  # the block's call with fc1 called as a layer
        y = ops.gelu(block.fc1(block.norm(t)), approximate=block.approximate_gelu)
        y = block.fc2(block.spatial_gating(y))
        return t + y

    x = tf.random.normal((32,) + tuple(block.input.shape[1:]), dtype=block.compute_dtype)
    return x, {"GMLPS16 block, layer call": layer_call,
               "GMLPS16 block, on_rows": lambda t: block(t, training=False)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no_remapping", action="store_true",
                        help="switch Grappler's remapper (the fusion) off")
    parser.add_argument("--bfloat16", action="store_true",
                        help="the mixed_bfloat16 policy")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    if args.no_remapping:
        tf.config.optimizer.set_experimental_options({"remapping": False})
    if args.bfloat16:
        keras.config.set_dtype_policy("mixed_bfloat16")
    for x, variants in (mixer_variants(), gmlp_variants()):
        functions = {name: tf.function(f) for name, f in variants.items()}
        outputs = {name: np.asarray(f(x), "float32") for name, f in functions.items()}
        first = next(iter(outputs.values()))
        spread = max(float(np.max(np.abs(o - first))) for o in outputs.values())
        times = {name: [] for name in functions}
        for _ in range(args.rounds):
            for name, f in functions.items():
                times[name].append(_best(f, x, args.repeats))
        base = None
        for name, seconds in times.items():
            median = float(np.median(seconds))
            base = base or median
            print(f"| {name} | {median * 1000:.1f} ms "
                  f"({min(seconds) * 1000:.1f}–{max(seconds) * 1000:.1f}) "
                  f"| {base / median:.2f}× |")
        print(f"(outputs agree to {spread:.1e})")


if __name__ == "__main__":
    main()

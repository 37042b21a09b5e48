"""One lever at a time: the same model under each implementation, measured
interleaved in one process (A B C A B C ...) so that machine drift hits every
variant alike. Reports the median images/s of each variant and its ratio to
the first variant listed in `--variants`.

    python benchmarks/levers.py --model MixerB16 --precision float32 --mode infer
    python benchmarks/levers.py --model MixerB16 --precision bfloat16 --mode infer
    python benchmarks/levers.py --model MixerB16 --precision float32 --mode train

Variants:
- baseline: the layers as they were before the fused-dense change (git
  7ba26b7): the dense layers are Keras's (a matmul on the 3-D token table
  and a broadcast bias add), the token mixing a broadcast matmul
  `kernel^T @ x` plus a broadcast bias add, and LayerNorm is Keras's
  `LayerNormalization`.
- fused_dense: `keras_mixer.layers.Dense` (one 2-D matmul per dense layer
  and, on TensorFlow, `tf.nn.bias_add`, which the grappler remapper fuses
  with the matmul and the GELU), still with Keras's `LayerNormalization`
  (git 3928d69).
- fused_dense_layernorm: the current layers, fused dense and
  `keras_mixer.layers.LayerNorm` (statistics in float32, fewer passes).
- fused_dense_xla: the current layers with `jit_compile=True` (with
  `LayerNorm` since it exists; BENCHMARKS.md's first lever table predates it).

Each timed call runs `--batches` batches from a `tf.data.Dataset`, so that a
call's fixed cost is spread as in `keras-mixer benchmark` (`--batches 1` gives
the one-batch figures of the first BENCHMARKS.md lever table).
"""

import argparse
import contextlib
import statistics
import time

import keras
import numpy as np
from keras import ops

import keras_mixer
from keras_mixer import benchmark
from keras_mixer import layers
from keras_mixer.models import mixer
from keras_mixer.models import resmlp


def _baseline_mlp_call(self, inputs, training=None):
    x = self.fc1(inputs)
    x = ops.gelu(x, approximate=self.approximate_gelu)
    x = self.drop1(x, training=training)
    x = self.fc2(x)
    return self.drop2(x, training=training)


def _token_dense(dense, x):
    """`dense` over the tokens of `(batch, tokens, channels)`, as the
    broadcast `kernel^T @ x` plus a broadcast bias."""
    kernel = ops.cast(dense.kernel, x.dtype)
    bias = ops.cast(dense.bias, x.dtype)
    return ops.matmul(ops.transpose(kernel), x) + ops.expand_dims(bias, -1)


def _baseline_mixer_call(self, inputs, training=None):
    mlp = self.token_mixing
    y = _token_dense(mlp.fc1, self.norm1(inputs))
    y = mlp.drop1(ops.gelu(y, approximate=mlp.approximate_gelu), training=training)
    y = mlp.drop2(_token_dense(mlp.fc2, y), training=training)
    x = inputs + self.drop_path(y, training=training)
    y = self.channel_mixing(self.norm2(x), training=training)
    return x + self.drop_path(y, training=training)


def _baseline_resmlp_call(self, inputs, training=None):
    y = self.ls1(_token_dense(self.cross_patch, self.norm1(inputs)))
    x = inputs + self.drop_path(y, training=training)
    y = self.channel_mixing(self.norm2(x), training=training)
    return x + self.drop_path(self.ls2(y), training=training)


@contextlib.contextmanager
def _patched(patches):
    """Sets `(owner, name, value)` attributes; restores them on exit."""
    saved = [(owner, name, getattr(owner, name)) for owner, name, _ in patches]
    for owner, name, value in patches:
        setattr(owner, name, value)
    try:
        yield
    finally:
        for owner, name, value in saved:
            setattr(owner, name, value)


def keras_layer_norm():
    """Keras's `LayerNormalization.call` in `LayerNorm`, restored on exit."""
    return _patched(
        [(layers.LayerNorm, "call", keras.layers.LayerNormalization.call)])


def baseline_layers():
    """The pre-change calls of the dense layers, the MLP, the token mixing
    and the LayerNorm, restored on exit."""
    return _patched([
        (layers.Dense, "call", keras.layers.Dense.call),
        (layers.MlpBlock, "call", _baseline_mlp_call),
        (mixer.MixerBlock, "call", _baseline_mixer_call),
        (resmlp.ResMLPBlock, "call", _baseline_resmlp_call),
        (layers.LayerNorm, "call", keras.layers.LayerNormalization.call),
    ])


VARIANTS = {
    "baseline": (baseline_layers, None),
    "fused_dense": (keras_layer_norm, None),
    "fused_dense_layernorm": (contextlib.nullcontext, None),
    "fused_dense_xla": (contextlib.nullcontext, True),
}


def _step_function(name, args, x, y):
    """A callable running one timed call (`args.batches` batches) of
    variant `name`."""
    import tensorflow as tf

    patch, jit_compile = VARIANTS[name]
    images = tf.data.Dataset.from_tensors(x).repeat(args.batches)
    pairs = tf.data.Dataset.from_tensors((x, y)).repeat(args.batches)
    with patch():
        model = keras_mixer.MODELS[args.model](
            weights=None, input_shape=x.shape[1:])
        if args.mode == "infer":
            if jit_compile is not None:
                model.jit_compile = jit_compile
            model.predict(images, verbose=0)  # trace
            return model, lambda: model.predict(images, verbose=0)
        model.compile(optimizer=keras.optimizers.AdamW(**benchmark.ADAMW),
                      loss="categorical_crossentropy",
                      jit_compile=jit_compile or "auto")
        model.fit(pairs, epochs=1, verbose=0)  # trace
        return model, lambda: model.fit(pairs, epochs=1, verbose=0)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="MixerB16")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--image_size", type=int, default=224)
    parser.add_argument("--precision", default="float32",
                        choices=benchmark.PRECISIONS)
    parser.add_argument("--mode", default="infer", choices=benchmark.MODES)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batches", type=int, default=3)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    args = parser.parse_args()
    names = args.variants.split(",")
    benchmark.check_arguments(args.model, args.batch_size, args.image_size,
                              args.precision, args.mode)
    if args.precision == "bfloat16":
        keras.config.set_dtype_policy("mixed_bfloat16")
    rng = np.random.default_rng(0)
    x = rng.random((args.batch_size, args.image_size, args.image_size, 3),
                   dtype=np.float32) * 255
    y = np.eye(1000, dtype="float32")[rng.integers(0, 1000, args.batch_size)]
    steps = {}
    for name in names:
        patch, _ = VARIANTS[name]
        with patch():  # the traced graph keeps the variant's calls
            _, steps[name] = _step_function(name, args, x, y)
    times = {name: [] for name in names}
    for _ in range(args.rounds):
        for name in names:
            with VARIANTS[name][0]():
                start = time.perf_counter()
                steps[name]()
                times[name].append(time.perf_counter() - start)
    rate = benchmark.matmul_rate(args.precision)
    flops = keras_mixer.count_flops(keras_mixer.MODELS[args.model](
        weights=None, input_shape=x.shape[1:]))
    flops *= 3 if args.mode == "train" else 1
    base = None
    print(f"{args.model} {args.precision} {args.mode}, batch {args.batch_size}"
          f" at {args.image_size}, {args.batches} batches per call, "
          f"{args.rounds} interleaved rounds; matmul "
          f"rate {rate:.1f} GFLOP/s")
    print(f"| variant | median images/s | GFLOP/s | of matmul | vs {names[0]} |")
    print("|---|---:|---:|---:|---:|")
    for name in names:
        ips = args.batch_size * args.batches / statistics.median(times[name])
        base = base or ips
        gflops = ips * flops / 1e9
        print(f"| {name} | {ips:.2f} | {gflops:.1f} | {gflops / rate:.0%} | "
              f"{ips / base:.2f} |")


if __name__ == "__main__":
    main()

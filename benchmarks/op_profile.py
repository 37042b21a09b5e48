"""Where a compiled Keras call spends its time, by TensorFlow op type: one
`predict_on_batch` and one `train_on_batch` of a model under TensorFlow's
profiler, the op events of the executor threads summed per op type.

    python benchmarks/op_profile.py --model MixerB16 --batch_size 32
    python benchmarks/op_profile.py --model MixerB16 --mode train
    python benchmarks/op_profile.py --model GMLPS16 --batch_size 16 \
        --mode infer --precision bfloat16

The matmul ops (MatMul, BatchMatMul, Conv2D, their fused and oneDNN forms
and their gradients) are the work the issue's "of the matmul rate" counts; everything else
(LayerNorm arithmetic, transposes, GELU's gradient, the optimizer's updates)
is time at zero counted FLOPs. The matmul rate of the same process is timed
right after each profile, so the table says how far the model could rise
if every other op took no time. Op times are wall time on the executor
thread, with the profiler on (a few percent slower than without).
"""

import argparse
import collections
import glob
import os
import tempfile
import time

import numpy as np



def is_matmul(op):
    """MatMul, BatchMatMul, Conv2D, their fused and oneDNN (`_Mkl...`) forms
    and their gradients."""
    return any(k in op for k in ("MatMul", "Conv2D", "Conv2d"))


def op_times(logdir):
    """{op type: seconds} over the executor threads' op events of the
    profile in `logdir`, and the wall time from the first to the last."""
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    space = xplane_pb2.XSpace()
    [path] = glob.glob(os.path.join(logdir, "**", "*.xplane.pb"),
                       recursive=True)
    with open(path, "rb") as f:
        space.ParseFromString(f.read())
    times = collections.Counter()
    first, last = float("inf"), 0
    for plane in space.planes:
        for line in plane.lines:
            if not line.name.startswith("tf_Compute"):
                continue
            for event in line.events:
                name = plane.event_metadata[event.metadata_id].name
                if ":" not in name or "::" in name:  # the executor's own
                    continue
                times[name.rsplit(":", 1)[1]] += event.duration_ps * 1e-12
                start = line.timestamp_ns * 1e3 + event.offset_ps
                first = min(first, start)
                last = max(last, start + event.duration_ps)
    return times, (last - first) * 1e-12


def profiled(call):
    import tensorflow as tf

    with tempfile.TemporaryDirectory() as logdir:
        tf.profiler.experimental.start(logdir)
        start = time.perf_counter()
        call()
        seconds = time.perf_counter() - start
        tf.profiler.experimental.stop()
        times, span = op_times(logdir)
    return times, span, seconds


def matmul_rate(precision):
    """GFLOP/s of the harness's reference product (B/16's channel MLP at
    batch 32) in `precision`, best of 3."""
    import tensorflow as tf

    from keras_mixer.benchmark.timing import best_seconds

    a = tf.cast(tf.random.normal((6272, 768)), precision)
    b = tf.cast(tf.random.normal((768, 3072)), precision)
    product = tf.function(lambda: tf.matmul(a, b))
    seconds = best_seconds(lambda: product().numpy(), repeats=3)
    return 2 * 6272 * 768 * 3072 / seconds / 1e9


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="MixerB16")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--image_size", type=int, default=224)
    parser.add_argument("--mode", default="infer,train")
    parser.add_argument("--precision", default="float32",
                        choices=("float32", "bfloat16"))
    parser.add_argument("--top", type=int, default=10)
    args = parser.parse_args()

    import keras

    from keras_mixer.benchmark import keras_paths
    from keras_mixer.models import _tools

    model = keras_paths.build(args.model, args.precision, args.image_size)
    rng = np.random.default_rng(0)
    x = keras_paths.images(rng, args.batch_size, args.image_size)
    classes = model.output_shape[-1]
    y = np.eye(classes, dtype="float32")[rng.integers(0, classes,
                                                      args.batch_size)]
    flops = _tools.count_flops(model) * args.batch_size
    for mode in args.mode.split(","):
        if mode == "train":
            model.compile(keras.optimizers.AdamW(1e-4),
                          "categorical_crossentropy")
            call, work = (lambda: model.train_on_batch(x, y)), 3 * flops
            written = "train_on_batch"
        else:
            call, work = (lambda: model.predict_on_batch(x)), flops
            written = "predict_on_batch"
        for _ in range(2):
            call()
        times, span, seconds = profiled(call)
        rate = matmul_rate(args.precision)
        total = sum(times.values())
        matmul = sum(t for op, t in times.items() if is_matmul(op))
        print(f"\n{args.model}, batch {args.batch_size}, {written} "
              f"({args.precision}): {seconds:.2f} s under the profiler, ops on the "
              f"executor threads {total:.2f} s over {span:.2f} s")
        print(f"matmul rate (same process, after the call) {rate:.1f} GFLOP/s;"
              f" the call: {work / seconds / 1e9:.1f} GFLOP/s = "
              f"{work / seconds / 1e9 / rate:.0%} of it")
        print(f"matmul ops {matmul:.2f} s ({matmul / total:.0%} of op time) "
              f"at {work / matmul / 1e9:.1f} GFLOP/s; with every other op "
              f"free the call would reach "
              f"{work / matmul / 1e9 / rate:.0%} of the matmul rate")
        print(f"{'op type':<40}{'seconds':>9}{'share':>8}")
        for op, t in times.most_common(args.top):
            print(f"{op:<40}{t:>9.3f}{t / total:>8.1%}")
        rest = total - sum(t for _, t in times.most_common(args.top))
        print(f"{'(other op types)':<40}{rest:>9.3f}{rest / total:>8.1%}")


if __name__ == "__main__":
    main()

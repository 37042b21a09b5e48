"""The stall after `model.predict` / `model.fit` on NumPy arrays, reproduced
with TensorFlow alone: deleting a tf.data iterator whose pipeline has
AUTOTUNE stages (as Keras's NumPy adapter builds: a parallel map and a
prefetch) blocks, with the cores idle, for a time that grows with how long
the iterator lived; with `options.autotune.enabled = False` it does not.

    python benchmarks/tfdata_stall.py --work 12 --trials 3
    python benchmarks/tfdata_stall.py --work 12 --trials 3 --autotune off

Each trial builds the pipeline (3 batches of 32 images at 224 px, the
harness's `predict` input), takes its 3 elements while running float32
matmuls in the main thread for `--work` seconds in all (the model's work
between batches), then times `del iterator`. Keras's `fit` and `predict`
drop their epoch iterator when they return, so a user sees this time as
part of the call (benchmarks/stall_stacks.py finds the main thread there:
in the frame that called `fit`, after `fit`'s own frame has gone).
"""
import argparse
import time

import numpy as np


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=float, default=12.0,
                        help="seconds of matmuls while the iterator lives")
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--autotune", choices=("on", "off"), default="on")
    args = parser.parse_args()

    import tensorflow as tf

    a = tf.random.normal((3000, 3000))
    product = tf.function(lambda: tf.matmul(a, a))
    images = np.random.default_rng(0).random((96, 224, 224, 3), np.float32)
    for trial in range(args.trials):
        dataset = tf.data.Dataset.range(3).map(
            lambda i: tf.gather(images, tf.range(i * 32, i * 32 + 32)),
            num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)
        if args.autotune == "off":
            options = tf.data.Options()
            options.autotune.enabled = False
            dataset = dataset.with_options(options)
        iterator = iter(dataset)
        for _ in iterator:
            start = time.perf_counter()
            while time.perf_counter() - start < args.work / 3:
                product().numpy()
        start = time.perf_counter()
        del iterator
        print(f"autotune {args.autotune}, {args.work:g} s of work, trial "
              f"{trial}: `del iterator` took {time.perf_counter() - start:.3f}"
              " s", flush=True)


if __name__ == "__main__":
    main()

"""The package as it was before the models/ + checkpoints/ layout (A) against
this checkout (B): the same variant built by each, with the same weights,
timed in interleaved rounds (A B A B ...) in one process, so that machine
drift hits both alike. Three cases: float32 and mixed_bfloat16 inference,
float32 training. Reports the median images/s of each and B / A.

    python benchmarks/layout_ab.py                  # MixerB16 at 224, batch 32
    python benchmarks/layout_ab.py --old /work/main # A from a checkout
    python benchmarks/layout_ab.py --image_size 32 --batch_size 2 --rounds 2 --batches 1

A is imported from `--old` (a checkout whose `keras_mixer/` has the old
layout) or, by default, from `git archive --old_rev` of this repository
extracted to a temporary folder. Both packages are called `keras_mixer`: A's
modules are kept aside and put in `sys.modules` only while A builds and
traces its model. Before timing, B's outputs are checked against A's, and
the op types of the two inference graphs are counted (a difference there is
where a speed difference would come from).
"""

import argparse
import collections
import contextlib
import importlib
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time

import keras
import numpy as np

import keras_mixer
from keras_mixer import benchmark

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CASES = (("float32", "infer"), ("bfloat16", "infer"), ("float32", "train"))


def _package_modules():
    return {
        name: module for name, module in sys.modules.items()
        if name == "keras_mixer" or name.startswith("keras_mixer.")
    }


@contextlib.contextmanager
def _as_keras_mixer(modules):
    """`sys.modules`' keras_mixer entries replaced by `modules` inside."""
    saved = _package_modules()
    for name in saved:
        del sys.modules[name]
    sys.modules.update(modules)
    try:
        yield
    finally:
        for name in _package_modules():
            del sys.modules[name]
        sys.modules.update(saved)


def _extract(rev, folder):
    """`keras_mixer/` of git revision `rev` of this repository, in `folder`."""
    archive = os.path.join(folder, "old.tar")
    with open(archive, "wb") as f:
        subprocess.run(["git", "-C", ROOT, "archive", rev, "keras_mixer"],
                       stdout=f, check=True)
    with tarfile.open(archive) as tar:
        tar.extractall(folder, filter="data")
    return folder


def import_old(root):
    """(A's `keras_mixer` package, all of A's keras_mixer modules)."""
    if not os.path.exists(os.path.join(root, "keras_mixer", "mixer.py")):
        raise SystemExit(f"{root}/keras_mixer has no mixer.py: not the old "
                         "layout (give --old a checkout of git a2d2373).")
    sys.path.insert(0, root)
    try:
        with _as_keras_mixer({}):
            package = importlib.import_module("keras_mixer")
            modules = _package_modules()
    finally:
        sys.path.remove(root)
    return package, modules


def _data(args):
    import tensorflow as tf

    rng = np.random.default_rng(0)
    x = rng.random((args.batch_size, args.image_size, args.image_size, 3),
                   dtype=np.float32) * 255
    y = np.eye(1000, dtype="float32")[rng.integers(0, 1000, args.batch_size)]
    images = tf.data.Dataset.from_tensors(x).repeat(args.batches)
    pairs = tf.data.Dataset.from_tensors((x, y)).repeat(args.batches)
    return x, images, pairs


def op_counts(model, x):
    """{op type: count} of the TensorFlow graph of `model(x)` at inference."""
    import tensorflow as tf

    function = tf.function(lambda x: model(x, training=False))
    graph = function.get_concrete_function(tf.constant(x)).graph
    return collections.Counter(op.type for op in graph.get_operations())


def _step(model, mode, images, pairs):
    """Traces `model` for `mode`; returns a callable running one timed call."""
    if mode == "infer":
        model.predict(images, verbose=0)
        return lambda: model.predict(images, verbose=0)
    model.compile(optimizer=keras.optimizers.AdamW(**benchmark.ADAMW),
                  loss="categorical_crossentropy")
    model.fit(pairs, epochs=1, verbose=0)
    return lambda: model.fit(pairs, epochs=1, verbose=0)


def run_case(args, old, precision, mode):
    """Median images/s of A and B for one case."""
    old_package, old_modules = old
    keras.config.set_dtype_policy(
        "mixed_bfloat16" if precision == "bfloat16" else "float32")
    x, images, pairs = _data(args)
    shape = (args.image_size, args.image_size, 3)
    with _as_keras_mixer(old_modules):
        model_a = getattr(old_package, args.model)(input_shape=shape)
    model_b = getattr(keras_mixer, args.model)(input_shape=shape)
    paths_a = [v.path for v in model_a.weights]
    assert paths_a == [v.path for v in model_b.weights], "variables differ"
    rng = np.random.default_rng(1)
    for v in model_a.weights:  # every weight non-zero, the head included
        v.assign(0.02 * rng.standard_normal(v.shape))
    model_b.set_weights(model_a.get_weights())
    with _as_keras_mixer(old_modules):
        out_a = np.asarray(model_a(x[:2], training=False), "float32")
    out_b = np.asarray(model_b(x[:2], training=False), "float32")
    difference = float(np.max(np.abs(out_a - out_b)))
    with _as_keras_mixer(old_modules):
        ops_a = op_counts(model_a, x[:2])
    ops_b = op_counts(model_b, x[:2])
    ops = {k: ops_b[k] - ops_a[k] for k in ops_a | ops_b if ops_b[k] != ops_a[k]}
    with _as_keras_mixer(old_modules):
        step_a = _step(model_a, mode, images, pairs)
    step_b = _step(model_b, mode, images, pairs)
    times = {"A": [], "B": []}
    for _ in range(args.rounds):
        for name, step in (("A", step_a), ("B", step_b)):
            start = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - start)
    images_per_call = args.batch_size * args.batches
    rates = {k: images_per_call / statistics.median(v) for k, v in times.items()}
    keras.config.set_dtype_policy("float32")
    return rates, difference, ops


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="MixerB16")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--image_size", type=int, default=224)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--batches", type=int, default=3)
    parser.add_argument("--old", help="a checkout with the old layout")
    parser.add_argument("--old_rev", default="a2d2373",
                        help="the git revision to extract when --old is not given")
    parser.add_argument("--tolerance", type=float, default=0.03)
    args = parser.parse_args()
    benchmark.check_arguments(args.model, args.batch_size, args.image_size)
    with tempfile.TemporaryDirectory() as folder:
        old = import_old(args.old or _extract(args.old_rev, folder))
        print(f"{args.model}, batch {args.batch_size} at {args.image_size}, "
              f"{args.batches} batches per call, {args.rounds} interleaved "
              f"rounds; A = {args.old or 'git ' + args.old_rev}, B = {ROOT}")
        print("| case | A images/s | B images/s | B / A | max |A - B| output "
              "| graph ops B - A |")
        print("|---|---:|---:|---:|---:|---|")
        verdicts = []
        for precision, mode in CASES:
            rates, difference, ops = run_case(args, old, precision, mode)
            ratio = rates["B"] / rates["A"]
            verdicts.append(abs(ratio - 1) <= args.tolerance)
            ops = ", ".join(f"{k} {v:+d}" for k, v in sorted(ops.items()))
            print(f"| {precision} {mode} | {rates['A']:.2f} | {rates['B']:.2f} "
                  f"| {ratio:.3f} | {difference:.2e} | {ops or 'none'} |",
                  flush=True)
    print(f"within {args.tolerance:.0%}: "
          f"{'yes' if all(verdicts) else 'NO'} ({sum(verdicts)}/{len(verdicts)} cases)")


if __name__ == "__main__":
    main()

"""`model.fit` on NumPy against `train_on_batch`, one process, nothing else
running in it: whether whole calls lose seconds as they do inside the
interleaved harness (BENCHMARKS.md, "Measuring on a shared VM").

Each round runs two `train_on_batch` calls, then one `fit` over the same two
batches; a callback stamps each batch end and `on_train_end`, and a thread
samples the main thread's Python stack from `on_train_end` until `fit`
returns (printed when that takes more than 0.3 s).

    python benchmarks/fit_calls.py --model GMixer12 --batch_size 16
    python benchmarks/fit_calls.py --model MixerB16 --batch_size 32 --rounds 5
    python benchmarks/fit_calls.py --model GMixer12 --idle 20
"""

import argparse
import collections
import resource
import sys
import threading
import time
import traceback

import numpy as np


class Stamps:
    """Times of batch ends and `on_train_end`, and the stack samples taken
    after it."""

    def __init__(self, keras):
        self.start = time.perf_counter()
        self.marks = []
        self.samples = collections.Counter()
        self.done = threading.Event()
        self.end = None
        main = threading.get_ident()
        stamps = self

        def sample():
            while not stamps.done.is_set():
                frame = sys._current_frames().get(main)
                if frame is not None:
                    stack = traceback.extract_stack(frame)[-5:]
                    stamps.samples[" <- ".join(
                        f"{f.name} ({f.filename.rsplit('/', 1)[-1]}:{f.lineno})"
                        for f in reversed(stack))] += 1
                time.sleep(0.02)

        class Callback(keras.callbacks.Callback):
            def on_train_batch_end(self, batch, logs=None):
                stamps.marks.append((f"batch {batch}", stamps.elapsed()))

            def on_train_end(self, logs=None):
                stamps.end = stamps.elapsed()
                threading.Thread(target=sample, daemon=True).start()

        self.callback = Callback()

    def elapsed(self):
        return time.perf_counter() - self.start


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="GMixer12")
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--idle", type=float, default=0.0,
                        help="seconds to sleep before each fit (as the "
                        "harness's process waits while the others compute)")
    args = parser.parse_args()

    import keras

    import keras_mixer

    batch = args.batch_size
    model = keras_mixer.MODELS[args.model]()
    model.compile(keras.optimizers.AdamW(1e-4), "categorical_crossentropy")
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (2 * batch, 224, 224, 3)).astype("float32")
    y = np.eye(1000, dtype="float32")[rng.integers(0, 1000, 2 * batch)]
    model.train_on_batch(x[:batch], y[:batch])
    model.fit(x, y, batch_size=batch, verbose=0)  # traces fit's function
    for index in range(args.rounds):
        start = time.perf_counter()
        for i in range(2):
            model.train_on_batch(x[i * batch:(i + 1) * batch],
                                 y[i * batch:(i + 1) * batch])
        on_batch = time.perf_counter() - start
        time.sleep(args.idle)
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_majflt
        stamps = Stamps(keras)
        model.fit(x, y, batch_size=batch, verbose=0,
                  callbacks=[stamps.callback])
        total = stamps.elapsed()
        stamps.done.set()
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_majflt - faults
        marks = " ".join(f"{name} {t:.2f}" for name, t in stamps.marks)
        print(f"round {index}: train_on_batch x2 {on_batch:.2f} s, fit "
              f"{total:.2f} s ({marks}, on_train_end {stamps.end:.2f}, "
              f"returned {total - stamps.end:.2f} s later), {faults} major page "
              "faults", flush=True)
        if total - stamps.end > 0.3:
            for stack, count in stamps.samples.most_common(3):
                print(f"    {count:4d} samples: {stack}")


if __name__ == "__main__":
    main()

"""Where a whole call that stalls waits: benchmarks/throughput.py's harness,
the same flags, with a thread that samples the main thread's Python stack
every 20 ms during each timed call, and the time Python's garbage collector
ran in it. After the run, for every call that took
more than 1.3 times the fastest call of the same measurement, the stacks
sampled in it, most frequent first, and the same for the fastest call.

    python benchmarks/stall_stacks.py --model GMixer12 --batch_size 16 \
        --steps 2 --rounds 3 --mode train --paths fit_numpy,train_on_batch

A stall inside TensorFlow's C++ shows as the Python line that called into
it. The sampler costs the harness one Python thread waking every 20 ms.

With --no_autotune first among the flags, every tf.data pipeline that
Keras's NumPy adapter builds runs with `options.autotune.enabled = False`
(a probe of whether tf.data's autotuning is behind the stall).
"""

import collections
import gc
import os
import runpy
import sys
import threading
import time
import traceback

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                ".."))

INTERVAL = 0.02
SLOW = 1.3


class Sampler:
    """Counts the main thread's stacks (innermost 6 frames, the innermost
    first) while `active`."""

    def __init__(self):
        self.main = threading.get_ident()
        self.active = threading.Event()
        self.samples = collections.Counter()
        self.gc_seconds = 0.0  # in Python's cyclic collector, this call
        self._gc_start = None
        gc.callbacks.append(self._gc)
        threading.Thread(target=self._run, daemon=True).start()

    def _gc(self, phase, info):
        if phase == "start":
            self._gc_start = time.perf_counter()
        elif self._gc_start is not None:
            self.gc_seconds += time.perf_counter() - self._gc_start

    def _run(self):
        while True:
            self.active.wait()
            frame = sys._current_frames().get(self.main)
            if frame is not None:
                stack = traceback.extract_stack(frame)[-6:]
                self.samples[" <- ".join(
                    f"{f.name} ({f.filename.rsplit('/', 1)[-1]}:{f.lineno})"
                    for f in reversed(stack))] += 1
            time.sleep(INTERVAL)


def main():
    from keras_mixer.benchmark import timing

    sampler = Sampler()
    calls = collections.defaultdict(list)  # name: [(seconds, samples)]
    untimed = timing.time_call

    def sampled(measurement):
        sampler.samples = collections.Counter()
        sampler.gc_seconds = 0.0
        sampler.active.set()
        try:
            seconds = untimed(measurement)
        finally:
            sampler.active.clear()
        calls[measurement.name].append((seconds, sampler.samples,
                                        sampler.gc_seconds))
        return seconds

    timing.time_call = sampled
    if sys.argv[1:2] == ["--no_autotune"]:
        del sys.argv[1]
        import tensorflow as tf
        from keras.src.trainers.data_adapters import array_data_adapter

        adapter = array_data_adapter.ArrayDataAdapter
        build = adapter.get_tf_dataset

        def without_autotune(self):
            options = tf.data.Options()
            options.autotune.enabled = False
            return build(self).with_options(options)

        adapter.get_tf_dataset = without_autotune
    sys.argv[0] = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                               "throughput.py")
    runpy.run_path(sys.argv[0], run_name="__main__")
    print("\n## Stacks of the calls that stalled")
    for name, timed in calls.items():
        fastest = min(t[0] for t in timed)
        for index, (seconds, samples, in_gc) in enumerate(timed):
            if seconds <= SLOW * fastest and seconds != fastest:
                continue
            label = "fastest" if seconds == fastest else "STALLED"
            print(f"\n{name}, timed call {index}: {seconds:.2f} s ({label}; "
                  f"fastest {fastest:.2f} s), {sum(samples.values())} samples, "
                  f"{in_gc:.2f} s in Python's garbage collector")
            for stack, count in samples.most_common(4):
                print(f"  {count:4d} x {count * INTERVAL:5.2f} s  {stack}")


if __name__ == "__main__":
    main()

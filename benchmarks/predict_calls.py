"""Where the time of `model.predict` goes, MixerB16 at 224, batch 32.

Part 1, is there a fixed cost per call? One batch through a tf.function,
`predict_on_batch`, and `predict` over a tf.data.Dataset of 1, 2 and 4
batches; each the best of 2 calls after a warm-up call.

Part 2, stalls: six `predict` calls over 2 (first call) then 5 batches;
the time from `on_predict_begin` to the first batch's end, then from each
batch end to the next, plus the time before `on_predict_begin`, from the
last batch to `on_predict_end`, and from there until `predict` returns. Run
`vmstat 2` beside it to see whether the cores are busy in the gaps.

    python benchmarks/predict_calls.py bf16
    python benchmarks/predict_calls.py f32
"""
import sys
import time

import keras
import numpy as np
import tensorflow as tf

import keras_mixer
from keras_mixer.benchmark.timing import best_seconds

if sys.argv[1:] == ["bf16"]:
    keras.config.set_dtype_policy("mixed_bfloat16")
elif sys.argv[1:] != ["f32"]:
    sys.exit("usage: python benchmarks/predict_calls.py bf16|f32")
model = keras_mixer.MixerB16(input_shape=(224, 224, 3))
x = tf.constant(np.random.default_rng(0).random((32, 224, 224, 3),
                                                dtype=np.float32) * 255)


def best_of(f, name, n=2):
    best = best_seconds(f, repeats=n, warmup=1)
    print(f"{sys.argv[1]} {name:32s} {best:6.3f} s", flush=True)


call = tf.function(lambda x: model(x, training=False))
best_of(lambda: call(x).numpy(), "tf.function(model) 1 batch")
best_of(lambda: model.predict_on_batch(x), "predict_on_batch")
for n in (1, 2, 4):
    ds = tf.data.Dataset.from_tensors(x).repeat(n)
    best_of(lambda: model.predict(ds, verbose=0), f"predict(dataset) {n} batches")

images = np.random.default_rng(0).random((160, 224, 224, 3),
                                         dtype=np.float32) * 255


class Times(keras.callbacks.Callback):
    def on_predict_begin(self, logs=None):
        self.marks = [time.perf_counter()]

    def on_predict_batch_end(self, batch, logs=None):
        self.marks.append(time.perf_counter())

    def on_predict_end(self, logs=None):
        self.end = time.perf_counter()


times = Times()
for i in range(6):
    n = 2 if i == 0 else 5
    start = time.perf_counter()
    ds = tf.data.Dataset.from_tensor_slices(images[:n * 32]).batch(32)
    made = time.perf_counter()
    model.predict(ds, verbose=0, callbacks=[times])
    done = time.perf_counter()
    batches = [round(b - a, 2) for a, b in zip(times.marks, times.marks[1:])]
    print(f"{sys.argv[1]} call {i}: total {done - start:.2f} s, dataset "
          f"{made - start:.2f}, before on_predict_begin "
          f"{times.marks[0] - made:.2f}, batches {batches}, "
          f"on_predict_end {times.end - times.marks[-1]:.2f} after the last, "
          f"return {done - times.end:.2f} after on_predict_end", flush=True)

"""The tf.data iterator-deletion wait (benchmarks/tfdata_stall.py) inside
training: the demo's Mixer trained on the bundled digits with
keras_mixer's training pipeline, built without `repeat()` so that Keras
makes a new iterator every epoch and drops the previous one when the next
epoch takes its first batch. Prints each epoch's time and its slowest
batches; a first batch far slower than the median is the wait.

    python benchmarks/epoch_stall.py --autotune on
    python benchmarks/epoch_stall.py --autotune off

(`keras-mixer train` repeats the training set and passes steps_per_epoch,
so it keeps one training iterator for the run.)
"""
import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--autotune", choices=("on", "off"), default="on")
    parser.add_argument("--epochs", type=int, default=6)
    args = parser.parse_args()

    import keras
    import tensorflow as tf

    import tflite_digits

    dataset = tflite_digits.digits("train", True)
    if args.autotune == "off":
        options = tf.data.Options()
        options.autotune.enabled = False
        dataset = dataset.with_options(options)
    model = tflite_digits.family_models()["mixer"]()
    model.compile(keras.optimizers.AdamW(1e-3), "categorical_crossentropy")
    marks = []

    class Stamps(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            marks.append([time.perf_counter()])

        def on_train_batch_end(self, batch, logs=None):
            marks[-1].append(time.perf_counter())

    model.fit(dataset, epochs=args.epochs, verbose=0, callbacks=[Stamps()])
    for epoch, stamps in enumerate(marks):
        batches = np.diff(stamps)
        slowest = np.argsort(batches)[::-1][:3]
        print(f"autotune {args.autotune}, epoch {epoch}: "
              f"{stamps[-1] - stamps[0]:.2f} s, median batch "
              f"{np.median(batches):.3f} s, slowest "
              + ", ".join(f"#{i} {batches[i]:.2f} s" for i in slowest),
              flush=True)


if __name__ == "__main__":
    main()

"""TFLite export per quantization: file size, batch-1 latency (LiteRT's
XNNPACK CPU path), error against Keras, top-1 agreement.

    python benchmarks/tflite.py --model MixerS32 --image_size 224
    python benchmarks/tflite.py --model MixerB16 --image_size 224 --threads 2

Weights: random (seeded) unless --weights names pretrained ones or a file;
with random weights the int8 agreement says little about accuracy on real
images. The calibration and check images are uniform noise unless
--dataset gives real ones (e.g. digits, folder:PATH, a tfds name).
"""

import argparse
import json
import os
import tempfile

import numpy as np


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="MixerS32")
    parser.add_argument("--weights", default=None)
    parser.add_argument("--image_size", type=int, default=224)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--dataset", default=None)
    parser.add_argument("--quantization", default="none,float16,dynamic_int8,int8")
    args = parser.parse_args()

    import keras

    import keras_mixer
    from keras_mixer import export

    size = args.image_size
    model = keras_mixer.MODELS[args.model](weights=args.weights,
                                           input_shape=(size, size, 3))
    if args.weights is None:
        rng = np.random.default_rng(0)
        for v in model.weights:
            v.assign(rng.normal(0, 0.02, v.shape).astype("float32"))
    if args.dataset:
        from keras_mixer.training import data

        ds, _ = data.build_dataset(args.dataset, "validation", image_size=size,
                                   batch_size=16, training=False)
        images = np.concatenate([b[0] for b in ds.take(4)])
    else:
        images = np.random.default_rng(1).uniform(0, 255, (64, size, size, 3))
    images = images.astype("float32")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for quantization in args.quantization.split(","):
            report = export.to_tflite(
                model, os.path.join(tmp, f"{quantization}.tflite"),
                quantization, representative_data=images,
                check_data=images[:16], measure_latency=False,
            )
            report["latency_ms_batch1"] = export.tflite_latency_ms(
                report["path"], runs=args.runs, num_threads=args.threads)
            rows.append(report)
    baseline = rows[0]["latency_ms_batch1"]
    print(f"{args.model} at {size}x{size}, {model.count_params():,} parameters, "
          f"keras {keras.__version__}, threads {args.threads or 'default'}")
    print(f"{'quantization':<14}{'MB':>8}{'ms (batch 1)':>14}{'speed-up':>10}"
          f"{'max rel err':>13}{'top-1 agree':>13}")
    for r in rows:
        print(f"{r['quantization']:<14}{r['size_bytes'] / 1e6:>8.1f}"
              f"{r['latency_ms_batch1']:>14.2f}"
              f"{baseline / r['latency_ms_batch1']:>9.2f}x"
              f"{r['max_relative_error']:>13.2e}{r['top1_agreement']:>13.3f}")
    print(json.dumps([{k: v for k, v in r.items() if k != "ops"} for r in rows]))


if __name__ == "__main__":
    main()

"""Full-integer int8 TFLite on models trained on real images: each family, at
the demo's size, trained on the bundled digits, then exported to float32 and
int8 TFLite; top-1 agreement with float32 over the 360 validation digits.

    keras-mixer demo --output_dir /tmp/demo
    python benchmarks/tflite_digits.py --demo /tmp/demo/final.keras

The Mixer is the demo's trained model when --demo names its final.keras
(else one trained here the same way); the other families are built at the
demo's scale (32x32 images, 4x4 patches or a 4-stride stem, width 128 or a
pyramid of that size) and trained here with AdamW for --epochs. int8 is
calibrated on --calibration training digits (the evaluation crop, no
augmentation). The speed of the families at 224 is benchmarks/tflite.py's.

For each digit on which int8 and float32 disagree, the row gives the rank of
its float32 margin (top logit minus the second) among the validation digits,
1 the smallest: disagreements at the lowest ranks sit on the decision
boundary. --layer_errors also prints, per family, the quantization error of
every int8 op over the first 64 validation digits (TensorFlow's
QuantizationDebugger): root-mean-square error in units of the op's own
quantization step, which plain rounding puts at 1/sqrt(12) = 0.29.
"""

import argparse
import json
import os
import tempfile
import time

import numpy as np

SIZE = 32


def family_models():
    """{name: constructor} of demo-sized classifiers, one per family."""
    import keras_mixer
    from keras_mixer.training import train as train_lib

    common = dict(input_shape=(SIZE, SIZE, 3), classes=10)
    return {
        "mixer": lambda: keras_mixer.MLPMixer(**train_lib.DEMO_MODEL, **common),
        "resmlp": lambda: keras_mixer.ResMLP(4, 128, 4, **common),
        "gmlp": lambda: keras_mixer.GMLP(4, 128, 4, mlp_ratio=4, **common),
        "convmixer": lambda: keras_mixer.ConvMixer(128, 4, kernel_size=5,
                                                   patch_size=4, **common),
        "cyclemlp": lambda: keras_mixer.CycleMLP(
            (1, 1, 2, 1), (32, 64, 128, 128), (4, 4, 4, 4), **common),
        "vip": lambda: keras_mixer.VisionPermutator(
            4, (2, 2), (128, 128), (False, False), (8, 8),
            mlp_ratios=(3, 3), **common),
    }


def digits(split, training, batch_size=64):
    from keras_mixer.training import data

    ds, _ = data.build_dataset("digits", split, image_size=SIZE,
                               batch_size=batch_size, training=training,
                               crop_area=(0.7, 1.0), eval_crop="resize_crop")
    return ds


def arrays(ds):
    images, labels = zip(*((x.numpy(), y.numpy()) for x, y in ds))
    return np.concatenate(images), np.concatenate(labels).argmax(-1)


def train(model, epochs):
    import keras

    batches = digits("train", True)
    steps = epochs * int(batches.cardinality())
    schedule = keras.optimizers.schedules.CosineDecay(
        0.0, steps, warmup_target=3e-3, warmup_steps=30)
    model.compile(keras.optimizers.AdamW(schedule, weight_decay=0.05),
                  keras.losses.CategoricalCrossentropy(label_smoothing=0.1),
                  metrics=["accuracy"])
    model.fit(batches, epochs=epochs, verbose=0)
    return model


def layer_errors(model, calibration, images):
    """{op: [min, median, max]} over the int8 ops of `model`'s file, of
    each op's output RMSE against float over `images` in units of its
    quantization scale (QuantizationDebugger); prints every op."""
    import csv
    import io

    import tensorflow as tf

    from keras_mixer.export import tflite

    with tempfile.TemporaryDirectory() as tmp:
        converter = tflite.converter_for(model, tmp, "int8", calibration)
        debugger = tf.lite.experimental.QuantizationDebugger(
            converter=converter,
            debug_dataset=lambda: ([image[None]] for image in images))
        debugger.run()
        text = io.StringIO()
        debugger.layer_statistics_dump(text)
    text.seek(0)
    steps = {}
    for row in csv.DictReader(text):
        scale = float(row["scale"])
        if scale > 0 and row["op_name"] not in ("RESHAPE", "TRANSPOSE"):
            error = float(row["mean_squared_error"]) ** 0.5 / scale
            steps.setdefault(row["op_name"], []).append(error)
            print(f"    {row['op_name']:<18}{error:6.3f}  "
                  f"{row['tensor_name'][-70:]}")
    return {op: [round(min(v), 3), round(float(np.median(v)), 3),
                 round(max(v), 3)] for op, v in steps.items()}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--demo", default=None,
                        help="final.keras of `keras-mixer demo` (the Mixer)")
    parser.add_argument("--families", default=",".join(
        ["mixer", "resmlp", "gmlp", "convmixer", "cyclemlp", "vip"]))
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--calibration", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--layer_errors", action="store_true")
    args = parser.parse_args()

    import keras

    from keras_mixer import export

    calibration, _ = arrays(digits("train", False))
    calibration = calibration[:args.calibration]
    images, labels = arrays(digits("validation", False))
    builders = family_models()
    rows = []
    for family in args.families.split(","):
        keras.utils.set_random_seed(args.seed)
        start = time.perf_counter()
        if family == "mixer" and args.demo:
            model, source = keras.saving.load_model(args.demo), args.demo
        else:
            model = train(builders[family](), args.epochs)
            source = f"trained here, {args.epochs} epochs"
        train_s = time.perf_counter() - start
        head = keras.Model(model.input, model.get_layer("head").output)
        logits = np.sort(head.predict(images, verbose=0), axis=-1)
        margin = logits[:, -1] - logits[:, -2]
        rank = np.argsort(np.argsort(margin)) + 1
        keras_top1 = model.predict(images, verbose=0).argmax(-1)
        with tempfile.TemporaryDirectory() as tmp:
            reports = {q: export.to_tflite(
                model, os.path.join(tmp, f"{q}.tflite"), q,
                representative_data=calibration, check_data=images)
                for q in ("none", "int8")}
            int8_top1 = export.run_tflite(reports["int8"]["path"],
                                          images).argmax(-1)
        row = {
            "family": family, "parameters": model.count_params(),
            "source": source, "seconds": round(train_s, 1),
            "float_accuracy": float(np.mean(keras_top1 == labels)),
            "int8_accuracy": float(np.mean(int8_top1 == labels)),
            "int8_agreement": reports["int8"]["top1_agreement"],
            "disagreements": int(np.sum(int8_top1 != keras_top1)),
            "int8_ops_outside_xnnpack": reports["int8"]["ops_outside_xnnpack"],
            "margin_ranks_of_disagreements": sorted(
                int(r) for r in rank[int8_top1 != keras_top1]),
            "median_margin": float(np.median(margin)),
        }
        if args.layer_errors:
            row["int8_error_in_steps"] = layer_errors(model, calibration,
                                                      images[:64])
        rows.append(row)
        print(json.dumps(row), flush=True)
    print(f"\n{len(images)} validation digits at {SIZE}x{SIZE}, int8 "
          f"calibrated on {len(calibration)} training digits")
    print(f"{'family':<11}{'params':>9}{'float acc':>11}{'int8 acc':>10}"
          f"{'agreement':>11}{'differ':>8}  margin ranks of those")
    for r in rows:
        print(f"{r['family']:<11}{r['parameters']:>9,}{r['float_accuracy']:>11.4f}"
              f"{r['int8_accuracy']:>10.4f}{r['int8_agreement']:>11.4f}"
              f"{r['disagreements']:>8}  "
              f"{r['margin_ranks_of_disagreements']}")


if __name__ == "__main__":
    main()

"""TFLite export per quantization: file size, batch-1 latency (LiteRT's
XNNPACK CPU path), the ops XNNPACK leaves out, error against Keras.

    python benchmarks/tflite.py --model MixerS32 --image_size 224
    python benchmarks/tflite.py --model MixerB16 --threads 2 --rounds 5

The files are timed interleaved: each round times every file once (the median
of --runs invocations after 3 untimed ones), and each speed-up is the median
over rounds of float32's time over the file's time in the same round, with
its range. Weights are random (seeded) unless --weights names pretrained ones
or a .keras file, and the calibration and check images are uniform noise
unless --dataset gives real ones (e.g. digits): with random weights the
agreement says little about accuracy (benchmarks/tflite_digits.py trains
models on the bundled digits for that).

--ablate takes parts of the graph out (the numbers change; the rest of the
work stays), to see which part keeps int8 from gaining:

    python benchmarks/tflite.py --model CycleMLPB1 --ablate cycle_shift
    python benchmarks/tflite.py --model ConvMixer768_32 --ablate depthwise

"cycle_shift": each Cycle FC without its shift (a plain 1x1 FC);
"split_softmax": CycleMLP's and ViP's branch weights without the softmax
(the logits); "depthwise": ConvMixer's blocks without the depthwise conv.
"""

import argparse
import contextlib
import json
import os
import tempfile

import numpy as np


def interleaved_latency(paths, rounds, runs, threads):
    """{path: [median ms of each round]}, the files timed in turn
    (`keras_mixer.benchmark.timing.interleave`)."""
    from keras_mixer.benchmark import timing
    from keras_mixer.export import tflite

    def measurement(path):
        return timing.Measurement(path, lambda: tflite.tflite_latency_ms(
            path, runs=runs, num_threads=threads) / 1000.0, self_timed=True)

    seconds = timing.interleave([measurement(p) for p in paths], rounds,
                                warmup=0)
    return {path: [1000.0 * s for s in times] for path, times in seconds.items()}


ABLATIONS = ("cycle_shift", "split_softmax", "depthwise")


@contextlib.contextmanager
def ablated(model, parts):
    """Within the block, the layers of `model` named by `parts` (see
    ABLATIONS) run without that part; restored afterwards."""
    from keras import ops

    from keras_mixer.models import _pyramid, convmixer, cyclemlp

    def without_softmax(layer):
        def call(inputs):
            h = ops.gelu(layer.fc1.on_rows(inputs),
                         approximate=layer.approximate_gelu)
            return ops.reshape(layer.fc2.on_rows(h),
                               (-1, inputs.shape[-1], layer.branches))
        return call

    def without_depthwise(layer):
        def call(inputs, training=None):
            y = convmixer.activate(inputs, layer.activation,
                                   layer.approximate_gelu)
            x = inputs + layer.norm1(y, training=training)
            y = convmixer.activate(layer.pointwise(x), layer.activation,
                                   layer.approximate_gelu)
            return layer.norm2(y, training=training)
        return call

    from keras_mixer.export import tflite

    def call_without(layer):
        if ("split_softmax" in parts
                and isinstance(layer, _pyramid.SplitAttention)):
            return without_softmax(layer)
        if "depthwise" in parts and isinstance(layer, convmixer.ConvMixerBlock):
            return without_depthwise(layer)
        return None

    def shift_without(layer):
        if "cycle_shift" in parts and isinstance(layer, cyclemlp.CycleFC):
            return lambda x: x
        return None

    # The export's own rewrites leave a layer alone whose attribute is
    # already replaced, so the ablation holds through the conversion.
    with (tflite._patched(model, "call", call_without) as calls,
          tflite._patched(model, "shift", shift_without) as shifts):
        if parts and not calls + shifts:
            raise SystemExit(f"--ablate {','.join(parts)}: no such part in "
                             f"{model.name}")
        yield


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="MixerS32")
    parser.add_argument("--weights", default=None)
    parser.add_argument("--image_size", type=int, default=224)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--dataset", default=None)
    parser.add_argument("--quantization", default="none,dynamic_int8,int8")
    parser.add_argument("--ablate", default="",
                        help=f"comma-separated parts of {ABLATIONS} to leave "
                        "out of the graph")
    args = parser.parse_args()
    parts = [p for p in args.ablate.split(",") if p]
    if set(parts) - set(ABLATIONS):
        parser.error(f"--ablate: unknown part(s); use some of {ABLATIONS}")
    quantizations = args.quantization.split(",")
    if quantizations[0] != "none":
        parser.error("--quantization must start with none (the baseline)")

    import keras

    import keras_mixer
    from keras_mixer import export

    size = args.image_size
    if args.weights and args.weights.endswith(".keras"):
        model = keras.saving.load_model(args.weights)
        size = model.input_shape[1]
    else:
        model = keras_mixer.MODELS[args.model](weights=args.weights,
                                               input_shape=(size, size, 3))
    if args.weights is None:
        from keras_mixer.benchmark import keras_paths

        keras_paths.random_weights(model, np.random.default_rng(0))
    if args.dataset:
        from keras_mixer.training import data

        ds, _ = data.build_dataset(args.dataset, "validation", image_size=size,
                                   batch_size=16, training=False)
        images = np.concatenate([b[0] for b in ds.take(4)])
    else:
        images = np.random.default_rng(1).uniform(0, 255, (64, size, size, 3))
    images = images.astype("float32")
    rows = []
    with tempfile.TemporaryDirectory() as tmp, ablated(model, parts):
        for quantization in quantizations:
            rows.append(export.to_tflite(
                model, os.path.join(tmp, f"{quantization}.tflite"),
                quantization, representative_data=images,
                check_data=images[:16], measure_latency=False,
            ))
        times = interleaved_latency([r["path"] for r in rows], args.rounds,
                                    args.runs, args.threads)
    base = np.array(times[rows[0]["path"]])
    print(f"{args.model} at {size}x{size}, {model.count_params():,} parameters, "
          f"keras {keras.__version__}, threads {args.threads or 'default'}, "
          f"{args.rounds} interleaved rounds of {args.runs} runs, ablated "
          f"{args.ablate or 'nothing'}, load "
          f"{os.getloadavg()[0]:.2f}")
    print(f"{'quantization':<14}{'MB':>7}{'ms (batch 1)':>14}{'speed-up':>10}"
          f"{'(range)':>14}{'max rel err':>13}{'top-1 agree':>13}"
          "  outside XNNPACK (partitions)")
    for r in rows:
        ms = np.array(times[r["path"]])
        ratio = base / ms
        r["latency_ms_batch1"] = float(np.median(ms))
        r["speedup_median"] = float(np.median(ratio))
        r["speedup_range"] = [float(ratio.min()), float(ratio.max())]
        outside = ", ".join(f"{k} {v}" for k, v in r["ops_outside_xnnpack"].items())
        print(f"{r['quantization']:<14}{r['size_bytes'] / 1e6:>7.1f}"
              f"{r['latency_ms_batch1']:>14.2f}{r['speedup_median']:>9.2f}x"
              f"{'  %.2f-%.2f' % tuple(r['speedup_range']):>14}"
              f"{r['max_relative_error']:>13.2e}{r['top1_agreement']:>13.3f}"
              f"  {outside or '-'} ({r['xnnpack_partitions']})")
    print(json.dumps([{k: v for k, v in r.items() if k not in ("ops", "path")}
                      for r in rows]))


if __name__ == "__main__":
    main()

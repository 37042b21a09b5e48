"""Images/s, GFLOP/s and the fraction of the matmul rate of a keras_mixer
model through `model.predict` / `model.fit`, side by side with timm's model
(eager PyTorch) when torch and timm import.

    python benchmarks/throughput.py --model MixerB16 --batch_size 32 \
        --precision float32,bfloat16 --mode infer,train
    python benchmarks/throughput.py --model MixerB16 --precision float32 \
        --mode infer --jit_compile false --notimm
    python benchmarks/throughput.py --model MixerB16 --mode infer --tflite

Prints a Markdown section for BENCHMARKS.md (the command, the machine, the
matmul rates of the same process, one row per measurement), then the rows
and the machine as one JSON line. Weights are random: throughput does not
depend on them. bfloat16 is Keras's "mixed_bfloat16" policy and timm under
`torch.autocast(dtype=torch.bfloat16)`. --tflite adds batch-1 TFLite rows
(float32 and dynamic_int8); benchmarks/tflite.py reports their sizes and
accuracy. Without torchvision, timm is imported through
keras_mixer.benchmark.import_timm's inert torchvision stand-in, and the
report says so.
"""

import argparse
import json
import shlex
import sys


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="MixerB16")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--image_size", type=int, default=224)
    parser.add_argument("--precision", default="float32,bfloat16",
                        help="comma-separated: float32, bfloat16")
    parser.add_argument("--mode", default="infer,train",
                        help="comma-separated: infer, train")
    parser.add_argument("--steps", type=int, default=10, help="timed batches")
    parser.add_argument("--warmup", type=int, default=2, help="untimed batches")
    parser.add_argument("--notimm", dest="timm", action="store_false",
                        help="skip the timm rows")
    parser.add_argument("--no_torchvision_stub", dest="stub_torchvision",
                        action="store_false",
                        help="without torchvision, skip timm rather than "
                        "import it through the inert torchvision stand-in")
    parser.add_argument("--jit_compile", choices=("auto", "true", "false"),
                        default="auto", help="auto: Keras's default")
    parser.add_argument("--tflite", action="store_true",
                        help="add batch-1 TFLite rows (float32, dynamic_int8)")
    parser.add_argument("--threads", type=int, default=None,
                        help="TFLite interpreter threads (default: LiteRT's)")
    parser.add_argument("--matmul_repeats", type=int, default=5)
    parser.add_argument("--inputs", choices=("dataset", "numpy"),
                        default="dataset",
                        help="feed Keras a tf.data.Dataset or NumPy arrays")
    args = parser.parse_args()

    from keras_mixer import benchmark

    jit_compile = {"auto": None, "true": True, "false": False}[args.jit_compile]
    command = shlex.join(["python", "benchmarks/throughput.py"] + sys.argv[1:])
    try:  # bad arguments: a usage error before any measurement
        benchmark.check_arguments(args.model, args.batch_size, args.image_size,
                                  args.precision, args.mode, args.steps,
                                  args.warmup)
    except ValueError as error:
        parser.error(str(error))
    rows, machine = benchmark.run(
        args.model, batch_size=args.batch_size, image_size=args.image_size,
        precisions=args.precision, modes=args.mode, steps=args.steps,
        warmup=args.warmup, timm=args.timm, jit_compile=jit_compile,
        tflite=args.tflite, tflite_threads=args.threads,
        matmul_repeats=args.matmul_repeats,
        stub_torchvision=args.stub_torchvision, command=command,
        inputs=args.inputs)
    print(benchmark.format_markdown(rows, machine))
    print(json.dumps(dict(rows=rows, machine=machine)))


if __name__ == "__main__":
    main()

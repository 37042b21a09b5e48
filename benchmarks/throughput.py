"""`keras-mixer benchmark` with timm beside it where timm cannot import
without torchvision: installs benchmarks/torchvision_standin.py's inert
stand-in for torchvision first, then runs the command's harness
(`keras_mixer.benchmark`), with the same flags.

    python benchmarks/throughput.py --model MixerB16 --batch_size 32 \
        --precision float32,bfloat16 --mode infer,train
    python benchmarks/throughput.py --model MixerB16 \
        --paths predict_numpy,predict_on_batch --notimm

Prints the Markdown section for BENCHMARKS.md (the command, the machine and
its load, the matmul rates of the same rounds, one row per call; it says
when timm was imported through the stand-in), then the rows and the machine
as one JSON line.
"""

import json
import os
import shlex
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torchvision_standin  # noqa: E402


def main():
    try:
        _, stubbed = torchvision_standin.import_timm()
    except ImportError as error:
        stubbed = False
        print(f"timm does not import ({error}): no timm rows.", file=sys.stderr)
    from absl import app

    from keras_mixer import benchmark
    from keras_mixer import cli

    try:  # the command's flags and checks, before any measurement
        _, flags, _ = cli.parse(["keras-mixer", "benchmark"] + sys.argv[1:])
        benchmark.check_arguments(
            flags["model"], flags["batch_size"], flags["image_size"],
            flags["precision"], flags["mode"], flags["steps"], flags["rounds"],
            flags["warmup"], flags["paths"])
    except (app.UsageError, ValueError) as error:
        sys.exit(f"benchmarks/throughput.py: error: {error}")
    tflite = [q for q in (flags["tflite"] or "").split(",") if q]
    tflite = ["none"] + [q for q in tflite if q != "none"] if tflite else False
    rows, machine = benchmark.run(
        flags["model"], batch_size=flags["batch_size"],
        image_size=flags["image_size"], precisions=flags["precision"],
        modes=flags["mode"], steps=flags["steps"], rounds=flags["rounds"],
        warmup=flags["warmup"], paths=flags["paths"], timm=flags["timm"],
        jit_compile={"auto": None, "true": True,
                     "false": False}[flags["jit_compile"]], tflite=tflite,
        command=shlex.join(["python", "benchmarks/throughput.py"]
                           + sys.argv[1:]),
        on_round=lambda i, _: print(f"round {i + 1} done", file=sys.stderr,
                                    flush=True))
    if stubbed and "reference" in machine:
        machine["reference"] += (
            "; imported through benchmarks/torchvision_standin.py's inert "
            "torchvision stand-in (torchvision does not install beside this "
            "torch): the model code that ran is timm's own")
    print(benchmark.format_markdown(rows, machine))
    print(json.dumps(dict(rows=rows, machine=machine), default=str))


if __name__ == "__main__":
    main()

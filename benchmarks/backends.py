"""Keras on TensorFlow, JAX and PyTorch, interleaved across processes: the
same model through the same calls on each backend, with each backend's
compiler where Keras has one (XLA on JAX, Keras's default there;
`jit_compile=True`, i.e. torch.compile, on PyTorch beside its eager
default). TensorFlow's rows are the reference of the ratios.

    python benchmarks/backends.py --model MixerB16 --mode infer,train
    python benchmarks/backends.py --model demo --batch_size 64 --steps 8

`--model demo` is the demo's Mixer (keras_mixer.training.train.DEMO_MODEL,
10 classes) at 32 px, as `keras-mixer demo` trains it.
"""

import argparse
import shlex
import sys

import processes

PATHS = {"infer": ["predict_numpy", "predict_on_batch"],
         "train": ["fit_numpy", "train_on_batch"]}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="MixerB16")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--image_size", type=int, default=None,
                        help="default 224, 32 for the demo")
    parser.add_argument("--precision", default="float32")
    parser.add_argument("--mode", default="infer,train")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--backends", default="tensorflow,jax,torch,torch_compile")
    args = parser.parse_args()
    image_size = args.image_size or (32 if args.model == "demo" else 224)
    spec = dict(kind="keras", model=args.model, image_size=image_size,
                batch_size=args.batch_size, steps=args.steps,
                precisions=args.precision.split(","),
                paths=[p for m in args.mode.split(",") for p in PATHS[m]])
    if args.model == "demo":
        from keras_mixer.training.train import DEMO_MODEL

        spec["model_kwargs"] = dict(DEMO_MODEL, classes=10,
                                    input_shape=(image_size, image_size, 3))
    # tag -> (label, jit_compile); the report adds "(XLA)" or
    # "(torch.compile)" where the compiler is on.
    labels = {"tensorflow": ("Keras TensorFlow", None),
              "jax": ("Keras JAX", None),
              "torch": ("Keras PyTorch", False),
              "torch_compile": ("Keras PyTorch", True)}
    workers = []
    for name in args.backends.split(","):
        label, jit = labels[name]
        backend = "torch" if name.startswith("torch") else name
        workers.append((dict(spec, tag=name, label=label, jit_compile=jit,
                             reference=name == "tensorflow"),
                        None, {"KERAS_BACKEND": backend}))
    rows, machine = processes.run(
        workers, args.rounds, args.model, args.batch_size, image_size,
        shlex.join(["python", "benchmarks/backends.py"] + sys.argv[1:]))
    machine["reference"] = "Keras on TensorFlow (the rows marked reference)"
    from keras_mixer import benchmark

    print(benchmark.format_markdown(rows, machine))


if __name__ == "__main__":
    main()

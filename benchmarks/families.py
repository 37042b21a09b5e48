"""A keras_mixer model against the authors' PyTorch code of the same
architecture (CycleMLP, Vision Permutator: no timm model exists), in
interleaved processes (processes.py): the Keras worker on this Python, the
reference worker on another Python whose environment has the authors' code
and what it imports (torch, torchvision for CycleMLP's deform_conv2d, timm).

    python benchmarks/families.py --model CycleMLPB1 \\
        --official /path/to/CycleMLP/cycle_mlp.py:CycleMLP_B1 \\
        --python /path/to/venv-with-torchvision/bin/python

The reference's FLOPs per image are keras_mixer's count for the same
architecture (the reference worker has no Keras). The authors' files are used
unmodified (worker.py aliases `timm.models.layers.helpers`, which newer timm
moved).
"""

import argparse
import shlex
import sys

import processes

PATHS = {"infer": ["predict_numpy", "predict_on_batch"],
         "train": ["fit_numpy", "train_on_batch"]}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="e.g. CycleMLPB1")
    parser.add_argument("--official", required=True,
                        help="PATH:FUNCTION building the authors' model")
    parser.add_argument("--python", default=sys.executable,
                        help="the Python of the reference's environment")
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--image_size", type=int, default=224)
    parser.add_argument("--mode", default="infer")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if args.official.count(":") != 1:
        sys.exit("--official must be PATH:FUNCTION, e.g. cycle_mlp.py:CycleMLP_B1")
    modes = args.mode.split(",")
    common = dict(model=args.model, image_size=args.image_size,
                  batch_size=args.batch_size, steps=args.steps,
                  precisions=["float32"])
    workers = [
        (dict(common, kind="keras", tag="keras", label="keras_mixer",
              paths=[p for m in modes for p in PATHS[m]]),
         None, {"KERAS_BACKEND": "tensorflow"}),
        (dict(common, kind="torch", tag="official", label="official PyTorch",
              builder="file:" + args.official, modes=modes, reference=True),
         args.python, {}),
    ]
    rows, machine = processes.run(
        workers, args.rounds, args.model, args.batch_size, args.image_size,
        shlex.join(["python", "benchmarks/families.py"] + sys.argv[1:]))
    machine["reference"] = (f"the authors' code, `{args.official}`, eager "
                            f"(the rows marked reference)")
    from keras_mixer import benchmark

    print(benchmark.format_markdown(rows, machine))


if __name__ == "__main__":
    main()

"""Start-up time of `import keras_mixer` (per backend) and `keras-mixer --help`:
each command run --repeats times in a fresh interpreter, interleaved, with
the median and the fastest wall time printed (a hyperfine-style table).

    python benchmarks/startup.py --repeats 10
    python benchmarks/startup.py --repeats 10 --source /tmp/keras_mixer_main

--source puts another checkout of keras_mixer first on PYTHONPATH (e.g. a
`git archive` of an older commit), to compare before and after on the same
machine in the same minutes.
"""

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time


def commands():
    script = shutil.which("keras-mixer")
    found = [
        ("import keras_mixer (tensorflow)", "tensorflow",
         [sys.executable, "-c", "import keras_mixer"]),
        ("import keras_mixer (jax)", "jax",
         [sys.executable, "-c", "import keras_mixer"]),
        ("import keras_mixer (torch)", "torch",
         [sys.executable, "-c", "import keras_mixer"]),
        ("keras-mixer --help", "tensorflow",
         [script or sys.executable, *([] if script else ["-m", "keras_mixer"]),
          "--help"]),
    ]
    return found


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--source", default=None,
                        help="a keras_mixer checkout to put first on PYTHONPATH")
    args = parser.parse_args()
    env = dict(os.environ)
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)  # measure what a user gets
    if args.source:
        env["PYTHONPATH"] = os.path.abspath(args.source)
    table = commands()
    times = {name: [] for name, _, _ in table}
    for _ in range(args.repeats):
        for name, backend, argv in table:
            start = time.perf_counter()
            subprocess.run(argv, env={**env, "KERAS_BACKEND": backend},
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                           check=False)
            times[name].append(time.perf_counter() - start)
    print(f"| command | median s | fastest s | runs |")
    print("|---|---|---|---|")
    for name, _, _ in table:
        values = times[name]
        print(f"| `{name}` | {statistics.median(values):.2f} | "
              f"{min(values):.2f} | {len(values)} |")


if __name__ == "__main__":
    main()

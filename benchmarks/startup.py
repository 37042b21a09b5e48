"""Start-up time of `import keras_mixer` (per backend) and `keras-mixer --help`:
each command run --repeats times in a fresh interpreter, all of them
interleaved, with the median and the fastest wall time printed (a
hyperfine-style table).

    python benchmarks/startup.py --repeats 10
    python benchmarks/startup.py --repeats 10 \\
        --source before=/tmp/km_before --source after=/tmp/km_after

Each --source NAME=PATH puts a keras_mixer checkout first on PYTHONPATH (e.g.
a `git archive` of a commit), so two versions are compared in the same
minutes on the same machine; without it, the keras_mixer Python finds.
TF_CPP_MIN_LOG_LEVEL is unset, as a user leaves it, and so is
PYTHONDONTWRITEBYTECODE: an untimed first round writes the .pyc files that an
installed package has.
"""

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time


def commands():
    """(name, KERAS_BACKEND, argv) of each measured command."""
    script = shutil.which("keras-mixer")
    cli = [script] if script else [sys.executable, "-m", "keras_mixer"]
    importing = [sys.executable, "-c", "import keras_mixer"]
    return [
        ("import keras_mixer (tensorflow)", "tensorflow", importing),
        ("import keras_mixer (jax)", "jax", importing),
        ("import keras_mixer (torch)", "torch", importing),
        ("keras-mixer --help", "tensorflow", cli + ["--help"]),
        ("keras-mixer --help (jax)", "jax", cli + ["--help"]),
    ]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--source", action="append", default=[],
                        help="NAME=PATH of a keras_mixer checkout")
    args = parser.parse_args()
    env = dict(os.environ)
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    sources = [s.split("=", 1) for s in args.source] or [["", None]]
    table = [(f"{name} [{label}]" if label else name, backend, argv, path)
             for label, path in sources
             for name, backend, argv in commands()]
    times = {row[0]: [] for row in table}
    for round_ in range(args.repeats + 1):  # round 0: untimed warm-up
        for name, backend, argv, path in table:
            run_env = {**env, "KERAS_BACKEND": backend}
            if path:
                run_env["PYTHONPATH"] = os.path.abspath(path)
            start = time.perf_counter()
            subprocess.run(argv, env=run_env, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, check=False)
            if round_:
                times[name].append(time.perf_counter() - start)
    print("| command | median s | fastest s | runs |")
    print("|---|---|---|---|")
    for name, values in times.items():
        print(f"| `{name}` | {statistics.median(values):.2f} | "
              f"{min(values):.2f} | {len(values)} |")


if __name__ == "__main__":
    main()

"""Throughput of keras_mixer models through the calls users write, with timm's
model of the same architecture interleaved beside them.

`run` times, for each precision, the paths of `keras_paths.PATHS`
(`model.predict` and `model.fit` on NumPy arrays over several batches,
`model(x)`, `predict_on_batch`, `train_on_batch`, then `predict` / `fit` on a
`tf.data.Dataset`), timm's eager inference and training step when timm
imports as it is, and the matmul rate of each library, all in interleaved
rounds (A B C A B C ...) in one process. Every figure is the median over the
rounds with the slowest and fastest round; ratios are taken round by round,
so that the machine's drift cancels. The 1-minute load average at the start
and the CPU time other processes used during the run are reported, with a
warning when the machine was busy.

    keras-mixer benchmark --model MixerB16 --precision float32,bfloat16 \\
        --mode infer,train

>>> rows, machine = keras_mixer.benchmark.run(
...     "MixerS32", batch_size=2, image_size=64, steps=1, rounds=1,
...     timm=False, matmul_shape=(64, 64, 64))  # doctest: +SKIP
>>> print(keras_mixer.benchmark.format_markdown(rows, machine))  # doctest: +SKIP

The modules: `timing` (the arithmetic, standard library only), `keras_paths`
(the Keras calls and matmul timers), `torch_models` (timm's model and eager
PyTorch steps, loadable without Keras), `report` (rows and Markdown).
`benchmarks/throughput.py` runs the same with a stand-in for torchvision where
timm cannot import without it.
"""

import importlib.metadata
import os
import platform
import sys

import keras

from keras_mixer import checks
from keras_mixer import models
from keras_mixer.benchmark import keras_paths
from keras_mixer.benchmark import report
from keras_mixer.benchmark import timing
from keras_mixer.benchmark import torch_models
from keras_mixer.benchmark.keras_paths import MATMUL_SHAPE
from keras_mixer.benchmark.keras_paths import PATHS
from keras_mixer.benchmark.report import format_markdown
from keras_mixer.benchmark.timing import MachineLoad
from keras_mixer.benchmark.timing import best_seconds
from keras_mixer.benchmark.torch_models import ADAMW
from keras_mixer.models import _tools

__all__ = ["run", "check_arguments", "format_markdown", "machine_description",
           "MachineLoad", "PATHS", "MATMUL_SHAPE", "PRECISIONS", "MODES",
           "matmul_rate", "best_seconds", "ADAMW"]

PRECISIONS = ("float32", "bfloat16")
MODES = ("infer", "train")


def split_list(values, name, allowed):
    """'a,b' or ['a', 'b'] -> ('a', 'b'), each checked against `allowed`."""
    if isinstance(values, str):
        values = values.split(",")
    values = tuple(v.strip() for v in values)
    if not values or values == ("",):
        raise ValueError(f"`{name}` is empty; use some of {', '.join(allowed)}.")
    for value in values:
        if value not in allowed:
            raise ValueError(
                f"Unknown {name} {value!r}; use one or more of "
                f"{', '.join(allowed)} (comma-separated)."
            )
    return values


def check_arguments(model_name, batch_size=32, image_size=224,
                    precisions=("float32",), modes=("infer",), steps=3,
                    rounds=3, warmup=1, paths=None):
    """Raises ValueError for a request that cannot run; returns the
    precisions, modes and paths (lists or comma-separated strings) as tuples.
    `paths` None: every path of the modes asked for.

    >>> keras_mixer.benchmark.check_arguments(
    ...     "MixerB16", 32, 224, "float32,bfloat16", "infer,train")[:2]
    (('float32', 'bfloat16'), ('infer', 'train'))
    >>> keras_mixer.benchmark.check_arguments("MixerB16", image_size=200)
    Traceback (most recent call last):
    ValueError: image_size 200 is not a multiple of MixerB16's patch size 16: use 192 or 208.
    """
    constructor = models.get(model_name)
    precisions = split_list(precisions, "precision", PRECISIONS)
    modes = split_list(modes, "mode", MODES)
    if paths is None:
        paths = tuple(p for p, (mode, _) in PATHS.items() if mode in modes)
    paths = split_list(paths, "path", tuple(PATHS))
    for path in paths:
        if PATHS[path][0] not in modes:
            raise ValueError(f"Path {path!r} is a {PATHS[path][0]} path; add "
                             f"{PATHS[path][0]} to the modes or drop it.")
    checks.check_int("batch_size", batch_size)
    checks.check_int("image_size", image_size)
    checks.check_int("steps", steps)
    checks.check_int("rounds", rounds)
    checks.check_int("warmup", warmup, minimum=0)
    # A constructor without `size_rule` checks the size in its builder.
    rule = getattr(constructor, "size_rule", None)
    if rule:
        rule.check("image_size", image_size, f"{model_name}'s")
    return precisions, modes, paths


def matmul_rate(precision="float32", shape=MATMUL_SHAPE, repeats=5,
                backend=None):
    """GFLOP/s of one (m, k) x (k, n) product of `precision` on `backend`
    (default: Keras's), the best of `repeats` calls of the backend's timers
    (`keras_paths.matmul_timers`): the yardstick of the benchmarks' "of
    matmul" figures, for scripts that time outside `run`."""
    split_list(precision, "precision", PRECISIONS)
    m, k, n = shape
    for name, value in (("m", m), ("k", k), ("n", n), ("repeats", repeats)):
        checks.check_int(name, value)
    timers = keras_paths.matmul_timers(precision, m, k, n,
                                       backend or keras.backend.backend())
    seconds = min(best_seconds(t, repeats, warmup=2) for t in timers)
    return 2.0 * m * k * n / seconds / 1e9


def _version(package):
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def _cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_description():
    """CPU model, cores, Python, Keras backend and package versions."""
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    return dict(
        cpu=_cpu_model(), cores=os.cpu_count(), usable_cores=usable,
        python=platform.python_version(), backend=keras.backend.backend(),
        versions={p: _version(p) for p in
                  ("keras", "tensorflow", "jax", "torch", "timm")},
    )


def _timm_model(model_name, image_size, timm):
    """(timm's model or None, the machine's note on timm)."""
    if not timm:
        return None, "not requested"
    if model_name not in torch_models.TIMM_NAMES:
        return None, f"no timm model for {model_name}"
    try:
        model = torch_models.timm_model(model_name, image_size)
    except ImportError as error:
        return None, f"not importable ({error})"
    return model, torch_models.TIMM_NAMES[model_name]


def run(model_name, batch_size=32, image_size=224, precisions=("float32",),
        modes=("infer",), steps=3, rounds=3, warmup=1, paths=None, timm=True,
        jit_compile=None, tflite=False, tflite_threads=None,
        matmul_shape=MATMUL_SHAPE, matmul_repeats=3, command=None,
        on_round=None, load=None):
    """Times the Keras paths (and timm's model, and TFLite) of one model.

    Args:
        model_name: a key of `keras_mixer.MODELS`; built with random weights.
        batch_size, image_size: the batch and the input side.
        precisions: "float32" and/or "bfloat16" (the "mixed_bfloat16" policy
            for Keras, `torch.autocast` to bfloat16 for timm).
        modes: "infer" and/or "train".
        steps: batches per `predict` / `fit` call (the one-batch calls run
            one).
        rounds, warmup: interleaved timed rounds, untimed calls of each
            measurement before them.
        paths: keys of `PATHS` (default: all of the modes).
        timm: also time timm's model when timm imports as it is.
        jit_compile: None keeps Keras's default; True/False forces it.
        tflite: True, or a list of quantizations: batch-1 TFLite latencies
            (the first quantization is the float32 baseline).
        matmul_shape, matmul_repeats: the matmul timed in each round (best
            of `matmul_repeats`).
        command: the command line to report.
        on_round: called as `on_round(index, {name: seconds})` after each
            round.
        load: a `MachineLoad` (tests pass fake readers).

    Returns:
        `(rows, machine)`: `report.rows_from_times` rows, and
        `machine_description()` plus the matmul rates, the load, warnings,
        the timm note and the command.

    Raises:
        ValueError: a bad argument, before any measurement.
    """
    precisions, modes, paths = check_arguments(
        model_name, batch_size, image_size, precisions, modes, steps, rounds,
        warmup, paths)
    if len(matmul_shape) != 3:
        raise ValueError(f"`matmul_shape` must be (m, k, n), got {matmul_shape!r}.")
    load = (load or MachineLoad()).start()
    for warning in load.warnings():  # before any long work
        print(f"keras_mixer.benchmark: busy machine: {warning}", file=sys.stderr)
    machine = machine_description()
    reference, machine["timm"] = _timm_model(model_name, image_size, timm)
    backend = keras.backend.backend()
    measurements = []
    for precision in precisions:
        measurements.append(keras_paths.matmul_measurement(
            report.matmul_key(precision, backend),
            keras_paths.matmul_timers(precision, *matmul_shape, backend),
            *matmul_shape, repeats=matmul_repeats, matmul=True))
        if reference is not None:
            measurements.append(keras_paths.matmul_measurement(
                report.matmul_key(precision, "torch"),
                [torch_models.matmul_call(*matmul_shape, precision)],
                *matmul_shape, repeats=matmul_repeats, matmul=True))
        model = keras_paths.build(model_name, precision, image_size)
        found = keras_paths.keras_measurements(
            model, paths, batch_size, steps, prefix=f"{precision}/",
            jit_compile=jit_compile)
        for m in found:
            m.info.update(precision=precision, library=backend)
        measurements += found
        if reference is not None:
            per_image = _tools.count_flops(model)  # the same architecture
            for mode in modes:
                call, images = torch_models.model_call(
                    reference, precision, mode, batch_size, image_size, steps)
                measurements.append(timing.Measurement(
                    f"{precision}/timm/{mode}", call, images=images,
                    flops=per_image * images * (3 if mode == "train" else 1),
                    framework="timm", reference=True, precision=precision,
                    mode=mode, library="torch",
                    written=("model(x) under torch.inference_mode()"
                          if mode == "infer" else "AdamW step, eager")))
    times = timing.interleave(measurements, rounds, warmup, on_round)
    load.stop()
    rows, matmul = report.rows_from_times(measurements, times, model_name,
                                          batch_size, image_size)
    machine.update(
        matmul_shape=tuple(matmul_shape), matmul_gflop_per_s=matmul,
        rounds=rounds, warmup=warmup, steps=steps, load=load.describe(),
        warnings=load.warnings(),
        command=command or f"keras_mixer.benchmark.run({model_name!r}, ...)")
    if reference is not None:
        info = torch_models.describe()
        machine["reference"] = (
            f"timm {info['timm']} `{machine['timm']}` (torch {info['torch']}, "
            f"{info['torch_threads']} threads, eager)")
    if tflite:
        quantizations = ("none", "dynamic_int8") if tflite is True else tflite
        machine["tflite_rows"] = keras_paths.tflite_rows(
            model_name, image_size, quantizations, threads=tflite_threads)
    return rows, machine

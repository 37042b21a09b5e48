"""Throughput of keras_mixer models, side by side with timm.

Measures images/s through the plain public API (`model.predict`, and
`model.fit` with an AdamW step), converts it to GFLOP/s with
`keras_mixer.count_flops` (x3 for a training step), and divides by the rate
of one large matmul of the same dtype timed in the same process: the
fraction of the machine's matmul rate the model reaches. When torch and timm
import, the same model from timm runs eagerly under the same settings.

    python benchmarks/throughput.py --model MixerB16 --batch_size 32 \\
        --precision float32,bfloat16 --mode infer,train

>>> rows, machine = keras_mixer.benchmark.run(
...     "MixerS32", batch_size=2, image_size=64, steps=1, warmup=1,
...     timm=False, matmul_shape=(64, 64, 64))  # doctest: +SKIP
>>> print(keras_mixer.benchmark.format_markdown(rows, machine))  # doctest: +SKIP

The Keras measurements use only Keras's public API and run on any backend;
the matmul timers (`_matmul_tensorflow`, `_matmul_jax`, `_matmul_torch`) are
the only backend-specific code, the timm functions the only torch code.
"""

import contextlib
import importlib
import importlib.abc
import importlib.machinery
import importlib.metadata
import os
import platform
import shlex
import statistics
import sys
import tempfile
import time
import types

import keras
import numpy as np

from keras_mixer import checks
from keras_mixer import models
from keras_mixer.models import _tools

PRECISIONS = ("float32", "bfloat16")
MODES = ("infer", "train")
INPUTS = ("dataset", "numpy")
# Channel-MLP matmul of Mixer-B/16 at batch 32: (32 * 196, 768) x (768, 3072).
MATMUL_SHAPE = (32 * 196, 768, 3072)
# Same learning rate and weight decay for both frameworks (Keras's AdamW
# defaults; torch's AdamW default decay is 0.01).
ADAMW = dict(learning_rate=1e-3, weight_decay=0.004)

# keras_mixer name -> timm model name (same architecture; no timm model for
# the others; timm's ConvMixer takes no img_size, so it has no row here).
TIMM_NAMES = {
    "MixerS32": "mixer_s32_224",
    "MixerS16": "mixer_s16_224",
    "MixerB32": "mixer_b32_224",
    "MixerB16": "mixer_b16_224",
    "MixerL32": "mixer_l32_224",
    "MixerL16": "mixer_l16_224",
    "ResMLP12": "resmlp_12_224",
    "ResMLP24": "resmlp_24_224",
    "ResMLP36": "resmlp_36_224",
    "ResMLPB24": "resmlp_big_24_224",
    "GMLPTi16": "gmlp_ti16_224",
    "GMLPS16": "gmlp_s16_224",
    "GMLPB16": "gmlp_b16_224",
    "GMixer12": "gmixer_12_224",
    "GMixer24": "gmixer_24_224",
}

# The clock of every measurement (tests replace it with a fake one).
_now = time.perf_counter


# --------------------------------------------------------------------------
# Argument checks (all before any work)


def _split(values, name, allowed):
    """'a,b' or ['a', 'b'] -> ('a', 'b'), each checked against `allowed`."""
    if isinstance(values, str):
        values = values.split(",")
    values = tuple(v.strip() for v in values)
    if not values:
        raise ValueError(f"`{name}` is empty; use some of {', '.join(allowed)}.")
    for value in values:
        if value not in allowed:
            raise ValueError(
                f"Unknown {name} {value!r}; use one or more of "
                f"{', '.join(allowed)} (comma-separated)."
            )
    return values


def check_arguments(model_name, batch_size=32, image_size=224,
                    precisions=("float32",), modes=("infer",), steps=10,
                    warmup=2):
    """Raises ValueError for a request that cannot run; returns the
    precisions and modes (lists or comma-separated strings) as tuples.

    >>> keras_mixer.benchmark.check_arguments(
    ...     "MixerB16", 32, 224, "float32,bfloat16", "infer,train")
    (('float32', 'bfloat16'), ('infer', 'train'))
    >>> keras_mixer.benchmark.check_arguments("MixerB16", image_size=200)
    Traceback (most recent call last):
    ValueError: image_size 200 is not a multiple of MixerB16's patch size 16: use 192 or 208.
    """
    constructor = models.get(model_name)
    precisions = _split(precisions, "precision", PRECISIONS)
    modes = _split(modes, "mode", MODES)
    checks.check_int("batch_size", batch_size)
    checks.check_int("image_size", image_size)
    checks.check_int("steps", steps)
    checks.check_int("warmup", warmup, minimum=0)
    # A constructor without `size_rule` checks the size in its builder.
    rule = getattr(constructor, "size_rule", None)
    if rule:
        rule.check("image_size", image_size, f"{model_name}'s")
    return precisions, modes


# --------------------------------------------------------------------------
# Matmul rate: the only backend-specific timing


def _matmul_tensorflow(a, b, dtype, jit_compile=False):
    import tensorflow as tf

    a, b = tf.constant(a, dtype=dtype), tf.constant(b, dtype=dtype)
    f = tf.function(tf.matmul, jit_compile=jit_compile)
    return lambda: f(a, b).numpy()


def _matmul_tensorflow_xla(a, b, dtype):
    return _matmul_tensorflow(a, b, dtype, jit_compile=True)


def _matmul_jax(a, b, dtype):
    import jax

    a = jax.device_put(jax.numpy.asarray(a, dtype=dtype))
    b = jax.device_put(jax.numpy.asarray(b, dtype=dtype))
    f = jax.jit(jax.numpy.matmul)
    return lambda: f(a, b).block_until_ready()


def _matmul_torch(a, b, dtype):
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    a = torch.from_numpy(a).to(device, getattr(torch, dtype))
    b = torch.from_numpy(b).to(device, getattr(torch, dtype))

    def call():
        c = torch.matmul(a, b)
        if c.is_cuda:
            torch.cuda.synchronize()
        return c

    return call


def best_seconds(call, repeats, warmup=2):
    """Fastest of `repeats` timed calls, after `warmup` untimed ones (the
    scripts under benchmarks/ time their kernels with it too)."""
    for _ in range(warmup):
        call()
    best = float("inf")
    for _ in range(repeats):
        start = _now()
        call()
        best = min(best, _now() - start)
    return best


def matmul_rate(dtype="float32", m=MATMUL_SHAPE[0], k=MATMUL_SHAPE[1],
                n=MATMUL_SHAPE[2], repeats=5, backend=None):
    """GFLOP/s of one compiled (m, k) x (k, n) matmul: 2 * m * k * n FLOPs
    over the best of `repeats` timed calls (after two warmup calls), each
    waiting for its result.

    Args:
        dtype: "float32" or "bfloat16" (both operands and the result).
        m, k, n: the shape; the default is Mixer-B/16's channel-MLP matmul
            at batch 32.
        repeats: timed calls; the fastest counts.
        backend: "tensorflow" (`tf.function`, the faster of with and
            without XLA: TensorFlow's own kernels and XLA's reach different
            rates on a CPU), "jax" (`jax.jit`) or "torch" (eager); default:
            the current Keras backend.
    """
    _split(dtype, "dtype", PRECISIONS)
    for name, value in (("m", m), ("k", k), ("n", n), ("repeats", repeats)):
        checks.check_int(name, value)
    backend = backend or keras.backend.backend()
    makers = {"tensorflow": _matmul_tensorflow, "jax": _matmul_jax,
              "torch": _matmul_torch}
    if backend not in makers:
        raise ValueError(f"No matmul timer for backend {backend!r}; "
                         f"use one of {', '.join(makers)}.")
    rng = np.random.default_rng(0)
    a = rng.standard_normal((m, k), np.float32)
    b = rng.standard_normal((k, n), np.float32)
    seconds = best_seconds(makers[backend](a, b, dtype), repeats)
    if backend == "tensorflow":
        seconds = min(seconds, best_seconds(
            _matmul_tensorflow_xla(a, b, dtype), repeats))
    return 2.0 * m * k * n / seconds / 1e9


# --------------------------------------------------------------------------
# Keras


def _images(rng, n, image_size):
    """`n` random float32 images in [0, 255), channels last."""
    shape = (n, image_size, image_size, 3)
    return rng.random(shape, dtype=np.float32) * np.float32(255)


@contextlib.contextmanager
def _dtype_policy(precision):
    """The global dtype policy of `precision` ("bfloat16": "mixed_bfloat16")
    inside the block; the previous one afterwards."""
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(
        "mixed_bfloat16" if precision == "bfloat16" else "float32")
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


class _StepTimer(keras.callbacks.Callback):
    """Times batches `first` .. `last` of one `fit` or `predict` call, each
    from its batch-begin to its batch-end hook, and the whole span from the
    start of `first` to the end of `last`. Keras turns the logs into Python
    floats before each batch hook (a callback with batch hooks also turns off
    its asynchronous dispatch), so every hook runs after its step has
    finished."""

    def __init__(self, first, last):
        super().__init__()
        self.first, self.last = first, last
        self.start = self.stop = self._begin = None
        self.durations = []

    def on_train_batch_begin(self, batch, logs=None):
        if self.first <= batch <= self.last:
            self._begin = _now()
            if batch == self.first:
                self.start = self._begin

    def on_train_batch_end(self, batch, logs=None):
        if self.first <= batch <= self.last:
            end = _now()
            self.durations.append(end - self._begin)
            if batch == self.last:
                self.stop = end

    on_predict_batch_begin = on_train_batch_begin
    on_predict_batch_end = on_train_batch_end

    def _check(self):
        if self.start is None or self.stop is None:
            raise RuntimeError("fit/predict did not run the timed batches.")

    @property
    def seconds(self):
        """From the start of batch `first` to the end of batch `last`."""
        self._check()
        return self.stop - self.start

    @property
    def median(self):
        """The median time of one timed batch."""
        self._check()
        return statistics.median(self.durations)


def _batches(x, y, batch_size, inputs):
    """The data `predict`/`fit` get: a `tf.data.Dataset` of batches when
    `inputs == "dataset"` and TensorFlow imports, else the NumPy arrays."""
    if inputs == "dataset":
        try:
            import tensorflow as tf
        except ImportError:
            return None
        tensors = x if y is None else (x, y)
        return tf.data.Dataset.from_tensor_slices(tensors).batch(batch_size)
    return None


def keras_throughput(model_name, batch_size=32, image_size=224,
                     precision="float32", mode="infer", steps=10, warmup=2,
                     jit_compile=None, inputs="dataset"):
    """Images per second of a keras_mixer model through the public API.

    infer: one `model.predict(x, verbose=0)` over `warmup + steps` batches
    of random images.
    train: `model.compile(optimizer=keras.optimizers.AdamW(...),
    loss="categorical_crossentropy")` and one `model.fit` over
    `warmup + steps` batches of random images and one-hot labels.

    In both, a callback times each of the last `steps` batches from its
    batch-begin to its batch-end hook (on TensorFlow and JAX the data fetch
    falls inside; the PyTorch trainer fetches before the begin hook), and
    images/s is `batch_size` over the median of those times: the first
    `warmup` batches take the tracing and warm-up (with `warmup=0` the first
    timed batch includes them, which moves the median when `steps <= 2`),
    and the median ignores the stalls of several seconds, with the cores
    idle, that this project's shared 2-core VM showed now and then
    (BENCHMARKS.md).

    Args:
        model_name: a key of `keras_mixer.MODELS`; built with `weights=None`.
        batch_size, image_size: the batch and the input side.
        precision: "float32", or "bfloat16" for the "mixed_bfloat16" dtype
            policy (set for the whole measurement; the previous global policy
            comes back afterwards).
        mode: "infer" or "train".
        steps, warmup: timed and untimed batches.
        jit_compile: None keeps Keras's default ("auto": XLA where the
            backend and every layer support it); True or False forces it
            (`model.jit_compile` for infer, `compile(jit_compile=...)` for
            train).
        inputs: "dataset" feeds a `tf.data.Dataset` of the batches (when
            TensorFlow imports), "numpy" the arrays. On TensorFlow, Keras's
            adapter for NumPy arrays slices batches in tf.data worker
            threads that compete with the model for the cores: on 2 cores,
            `predict` of MixerB16 over 5 batches ran at half the speed of
            the same batches as a dataset (BENCHMARKS.md).

    Returns:
        A dict: images_per_s, seconds (from the start of the first timed
        batch to the end of the last), jit_compile (the value Keras used),
        flops_per_image (forward, `count_flops`).
    """
    check_arguments(model_name, batch_size, image_size, precision, mode,
                    steps, warmup)
    rng = np.random.default_rng(0)
    shape = (image_size, image_size, 3)
    with _dtype_policy(precision):
        model = models.MODELS[model_name](weights=None, input_shape=shape)
        if mode == "infer":
            if jit_compile is not None:
                model.jit_compile = jit_compile
            x = _images(rng, (warmup + steps) * batch_size, image_size)
            timer = _StepTimer(warmup, warmup + steps - 1)
            data = _batches(x, None, batch_size, inputs)
            if data is None:
                model.predict(x, batch_size=batch_size, verbose=0,
                              callbacks=[timer])
            else:
                model.predict(data, verbose=0, callbacks=[timer])
        else:
            options = {} if jit_compile is None else {"jit_compile": jit_compile}
            model.compile(optimizer=keras.optimizers.AdamW(**ADAMW),
                          loss="categorical_crossentropy", **options)
            n = (warmup + steps) * batch_size
            x = _images(rng, n, image_size)
            classes = model.output.shape[-1]
            y = np.eye(classes, dtype="float32")[rng.integers(0, classes, n)]
            timer = _StepTimer(warmup, warmup + steps - 1)
            data = _batches(x, y, batch_size, inputs)
            if data is None:
                model.fit(x, y, batch_size=batch_size, epochs=1, shuffle=False,
                          verbose=0, callbacks=[timer])
            else:
                model.fit(data, epochs=1, verbose=0, callbacks=[timer])
    return dict(
        images_per_s=batch_size / timer.median,
        seconds=timer.seconds,
        jit_compile=bool(model.jit_compile),
        inputs=inputs,
        flops_per_image=_tools.count_flops(model),
    )


# --------------------------------------------------------------------------
# timm (torch)


class _Placeholder(type):
    """Metaclass of the stand-in torchvision's classes: any attribute is
    another placeholder class (distinct and hashable, so timm's import-time
    dicts keyed by `InterpolationMode.BILINEAR` etc. build); calling one
    raises."""

    def __getattr__(cls, name):
        if name.startswith("__"):
            raise AttributeError(name)
        children = type.__getattribute__(cls, "_children")
        if name not in children:
            children[name] = _placeholder(f"{cls.__qualname__}.{name}",
                                          cls.__module__)
        return children[name]


def _refuse(self, *args, **kwargs):
    raise RuntimeError(
        f"{type(self).__module__}.{type(self).__qualname__}: torchvision is "
        "not installed. keras_mixer.benchmark.import_timm installed an inert "
        "stand-in so that timm's model code imports; timm's data pipeline and "
        "torchvision ops do not work. Install torchvision to use them."
    )


def _placeholder(qualname, module):
    return _Placeholder(qualname.rsplit(".", 1)[-1], (),
                        {"__init__": _refuse, "__module__": module,
                         "__qualname__": qualname, "_children": {}})


class _StubModule(types.ModuleType):
    """A stand-in torchvision (sub)module: every public attribute is a
    placeholder class."""

    __keras_mixer_torchvision_stub__ = True

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        value = _placeholder(name, self.__name__)
        setattr(self, name, value)
        return value


class _TorchvisionStubFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds `torchvision` and every `torchvision.*` as a `_StubModule`,
    except the modules that timm imports inside `try: ... except
    ImportError` (those stay missing, so timm takes its no-torchvision path).
    Sits last on `sys.meta_path`, after the real finders."""

    MISSING = ("torchvision.models.feature_extraction",)

    def find_spec(self, fullname, path=None, target=None):
        if fullname != "torchvision" and not fullname.startswith("torchvision."):
            return None
        if fullname in self.MISSING:
            return None
        return importlib.machinery.ModuleSpec(fullname, self, is_package=True)

    def create_module(self, spec):
        return _StubModule(spec.name)

    def exec_module(self, module):
        pass


def torchvision_is_stub():
    """True when the imported `torchvision` is import_timm's stand-in."""
    module = sys.modules.get("torchvision")
    return bool(getattr(module, "__keras_mixer_torchvision_stub__", False))


def import_timm(stub_torchvision=True):
    """Imports timm; returns `(timm, torchvision_stubbed)`.

    timm imports torchvision when it is imported (FrozenBatchNorm2d in
    `timm/layers`, transforms and InterpolationMode in `timm/data`), although
    the Mixer and ResMLP models never call it. Where torchvision has no
    build (CPU-only machines without a torchvision wheel), `import timm`
    fails with ModuleNotFoundError('torchvision').

    Only then, and only with `stub_torchvision=True`, this installs an inert
    stand-in: a finder, last on `sys.meta_path`, that answers `torchvision`
    and its submodules with modules whose attributes are placeholder classes
    (calling one raises a RuntimeError naming the stand-in). It stays
    installed for the rest of the process; other code probing for
    torchvision then finds the stand-in, which `torchvision_is_stub()`
    reports. The timm model is real: tests compare its logits with
    keras_mixer's on the same weights. Benchmark rows record
    `timm_torchvision_stub`.

    Raises:
        ImportError: torch or timm is not installed, or timm misses a
            module other than torchvision, or `stub_torchvision` is False.
    """
    if not stub_torchvision and torchvision_is_stub():
        raise ImportError("timm was imported through the torchvision "
                          "stand-in earlier in this process.")
    try:
        import timm

        return timm, torchvision_is_stub()
    except ModuleNotFoundError as error:
        missing = (error.name or "").split(".")[0]
        if missing != "torchvision" or not stub_torchvision:
            raise
    if not any(isinstance(f, _TorchvisionStubFinder) for f in sys.meta_path):
        sys.meta_path.append(_TorchvisionStubFinder())
    # Drop timm's half-imported modules and retry from scratch.
    for name in [n for n in sys.modules if n == "timm" or n.startswith("timm.")]:
        del sys.modules[name]
    import timm

    return timm, True


def build_timm_model(model_name, image_size=224):
    """timm's model of the same architecture (`TIMM_NAMES`), random weights,
    on the CPU (timm's default)."""
    if model_name not in TIMM_NAMES:
        raise ValueError(f"timm has no model for {model_name!r}; timm rows "
                         f"exist for {', '.join(TIMM_NAMES)}.")
    timm, _ = import_timm()
    return timm.create_model(TIMM_NAMES[model_name], pretrained=False,
                             img_size=image_size)


def timm_throughput(model_name, batch_size=32, image_size=224,
                    precision="float32", mode="infer", steps=10, warmup=2):
    """Images per second of timm's model, eager, default torch threads.

    infer: `torch.inference_mode()`, `steps` batches after `warmup`.
    train: AdamW step (same learning rate and weight decay as the Keras
    rows) on cross-entropy. bfloat16: `torch.autocast` of the model's device
    type around the forward pass (and the loss). images/s is `batch_size`
    over the median time of the `steps` timed steps, as for Keras.

    Returns:
        A dict: images_per_s, seconds (the sum of the timed steps),
        timm_name, timm_torchvision_stub.
    """
    check_arguments(model_name, batch_size, image_size, precision, mode,
                    steps, warmup)
    model = build_timm_model(model_name, image_size)
    import torch

    device = next(model.parameters()).device
    autocast = (torch.autocast(device.type, dtype=torch.bfloat16)
                if precision == "bfloat16" else contextlib.nullcontext())
    torch.manual_seed(0)
    n = (warmup + steps) * batch_size
    x = torch.randn(n, 3, image_size, image_size, device=device)
    y = torch.randint(0, model.num_classes, (n,), device=device)

    def sync(value):
        if value.is_cuda:
            torch.cuda.synchronize()
        return value

    if mode == "infer":
        model.eval()

        def step(i):
            with torch.inference_mode(), autocast:
                return sync(model(x[i * batch_size:(i + 1) * batch_size]))
    else:
        model.train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=ADAMW["learning_rate"],
                                      weight_decay=ADAMW["weight_decay"])

        def step(i):
            batch = slice(i * batch_size, (i + 1) * batch_size)
            with autocast:
                loss = torch.nn.functional.cross_entropy(model(x[batch]), y[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            return loss.item()

    for i in range(warmup):
        step(i)
    durations = []
    for i in range(steps):
        start = _now()
        step(warmup + i)
        durations.append(_now() - start)
    return dict(images_per_s=batch_size / statistics.median(durations),
                seconds=sum(durations),
                timm_name=TIMM_NAMES[model_name],
                timm_torchvision_stub=torchvision_is_stub())


# --------------------------------------------------------------------------
# TFLite (batch-1 latency, LiteRT)


def tflite_rows(model_name, image_size=224, quantizations=("none", "dynamic_int8"),
                runs=20, threads=None):
    """Batch-1 latency of the model's TFLite files (random weights), one row
    per quantization; rows after the first carry `ratio_vs_float32` (speed-up
    over the first). Needs TensorFlow. See benchmarks/tflite.py for sizes and
    accuracy."""
    from keras_mixer import export

    check_arguments(model_name, 1, image_size)
    model = models.MODELS[model_name](
        weights=None, input_shape=(image_size, image_size, 3))
    rng = np.random.default_rng(0)
    for v in model.weights:
        v.assign(rng.normal(0, 0.02, v.shape).astype("float32"))
    images = _images(rng, 8, image_size)
    flops = _tools.count_flops(model)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for quantization in quantizations:
            report = export.to_tflite(
                model, os.path.join(tmp, f"{quantization}.tflite"), quantization,
                representative_data=images, check_data=images,
                measure_latency=False)
            ms = export.tflite_latency_ms(report["path"], runs=runs,
                                          num_threads=threads)
            rows.append(dict(
                framework="tflite", model=model_name,
                precision="float32" if quantization == "none" else quantization,
                mode="infer", batch=1, image_size=image_size, latency_ms=ms,
                images_per_s=1000.0 / ms, gflop_per_s=flops / ms / 1e6,
                threads=threads))
    for row in rows[1:]:
        row["ratio_vs_float32"] = rows[0]["latency_ms"] / row["latency_ms"]
    return rows


# --------------------------------------------------------------------------
# The whole comparison


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
        cpu=_cpu_model(),
        cores=os.cpu_count(),
        usable_cores=usable,
        python=platform.python_version(),
        backend=keras.backend.backend(),
        versions={p: _version(p) for p in
                  ("keras", "tensorflow", "jax", "torch", "timm")},
    )


def command_line(model_name, batch_size, image_size, precisions, modes, steps,
                 warmup, timm=True, jit_compile=None, tflite=False,
                 stub_torchvision=True, prog="python benchmarks/throughput.py"):
    """The command that reruns a measurement with these arguments."""
    args = [f"--model={model_name}", f"--batch_size={batch_size}",
            f"--image_size={image_size}",
            f"--precision={','.join(precisions)}", f"--mode={','.join(modes)}",
            f"--steps={steps}", f"--warmup={warmup}"]
    if not timm:
        args.append("--notimm")
    elif not stub_torchvision:
        args.append("--no_torchvision_stub")
    if jit_compile is not None:
        args.append(f"--jit_compile={str(bool(jit_compile)).lower()}")
    if tflite:
        args.append("--tflite")
    return " ".join([prog] + [shlex.quote(a) for a in args])


def _gflops(images_per_s, flops_per_image, mode):
    return flops_per_image * (3 if mode == "train" else 1) * images_per_s / 1e9


def _timm_status(model_name, timm, stub_torchvision):
    """(run timm rows?, the machine entries saying why or why not)."""
    if not timm:
        return False, dict(timm="not requested")
    if model_name not in TIMM_NAMES:
        return False, dict(timm=f"no timm model for {model_name}")
    try:
        _, stubbed = import_timm(stub_torchvision)
    except ImportError as error:
        return False, dict(timm=f"not importable ({error})")
    import torch

    return True, dict(timm=TIMM_NAMES[model_name], timm_torchvision_stub=stubbed,
                      torch_threads=torch.get_num_threads(),
                      torch_matmul_gflop_per_s={})


def run(model_name, batch_size=32, image_size=224, precisions=("float32",),
        modes=("infer",), steps=10, warmup=2, timm=True, jit_compile=None,
        tflite=False, tflite_threads=None, matmul_shape=MATMUL_SHAPE,
        matmul_repeats=5, stub_torchvision=True, command=None,
        inputs="dataset"):
    """Keras (and timm, TFLite) throughput of one model.

    For each precision: the matmul rate of that dtype on the Keras backend
    (`matmul_rate` with `matmul_shape`), then for each mode a keras_mixer
    row and, when `timm` is true and torch and timm import (`import_timm`),
    a timm row. `tflite=True` adds `tflite_rows` (float32 and dynamic_int8,
    batch 1).

    Each row: framework ("keras_mixer", "timm" or "tflite"), model,
    precision, mode, batch, image_size, images_per_s, gflop_per_s
    (count_flops x images/s, x3 in training), matmul_fraction (gflop_per_s
    over the Keras backend's matmul rate of the row's dtype), and where the
    other row was measured: ratio_vs_timm (keras_mixer rows, against timm's
    row of the same precision and mode), ratio_vs_float32 (bfloat16 and
    int8 rows, against the same framework's float32 row). keras_mixer rows
    add jit_compile; timm rows timm_torchvision_stub.

    `stub_torchvision=False` refuses `import_timm`'s torchvision stand-in:
    without torchvision there are then no timm rows.

    Returns:
        `(rows, machine)`; `machine` is `machine_description()` plus
        matmul_shape, matmul_gflop_per_s ({dtype: rate}), timm (the timm
        model, or why there are no timm rows), timm_torchvision_stub,
        torch_threads, torch_matmul_gflop_per_s (torch's rate, for the timm
        rows) and command (`command`, else the equivalent
        `benchmarks/throughput.py` command line).

    Raises:
        ValueError: a bad argument, before any measurement.
    """
    precisions, modes = check_arguments(model_name, batch_size, image_size,
                                        precisions, modes, steps, warmup)
    if len(matmul_shape) != 3:
        raise ValueError(f"`matmul_shape` must be (m, k, n), got {matmul_shape!r}.")
    if inputs not in INPUTS:
        raise ValueError(f"inputs must be one of {INPUTS}, got {inputs!r}.")
    with_timm, timm_info = _timm_status(model_name, timm, stub_torchvision)
    machine = machine_description()
    machine.update(matmul_shape=tuple(matmul_shape), matmul_gflop_per_s={},
                   keras_inputs=inputs, **timm_info)
    machine["command"] = command or command_line(
        model_name, batch_size, image_size, precisions, modes, steps, warmup,
        timm, jit_compile, tflite, stub_torchvision)

    common = dict(batch_size=batch_size, image_size=image_size, steps=steps,
                  warmup=warmup)
    rows = []
    for precision in precisions:
        rate = matmul_rate(precision, *matmul_shape, repeats=matmul_repeats)
        machine["matmul_gflop_per_s"][precision] = rate
        if with_timm:
            machine["torch_matmul_gflop_per_s"][precision] = matmul_rate(
                precision, *matmul_shape, repeats=matmul_repeats,
                backend="torch")
        for mode in modes:
            result = keras_throughput(model_name, precision=precision, mode=mode,
                                      jit_compile=jit_compile, inputs=inputs,
                                      **common)
            flops = result["flops_per_image"]
            found = [dict(framework="keras_mixer",
                          images_per_s=result["images_per_s"],
                          jit_compile=result["jit_compile"])]
            if with_timm:
                timm_result = timm_throughput(model_name, precision=precision,
                                              mode=mode, **common)
                found.append(dict(
                    framework="timm",
                    images_per_s=timm_result["images_per_s"],
                    timm_torchvision_stub=timm_result["timm_torchvision_stub"]))
            for row in found:
                gflop_per_s = _gflops(row["images_per_s"], flops, mode)
                rows.append(dict(
                    framework=row.pop("framework"), model=model_name,
                    precision=precision, mode=mode, batch=batch_size,
                    image_size=image_size, gflop_per_s=gflop_per_s,
                    matmul_fraction=gflop_per_s / rate, **row))
    _add_ratios(rows)
    if tflite:
        quantizations = ("none", "dynamic_int8") if tflite is True else tflite
        rows += tflite_rows(model_name, image_size, quantizations,
                            threads=tflite_threads)
    return rows, machine


def _add_ratios(rows):
    def find(framework, precision, mode):
        for row in rows:
            if (row["framework"], row["precision"], row["mode"]) == (
                    framework, precision, mode):
                return row
        return None

    for row in rows:
        if row["framework"] == "keras_mixer":
            other = find("timm", row["precision"], row["mode"])
            if other:
                row["ratio_vs_timm"] = row["images_per_s"] / other["images_per_s"]
        if row["precision"] == "bfloat16":
            other = find(row["framework"], "float32", row["mode"])
            if other:
                row["ratio_vs_float32"] = row["images_per_s"] / other["images_per_s"]


def _format(value, spec):
    return "–" if value is None else format(value, spec)


def _framework_label(row, machine):
    if row["framework"] == "keras_mixer":
        xla = ", XLA" if row.get("jit_compile") else ""
        return f"keras_mixer ({machine.get('backend', '?')}{xla})"
    if row["framework"] == "timm":
        stub = ", torchvision stub" if row.get("timm_torchvision_stub") else ""
        return f"timm (torch eager{stub})"
    if row["framework"] == "tflite":
        threads = row.get("threads")
        return f"TFLite ({threads or 'default'} threads)"
    return row["framework"]


def format_markdown(rows, machine, command=None):
    """A Markdown section for BENCHMARKS.md: the command, the machine, the
    matmul rates and one table row per measurement."""
    command = command or machine.get("command", "")
    versions = ", ".join(f"{k} {v}" for k, v in machine.get("versions", {}).items()
                         if v)
    lines = [
        "```",
        command,
        "```",
        "",
        f"- Machine: {machine.get('cpu', '?')}, {machine.get('cores', '?')} cores "
        f"({machine.get('usable_cores', '?')} usable), Python "
        f"{machine.get('python', '?')}",
        f"- Keras backend: {machine.get('backend', '?')}; {versions}",
    ]
    rates = machine.get("matmul_gflop_per_s") or {}
    if rates:
        shape = " x ".join(str(s) for s in machine.get("matmul_shape", ()))
        lines.append(
            f"- Matmul rate ({shape}, same process): "
            + ", ".join(f"{k} {v:.1f} GFLOP/s" for k, v in rates.items()))
    if "timm" in machine:
        timm_line = f"- timm: {machine['timm']}"
        if machine.get("timm_torchvision_stub"):
            timm_line += (" (torchvision not installed: timm imported with "
                          "keras_mixer.benchmark.import_timm's inert stand-in; "
                          "the model code is timm's own)")
        if "torch_threads" in machine:
            timm_line += f"; torch threads {machine['torch_threads']}"
        torch_rates = machine.get("torch_matmul_gflop_per_s") or {}
        if torch_rates:
            timm_line += "; torch matmul rate " + ", ".join(
                f"{k} {v:.1f} GFLOP/s" for k, v in torch_rates.items())
        lines.append(timm_line)
    if machine.get("keras_inputs"):
        lines.append(
            f"- Keras inputs: {machine['keras_inputs']} (dataset: a "
            "tf.data.Dataset of the batches; numpy: the arrays, through "
            "Keras's array adapter)")
    lines.append("- images/s: the batch size over the median time of the "
                 "timed batches (each Keras batch from its batch-begin to its "
                 "batch-end callback, each timm step around the call), after "
                 "the warm-up batches.")
    lines.append("- GFLOP/s: keras_mixer.count_flops per image (x3 for a "
                 "training step) x images/s; \"of matmul\": over the Keras "
                 "backend's matmul rate of the same dtype.")
    lines += [
        "",
        "| framework | model | precision | mode | batch | images/s | ms/batch "
        "| GFLOP/s | of matmul | vs timm | vs float32 |",
        "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        fraction = row.get("matmul_fraction")
        lines.append(
            f"| {_framework_label(row, machine)} | {row['model']} "
            f"| {row['precision']} | {row['mode']} | {row['batch']} "
            f"| {row['images_per_s']:.1f} "
            f"| {1000.0 * row['batch'] / row['images_per_s']:.1f} "
            f"| {_format(row.get('gflop_per_s'), '.1f')} "
            f"| {'–' if fraction is None else f'{fraction:.0%}'} "
            f"| {_format(row.get('ratio_vs_timm'), '.2f')} "
            f"| {_format(row.get('ratio_vs_float32'), '.2f')} |"
        )
    return "\n".join(lines)

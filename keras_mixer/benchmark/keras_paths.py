"""The calls users write, as measurements: `model.predict` and `model.fit` on
NumPy arrays, `model(x)`, `predict_on_batch` / `train_on_batch`, and
`predict` / `fit` on a `tf.data.Dataset`; and the matmul rate of the Keras
backend, timed beside them.

Only Keras's public API, so every path runs on every backend (the dataset
paths need TensorFlow installed); the matmul timers are the only
backend-specific code.
"""

import contextlib
import os
import tempfile

import keras
import numpy as np

from keras_mixer import models
from keras_mixer.benchmark import timing
from keras_mixer.benchmark import torch_models
from keras_mixer.models import _tools

# path -> (mode, the call as a user writes it; B is the batch size, x holds
# `steps` batches for predict/fit and one batch for the others).
PATHS = {
    "predict_numpy": ("infer", "model.predict(x, batch_size=B)"),
    "call": ("infer", "model(x)"),
    "predict_on_batch": ("infer", "model.predict_on_batch(x)"),
    "predict_dataset": ("infer", "model.predict(tf.data.Dataset"
                                 ".from_tensor_slices(x).batch(B))"),
    "fit_numpy": ("train", "model.fit(x, y, batch_size=B)"),
    "train_on_batch": ("train", "model.train_on_batch(x, y)"),
    "fit_dataset": ("train", "model.fit(tf.data.Dataset"
                             ".from_tensor_slices((x, y)).batch(B))"),
}
# The paths whose calls run `steps` batches; the others run one.
MULTI_BATCH = ("predict_numpy", "predict_dataset", "fit_numpy", "fit_dataset")
# Channel-MLP matmul of Mixer-B/16 at batch 32: (32 * 196, 768) x (768, 3072).
MATMUL_SHAPE = (32 * 196, 768, 3072)


# --------------------------------------------------------------------------
# Matmul rate: the only backend-specific timing


def _matmul_tensorflow(a, b, dtype, jit_compile=False):
    import tensorflow as tf

    a, b = tf.constant(a, dtype=dtype), tf.constant(b, dtype=dtype)
    f = tf.function(tf.matmul, jit_compile=jit_compile)
    return lambda: f(a, b).numpy()


def _matmul_jax(a, b, dtype):
    import jax

    a = jax.device_put(jax.numpy.asarray(a, dtype=dtype))
    b = jax.device_put(jax.numpy.asarray(b, dtype=dtype))
    f = jax.jit(jax.numpy.matmul)
    return lambda: f(a, b).block_until_ready()


def _matmul_keras_torch(a, b, dtype):
    return torch_models.matmul_call(a.shape[0], a.shape[1], b.shape[1], dtype)


def matmul_timers(dtype, m, k, n, backend):
    """Callables running one (m, k) x (k, n) product of `dtype` on
    `backend`: on TensorFlow with and without XLA (their CPU kernels reach
    different rates), on JAX under `jax.jit`, on torch eagerly."""
    makers = {"tensorflow": (_matmul_tensorflow,
                             lambda a, b, d: _matmul_tensorflow(a, b, d, True)),
              "jax": (_matmul_jax,), "torch": (_matmul_keras_torch,)}
    if backend not in makers:
        raise ValueError(f"No matmul timer for backend {backend!r}; "
                         f"use one of {', '.join(makers)}.")
    rng = np.random.default_rng(0)
    a = rng.standard_normal((m, k), np.float32)
    b = rng.standard_normal((k, n), np.float32)
    return [make(a, b, dtype) for make in makers[backend]]


def matmul_measurement(name, timers, m, k, n, repeats=3, **info):
    """A measurement whose call returns the best time of `repeats` products
    over `timers` (each warmed up once per call)."""
    def call():
        return min(timing.best_seconds(t, repeats, warmup=1) for t in timers)

    return timing.Measurement(name, call, flops=2.0 * m * k * n,
                              self_timed=True, **info)


# --------------------------------------------------------------------------
# Keras paths


def images(rng, n, image_size):
    """`n` random float32 images in [0, 255), channels last."""
    shape = (n, image_size, image_size, 3)
    return rng.random(shape, dtype=np.float32) * np.float32(255)


@contextlib.contextmanager
def dtype_policy(precision):
    """The global dtype policy of `precision` ("bfloat16": "mixed_bfloat16")
    inside the block; the previous one afterwards."""
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(
        "mixed_bfloat16" if precision == "bfloat16" else "float32")
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def _dataset(tensors, batch_size):
    import tensorflow as tf

    return tf.data.Dataset.from_tensor_slices(tensors).batch(batch_size)


def build(model_name, precision, image_size):
    """The model with random weights under `precision`'s dtype policy."""
    with dtype_policy(precision):
        return models.MODELS[model_name](
            weights=None, input_shape=(image_size, image_size, 3))


def keras_measurements(model, paths, batch_size, steps, prefix="",
                       jit_compile=None, seed=0):
    """One measurement per path in `paths` (keys of `PATHS`) on `model`.

    The model is compiled (AdamW, categorical cross-entropy) when a training
    path is asked for; `jit_compile` None keeps Keras's default ("auto"),
    True or False forces it for prediction and training. Each measurement's
    name is `prefix + path`; its info holds mode, path, the call and
    jit_compile.
    """
    unknown = [p for p in paths if p not in PATHS]
    if unknown:
        raise ValueError(f"Unknown path(s) {unknown}; use some of "
                         f"{', '.join(PATHS)}.")
    rng = np.random.default_rng(seed)
    image_size = model.input_shape[1]
    classes = model.output_shape[-1]
    n = steps * batch_size
    x = images(rng, n, image_size)
    y = np.eye(classes, dtype="float32")[rng.integers(0, classes, n)]
    flops = _tools.count_flops(model)
    if jit_compile is not None:
        model.jit_compile = jit_compile
    if any(PATHS[p][0] == "train" for p in paths):
        options = {} if jit_compile is None else {"jit_compile": jit_compile}
        model.compile(optimizer=keras.optimizers.AdamW(**torch_models.ADAMW),
                      loss="categorical_crossentropy", **options)
    one, one_y = x[:batch_size], y[:batch_size]
    calls = {
        "predict_numpy": lambda: model.predict(x, batch_size=batch_size,
                                               verbose=0),
        "call": lambda: keras.ops.convert_to_numpy(model(one)),
        "predict_on_batch": lambda: model.predict_on_batch(one),
        "predict_dataset": lambda: model.predict(_dataset(x, batch_size),
                                                 verbose=0),
        "fit_numpy": lambda: model.fit(x, y, batch_size=batch_size, epochs=1,
                                       verbose=0),
        "train_on_batch": lambda: model.train_on_batch(one, one_y),
        "fit_dataset": lambda: model.fit(_dataset((x, y), batch_size),
                                         epochs=1, verbose=0),
    }
    found = []
    for path in paths:
        mode, written = PATHS[path]
        count = n if path in MULTI_BATCH else batch_size
        found.append(timing.Measurement(
            prefix + path, calls[path], images=count,
            flops=flops * count * (3 if mode == "train" else 1),
            framework="keras_mixer", path=path, mode=mode, written=written,
            jit_compile=bool(model.jit_compile),
            backend=keras.backend.backend()))
    return found


def random_weights(model, rng, std=0.02):
    """Draws every weight of `model` from N(0, std), BatchNorm variances
    from U(0.5, 1.5) (a negative variance would make the output NaN)."""
    for v in model.weights:
        if v.path.endswith("moving_variance"):
            value = rng.uniform(0.5, 1.5, v.shape)
        else:
            value = rng.normal(0, std, v.shape)
        v.assign(value.astype(v.dtype))


def tflite_rows(model_name, image_size=224,
                quantizations=("none", "dynamic_int8"), runs=20, threads=None):
    """Batch-1 latency of the model's TFLite files (random weights), one row
    per quantization; rows after the first carry `ratio_vs_float32` (speed-up
    over the first). Needs TensorFlow. See benchmarks/tflite.py for sizes and
    accuracy."""
    from keras_mixer import export

    model = build(model_name, "float32", image_size)
    rng = np.random.default_rng(0)
    random_weights(model, rng)
    data = images(rng, 8, image_size)
    flops = _tools.count_flops(model)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for quantization in quantizations:
            report = export.to_tflite(
                model, os.path.join(tmp, f"{quantization}.tflite"), quantization,
                representative_data=data, check_data=data,
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

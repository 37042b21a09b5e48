"""Training and fine-tuning with `model.fit` under a tf.distribute strategy
(TensorFlow backend) or `keras.distribution.DataParallel` (JAX backend).

`train(config, output_dir)` checks everything it can first (dataset, config,
model, image size against the patch, batch against the replicas), then
trains, and leaves in `output_dir`:

    config.json     the resolved config (a rerun must match it).
    backup/         BackupAndRestore state: the same command resumes from the
                    last completed epoch after SIGKILL or TPU preemption.
    history.csv     one row per completed epoch (column `epoch`), each epoch
                    exactly once across resumes.
    best.keras      the model of the best validation accuracy so far.
    final.keras     the model at the end of training.
    metrics.json    val_accuracy, val_top5_accuracy, epochs_completed,
                    train_images_per_second, wall_seconds, ...
    logs/           TensorBoard logs (TensorFlow backend).

Models and records are written to a temporary name, then renamed, so a kill
never leaves a half-written file under the final name. In a multi-worker run
only the chief writes them; the other workers write under
`output_dir/workers/<task id>/`.
"""

import csv
import io
import json
import logging
import math
import os
import tempfile
import time

import numpy as np

import keras

from keras_mixer import checks
from keras_mixer import distribute
from keras_mixer import models
from keras_mixer import recipes

logger = logging.getLogger("keras_mixer")

# The demo's model: a small Mixer for 32x32 digits (64 patches of 4x4).
DEMO_MODEL = dict(patch_size=4, hidden_dim=128, num_blocks=4,
                  tokens_mlp_dim=64, channels_mlp_dim=512)


# ----------------------------------------------------------------------------
# Files written atomically.


def atomic_write_text(path, text):
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-")
    with os.fdopen(fd, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def atomic_save_model(model, path):
    """`model.save` to a temporary file in the same folder, then rename."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    tmp = os.path.join(directory, f".tmp-{os.getpid()}-{os.path.basename(path)}")
    model.save(tmp)
    os.replace(tmp, path)


# ----------------------------------------------------------------------------
# Callbacks.


class EpochHistory(keras.callbacks.Callback):
    """`history.csv`: one row per completed epoch, rewritten atomically.

    On (re)start, rows of epochs at or after the first epoch this run trains
    are dropped: an epoch whose row was written but whose backup was not (a
    kill in between) is trained again and recorded once.
    """

    def __init__(self, path):
        super().__init__()
        self.path = path
        self.rows = {}
        self._started = False

    def _load(self):
        if not os.path.exists(self.path):
            return {}
        with open(self.path, newline="") as f:
            return {int(row["epoch"]): row for row in csv.DictReader(f)}

    def on_epoch_begin(self, epoch, logs=None):
        if not self._started:
            self._started = True
            self.rows = {e: r for e, r in self._load().items() if e < epoch}
        self._begin = time.time()

    def on_epoch_end(self, epoch, logs=None):
        row = {"epoch": epoch, "seconds": round(time.time() - self._begin, 3)}
        optimizer = self.model.optimizer
        row["learning_rate"] = float(
            keras.ops.convert_to_numpy(optimizer.learning_rate)
        )
        for key, value in sorted((logs or {}).items()):
            row[key] = float(value)
        self.rows[epoch] = row
        keys = []
        for r in self.rows.values():
            keys += [k for k in r if k not in keys]
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=keys)
        writer.writeheader()
        for e in sorted(self.rows):
            writer.writerow(self.rows[e])
        atomic_write_text(self.path, text.getvalue())


class BestModel(keras.callbacks.Callback):
    """Saves the model of the best `monitor` so far as `path` (atomically);
    the best value survives restarts in `path + ".json"`."""

    def __init__(self, path, model_to_save, monitor="val_accuracy"):
        super().__init__()
        self.path = path
        self.model_to_save = model_to_save
        self.monitor = monitor
        self.best = -math.inf
        if os.path.exists(path + ".json"):
            with open(path + ".json") as f:
                self.best = json.load(f)["value"]

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is None or not value > self.best:
            return
        self.best = float(value)
        atomic_save_model(self.model_to_save, self.path)
        atomic_write_text(self.path + ".json", json.dumps(
            {"epoch": epoch, "monitor": self.monitor, "value": self.best}))


class Throughput(keras.callbacks.Callback):
    """Training images per second, over the training part of each epoch
    (validation excluded). The first epoch of a run includes tracing and
    compilation, so with more than one epoch it is left out."""

    def __init__(self, global_batch):
        super().__init__()
        self.global_batch = global_batch
        self.epochs = []  # (images, seconds)

    def on_epoch_begin(self, epoch, logs=None):
        self._begin = time.perf_counter()
        self._batches = 0
        self._train_end = None

    def on_train_batch_end(self, batch, logs=None):
        self._batches += 1
        self._train_end = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        if self._train_end is not None:
            self.epochs.append((self._batches * self.global_batch,
                                self._train_end - self._begin))

    def images_per_second(self):
        epochs = self.epochs[1:] if len(self.epochs) > 1 else self.epochs
        images = sum(i for i, _ in epochs)
        seconds = sum(s for _, s in epochs)
        return images / seconds if seconds else None


# ----------------------------------------------------------------------------
# Checks that run before anything is loaded.


def size_rule_of(model_name):
    """The `checks.SizeRule` of a named model's image sides, or a ValueError
    listing the names."""
    if model_name == "demo":
        return checks.SizeRule(DEMO_MODEL["patch_size"])
    if model_name.endswith(".keras"):
        return None  # evaluate takes saved models; train refuses them
    # A constructor without `size_rule` checks the size in its builder.
    return getattr(models.get(model_name, also=("demo",)), "size_rule", None)


def check_inputs(config):
    """Refuses a config that cannot train, before any data or weights load."""
    from keras_mixer import data

    if config["dataset"] is None:
        raise ValueError(
            f"Config {config['config']!r} needs --dataset: its data is not in "
            "tensorflow-datasets; give folder:PATH (one sub-folder per class)."
        )
    data.check_dataset_name(config["dataset"])
    rule = size_rule_of(config["model"])
    if rule:
        rule.check("--image_size", config["image_size"], f"{config['model']}'s")
    if config["teacher"] and not os.path.exists(config["teacher"]):
        raise ValueError(
            f"Teacher model {config['teacher']} does not exist; give a .keras "
            "file of a trained classifier."
        )


def _check_resume(output_dir, config):
    """A rerun in the same output_dir must have the same config."""
    path = os.path.join(output_dir, "config.json")
    if not os.path.exists(path):
        return
    with open(path) as f:
        previous = json.load(f)
    current = json.loads(json.dumps(config))
    changed = sorted(k for k in set(previous) | set(current)
                     if previous.get(k) != current.get(k))
    if changed:
        raise ValueError(
            f"{output_dir} holds a run with another config (differs in "
            f"{', '.join(changed)}). Rerun with the same flags to resume it, "
            "or pick a new --output_dir."
        )


# ----------------------------------------------------------------------------
# Building.


def set_precision(precision):
    """Sets the global dtype policy; returns the policy name."""
    if precision == "auto":
        backend = keras.backend.backend()
        precision = "float32"
        if backend == "tensorflow":
            import tensorflow as tf

            if tf.config.list_logical_devices("TPU"):
                precision = "bfloat16"
            elif tf.config.list_logical_devices("GPU"):
                precision = "float16"
    policy = {"float32": "float32", "bfloat16": "mixed_bfloat16",
              "float16": "mixed_float16"}[precision]
    keras.config.set_dtype_policy(policy)
    return policy


def build_model(config, classes):
    """The config's model for `classes` classes, with pretrained weights and
    a fresh zero head when `weights` is set."""
    import keras_mixer

    size = config["image_size"]
    kwargs = dict(
        input_shape=(size, size, 3), classes=classes,
        dropout_rate=config["dropout_rate"],
        drop_path_rate=config["drop_path_rate"],
    )
    if config["model"] == "demo":
        return keras_mixer.MLPMixer(**DEMO_MODEL, **kwargs, name="mixer_demo")
    model = keras_mixer.MODELS[config["model"]](
        weights=config["weights"], **kwargs
    )
    if config["weights"]:
        head = model.get_layer("head")
        for variable in head.weights:
            variable.assign(keras.ops.zeros(variable.shape, variable.dtype))
        logger.info("Fine-tuning from %s with a fresh zero head for %d "
                    "classes.", config["weights"], classes)
    return model


def _steps(info, config, global_batch):
    if info.num_examples and global_batch > info.num_examples:
        raise ValueError(
            f"--batch_size {global_batch} exceeds the {info.num_examples} "
            f"training examples of {info.name}; use a smaller batch."
        )
    if config["steps_per_epoch"]:
        return int(config["steps_per_epoch"])
    if not info.num_examples:
        raise ValueError(
            f"The number of training examples of {info.name} is unknown; "
            "give --steps_per_epoch."
        )
    return info.num_examples // global_batch


class InputError(ValueError):
    """A config, dataset or flag that cannot train, found before training."""


def _prepare(config, output_dir, strategy, tpu, devices):
    """Everything up to `fit`: checks, strategy, datasets, model, optimizer.

    Returns a dict of the pieces, or `{"done": metrics}` when `output_dir`
    holds this run finished.
    """
    from keras_mixer import data

    if config["model"].endswith(".keras"):
        raise ValueError(
            f"train builds a named model (demo, MixerB16, ...), not a .keras "
            f"file ({config['model']}). To go on training a saved model, load "
            "it, resize its token mixing with keras_mixer.resize_token_mixing "
            "if the resolution changes, and call fit, as in "
            "notebooks/02_finetune.ipynb."
        )
    check_inputs(config)
    backend = keras.backend.backend()
    distribution = tf_strategy = None
    if backend == "tensorflow":
        tf_strategy = distribute.get_strategy(strategy, tpu=tpu,
                                              devices=devices)
    elif backend == "jax":
        distribution = distribute.jax_data_parallel()
    num_replicas = distribute.replicas(tf_strategy, distribution)
    global_batch = config["batch_size"]
    distribute.check_batch(global_batch, num_replicas)

    chief = distribute.is_chief()
    if not chief:
        _, task_id = distribute.task_info()
        output_dir = os.path.join(output_dir, "workers", str(task_id))
    _check_resume(output_dir, config)
    metrics_path = os.path.join(output_dir, "metrics.json")
    if os.path.exists(metrics_path) and os.path.exists(
        os.path.join(output_dir, "final.keras")
    ):
        with open(metrics_path) as f:
            done = json.load(f)
        if done.get("epochs_completed") == config["epochs"]:
            logger.warning("%s already holds the finished run; nothing to "
                           "do (use a new --output_dir to train again).",
                           output_dir)
            return {"done": done}

    policy = set_precision(config["precision"])
    train_ds, info = data.build_dataset(
        config["dataset"], "train", image_size=config["image_size"],
        batch_size=global_batch, training=True, data_dir=config["data_dir"],
        randaugment=config["randaugment"], mixup=config["mixup"],
        cutmix=config["cutmix"], crop_area=tuple(config["crop_area"]),
        seed=config["seed"], repeat=True,
    )
    val_ds, val_info = data.build_dataset(
        config["dataset"], config["eval_split"],
        image_size=config["image_size"], batch_size=global_batch,
        training=False, data_dir=config["data_dir"],
        eval_crop=config["eval_crop"],
    )
    steps_per_epoch = _steps(info, config, global_batch)
    keras.utils.set_random_seed(config["seed"])

    scope = tf_strategy.scope() if tf_strategy is not None else _null()
    with scope:
        model = build_model(config, info.num_classes)
        schedule = recipes.make_schedule(config, global_batch, steps_per_epoch)
        optimizer = recipes.make_optimizer(config, schedule)
        trainee = model
        if config["teacher"]:
            teacher = keras.saving.load_model(config["teacher"])
            if teacher.output_shape[-1] != info.num_classes:
                raise ValueError(
                    f"Teacher {config['teacher']} has "
                    f"{teacher.output_shape[-1]} classes, the dataset "
                    f"{info.num_classes}: distil from a teacher trained on "
                    "the same classes."
                )
            trainee = recipes.HardDistillation(
                model, teacher, weight=config["distillation_weight"]
            )
            trainee.build((None,) + model.input_shape[1:])
        trainee.compile(
            optimizer=optimizer, loss=recipes.make_loss(config),
            metrics=recipes.make_metrics(),
            jit_compile=config["jit_compile"],
        )
    if tf_strategy is not None:
        distribute.patch_keras_for_multi_worker(trainee, tf_strategy)
    os.makedirs(output_dir, exist_ok=True)
    for name in os.listdir(output_dir):  # Left by a kill mid-write.
        if name.startswith(".tmp-"):
            os.remove(os.path.join(output_dir, name))
    atomic_write_text(os.path.join(output_dir, "config.json"),
                      json.dumps(config, indent=2, sort_keys=True))
    return dict(
        backend=backend, chief=chief, output_dir=output_dir,
        metrics_path=metrics_path, num_replicas=num_replicas,
        global_batch=global_batch, policy=policy, train_ds=train_ds,
        val_ds=val_ds, info=info, val_info=val_info,
        steps_per_epoch=steps_per_epoch, model=model, trainee=trainee,
    )


def train(config, output_dir, strategy="auto", tpu=None, devices=None,
          verbose="auto", extra_callbacks=()):
    """Trains the config's model; returns the metrics also written to
    `output_dir/metrics.json`. See the module docstring for the files.

    Raises InputError (a ValueError) for anything found wrong before
    training starts: unknown dataset, config or model, a bad image folder,
    an image size that is not a multiple of the patch, a batch that the
    replicas cannot split, a different config in `output_dir`.
    """
    start = time.time()
    try:
        run = _prepare(config, output_dir, strategy, tpu, devices)
    except InputError:
        raise
    except ValueError as error:
        raise InputError(str(error)) from error
    if "done" in run:
        return run["done"]
    output_dir, model, trainee = run["output_dir"], run["model"], run["trainee"]
    global_batch, info = run["global_batch"], run["info"]

    throughput = Throughput(global_batch)
    callbacks = [
        keras.callbacks.BackupAndRestore(
            os.path.join(output_dir, "backup"), double_checkpoint=True
        ),
        keras.callbacks.TerminateOnNaN(),
        EpochHistory(os.path.join(output_dir, "history.csv")),
        throughput,
    ]
    if config["ema"]:
        # Validate and save with the averaged weights.
        callbacks.insert(0, keras.callbacks.SwapEMAWeights(swap_on_epoch=True))
    if run["chief"]:
        callbacks.append(BestModel(os.path.join(output_dir, "best.keras"), model))
    if run["backend"] == "tensorflow":
        callbacks.append(keras.callbacks.TensorBoard(
            os.path.join(output_dir, "logs"), write_graph=False))
    callbacks += list(extra_callbacks)

    logger.info(
        "Training %s on %s: %d replicas, global batch %d, %d steps/epoch, "
        "peak lr %.3g, policy %s.", config["model"], config["dataset"],
        run["num_replicas"], global_batch, run["steps_per_epoch"],
        recipes.scaled_learning_rate(config, global_batch), run["policy"],
    )
    history = trainee.fit(
        run["train_ds"], validation_data=run["val_ds"],
        epochs=config["epochs"], steps_per_epoch=run["steps_per_epoch"],
        callbacks=callbacks, verbose=verbose,
        shuffle=False,  # The pipeline shuffles.
    )
    nan = bool(history.history.get("loss")) and not np.all(
        np.isfinite(history.history["loss"]))
    results = trainee.evaluate(run["val_ds"], return_dict=True, verbose=0)
    with open(os.path.join(output_dir, "history.csv"), newline="") as f:
        epochs_completed = len(list(csv.DictReader(f)))
    metrics = {
        "val_accuracy": float(results["accuracy"]),
        "val_top5_accuracy": float(results["top5_accuracy"]),
        "val_loss": float(results["loss"]),
        "epochs_completed": epochs_completed,
        "epochs": config["epochs"],
        "train_images_per_second": throughput.images_per_second(),
        "wall_seconds": round(time.time() - start, 3),
        "num_replicas": run["num_replicas"],
        "global_batch": global_batch,
        "dtype_policy": run["policy"],
        "dataset": info.name,
        "classes": info.num_classes,
        # Files skipped by the folder scans (a folder scanned for both
        # splits counts once).
        "skipped_files": sum({i.folder: i.skipped_files for i in (
            info, run["val_info"])}.values()),
        "terminated_on_nan": nan,
        "backend": run["backend"],
    }
    if run["chief"]:
        atomic_save_model(model, os.path.join(output_dir, "final.keras"))
    atomic_write_text(run["metrics_path"], json.dumps(metrics, indent=2))
    return metrics


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *args):
        return False

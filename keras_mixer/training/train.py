"""Training and fine-tuning with `model.fit` under a tf.distribute strategy
(TensorFlow backend) or `keras.distribution.DataParallel` (JAX backend).

`train(config, output_dir)` checks everything it can first (dataset, config,
model, image size against the patch, batch against the replicas), then
trains; `records.py` keeps the run folder (backups, progress, history, best
and final models, metrics, labels.txt), so that rerunning the same command
resumes after the last committed epoch.

Raising `epochs` on a run (finished or not) continues it from the last
completed epoch; the learning-rate schedule is then the one of the new length
(warmup and decay over `epochs * steps_per_epoch` steps, evaluated at the
optimizer's step count), so the remaining steps follow what a run planned for
the new `epochs` would use there. Any other change of config is refused, and
so is an `epochs` below the epochs already completed.

In a multi-worker run only the chief writes best.keras and final.keras; each
worker keeps its own records, the others under
`output_dir/workers/<task id>/`.
"""

import contextlib
import json
import logging
import math
import os
import time

import numpy as np
import tensorflow as tf

import keras

from keras_mixer import atomic
from keras_mixer import checks
from keras_mixer import labels as labels_lib
from keras_mixer import models
from keras_mixer.models.mixer import MLPMixer
from keras_mixer.training import data
from keras_mixer.training import distribute
from keras_mixer.training import recipes
from keras_mixer.training import records

logger = logging.getLogger("keras_mixer")

# The demo's model: a small Mixer for 32x32 digits (64 patches of 4x4).
DEMO_MODEL = dict(patch_size=4, hidden_dim=128, num_blocks=4,
                  tokens_mlp_dim=64, channels_mlp_dim=512)


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
    if config["dataset"] is None:
        raise ValueError(
            f"Config {config['config']!r} needs --dataset: its data is not in "
            "tensorflow-datasets; give folder:PATH (one sub-folder per class)."
        )
    data.check_dataset_name(config["dataset"], config["data_dir"])
    rule = size_rule_of(config["model"])
    if rule:
        rule.check("--image_size", config["image_size"], f"{config['model']}'s")
    if config["teacher"] and not os.path.exists(config["teacher"]):
        raise ValueError(
            f"Teacher model {config['teacher']} does not exist; give a .keras "
            "file of a trained classifier."
        )


# ----------------------------------------------------------------------------
# Building.


def set_precision(precision):
    """Sets the global dtype policy; returns the policy name."""
    if precision == "auto":
        backend = keras.backend.backend()
        precision = "float32"
        if backend == "tensorflow":
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
    size = config["image_size"]
    kwargs = dict(
        input_shape=(size, size, 3), classes=classes,
        dropout_rate=config["dropout_rate"],
        drop_path_rate=config["drop_path_rate"],
    )
    if config["model"] == "demo":
        return MLPMixer(**DEMO_MODEL, **kwargs, name="mixer_demo")
    model = models.MODELS[config["model"]](
        weights=config["weights"], **kwargs
    )
    if config["weights"]:
        head = model.get_layer("head")
        for variable in head.weights:
            variable.assign(keras.ops.zeros(variable.shape, variable.dtype))
        logger.info("Fine-tuning from %s with a fresh zero head for %d "
                    "classes.", config["weights"], classes)
    return model


def fit_batch(config, info, global_batch, num_replicas=1):
    """The global batch to train `info`'s examples with.

    `global_batch` when the data holds it. Otherwise the largest power of two
    (times the replicas) that fits: used in place of the config's own batch
    size, with a log line; a batch size the user chose is refused with it.
    """
    examples = info.num_examples
    if not examples or global_batch <= examples:
        return global_batch
    per_replica = examples // num_replicas
    if per_replica < 1:
        raise ValueError(
            f"{info.name} has {examples} training examples, fewer than the "
            f"{num_replicas} replicas: add images or use fewer devices."
        )
    fitted = 2 ** int(math.log2(per_replica)) * num_replicas
    if global_batch != recipes.default_batch_size(config.get("config",
                                                             "default")):
        raise ValueError(
            f"--batch_size {global_batch} exceeds the {examples} training "
            f"examples of {info.name}; use --batch_size {fitted} (or less)."
        )
    logger.info("Batch %d (config %r) exceeds the %d training examples of %s:"
                " training with batch %d (--batch_size sets another).",
                global_batch, config["config"], examples, info.name, fitted)
    return fitted


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


def _strategy_name(tf_strategy, distribution):
    """How the start line names the strategy: MirroredStrategy, ..."""
    if distribution is not None:
        return type(distribution).__name__
    name = type(tf_strategy).__name__ if tf_strategy is not None else ""
    return "one device" if name in ("", "_DefaultDistributionStrategy") else name


class InputError(ValueError):
    """A config, dataset or flag that cannot train, found before training."""


def _prepare(config, output_dir, strategy, tpu, devices):
    """Everything up to `fit`: checks, strategy, datasets, model, optimizer.

    Returns a dict of the pieces, or `{"done": metrics}` when `output_dir`
    holds this run finished.
    """
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
    records.check_resume(output_dir, config)
    metrics_path = os.path.join(output_dir, "metrics.json")
    done = records.finished_metrics(output_dir, config, chief)
    if done is not None:
        logger.warning("%s already holds the finished run; nothing to do "
                       "(raise --epochs to continue it, or use a new "
                       "--output_dir to train again).", output_dir)
        return {"done": done}

    policy = set_precision(config["precision"])

    def datasets(batch):
        """(train_ds, info, val_ds, val_info) at global batch `batch`."""
        train_ds, info = data.build_dataset(
            config["dataset"], "train", image_size=config["image_size"],
            batch_size=batch, training=True, data_dir=config["data_dir"],
            randaugment=config["randaugment"], mixup=config["mixup"],
            cutmix=config["cutmix"], crop_area=tuple(config["crop_area"]),
            seed=config["seed"], repeat=True,
        )
        val_ds, val_info = data.build_dataset(
            config["dataset"], config["eval_split"],
            image_size=config["image_size"], batch_size=batch,
            training=False, data_dir=config["data_dir"],
            eval_crop=config["eval_crop"],
        )
        return train_ds, info, val_ds, val_info

    train_ds, info, val_ds, val_info = datasets(global_batch)
    fitted = fit_batch(config, info, global_batch, num_replicas)
    if fitted != global_batch:
        global_batch = fitted
        train_ds, info, val_ds, val_info = datasets(global_batch)
    # Keras then knows where validation ends (no "ran out of data" warning).
    val_ds = data.with_known_length(val_ds)
    steps_per_epoch = _steps(info, config, global_batch)
    labels_text = (labels_lib.format_labels(info.class_names)
                   if info.class_names else None)
    keras.utils.set_random_seed(config["seed"])

    scope = (tf_strategy.scope() if tf_strategy is not None
             else contextlib.nullcontext())
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
    for folder in (output_dir, os.path.join(output_dir, records.BACKUP)):
        atomic.remove_temporaries(folder)  # left by a kill mid-write
    atomic.write_text(os.path.join(output_dir, "config.json"),
                      json.dumps(config, indent=2, sort_keys=True))
    return dict(
        backend=backend, chief=chief, output_dir=output_dir,
        metrics_path=metrics_path, num_replicas=num_replicas,
        global_batch=global_batch, policy=policy, train_ds=train_ds,
        val_ds=val_ds, info=info, val_info=val_info,
        steps_per_epoch=steps_per_epoch, model=model, trainee=trainee,
        labels_text=labels_text, strategy_name=_strategy_name(
            tf_strategy, distribution),
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
    if run["chief"] and run["labels_text"]:  # export, predict, evaluate read it
        atomic.write_text(os.path.join(output_dir, labels_lib.LABELS_FILE),
                          run["labels_text"])

    throughput = records.Throughput(global_batch)
    record = records.RunRecord(output_dir, config, throughput)
    callbacks = [throughput, record, keras.callbacks.TerminateOnNaN()]
    if config["ema"]:
        # Validate and save best.keras with the averaged weights; the backup
        # (before the swap) keeps the trained weights in the model's place.
        callbacks.insert(2, keras.callbacks.SwapEMAWeights(swap_on_epoch=True))
    if run["chief"]:
        callbacks.append(records.BestModel(os.path.join(output_dir, "best.keras"),
                                   model, record))
    if run["backend"] == "tensorflow":
        callbacks.append(keras.callbacks.TensorBoard(
            os.path.join(output_dir, "logs"), write_graph=False))
    callbacks += list(extra_callbacks)

    logger.info(
        "Training %s on %s (%d classes, %d training examples) with %s: %d "
        "replica(s), global batch %d, %d steps/epoch, policy %s.",
        config["model"], config["dataset"], info.num_classes,
        info.num_examples or 0, run["strategy_name"], run["num_replicas"],
        global_batch, run["steps_per_epoch"], run["policy"],
    )
    logger.info("%s.", recipes.learning_rate_rule(config, global_batch))
    trainee.fit(
        run["train_ds"], validation_data=run["val_ds"],
        epochs=config["epochs"], steps_per_epoch=run["steps_per_epoch"],
        callbacks=callbacks, verbose=verbose,
        shuffle=False,  # The pipeline shuffles.
    )
    records.kill_point("after_fit")
    losses = [row.get("loss") for row in record.rows]
    nan = any(v is not None and not math.isfinite(v) for v in losses)
    results = trainee.evaluate(run["val_ds"], return_dict=True, verbose=0)
    speed = throughput.images_per_second()
    if speed is None:  # no epoch ran in this process: the recorded ones
        recorded = [r["train_images_per_second"]
                    for r in (record.rows[1:] or record.rows)
                    if "train_images_per_second" in r]
        speed = float(np.mean(recorded)) if recorded else None
    metrics = {
        "val_accuracy": float(results["accuracy"]),
        "val_top5_accuracy": float(results["top5_accuracy"]),
        "val_loss": float(results["loss"]),
        "epochs_completed": record.epochs_completed,
        "epochs": config["epochs"],
        "train_images_per_second": speed,
        "wall_seconds": round(time.time() - start, 3),
        "num_replicas": run["num_replicas"],
        "global_batch": global_batch,
        "dtype_policy": run["policy"],
        "dataset": info.name,
        "classes": info.num_classes,
        # Files skipped by the folder scans and decoding (a folder read for
        # both splits counts once).
        "skipped_files": len(info.skipped | run["val_info"].skipped),
        "terminated_on_nan": nan,
        "backend": run["backend"],
    }
    if run["chief"]:
        atomic.save_model(model, os.path.join(output_dir, "final.keras"))
    atomic.write_text(run["metrics_path"], json.dumps(metrics, indent=2))
    record.finish(terminated_on_nan=nan)
    return metrics

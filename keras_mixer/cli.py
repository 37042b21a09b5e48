"""The `keras-mixer` command line: `keras-mixer COMMAND [--flag=value ...]`.

`keras-mixer --help` lists the commands (the `COMMANDS` table at the end of
this file), one line each; `keras-mixer COMMAND --help` (or `-h`) prints that
command's flags with their defaults and an example. A mistyped command or flag
is refused with the nearest valid name, and a flag that another command takes
is refused rather than ignored.
"""

import difflib
import json
import logging
import os
import re
import sys
import textwrap
import typing

from absl import app
from absl import flags

from keras_mixer import tf_logs

FLAGS = flags.FLAGS

flags.DEFINE_string(
    "model", None, "Model name, e.g. MixerB16, MixerS32, ResMLP12."
)
flags.DEFINE_string(
    "weights", None, "Weights name (see `keras-mixer weights`) or file path."
)
flags.DEFINE_string("output", None, "Output file: .keras or .weights.h5 "
                    "(convert), the export folder (export), a .png (visualize).")
flags.DEFINE_integer(
    "image_size", None, "Input side in pixels; default: the model's (224)."
)
flags.DEFINE_integer("channels", 3, "Input channels.")
flags.DEFINE_integer(
    "classes", None, "Classes of the head; default: the weights' (or 1000)."
)
flags.DEFINE_bool(
    "include_top", True, "Build with the classification head."
)

# train / evaluate / demo. A flag left unset keeps the config's value.
flags.DEFINE_string(
    "config", None, "Named recipe (keras_mixer.recipes.CONFIGS), e.g. "
    "mixer_b16_imagenet, mixer_l16_imagenet21k, resmlp_s12_imagenet, finetune; "
    "default: finetune with --weights, else default."
)
flags.DEFINE_string(
    "dataset", None, "digits (bundled), a tensorflow-datasets name (cifar10, "
    "imagenet2012, ...) or folder:PATH (one sub-folder per class)."
)
flags.DEFINE_string("data_dir", None, "tensorflow-datasets data_dir, where "
                    "`tfds build NAME --data_dir DIR` prepared the dataset "
                    "(default: ~/tensorflow_datasets).")
flags.DEFINE_string("output_dir", None, "Run folder: backups, history.csv, "
                    "best.keras, final.keras, metrics.json, logs/.")
flags.DEFINE_integer("epochs", None, "Epochs.")
flags.DEFINE_integer("batch_size", None, "Global batch size (per-replica "
                     "batch x replicas).")
flags.DEFINE_integer("steps_per_epoch", None, "Steps per epoch; default: "
                     "training examples // global batch.")
flags.DEFINE_float("learning_rate", None, "Peak learning rate at "
                   "--base_batch; the run uses learning_rate x batch_size x "
                   "grad_accum_steps / base_batch (printed at start).")
flags.DEFINE_integer("base_batch", None, "The batch size --learning_rate is "
                     "quoted at; set it to --batch_size to use "
                     "--learning_rate as is.")
flags.DEFINE_enum("optimizer", None, ["adamw", "lamb", "sgd"], "Optimizer.")
flags.DEFINE_float("weight_decay", None, "Decoupled weight decay (kernels).")
flags.DEFINE_integer("warmup_steps", None, "Linear warmup steps.")
flags.DEFINE_enum("decay", None, ["linear", "cosine", "constant"],
                  "Decay after warmup.")
flags.DEFINE_float("label_smoothing", None, "Label smoothing.")
flags.DEFINE_float("dropout_rate", None, "Dropout in the MLPs.")
flags.DEFINE_float("drop_path_rate", None, "Stochastic depth (last block).")
flags.DEFINE_string("randaugment", None, "RandAugment 'num_ops,magnitude' "
                    "(magnitude 0..20), or 'none'.")
flags.DEFINE_float("mixup", None, "MixUp alpha (0: off).")
flags.DEFINE_float("cutmix", None, "CutMix alpha (0: off).")
flags.DEFINE_float("ema", None, "EMA momentum of the weights (0: off).")
flags.DEFINE_integer("grad_accum_steps", None, "Gradient accumulation steps.")
flags.DEFINE_string("precision", None, "train: float32, bfloat16 (mixed; "
                    "TPU, CPU), float16 (mixed with loss scaling; GPU), or "
                    "auto. benchmark: a list, e.g. float32,bfloat16.")
flags.DEFINE_string("teacher", None, "Teacher .keras file for hard "
                    "distillation (DeiT / ResMLP recipe).")
flags.DEFINE_enum("eval_crop", None, ["resmall_crop", "resize_crop"],
                  "Evaluation crop.")
flags.DEFINE_integer("seed", None, "Random seed.")
flags.DEFINE_multi_string("override", [], "Any other config key: "
                          "--override key=value (Python literal).")
flags.DEFINE_enum("strategy", "auto", ["auto", "tpu", "mirrored",
                                       "multi_worker", "one_device"],
                  "tf.distribute strategy (TensorFlow backend).")
flags.DEFINE_string("tpu", None, "TPU name or grpc:// address.")
flags.DEFINE_integer("cpu_devices", None, "Split the CPU into this many "
                     "logical devices (to run MirroredStrategy on a CPU).")
flags.DEFINE_string("split", None, "evaluate: split (default: the config's "
                    "eval_split, validation).")
flags.DEFINE_string("fewshot", None, "evaluate: few-shot linear evaluation "
                    "with these shots per class, e.g. 1,5,10,25.")
flags.DEFINE_integer("version", 1, "export: SavedModel version folder.")
flags.DEFINE_string("tflite", None, "export: TFLite files to write, e.g. "
                    "none,float16,dynamic_int8,int8 (int8 calibrates on "
                    "--dataset). benchmark: batch-1 latency of these "
                    "quantizations against none, e.g. dynamic_int8.")
flags.DEFINE_bool("onnx", False, "export: also write <output>/<name>.onnx "
                  "(tf2onnx, checked with onnxruntime).")
flags.DEFINE_integer("top_k", None, "Classes in the top-k outputs; default: "
                     "min(5, classes).")
flags.DEFINE_string("labels", None, "Class names, one per line; default: the "
                    "labels.txt beside the model file (train writes it), else "
                    "the ImageNet names for 1000/21843/11221 classes.")
flags.DEFINE_bool("overwrite", False, "export: replace an existing version.")
flags.DEFINE_string("model_dir", None, "A SavedModel version directory, a "
                    ".tflite or a .keras file.")
flags.DEFINE_enum("figure", "auto", ["auto", "token_mixing", "stem",
                  "cross_patch", "sparsity"], "visualize: the figure; auto is "
                  "token_mixing for Mixer, cross_patch for ResMLP.")
flags.DEFINE_integer("block", 0, "visualize: the block of token_mixing and "
                     "cross_patch.")
flags.DEFINE_string("mode", "infer", "benchmark: infer, train or both "
                    "(infer,train).")
flags.DEFINE_integer("steps", 10, "benchmark: timed batches.")
flags.DEFINE_integer("warmup", 2, "benchmark: untimed batches first.")
flags.DEFINE_bool("timm", True, "benchmark: also measure timm's model when "
                  "torch and timm import.")
flags.DEFINE_enum("jit_compile", "auto", ["auto", "true", "false"],
                  "benchmark: XLA; auto keeps Keras's default.")
flags.DEFINE_enum("inputs", "dataset", ["dataset", "numpy"],
                  "benchmark: feed predict/fit a tf.data.Dataset of the "
                  "batches, or the NumPy arrays.")
flags.DEFINE_integer("verbose", None, "Keras progress: 1 bar, 2 one line "
                     "per epoch (default: bar on a terminal).")


def model_constructor(name):
    """The constructor of a named variant, or a UsageError listing them."""
    from keras_mixer import models

    try:
        return models.get(name)
    except ValueError as error:
        raise app.UsageError(str(error)) from None


def build_from_flags(weights=None):
    import keras_mixer

    name = FLAGS.model or "MixerB16"
    constructor = model_constructor(name)
    classes = FLAGS.classes
    if classes is None:
        entry = keras_mixer.WEIGHTS.get(name, {}).get(weights or "")
        classes = entry["classes"] if entry else 1000
        if entry is None and weights and not weights.endswith(".weights.h5"):
            from keras_mixer import checkpoints

            try:  # a local checkpoint: keep its head
                classes = checkpoints.read_checkpoint(weights).num_classes or 1000
            except (ValueError, OSError) as error:
                raise app.UsageError(str(error)) from None
    kwargs = dict(classes=classes, include_top=FLAGS.include_top, weights=weights)
    if FLAGS.image_size is not None:
        kwargs["input_shape"] = (
            FLAGS.image_size,
            FLAGS.image_size,
            FLAGS.channels,
        )
    elif FLAGS.channels != 3:
        kwargs["input_shape"] = (224, 224, FLAGS.channels)
    try:
        return constructor(**kwargs)
    except ValueError as error:
        raise app.UsageError(str(error)) from None


def summary(argv):
    """Prints the layers, parameter count and GFLOPs per image."""
    import keras_mixer

    model = build_from_flags()
    model.summary(line_length=100)
    height, width, channels = model.input_shape[1:]
    print(f"model: {FLAGS.model or 'MixerB16'} ({model.name})")
    print(f"input: {height}x{width}x{channels}")
    print(f"parameters: {model.count_params():,}")
    gflops = keras_mixer.count_flops(model) / 1e9
    print(f"GFLOPs per image (2 x multiply-accumulates): {gflops:.2f}")
    return 0


def weights(argv):
    """Prints the weights table."""
    import keras_mixer

    if FLAGS.model is not None:
        model_constructor(FLAGS.model)
    try:
        keras_mixer.list_weights(FLAGS.model)
    except ValueError as error:
        raise app.UsageError(str(error)) from None
    return 0


def convert(argv):
    """Builds --model with --weights and saves it to --output."""
    if not FLAGS.model or not FLAGS.weights or not FLAGS.output:
        raise app.UsageError(
            "convert needs --model, --weights and --output, e.g. keras-mixer "
            "convert --model MixerB16 --weights imagenet1k --output "
            "mixer_b16.keras"
        )
    if not FLAGS.output.endswith((".keras", ".weights.h5")):
        raise app.UsageError(
            f"--output {FLAGS.output!r} must end in .keras (whole model) or "
            ".weights.h5 (weights only)."
        )
    from keras_mixer import atomic

    model = build_from_flags(weights=FLAGS.weights)
    # Written beside --output, read back and compared, then renamed.
    atomic.save_model(model, FLAGS.output, check=True)
    print(f"wrote {FLAGS.output}: {model.name}, {model.count_params():,} parameters")
    return 0


# Flags that map one-to-one onto config keys.
CONFIG_FLAGS = (
    "model", "weights", "dataset", "data_dir", "image_size", "epochs",
    "batch_size", "steps_per_epoch", "learning_rate", "base_batch", "optimizer",
    "weight_decay", "warmup_steps", "decay", "label_smoothing", "dropout_rate",
    "drop_path_rate", "mixup", "cutmix", "ema", "grad_accum_steps",
    "precision", "teacher", "eval_crop", "seed",
)


def config_from_flags(default="default"):
    """The named config with every set flag and --override applied."""
    import ast

    from keras_mixer.training import recipes

    overrides = {k: getattr(FLAGS, k) for k in CONFIG_FLAGS
                 if getattr(FLAGS, k) is not None}
    if FLAGS.randaugment is not None:
        value = FLAGS.randaugment.strip().lower()
        if value in ("none", "0", ""):
            overrides["randaugment"] = None
        else:
            try:
                num_ops, magnitude = (float(v) for v in value.split(","))
            except ValueError:
                raise app.UsageError(
                    f"--randaugment {FLAGS.randaugment!r}: give "
                    "'num_ops,magnitude', e.g. 2,15, or none."
                ) from None
            overrides["randaugment"] = (int(num_ops), magnitude)
    for item in FLAGS.override:
        key, sep, value = item.partition("=")
        if not sep:
            raise app.UsageError(
                f"--override {item!r}: use key=value, e.g. crop_area=(0.3,1.0)."
            )
        try:
            overrides[key.strip()] = ast.literal_eval(value.strip())
        except (ValueError, SyntaxError):
            overrides[key.strip()] = value.strip()
    name = FLAGS.config or ("finetune" if FLAGS.weights else default)
    try:
        return recipes.get_config(name, **overrides)
    except ValueError as error:
        raise app.UsageError(str(error)) from None


def _setup_devices():
    if FLAGS.cpu_devices:
        from keras_mixer.training import distribute

        distribute.cpu_devices(FLAGS.cpu_devices)


def _verbose():
    if FLAGS.verbose is not None:
        return FLAGS.verbose
    return 1 if sys.stdout.isatty() else 2


def train(argv):
    """Trains --config / flags into --output_dir (resumes if it holds a run)."""
    from keras_mixer.training import train as train_lib

    if not FLAGS.output_dir:
        raise app.UsageError(
            "train needs --output_dir (where backups, history.csv, models and "
            "metrics.json go; rerun the same command to resume)."
        )
    config = config_from_flags()
    _setup_devices()
    try:
        metrics = train_lib.train(
            config, FLAGS.output_dir, strategy=FLAGS.strategy, tpu=FLAGS.tpu,
            verbose=_verbose(),
        )
    except train_lib.InputError as error:
        raise app.UsageError(str(error)) from None
    print(json.dumps(metrics, indent=2))
    return 0


def _load_keras_file(path):
    """A `.keras` model file, loaded with safe_mode on."""
    import keras

    from keras_mixer.checkpoints import assign

    if not os.path.exists(path):
        raise app.UsageError(f"{path}: no such file.")
    model = keras.saving.load_model(path)
    try:
        assign.check_finite(model, path)
    except ValueError as error:
        raise app.UsageError(str(error)) from None
    return model


def evaluate(argv):
    """Top-1/top-5 (or few-shot) of --model on --dataset's --split."""
    from keras_mixer.training import data
    from keras_mixer.training import evaluation
    from keras_mixer.training import train as train_lib

    if not FLAGS.model:
        raise app.UsageError(
            "evaluate needs --model: a .keras file (e.g. a run's final.keras) "
            "or a model name with --weights."
        )
    config = config_from_flags()
    try:
        train_lib.check_inputs(config)
    except ValueError as error:
        raise app.UsageError(str(error)) from None
    shots = None
    if FLAGS.fewshot:
        try:
            shots = [int(k) for k in FLAGS.fewshot.split(",")]
        except ValueError:
            raise app.UsageError(
                f"--fewshot {FLAGS.fewshot!r}: give shots per class, e.g. "
                "1,5,10,25."
            ) from None
    if config["model"].endswith(".keras"):
        model = _load_keras_file(config["model"])
    else:
        import keras_mixer

        size = config["image_size"]
        model = keras_mixer.MODELS[config["model"]](
            weights=config["weights"], input_shape=(size, size, 3),
            **({"classes": FLAGS.classes} if FLAGS.classes else {}),
        )
    size = model.input_shape[1]
    split = FLAGS.split or config["eval_split"]
    build = dict(image_size=size, batch_size=config["batch_size"],
                 training=False, data_dir=config["data_dir"],
                 eval_crop=config["eval_crop"])
    test_ds, info = data.build_dataset(config["dataset"], split, **build)
    if shots:
        train_ds, _ = data.build_dataset(config["dataset"], "train", **build)
        result = evaluation.fewshot(model, train_ds, test_ds, shots,
                                    num_classes=info.num_classes)
        report = {"dataset": info.name, "split": split,
                  "fewshot_accuracy": {str(k): v for k, v in result.items()}}
    else:
        if model.output_shape[-1] != info.num_classes:
            raise app.UsageError(
                f"The model has {model.output_shape[-1]} classes but "
                f"{info.name} has {info.num_classes}; evaluate a model "
                "trained on this dataset, or use --fewshot."
            )
        _check_class_names(FLAGS.labels or _labels_beside_model(), info)
        result = evaluation.evaluate(model, test_ds)
        report = {"dataset": info.name, "split": split, **result}
    print(json.dumps(report, indent=2))
    if FLAGS.output:
        from keras_mixer import atomic

        atomic.write_text(FLAGS.output, json.dumps(report, indent=2))
    return 0


def _check_class_names(labels_path, info):
    """Refuses a dataset whose classes (or their order) differ from the
    ones the model was trained on (its labels file)."""
    from keras_mixer import labels as labels_lib

    if not labels_path or not info.class_names:
        return
    trained = labels_lib.read_labels(labels_path)
    if [str(n) for n in info.class_names] != trained:
        raise app.UsageError(
            f"The model was trained on the classes of {labels_path} "
            f"({', '.join(trained[:5])}{', ...' if len(trained) > 5 else ''})"
            f" but {info.name} has {', '.join(map(str, info.class_names[:5]))}"
            f"{', ...' if len(info.class_names) > 5 else ''}: evaluate on a "
            "dataset with the same classes in the same order, or give "
            "--labels."
        )


def demo(argv):
    """Trains a small Mixer on the bundled digits, exports it, then classifies
    held-out digits through the SavedModel and the TFLite file."""
    from keras_mixer.training import recipes
    from keras_mixer.training import train as train_lib

    output_dir = FLAGS.output_dir or "mixer_demo"
    overrides = {}
    if FLAGS.epochs is not None:
        overrides["epochs"] = FLAGS.epochs
    try:
        config = recipes.get_config("demo", **overrides)
    except ValueError as error:
        raise app.UsageError(str(error)) from None
    print(f"keras-mixer demo: a {train_lib.DEMO_MODEL['num_blocks']}-block "
          f"Mixer on the 1,797 bundled 8x8 digits, upsampled to 32x32; "
          f"{config['epochs']} epochs into {output_dir}/ (rerun to resume).")
    try:
        metrics = train_lib.train(config, output_dir, strategy="auto",
                                  verbose=_verbose())
    except train_lib.InputError as error:
        raise app.UsageError(str(error)) from None
    show_held_out_digits(output_dir)
    target = 0.95
    verdict = "reached" if metrics["val_accuracy"] >= target else "MISSED"
    print(
        f"validation accuracy {metrics['val_accuracy']:.4f} (top-5 "
        f"{metrics['val_top5_accuracy']:.4f}) over 360 held-out digits: "
        f"{verdict} the {target:.0%} target; {metrics['epochs_completed']} "
        f"epochs, {metrics['wall_seconds']:.0f} s, "
        f"{metrics['train_images_per_second']:.0f} training images/s."
    )
    print(f"records: {output_dir}/metrics.json, history.csv, final.keras, "
          "best.keras, logs/, export/")
    return 0 if metrics["val_accuracy"] >= target else 1


def show_held_out_digits(output_dir, count=8):
    """Reloads the saved model (safe_mode on), exports it as a TF Serving
    SavedModel and a TFLite file, and classifies the first `count`
    validation digits through each export, printing them as ASCII art."""
    import keras
    import numpy as np
    import tensorflow as tf

    from keras_mixer.training import data
    from keras_mixer import export as export_lib

    model_path = os.path.join(output_dir, "final.keras")
    model = keras.saving.load_model(model_path)
    export_dir = os.path.join(output_dir, "export")
    saved = export_lib.save_for_serving(
        model, os.path.join(export_dir, "mixer_demo"), version=1,
        labels=[str(i) for i in range(10)], eval_crop="resize_crop",
        overwrite=True,
    )
    tflite = export_lib.to_tflite(
        model, os.path.join(export_dir, "mixer_demo_dynamic_int8.tflite"),
        quantization="dynamic_int8",
    )
    print(f"exported: {saved} (TF Serving SavedModel) and {tflite['path']} "
          f"({tflite['size_bytes'] / 1e6:.1f} MB, builtin ops only, batch-1 "
          f"{tflite['latency_ms_batch1']:.2f} ms)")
    ds, _ = data.build_dataset("digits", "validation",
                               image_size=model.input_shape[1],
                               batch_size=count, training=False,
                               eval_crop="resize_crop", cache=False)
    images, labels = next(iter(ds))
    served = tf.saved_model.load(saved).signatures["serving_default"]
    through_saved = served(images=images)["top_k_labels"][:, 0].numpy()
    through_tflite = export_lib.run_tflite(tflite["path"], images.numpy())
    raw, _ = data.load_digits()
    index = data.digits_split("validation")[:count]
    shades = " .:-=+*#%@"
    print(f"{count} held-out digits, classified by the exports:")
    rows = [""] * 8
    for i in range(count):
        for r in range(8):
            rows[r] += "".join(shades[min(9, v * 10 // 17)] * 2
                               for v in raw[index[i], r]) + "  "
    print("\n".join(rows))
    true = np.argmax(labels, axis=-1)
    lite = np.argmax(through_tflite, axis=-1)
    saved_pred = [int(p.decode()) for p in through_saved]

    def row(name, values):
        return "".join(
            f"{name:<10} {v}{' ok' if v == t else ' X':<6}"
            for v, t in zip(values, true))

    print("".join(f"{'label':<10} {t}{'':<6}" for t in true))
    print(row("SavedModel", saved_pred))
    print(row("TFLite", lite))


def _model_from_flags():
    """--model as a .keras file, --weights as a .keras file, or a named model
    built with --weights at --image_size (export, visualize)."""
    for path in (FLAGS.model, FLAGS.weights):
        if path and path.endswith(".keras"):
            return _load_keras_file(path)
    if not FLAGS.model:
        raise app.UsageError(
            "export and visualize need --model (a name with --weights, or a "
            ".keras file)."
        )
    return build_from_flags(weights=FLAGS.weights)


def _labels_beside_model():
    """The labels.txt beside a .keras --model (or --weights), or None."""
    from keras_mixer import labels as labels_lib

    for path in (FLAGS.model, FLAGS.weights):
        if path and path.endswith(".keras"):
            return labels_lib.labels_beside(path)
    return None


def _tflite_modes(export_lib):
    """--tflite as a list of quantizations (empty when unset)."""
    if not FLAGS.tflite:
        return []
    quantizations = [q.strip() for q in FLAGS.tflite.split(",") if q.strip()]
    unknown = [q for q in quantizations if q not in export_lib.QUANTIZATIONS]
    if unknown:
        raise app.UsageError(
            f"--tflite {unknown}: use any of "
            f"{','.join(export_lib.QUANTIZATIONS)}."
        )
    return quantizations


def export(argv):
    """Writes a TF Serving SavedModel and optional TFLite files."""
    from keras_mixer import export as export_lib

    if not FLAGS.output:
        raise app.UsageError(
            "export needs --output, the model's base path, e.g. "
            "export/models/mixer_b16 (the SavedModel goes to <output>/<version>)."
        )
    quantizations = _tflite_modes(export_lib)
    if quantizations:
        if "int8" in quantizations and not FLAGS.dataset:
            raise app.UsageError(
                "--tflite int8 calibrates on real images: give --dataset "
                "(e.g. digits, folder:PATH or a tfds name)."
            )
    version_dir = os.path.join(FLAGS.output, str(FLAGS.version))
    if os.path.exists(version_dir) and not FLAGS.overwrite:
        raise app.UsageError(
            f"{version_dir} exists: give --overwrite or another --version."
        )
    model = _model_from_flags()
    classes = model.output_shape[-1]
    labels = FLAGS.labels or _labels_beside_model()
    try:
        names = export_lib.resolve_labels(labels, classes)
        path = export_lib.save_for_serving(
            model, FLAGS.output, version=FLAGS.version,
            top_k=FLAGS.top_k or min(5, classes), labels=names,
            overwrite=FLAGS.overwrite,
        )
    except (ValueError, OSError) as error:
        raise app.UsageError(str(error)) from None
    print(f"SavedModel: {path} (signatures: "
          f"{', '.join(export_lib.SIGNATURES)})")
    if names:  # for the TFLite files, which do not hold them
        from keras_mixer import labels as labels_lib
        from keras_mixer import atomic

        labels_path = os.path.join(FLAGS.output, labels_lib.LABELS_FILE)
        atomic.write_text(labels_path, labels_lib.format_labels(names))
        print(f"labels: {labels_path} ({len(names)} classes)")
    reports = []
    representative = None
    if "int8" in quantizations:
        import numpy as np

        from keras_mixer.training import data

        size = model.input_shape[1]
        ds, _ = data.build_dataset(FLAGS.dataset, "train", image_size=size,
                                   batch_size=32, training=False,
                                   data_dir=FLAGS.data_dir)
        representative = np.concatenate([b[0] for b in ds.take(8)])
    base = os.path.basename(os.path.normpath(FLAGS.output))
    for quantization in quantizations:
        report = export_lib.to_tflite(
            model, os.path.join(FLAGS.output, f"{base}_{quantization}.tflite"),
            quantization=quantization, representative_data=representative,
        )
        reports.append(report)
        print(f"TFLite {quantization:>12}: {report['path']} "
              f"{report['size_bytes'] / 1e6:.1f} MB, batch-1 "
              f"{report['latency_ms_batch1']:.2f} ms, max relative error "
              f"{report['max_relative_error']:.2e}, top-1 agreement "
              f"{report['top1_agreement']:.3f}, builtin ops only")
    if FLAGS.onnx:
        report = export_lib.to_onnx(model, os.path.join(FLAGS.output,
                                                        f"{base}.onnx"))
        print(f"ONNX: {report['path']} {report['size_bytes'] / 1e6:.1f} MB, "
              f"max relative error vs Keras (onnxruntime) "
              f"{report['max_relative_error']:.2e}")
    return 0


def _error_line(error):
    """The message of an exception on one line, without TensorFlow's node
    and op annotations."""
    text = getattr(error, "message", None) or str(error)
    text = re.sub(r"\{\{[^}]*\}\}", " ", text)
    lines = [line.strip() for line in text.splitlines() if line.strip()
             and not line.strip().startswith(("[[", "Detected at node",
                                              "Graph execution error"))]
    line = lines[0] if lines else type(error).__name__
    return re.sub(r"\s*\[Op:\w+\].*$", "", line).strip()


def predict(argv):
    """Prints the top classes of each image file; a file that fails gets an
    error line and the exit status 1, the others their predictions."""
    import tensorflow as tf

    from keras_mixer import export as export_lib

    if not FLAGS.model_dir:
        raise app.UsageError(
            "predict needs --model_dir: a SavedModel directory, a .tflite "
            "or a .keras file, then the image files."
        )
    if not argv:
        raise app.UsageError("predict needs image files after the flags.")
    missing = [p for p in argv if not os.path.isfile(p)]
    if missing:
        raise app.UsageError(f"No such image file(s): {', '.join(missing)}.")
    if not os.path.exists(FLAGS.model_dir):
        raise app.UsageError(f"--model_dir {FLAGS.model_dir}: no such file "
                             "or directory.")
    try:
        predictor = export_lib.load_predictor(
            FLAGS.model_dir, labels=FLAGS.labels, top_k=FLAGS.top_k)
    except (ValueError, OSError) as error:
        raise app.UsageError(str(error)) from None
    failed = 0
    for path in argv:  # one at a time: a bad file fails alone
        try:
            top = predictor([path])[0]
        except (tf.errors.OpError, OSError, ValueError) as error:
            failed += 1
            sys.stdout.flush()
            print(f"{path}: error: {_error_line(error)}", file=sys.stderr)
            continue
        print(path)
        for rank, (label, score, index) in enumerate(top, 1):
            print(f"  {rank}. {label} ({index}): {score:.4f}")
    if failed:
        sys.stdout.flush()
        print(f"{failed} of {len(argv)} image file(s) failed.",
              file=sys.stderr)
        return 1
    return 0


def visualize(argv):
    """Draws one of keras_mixer.visualize's figures of --model to --output."""
    from keras_mixer import visualize as visualize_lib
    from keras_mixer.models import _tools

    if not FLAGS.output or not FLAGS.output.lower().endswith(".png"):
        raise app.UsageError(
            f"visualize needs --output ending in .png, got {FLAGS.output!r}."
        )
    model = _model_from_flags()
    figure = FLAGS.figure
    if figure == "auto":
        try:
            family = _tools.model_family(model)
        except ValueError as error:
            raise app.UsageError(str(error)) from None
        figure = "cross_patch" if family == "resmlp" else "token_mixing"
    function = visualize_lib.FIGURES[figure]
    kwargs = {"block": FLAGS.block} if figure in ("token_mixing",
                                                  "cross_patch") else {}
    directory = os.path.dirname(os.path.abspath(FLAGS.output))
    os.makedirs(directory, exist_ok=True)
    try:
        function(model, output=FLAGS.output, **kwargs)
    except ValueError as error:
        raise app.UsageError(str(error)) from None
    print(f"wrote {FLAGS.output} ({figure}, {model.name})")
    return 0


def benchmark(argv):
    """Images/s, GFLOP/s and the fraction of the matmul rate (and timm)."""
    import shlex

    from keras_mixer import benchmark as benchmark_lib

    name = FLAGS.model or "MixerB16"
    batch_size = FLAGS.batch_size or 32
    image_size = FLAGS.image_size or 224
    precisions = FLAGS.precision or "float32"
    try:  # every argument checked before any measurement
        benchmark_lib.check_arguments(name, batch_size, image_size, precisions,
                                      FLAGS.mode, FLAGS.steps, FLAGS.warmup)
    except ValueError as error:
        raise app.UsageError(str(error)) from None
    tflite = False
    if FLAGS.tflite:
        from keras_mixer import export as export_lib

        tflite = _tflite_modes(export_lib)
        tflite = ["none"] + [q for q in tflite if q != "none"]
    jit_compile = {"auto": None, "true": True, "false": False}[FLAGS.jit_compile]
    rows, machine = benchmark_lib.run(
        name, batch_size=batch_size, image_size=image_size,
        precisions=precisions, modes=FLAGS.mode, steps=FLAGS.steps,
        warmup=FLAGS.warmup, timm=FLAGS.timm, jit_compile=jit_compile,
        tflite=tflite, command=shlex.join(["keras-mixer"] + sys.argv[1:]),
        inputs=FLAGS.inputs,
    )
    print(benchmark_lib.format_markdown(rows, machine))
    return 0


class Command(typing.NamedTuple):
    """A `keras-mixer` command: its function, its line in `keras-mixer
    --help`, one example, its flags, and help texts that replace a flag's
    general one in `keras-mixer COMMAND --help`."""

    function: typing.Callable
    summary: str
    example: str
    flags: tuple
    help: dict = {}


# Flags of the commands that build a named model or load a .keras file.
MODEL_FLAGS = ("model", "weights", "image_size", "channels", "classes",
               "include_top")
# train and evaluate read the config with these flags applied.
TRAIN_FLAGS = ("config",) + CONFIG_FLAGS + ("randaugment", "override")

COMMANDS = {
    "summary": Command(
        summary, "layers, parameter count and GFLOPs per image of a model",
        "keras-mixer summary --model MixerB16 --image_size 224",
        ("model", "image_size", "channels", "classes", "include_top"),
        {"model": "Model name, e.g. MixerB16, MixerS32, ResMLP12 (default "
                  "MixerB16)."}),
    "weights": Command(
        weights, "the table of pretrained weights (all, or --model's)",
        "keras-mixer weights --model MixerB16", ("model",),
        {"model": "Only this model's weights, e.g. MixerB16."}),
    "convert": Command(
        convert, "a model with pretrained weights saved as .keras or "
                 ".weights.h5",
        "keras-mixer convert --model MixerB16 --weights imagenet1k "
        "--output mixer_b16.keras",
        MODEL_FLAGS + ("output",),
        {"output": "The file to write: .keras (whole model) or .weights.h5."}),
    "train": Command(
        train, "trains or fine-tunes a model; rerun to resume",
        "keras-mixer train --dataset folder:photos --model MixerS16 "
        "--image_size 64 --epochs 30 --output_dir runs/photos",
        TRAIN_FLAGS + ("output_dir", "strategy", "tpu", "cpu_devices",
                       "verbose"),
        {"precision": "float32, bfloat16 (mixed; TPU, CPU), float16 (mixed "
                      "with loss scaling; GPU), or auto.",
         "batch_size": "Global batch size (per-replica batch x replicas); "
                       "when not given, the config's is lowered to fit a "
                       "small dataset.",
         "image_size": "Input side in pixels, a multiple of the model's "
                       "patch size.",
         "weights": "Pretrained weights to fine-tune from (a name, see "
                    "`keras-mixer weights`, or a file); the head starts "
                    "fresh."}),
    "evaluate": Command(
        evaluate, "top-1/top-5 accuracy on a dataset, or few-shot accuracy",
        "keras-mixer evaluate --model runs/photos/final.keras "
        "--dataset folder:photos",
        TRAIN_FLAGS + ("classes", "split", "fewshot", "labels", "output"),
        {"model": "A .keras file (e.g. a run's final.keras), or a model name "
                  "with --weights.",
         "output": "Also write the report to this .json file.",
         "labels": "Class names the model was trained on, one per line "
                   "(default: the labels.txt beside --model); evaluate "
                   "refuses a dataset with other classes."}),
    "demo": Command(
        demo, "trains, exports and runs a small Mixer on bundled digits "
              "(offline)",
        "keras-mixer demo --output_dir mixer_demo",
        ("output_dir", "epochs", "verbose"),
        {"output_dir": "Run folder (default: mixer_demo).",
         "epochs": "Epochs (default: 15)."}),
    "export": Command(
        export, "a TF Serving SavedModel, TFLite and ONNX files of a model",
        "keras-mixer export --model runs/photos/final.keras --output "
        "export/models/photos --tflite none,dynamic_int8",
        MODEL_FLAGS + ("output", "version", "tflite", "onnx", "top_k",
                       "labels", "overwrite", "dataset", "data_dir"),
        {"model": "A .keras file (e.g. a run's final.keras), or a model name "
                  "with --weights.",
         "output": "The model's base path: the SavedModel goes to "
                   "<output>/<version>/, TFLite files and labels.txt to "
                   "<output>/.",
         "tflite": "TFLite files to write, e.g. none,float16,dynamic_int8,"
                   "int8 (int8 calibrates on --dataset).",
         "dataset": "Images to calibrate --tflite int8 on: digits, "
                    "folder:PATH or a tensorflow-datasets name."}),
    "predict": Command(
        predict, "top classes of image files (SavedModel, .tflite, .keras)",
        "keras-mixer predict --model_dir export/models/photos/1 cat.jpg "
        "dog.png",
        ("model_dir", "labels", "top_k"),
        {"labels": "Class names, one per line; default: the SavedModel's "
                   "own, else the labels.txt beside the .tflite or .keras "
                   "file."}),
    "visualize": Command(
        visualize, "a figure of a model's learned weights, as a .png",
        "keras-mixer visualize --model MixerB16 --weights imagenet21k "
        "--output units.png",
        MODEL_FLAGS + ("output", "figure", "block"),
        {"output": "The .png file to write."}),
    "benchmark": Command(
        benchmark, "images/s and GFLOP/s of a model (timm's side by side)",
        "keras-mixer benchmark --model MixerB16 --batch_size 32 "
        "--precision float32,bfloat16 --mode infer,train",
        ("model", "batch_size", "image_size", "precision", "mode", "steps",
         "warmup", "timm", "jit_compile", "tflite", "inputs"),
        {"model": "Model name (default MixerB16).",
         "batch_size": "Batch size (default 32).",
         "image_size": "Input side in pixels (default 224).",
         "precision": "A list, e.g. float32,bfloat16 (default float32).",
         "tflite": "Also batch-1 TFLite latency of these quantizations "
                   "against none, e.g. dynamic_int8."}),
}
# Commands that take positional arguments (image files).
POSITIONAL = ("predict",)
HELP = ("-h", "--help", "-help", "--helpfull", "--helpshort", "help")


def overview():
    """`keras-mixer --help`: the commands, one line each."""
    width = max(len(name) for name in COMMANDS)
    lines = ["usage: keras-mixer COMMAND [--flag=value ...]", "",
             "commands:"]
    lines += [f"  {name:<{width}}  {command.summary}"
              for name, command in COMMANDS.items()]
    lines += ["", "`keras-mixer COMMAND --help` prints a command's flags and "
              "an example."]
    return "\n".join(lines)


def _default(name, flag):
    value = flag.default
    if value is None and name in CONFIG_FLAGS:  # the config decides
        from keras_mixer.training import recipes

        value = recipes.DEFAULTS.get(name)
        if value is not None:
            return f" (default config: {value})"
    if value is None or value == []:
        return ""
    if isinstance(value, bool):
        value = str(value).lower()
    return f" (default: {value})"


def command_help(name):
    """`keras-mixer NAME --help`: that command's flags, defaults, example."""
    command = COMMANDS[name]
    files = " IMAGE ..." if name in POSITIONAL else ""
    lines = [f"keras-mixer {name}: {command.summary}.", "",
             f"usage: keras-mixer {name} [--flag=value ...]{files}", "",
             "flags:"]
    for flag_name in command.flags:
        flag = FLAGS[flag_name]
        text = command.help.get(flag_name, flag.help)
        # A flag's general help may name this command first: drop that.
        own = re.match(rf"(<[^>]*>: )?{name}: (.)(.*)", text, re.DOTALL)
        if own:
            text = (own.group(1) or "") + own.group(2).upper() + own.group(3)
        if name in ("train", "evaluate") or flag_name not in CONFIG_FLAGS:
            text += _default(flag_name, flag)
        lines.append(f"  --{flag_name}")
        lines += textwrap.wrap(text, 76, initial_indent="      ",
                               subsequent_indent="      ")
    if name in ("train", "evaluate"):
        lines += ["", "Flags left unset keep the --config's values (shown: the "
                  "default config's; see keras_mixer.recipes.CONFIGS)."]
    lines += ["", "example:", f"  {command.example}"]
    return "\n".join(lines)


def _nearest(name, candidates):
    close = difflib.get_close_matches(name, list(candidates), n=1)
    return close[0] if close else None


def parse(argv):
    """Parses the flags of `argv` ([program, command, ...]) into FLAGS and
    returns [program, command, positional ...]; an unknown flag is a
    UsageError naming the nearest flag of the command."""
    name = argv[1] if len(argv) > 1 else None
    try:
        return FLAGS(argv)
    except flags.UnrecognizedFlagError as error:
        flag = error.flagname
        known = COMMANDS[name].flags if name in COMMANDS else list(FLAGS)
        near = _nearest(flag, known)
        hint = f"; did you mean --{near}?" if near else "."
        raise app.UsageError(f"Unknown flag --{flag}{hint}") from None
    except flags.Error as error:
        raise app.UsageError(str(error)) from None


def _check_flags(name):
    """Refuses a flag given to a command that does not take it."""
    command = COMMANDS[name]
    given = sorted({FLAGS[f].name for f in FLAGS if FLAGS[f].present})
    for flag in given:
        if flag in command.flags:
            continue
        takers = [n for n, c in COMMANDS.items() if flag in c.flags]
        near = _nearest(flag, command.flags)
        message = f"--{flag} is not a flag of {name}"
        if takers:
            message += f" (it is one of {', '.join(takers)})"
        if near:
            message += f"; did you mean --{near}?"
        raise app.UsageError(message + ".")


def main(argv):
    """Runs the command of `argv` ([program, command, positional ...], flags
    already parsed); raises app.UsageError for bad input."""
    if len(argv) < 2 or argv[1] not in COMMANDS:
        given = argv[1] if len(argv) > 1 else "nothing"
        near = _nearest(given, COMMANDS) if len(argv) > 1 else None
        hint = f" Did you mean {near!r}?" if near else ""
        raise app.UsageError(
            f"Expected a command ({', '.join(COMMANDS)}), got {given!r}."
            f"{hint} Example: keras-mixer summary --model MixerB16"
        )
    _check_flags(argv[1])
    if len(argv) > 2 and argv[1] not in POSITIONAL:
        raise app.UsageError(
            f"Unexpected arguments {argv[2:]}; flags take the form --name=value."
        )
    return COMMANDS[argv[1]].function(argv[2:])


class _Messages(logging.Formatter):
    """keras_mixer's log lines as plain sentences; warnings say so."""

    def format(self, record):
        message = super().format(record)
        if record.levelno >= logging.WARNING:
            return f"{record.levelname.lower()}: {message}"
        return message


def _start_devices():
    """TensorFlow's devices started with their start-up lines dropped."""
    import keras

    if keras.backend.backend() == "tensorflow":
        with tf_logs.quiet_startup():
            import tensorflow as tf

            tf.config.list_physical_devices()


def execute(argv):
    """`keras-mixer` with `argv` ([program, arguments ...]): prints help or
    runs a command, and returns the exit status (2 for bad input). Flags
    are reset afterwards, so it can run in-process."""
    args = list(argv[1:])
    own = args[:args.index("--")] if "--" in args else args
    if not args or args[0] in HELP:
        name = args[1] if len(args) > 1 and args[0] == "help" else None
        if name in COMMANDS:
            print(command_help(name))
            return 0
        print(overview(), file=sys.stdout if args else sys.stderr)
        return 0 if args else 2
    name = args[0]
    if name in COMMANDS and any(a in HELP[:-1] for a in own[1:]):
        print(command_help(name))
        return 0
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Messages())
    logger = logging.getLogger("keras_mixer")
    tf_logger = logging.getLogger("tensorflow")
    levels = logger.level, tf_logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    if not tf_logs.USER_SET:  # TensorFlow's INFO lines with its C++ ones
        tf_logger.setLevel(logging.WARNING)
    try:
        if name.startswith("-"):
            raise app.UsageError(
                f"Give the command first: keras-mixer COMMAND --flags "
                f"({', '.join(COMMANDS)}).")
        parsed = parse(["keras-mixer"] + args)
        _start_devices()
        return main(parsed) or 0
    except app.UsageError as error:
        where = f" {name}" if name in COMMANDS else ""
        more = (f"`keras-mixer {name} --help` lists its flags."
                if name in COMMANDS else
                "`keras-mixer --help` lists the commands.")
        print(f"keras-mixer{where}: error: {error}\n{more}", file=sys.stderr)
        return 2
    finally:
        FLAGS.unparse_flags()
        logger.removeHandler(handler)
        logger.setLevel(levels[0])
        tf_logger.setLevel(levels[1])


def run():
    """Entry point of the `keras-mixer` console script."""
    sys.exit(execute(sys.argv))

"""The `keras-mixer` commands. Each takes its command's parsed flags as
keyword arguments (`cli.COMMANDS` lists them) and calls the library; bad input
raises `app.UsageError` before any long work starts.

The modules that import TensorFlow when they load (`training.train`,
`training.data`, `training.sources`, `export`) are imported by the commands
that use them, so that `keras-mixer --help` and the commands that only build
models (summary, weights, convert, visualize, benchmark) do not load
TensorFlow under the JAX or PyTorch backend.
"""

import contextlib
import json
import os
import re
import shlex
import sys

import numpy as np

import keras
from absl import app

from keras_mixer import atomic
from keras_mixer import benchmark as benchmark_lib
from keras_mixer import labels as labels_lib
from keras_mixer import models
from keras_mixer import presets
from keras_mixer import visualize as visualize_lib
from keras_mixer.checkpoints import assign
from keras_mixer.checkpoints import read_checkpoint
from keras_mixer.models import _tools
from keras_mixer.training import distribute
from keras_mixer.training import evaluation
from keras_mixer.training import recipes


@contextlib.contextmanager
def usage_errors(*kinds):
    """Reports the errors of `kinds` (default ValueError) raised in the block
    as bad input: app.UsageError with their message."""
    try:
        yield
    except kinds or (ValueError,) as error:
        raise app.UsageError(str(error)) from None


# ----------------------------------------------------------------------------
# Models from flags.


def build_model(name, weights, image_size, channels, classes, include_top):
    """The named model with `weights`; `classes` defaults to the weights'
    (a preset's, or a local checkpoint's head), else 1000."""
    with usage_errors():
        constructor = models.get(name)
    if classes is None:
        entry = presets.WEIGHTS.get(name, {}).get(weights or "")
        classes = entry["classes"] if entry else 1000
        if entry is None and weights and not weights.endswith(".weights.h5"):
            with usage_errors(ValueError, OSError):  # keep its head
                classes = read_checkpoint(weights).num_classes or 1000
    kwargs = dict(classes=classes, include_top=include_top, weights=weights)
    if image_size is not None:
        kwargs["input_shape"] = (image_size, image_size, channels)
    elif channels != 3:
        kwargs["input_shape"] = (224, 224, channels)
    with usage_errors():
        return constructor(**kwargs)


def load_keras_file(path):
    """A `.keras` model file, loaded with safe_mode on; NaN/Inf weights are
    refused."""
    if not os.path.exists(path):
        raise app.UsageError(f"{path}: no such file.")
    model = keras.saving.load_model(path)
    with usage_errors():
        assign.check_finite(model, path)
    return model


def model_or_file(model, weights, image_size, channels, classes,
                  include_top):
    """--model as a .keras file, --weights as a .keras file, or a named model
    built with --weights at --image_size (export, visualize)."""
    for path in (model, weights):
        if path and path.endswith(".keras"):
            return load_keras_file(path)
    if not model:
        raise app.UsageError(
            "export and visualize need --model (a name with --weights, or a "
            ".keras file)."
        )
    return build_model(model, weights, image_size, channels, classes,
                       include_top)


def labels_beside_model(model, weights):
    """The labels.txt beside a .keras --model (or --weights), or None."""
    for path in (model, weights):
        if path and path.endswith(".keras"):
            return labels_lib.labels_beside(path)
    return None


def _verbose(verbose):
    if verbose is not None:
        return verbose
    return 1 if sys.stdout.isatty() else 2


def _quantizations(text, export_lib):
    """--tflite as a list of quantizations (empty when unset)."""
    if not text:
        return []
    quantizations = [q.strip() for q in text.split(",") if q.strip()]
    unknown = [q for q in quantizations if q not in export_lib.QUANTIZATIONS]
    if unknown:
        raise app.UsageError(
            f"--tflite {unknown}: use any of "
            f"{','.join(export_lib.QUANTIZATIONS)}."
        )
    return quantizations


# ----------------------------------------------------------------------------
# Models and weights.


def summary(model, image_size, channels, classes, include_top):
    """Prints the layers, parameter count and GFLOPs per image."""
    built = build_model(model, None, image_size, channels, classes,
                        include_top)
    built.summary(line_length=100)
    height, width, depth = built.input_shape[1:]
    print(f"model: {model} ({built.name})")
    print(f"input: {height}x{width}x{depth}")
    print(f"parameters: {built.count_params():,}")
    gflops = _tools.count_flops(built) / 1e9
    print(f"GFLOPs per image (2 x multiply-accumulates): {gflops:.2f}")
    return 0


def weights(model):
    """Prints the weights table."""
    with usage_errors():
        if model is not None:
            models.get(model)
        presets.list_weights(model)
    return 0


def convert(model, weights, image_size, channels, classes, include_top,
            output):
    """Builds --model with --weights and saves it to --output."""
    if not output.endswith((".keras", ".weights.h5")):
        raise app.UsageError(
            f"--output {output!r} must end in .keras (whole model) or "
            ".weights.h5 (weights only)."
        )
    built = build_model(model, weights, image_size, channels, classes,
                        include_top)
    # Written beside --output, read back and compared, then renamed.
    atomic.save_model(built, output, check=True)
    print(f"wrote {output}: {built.name}, {built.count_params():,} parameters")
    return 0


# ----------------------------------------------------------------------------
# Training and evaluation.


def train(config, output_dir, strategy, tpu, cpu_devices, verbose):
    """Trains --config / flags into --output_dir (resumes if it holds a run)."""
    from keras_mixer.training import train as train_lib

    if cpu_devices:
        distribute.cpu_devices(cpu_devices)
    with usage_errors(train_lib.InputError):
        metrics = train_lib.train(config, output_dir, strategy=strategy,
                                  tpu=tpu, verbose=_verbose(verbose))
    print(json.dumps(metrics, indent=2))
    return 0


def _shots(fewshot):
    try:
        return [int(k) for k in fewshot.split(",")]
    except ValueError:
        raise app.UsageError(
            f"--fewshot {fewshot!r}: give shots per class, e.g. 1,5,10,25."
        ) from None


def check_class_names(labels_path, info):
    """Refuses a dataset whose classes (or their order) differ from the
    ones the model was trained on (its labels file)."""
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


def evaluate(config, classes, split, fewshot, labels, output):
    """Top-1/top-5 (or few-shot) of --model on --dataset's --split."""
    from keras_mixer.training import data
    from keras_mixer.training import train as train_lib

    with usage_errors():
        train_lib.check_inputs(config)
    shots = _shots(fewshot) if fewshot else None
    if config["model"].endswith(".keras"):
        model = load_keras_file(config["model"])
    else:
        size = config["image_size"]
        model = models.MODELS[config["model"]](
            weights=config["weights"], input_shape=(size, size, 3),
            **({"classes": classes} if classes else {}),
        )
    size = model.input_shape[1]
    split = split or config["eval_split"]
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
        check_class_names(labels or labels_beside_model(
            config["model"], config["weights"]), info)
        result = evaluation.evaluate(model, test_ds)
        report = {"dataset": info.name, "split": split, **result}
    print(json.dumps(report, indent=2))
    if output:
        atomic.write_text(output, json.dumps(report, indent=2))
    return 0


def demo(output_dir, epochs, verbose):
    """Trains a small Mixer on the bundled digits, exports it, then classifies
    held-out digits through the SavedModel and the TFLite file."""
    from keras_mixer.training import train as train_lib

    with usage_errors():
        config = recipes.get_config(
            "demo", **({} if epochs is None else {"epochs": epochs}))
    print(f"keras-mixer demo: a {train_lib.DEMO_MODEL['num_blocks']}-block "
          f"Mixer on the 1,797 bundled 8x8 digits, upsampled to 32x32; "
          f"{config['epochs']} epochs into {output_dir}/ (rerun to resume).")
    with usage_errors(train_lib.InputError):
        metrics = train_lib.train(config, output_dir, strategy="auto",
                                  verbose=_verbose(verbose))
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
    import tensorflow as tf

    from keras_mixer import export as export_lib
    from keras_mixer.training import data
    from keras_mixer.training import sources

    model = keras.saving.load_model(os.path.join(output_dir, "final.keras"))
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
    raw, _ = sources.load_digits()
    index = sources.digits_split("validation")[:count]
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


# ----------------------------------------------------------------------------
# Export and predict.


def export(model, weights, image_size, channels, classes, include_top,
           output, version, tflite, onnx, top_k, labels, overwrite, dataset,
           data_dir):
    """Writes a TF Serving SavedModel and optional TFLite and ONNX files."""
    from keras_mixer import export as export_lib
    from keras_mixer.training import data

    quantizations = _quantizations(tflite, export_lib)
    if "int8" in quantizations and not dataset:
        raise app.UsageError(
            "--tflite int8 calibrates on real images: give --dataset "
            "(e.g. digits, folder:PATH or a tfds name)."
        )
    version_dir = os.path.join(output, str(version))
    if os.path.exists(version_dir) and not overwrite:
        raise app.UsageError(
            f"{version_dir} exists: give --overwrite or another --version."
        )
    built = model_or_file(model, weights, image_size, channels, classes,
                          include_top)
    num_classes = built.output_shape[-1]
    with usage_errors(ValueError, OSError):
        names = export_lib.resolve_labels(
            labels or labels_beside_model(model, weights), num_classes)
        path = export_lib.save_for_serving(
            built, output, version=version,
            top_k=top_k or min(5, num_classes), labels=names,
            overwrite=overwrite,
        )
    print(f"SavedModel: {path} (signatures: "
          f"{', '.join(export_lib.SIGNATURES)})")
    if names:  # for the TFLite files, which do not hold them
        labels_path = os.path.join(output, labels_lib.LABELS_FILE)
        atomic.write_text(labels_path, labels_lib.format_labels(names))
        print(f"labels: {labels_path} ({len(names)} classes)")
    representative = None
    if "int8" in quantizations:
        ds, _ = data.build_dataset(dataset, "train",
                                   image_size=built.input_shape[1],
                                   batch_size=32, training=False,
                                   data_dir=data_dir)
        representative = np.concatenate([b[0] for b in ds.take(8)])
    base = os.path.basename(os.path.normpath(output))
    for quantization in quantizations:
        report = export_lib.to_tflite(
            built, os.path.join(output, f"{base}_{quantization}.tflite"),
            quantization=quantization, representative_data=representative,
        )
        print(f"TFLite {quantization:>12}: {report['path']} "
              f"{report['size_bytes'] / 1e6:.1f} MB, batch-1 "
              f"{report['latency_ms_batch1']:.2f} ms, max relative error "
              f"{report['max_relative_error']:.2e}, top-1 agreement "
              f"{report['top1_agreement']:.3f}, builtin ops only")
    if onnx:
        report = export_lib.to_onnx(built, os.path.join(output,
                                                        f"{base}.onnx"))
        print(f"ONNX: {report['path']} {report['size_bytes'] / 1e6:.1f} MB, "
              f"max relative error vs Keras (onnxruntime) "
              f"{report['max_relative_error']:.2e}")
    return 0


def error_line(error):
    """The message of an exception on one line, without TensorFlow's node
    and op annotations."""
    text = getattr(error, "message", None) or str(error)
    text = re.sub(r"\{\{[^}]*\}\}", " ", text)
    lines = [line.strip() for line in text.splitlines() if line.strip()
             and not line.strip().startswith(("[[", "Detected at node",
                                              "Graph execution error"))]
    line = lines[0] if lines else type(error).__name__
    return re.sub(r"\s*\[Op:\w+\].*$", "", line).strip()


def predict(model_dir, labels, top_k, images):
    """Prints the top classes of each image file; a file that fails gets an
    error line and the exit status 1, the others their predictions."""
    import tensorflow as tf

    from keras_mixer import export as export_lib

    if not images:
        raise app.UsageError("predict needs image files after the flags.")
    missing = [p for p in images if not os.path.isfile(p)]
    if missing:
        raise app.UsageError(f"No such image file(s): {', '.join(missing)}.")
    if not os.path.exists(model_dir):
        raise app.UsageError(f"--model_dir {model_dir}: no such file or "
                             "directory.")
    with usage_errors(ValueError, OSError):
        predictor = export_lib.load_predictor(model_dir, labels=labels,
                                              top_k=top_k)
    failed = 0
    for path in images:  # one at a time: a bad file fails alone
        try:
            top = predictor([path])[0]
        except (tf.errors.OpError, OSError, ValueError) as error:
            failed += 1
            sys.stdout.flush()
            print(f"{path}: error: {error_line(error)}", file=sys.stderr)
            continue
        print(path)
        for rank, (label, score, index) in enumerate(top, 1):
            print(f"  {rank}. {label} ({index}): {score:.4f}")
    if failed:
        sys.stdout.flush()
        print(f"{failed} of {len(images)} image file(s) failed.",
              file=sys.stderr)
        return 1
    return 0


# ----------------------------------------------------------------------------
# Figures and speed.


def visualize(model, weights, image_size, channels, classes, include_top,
              output, figure, block):
    """Draws one of keras_mixer.visualize's figures of --model to --output."""
    if not output or not output.lower().endswith(".png"):
        raise app.UsageError(
            f"visualize needs --output ending in .png, got {output!r}."
        )
    built = model_or_file(model, weights, image_size, channels, classes,
                          include_top)
    if figure == "auto":
        with usage_errors():
            family = _tools.model_family(built)
        figure = visualize_lib.DEFAULT_FIGURE[family]
    kwargs = {"block": block} if figure in ("token_mixing",
                                            "cross_patch") else {}
    with usage_errors():
        visualize_lib.FIGURES[figure](built, output=output, **kwargs)
    print(f"wrote {output} ({figure}, {built.name})")
    return 0


def benchmark(model, batch_size, image_size, precision, mode, paths, steps,
              rounds, warmup, timm, jit_compile, tflite):
    """images/s through the plain API, interleaved with timm's model."""
    with usage_errors():  # every argument checked before any measurement
        benchmark_lib.check_arguments(model, batch_size, image_size,
                                      precision, mode, steps, rounds, warmup,
                                      paths)
    quantizations = False
    if tflite:
        from keras_mixer import export as export_lib

        quantizations = _quantizations(tflite, export_lib)
        quantizations = ["none"] + [q for q in quantizations if q != "none"]
    rows, machine = benchmark_lib.run(
        model, batch_size=batch_size, image_size=image_size,
        precisions=precision, modes=mode, steps=steps, rounds=rounds,
        warmup=warmup, paths=paths, timm=timm,
        jit_compile={"auto": None, "true": True, "false": False}[jit_compile],
        tflite=quantizations,
        command=shlex.join(["keras-mixer"] + sys.argv[1:]),
        on_round=lambda index, _: print(f"round {index + 1}/{rounds} done",
                                        file=sys.stderr, flush=True))
    print(benchmark_lib.format_markdown(rows, machine))
    return 0

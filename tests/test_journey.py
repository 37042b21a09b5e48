"""A user's own images, from training to predictions, through the console
script as a user runs it: `keras-mixer train` on a folder of 2 classes ->
`final.keras` loaded in a new process with only `import keras_mixer` ->
`keras-mixer export` -> `keras-mixer predict` through the SavedModel and the
TFLite file (class names from the run's labels.txt) -> `keras-mixer
evaluate`. TensorFlow's log level is left unset, as a user leaves it."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

ENV = {**os.environ, "KERAS_BACKEND": "tensorflow"}
ENV.pop("TF_CPP_MIN_LOG_LEVEL", None)
ENV.pop("TF_CONFIG", None)
CLASSES = ("cats", "dogs")
# TensorFlow's start-up lines that must not reach the user.
NOISE = ("absl::InitializeLog", "port.cc", "cudart_stub", "cpu_feature_guard",
         "failed call to cuInit")


def _keras_mixer(*args):
    script = shutil.which("keras-mixer")
    command = [script] if script else [sys.executable, "-m", "keras_mixer"]
    result = subprocess.run(command + list(args), capture_output=True,
                            text=True, env=ENV, timeout=400)
    for line in NOISE:
        assert line not in result.stderr, result.stderr[-2000:]
    return result


def _photos(root):
    """15 PNG images per class, of various sizes: reddish cats, bluish dogs."""
    import tensorflow as tf

    rng = np.random.default_rng(0)
    for c, name in enumerate(CLASSES):
        (root / name).mkdir(parents=True)
        for i in range(15):
            shape = (int(rng.integers(14, 30)), int(rng.integers(14, 30)), 3)
            image = rng.normal(60, 25, shape)
            image[..., 0 if c == 0 else 2] += 120
            png = tf.io.encode_png(np.clip(image, 0, 255).astype(np.uint8))
            (root / name / f"{i}.png").write_bytes(png.numpy())


def _predictions(stdout):
    """{path: [(label, index), ...]} from `keras-mixer predict`'s output."""
    found, path = {}, None
    for line in stdout.splitlines():
        if not line.startswith(" "):
            path = line
            found[path] = []
        else:
            label, rest = line.split(". ", 1)[1].rsplit(" (", 1)
            found[path].append((label, int(rest.split(")")[0])))
    return found


def test_train_reload_export_predict_evaluate(tmp_path):
    photos = tmp_path / "photos"
    _photos(photos)
    run = tmp_path / "run"
    # The demo recipe's small Mixer at 16 px; its batch (64) is the recipe's,
    # so it is lowered to fit the 26 training images.
    result = _keras_mixer("train", f"--dataset=folder:{photos}",
                          "--config=demo", "--image_size=16", "--epochs=2",
                          "--verbose=2", f"--output_dir={run}")
    assert result.returncode == 0, result.stderr[-3000:]
    log = result.stderr
    assert "exceeds the 26 training examples" in log
    assert "training with batch 16" in log
    assert "peak lr = lr x batch / base_batch = 0.003 x 16 / 64 = 0.00075" in log
    assert "ran out of data" not in log + result.stdout
    assert (run / "labels.txt").read_text() == "cats\ndogs\n"
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["global_batch"] == 16 and metrics["classes"] == 2

    # A new process that imports only keras_mixer loads the models, the
    # optimizer's learning-rate schedule included.
    images = [str(photos / name / "14.png") for name in CLASSES]
    load = subprocess.run([sys.executable, "-c", (
        "import json, sys, keras, keras_mixer\n"
        "models = [keras.saving.load_model(p) for p in sys.argv[1:3]]\n"
        "schedule = models[0].optimizer.get_config()['learning_rate']\n"
        "predict = keras_mixer.export.load_predictor(sys.argv[1])\n"
        "top = [row[0][0] for row in predict(sys.argv[3:])]\n"
        "print(json.dumps({'schedule': schedule, 'top': top}))\n"),
        str(run / "final.keras"), str(run / "best.keras"), *images],
        capture_output=True, text=True, env=ENV, timeout=300)
    assert load.returncode == 0, load.stderr[-3000:]
    loaded = json.loads(load.stdout.splitlines()[-1])
    assert loaded["schedule"]["registered_name"] == "keras_mixer>WarmupDecay"

    out = tmp_path / "export" / "photos"
    result = _keras_mixer("export", f"--model={run / 'final.keras'}",
                          f"--output={out}", "--tflite=none")
    assert result.returncode == 0, result.stderr[-3000:]
    assert (out / "labels.txt").read_text() == "cats\ndogs\n"

    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    result = _keras_mixer("predict", f"--model_dir={out / '1'}", images[0],
                          str(broken), images[1])
    # The bad file gets its error line; the others their predictions.
    assert result.returncode == 1
    assert f"{broken}: error: " in result.stderr
    assert "1 of 3 image file(s) failed" in result.stderr
    saved = _predictions(result.stdout)
    assert list(saved) == images
    for top in saved.values():  # 2 classes: top-2, by name
        assert sorted(top) == [("cats", 0), ("dogs", 1)]
    assert [saved[p][0][0] for p in images] == loaded["top"]

    result = _keras_mixer("predict",
                          f"--model_dir={out / 'photos_none.tflite'}", *images)
    assert result.returncode == 0, result.stderr[-3000:]
    lite = _predictions(result.stdout)
    assert [lite[p][0][0] for p in images] == loaded["top"]

    report = tmp_path / "eval.json"
    result = _keras_mixer("evaluate", f"--model={run / 'final.keras'}",
                          f"--dataset=folder:{photos}",
                          "--eval_crop=resize_crop", f"--output={report}")
    assert result.returncode == 0, result.stderr[-3000:]
    evaluated = json.loads(report.read_text())
    assert evaluated["examples"] == 4  # 2 of each class held out
    assert evaluated["top1"] == pytest.approx(metrics["val_accuracy"], abs=1e-6)


# ----------------------------------------------------------------------------
# The same rules in this process, at their edges.


def test_the_batch_fits_small_data_or_is_refused_with_a_size():
    from keras_mixer.training import data
    from keras_mixer.training import recipes
    from keras_mixer.training import train

    info = data.DatasetInfo("folder:photos", "train", 2, 26)
    default = recipes.get_config("default")  # batch 256, the config's own
    assert train.fit_batch(default, info, 256) == 16
    assert train.fit_batch(default, info, 256, num_replicas=3) == 24
    assert train.fit_batch(default, info, 8) == 8
    chosen = recipes.get_config("default", batch_size=64)
    with pytest.raises(ValueError, match="--batch_size 64 exceeds the 26 "
                       "training examples of folder:photos; use --batch_size "
                       "16"):
        train.fit_batch(chosen, info, 64)
    with pytest.raises(ValueError, match="fewer than the 32 replicas"):
        train.fit_batch(default, info, 256, num_replicas=32)
    rule = recipes.learning_rate_rule(
        recipes.get_config("default", grad_accum_steps=4), 64)
    assert rule == ("peak lr = lr x batch x grad_accum_steps / base_batch = "
                    "0.001 x 64 x 4 / 256 = 0.001")


def test_evaluate_refuses_a_dataset_with_other_classes(tmp_path,
                                                       cli_usage_error):
    import keras_mixer

    model = keras_mixer.MLPMixer(4, 16, 1, 8, 32, input_shape=(16, 16, 3),
                                 classes=2)
    model.save(tmp_path / "m.keras")
    (tmp_path / "labels.txt").write_text("cats\ndogs\n")
    _photos(tmp_path / "photos")
    (tmp_path / "photos" / "dogs").rename(tmp_path / "photos" / "birds")
    message = cli_usage_error("evaluate", f"--model={tmp_path / 'm.keras'}",
                              f"--dataset=folder:{tmp_path / 'photos'}")
    assert "trained on the classes of" in message
    assert "(cats, dogs) but folder:" in message and "has birds, cats" in message

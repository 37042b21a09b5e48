"""Training end to end, run as a user runs it (`keras-mixer ...` in a
subprocess): the demo, strategies (Mirrored over 2 logical CPUs,
MultiWorkerMirrored with 2 processes on 127.0.0.1, JAX DataParallel),
resume after SIGKILL, fine-tuning, distillation, evaluation and bad input."""

import csv
import json
import os
import signal
import socket
import subprocess
import sys
import time

import keras
import numpy as np
import pytest

import keras_mixer
from keras_mixer.training import recipes
from keras_mixer.training import records
from keras_mixer.training import train

sys.path.insert(0, os.path.dirname(__file__))

ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "KERAS_BACKEND": "tensorflow"}
ENV.pop("TF_CONFIG", None)
# A short demo-sized run: 3 steps per epoch.
QUICK = ["--config=demo", "--steps_per_epoch=3", "--verbose=2"]


def _cli(*args, env=None, timeout=400):
    return subprocess.run(
        [sys.executable, "-m", "keras_mixer", *args], capture_output=True,
        text=True, env=env or ENV, timeout=timeout,
    )


def _history(output_dir):
    with open(os.path.join(output_dir, "history.csv"), newline="") as f:
        return list(csv.DictReader(f))


def _metrics(output_dir):
    with open(os.path.join(output_dir, "metrics.json")) as f:
        return json.load(f)


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """`keras-mixer demo` once, in full, as the README runs it."""
    output_dir = tmp_path_factory.mktemp("demo") / "run"
    start = time.time()
    result = _cli("demo", f"--output_dir={output_dir}", "--verbose=2", timeout=600)
    return result, output_dir, time.time() - start


def test_demo_reaches_95_percent_within_3_minutes(demo_run):
    result, output_dir, seconds = demo_run
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = _metrics(output_dir)
    assert metrics["val_accuracy"] >= 0.95
    assert metrics["epochs_completed"] == 15
    # The training itself (metrics' wall clock) and the whole command.
    assert metrics["wall_seconds"] <= 180 and seconds <= 240
    assert "reached the 95% target" in result.stdout
    # It exported the model and classified held-out digits through the
    # SavedModel and the TFLite file.
    assert result.stdout.count(" ok") + result.stdout.count(" X") == 16
    assert result.stdout.count(" ok") >= 14
    assert "SavedModel" in result.stdout and "TFLite" in result.stdout
    assert (output_dir / "export" / "mixer_demo" / "1" / "saved_model.pb").exists()
    assert (output_dir / "export" / "mixer_demo_dynamic_int8.tflite").exists()
    for name in ("final.keras", "best.keras", "history.csv", "config.json"):
        assert (output_dir / name).exists()
    assert any((output_dir / "logs" / "train").iterdir())  # TensorBoard
    rows = _history(output_dir)
    assert [int(r["epoch"]) for r in rows] == list(range(15))
    assert {"loss", "accuracy", "val_accuracy", "val_top5_accuracy",
            "learning_rate"} <= set(rows[0])


def test_evaluate_cli_agrees_with_the_run(demo_run, tmp_path):
    _, output_dir, _ = demo_run
    report = tmp_path / "eval.json"
    result = _cli("evaluate", f"--model={output_dir / 'final.keras'}",
                  "--dataset=digits", "--eval_crop=resize_crop",
                  f"--output={report}")
    assert result.returncode == 0, result.stderr[-3000:]
    evaluated = json.loads(report.read_text())
    assert evaluated["examples"] == 360
    assert evaluated["top1"] == pytest.approx(_metrics(output_dir)["val_accuracy"], abs=1e-6)
    result = _cli("evaluate", f"--model={output_dir / 'final.keras'}",
                  "--dataset=digits", "--fewshot=1,10", f"--output={report}")
    assert result.returncode == 0, result.stderr[-3000:]
    shots = json.loads(report.read_text())["fewshot_accuracy"]
    assert set(shots) == {"1", "10"} and shots["10"] > 0.8


def test_rerunning_a_finished_run_does_nothing(demo_run):
    result, output_dir, _ = demo_run
    before = (output_dir / "final.keras").stat().st_mtime
    again = _cli("demo", f"--output_dir={output_dir}", "--verbose=2")
    assert again.returncode == 0, again.stderr[-3000:]
    assert "already holds the finished run" in again.stderr
    assert (output_dir / "final.keras").stat().st_mtime == before


def test_mirrored_strategy_over_two_logical_cpus(tmp_path):
    result = _cli("train", *QUICK, "--epochs=1", "--strategy=mirrored",
                  "--cpu_devices=2", f"--output_dir={tmp_path}")
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = _metrics(tmp_path)
    assert metrics["num_replicas"] == 2 and metrics["global_batch"] == 64
    assert "MirroredStrategy" in result.stderr
    # The global batch must split across the replicas.
    bad = _cli("train", *QUICK, "--strategy=mirrored", "--cpu_devices=2",
               "--batch_size=63", f"--output_dir={tmp_path / 'bad'}")
    assert bad.returncode != 0
    assert "--batch_size 63 is not divisible by the 2 replicas" in bad.stderr
    assert not (tmp_path / "bad" / "config.json").exists()


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_multi_worker_mirrored_with_two_processes(tmp_path):
    ports = [_free_port(), _free_port()]
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    procs = []
    for index in range(2):
        env = {**ENV, "TF_CONFIG": json.dumps(
            {"cluster": cluster, "task": {"type": "worker", "index": index}})}
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "keras_mixer", "train", *QUICK, "--epochs=2",
             "--strategy=multi_worker", f"--output_dir={tmp_path}"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        ))
    outputs = []
    try:
        for proc in procs:
            outputs.append(proc.communicate(timeout=300))
    finally:
        for proc in procs:
            proc.kill()
    for proc, (_, err) in zip(procs, outputs):
        assert proc.returncode == 0, err[-3000:]
    metrics = _metrics(tmp_path)
    assert metrics["num_replicas"] == 2 and metrics["epochs_completed"] == 2
    assert (tmp_path / "final.keras").exists()  # the chief's
    assert not (tmp_path / "workers" / "1" / "final.keras").exists()
    # Both workers took the same synchronous steps: the same losses.
    chief = [float(r["loss"]) for r in _history(tmp_path)]
    other = [float(r["loss"]) for r in _history(tmp_path / "workers" / "1")]
    np.testing.assert_allclose(chief, other, rtol=1e-5)


def test_jax_backend_trains_with_data_parallel(tmp_path):
    env = {**ENV, "KERAS_BACKEND": "jax",
           "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    result = _cli("train", *QUICK, "--epochs=2", f"--output_dir={tmp_path}", env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = _metrics(tmp_path)
    assert metrics["backend"] == "jax" and metrics["num_replicas"] == 2
    assert metrics["epochs_completed"] == 2
    model = keras.saving.load_model(tmp_path / "final.keras")
    assert model.output_shape == (None, 10)


def _epochs(output_dir):
    return [int(r["epoch"]) for r in _history(output_dir)]


def _progress(output_dir):
    with open(os.path.join(output_dir, "progress.json")) as f:
        return json.load(f)


def test_sigkill_at_each_record_step_loses_nothing(tmp_path):
    """The trainer kills itself (its test hook) at each step of an epoch's
    record and after fit; each rerun of the same command resumes after the
    last committed epoch, and the last one only saves: every epoch trained
    and recorded exactly once."""
    out = tmp_path / "run"
    args = ["train", "--config=demo", "--epochs=4", "--steps_per_epoch=2",
            "--verbose=2", f"--output_dir={out}"]

    def run(kill=None):
        env = {**ENV, records.KILL_ENV: kill} if kill else ENV
        result = _cli(*args, env=env)
        return result, result.stdout + result.stderr

    # 1. Killed while writing epoch 1's backup: the temporary never becomes
    # a backup; epoch 0 stays the last one committed.
    result, text = run("backup_write:1")
    assert result.returncode == -signal.SIGKILL, text[-2000:]
    assert "Epoch 2/4" in text and _epochs(out) == [0]
    assert _progress(out)["epochs_completed"] == 1
    assert any(n.startswith(".tmp-") for n in os.listdir(out / "backup"))
    # 2. Resumes at epoch 1; killed between epoch 2's backup and its commit.
    result, text = run("before_commit:2")
    assert result.returncode == -signal.SIGKILL, text[-2000:]
    assert "Epoch 1/4" not in text and "Epoch 2/4" in text
    assert _epochs(out) == [0, 1] and _progress(out)["epochs_completed"] == 2
    assert not any(n.startswith(".tmp-") for n in os.listdir(out / "backup"))
    # 3. Epoch 2 again; killed after its commit, before history.csv.
    result, text = run("after_commit:2")
    assert result.returncode == -signal.SIGKILL, text[-2000:]
    assert "Epoch 2/4" not in text and "Epoch 3/4" in text
    assert _progress(out)["epochs_completed"] == 3 and _epochs(out) == [0, 1]
    # 4. Epoch 3 only (history.csv completed from the record first); killed
    # after fit, before the final save.
    result, text = run("after_fit")
    assert result.returncode == -signal.SIGKILL, text[-2000:]
    assert "Epoch 3/4" not in text and "Epoch 4/4" in text
    assert _epochs(out) == [0, 1, 2, 3]
    assert not (out / "final.keras").exists() and not (out / "metrics.json").exists()
    # 5. No training: evaluate, save, finish.
    result, text = run()
    assert result.returncode == 0, text[-3000:]
    assert "Epoch " not in text
    assert _epochs(out) == [0, 1, 2, 3]
    assert _metrics(out)["epochs_completed"] == 4
    assert _progress(out)["finished"] is True
    assert sorted(os.listdir(out / "backup")) == [
        "epoch-000003.weights.h5", "epoch-000004.weights.h5"]
    assert not list(out.glob(".tmp-*"))
    for name in ("best.keras", "final.keras"):
        assert keras.saving.load_model(out / name).output_shape == (None, 10)
    best = json.loads((out / "best.keras.json").read_text())
    accuracies = [float(r["val_accuracy"]) for r in _history(out)]
    assert best["value"] == pytest.approx(max(accuracies))


def test_more_epochs_continue_a_finished_run_and_a_bad_backup_falls_back(
        tmp_path, caplog):
    """A finished run, its newest backup then truncated, is given more
    --epochs: a warning, the previous backup generation, the epoch after it
    trained again, then the new one; each recorded once, the first kept.
    Fewer epochs than done: refused."""
    out = str(tmp_path / "run")
    config = recipes.get_config("demo", epochs=2, steps_per_epoch=2)
    train.train(config, out, verbose=0)
    first = _history(out)[0]
    newest = os.path.join(out, "backup", "epoch-000002.weights.h5")
    with open(newest, "r+b") as f:
        f.truncate(96)  # what a kill mid-write left in Keras's backup
    with caplog.at_level("WARNING", logger="keras_mixer"):
        metrics = train.train(dict(config, epochs=3), out, verbose=0)
    assert f"Backup {newest} cannot be read" in caplog.text
    assert "Resuming from the backup after epoch 1" in caplog.text
    assert metrics["epochs_completed"] == 3 and _epochs(out) == [0, 1, 2]
    assert _history(out)[0] == first
    with pytest.raises(train.InputError, match="holds 3 completed epochs; "
                       "--epochs 2 is fewer"):
        train.train(config, out)


def test_no_readable_backup_starts_over_from_the_initial_state(tmp_path, caplog):
    """Both backup generations unreadable: a warning and a fresh start from
    the model's own initial weights, never a crash loop."""
    x, y = np.ones((4, 3), np.float32), np.zeros((4, 2), np.float32)

    def fit(epochs):
        model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
        model.compile("sgd", "mse")
        initial = [np.array(w) for w in model.get_weights()]
        seen = []
        check = keras.callbacks.LambdaCallback(on_train_begin=lambda logs: seen.append(
            [np.array(w) for w in model.get_weights()]))
        record = records.RunRecord(str(tmp_path), {"epochs": epochs})
        model.fit(x, y, epochs=epochs, callbacks=[record, check], verbose=0)
        return initial, seen[0]

    fit(2)
    for name in os.listdir(tmp_path / "backup"):
        with open(tmp_path / "backup" / name, "r+b") as f:
            f.truncate(96)
    with caplog.at_level("WARNING", logger="keras_mixer"):
        initial, start = fit(3)
    assert "training starts over from epoch 1" in caplog.text
    for a, b in zip(initial, start):
        np.testing.assert_array_equal(a, b)
    assert _epochs(tmp_path) == [0, 1, 2]
    assert sorted(os.listdir(tmp_path / "backup")) == [
        "epoch-000002.weights.h5", "epoch-000003.weights.h5"]


def test_resumed_ema_run_ends_where_an_uninterrupted_one_does(tmp_path):
    """Two epochs in one go, or one then a resume: the same weights, with
    EMA swapped in at every epoch end as `train` does."""
    x = np.random.default_rng(0).normal(size=(8, 3)).astype(np.float32)
    y = x @ np.ones((3, 2), np.float32)

    def fit(folder, epochs):
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
        model.compile(keras.optimizers.AdamW(0.1, use_ema=True,
                                             ema_momentum=0.5), "mse")
        callbacks = [records.RunRecord(str(folder), {"epochs": epochs}),
                     keras.callbacks.SwapEMAWeights(swap_on_epoch=True)]
        model.fit(x, y, epochs=epochs, batch_size=4, shuffle=False,
                  callbacks=callbacks, verbose=0)
        return model.get_weights()

    whole = fit(tmp_path / "whole", 2)
    fit(tmp_path / "resumed", 1)
    resumed = fit(tmp_path / "resumed", 2)
    for a, b in zip(whole, resumed):
        np.testing.assert_allclose(a, b, rtol=1e-6)


@pytest.mark.parametrize("args, message", [
    (["--dataset=imagenet_9k"], "Unknown dataset 'imagenet_9k'"),
    (["--config=mixer_z"], "Unknown config 'mixer_z'"),
    (["--image_size=30"], "--image_size 30 is not a multiple of demo's patch size 4: use 28 or 32"),
    (["--dataset=folder:/no/such/dir"], "does not exist"),
    (["--model=MixerQ1"], "Unknown model 'MixerQ1'"),
    (["--config=mixer_b16_imagenet21k"], "needs --dataset"),
    (["--batch_size=4096"], "exceeds the 1437 training examples"),
    (["--randaugment=2"], "give 'num_ops,magnitude'"),
    (["--override=crop_size=3"], "Unknown config key(s) ['crop_size']"),
])
def test_bad_input_is_refused_before_training(tmp_path, args, message):
    result = _cli("train", *QUICK, *args, f"--output_dir={tmp_path / 'run'}")
    assert result.returncode != 0
    assert message in result.stderr, result.stderr[-2000:]
    assert "Epoch 1" not in result.stdout
    assert not (tmp_path / "run" / "config.json").exists()


def test_empty_image_folder_and_changed_config_are_refused(tmp_path):
    (tmp_path / "images" / "cats").mkdir(parents=True)
    result = _cli("train", *QUICK, f"--dataset=folder:{tmp_path / 'images'}",
                  f"--output_dir={tmp_path / 'run'}")
    assert result.returncode != 0 and "no readable image" in result.stderr
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.json").write_text(json.dumps(
        recipes.get_config("demo", steps_per_epoch=3, seed=1)))
    result = _cli("train", *QUICK, "--epochs=2", f"--output_dir={tmp_path / 'run'}")
    assert result.returncode != 0
    assert "holds a run with another config (differs in seed)" in result.stderr


def test_image_folder_training_counts_skipped_files(tmp_path):
    import tensorflow as tf

    rng = np.random.default_rng(0)
    for c in range(3):
        (tmp_path / "img" / f"class{c}").mkdir(parents=True)
        for i in range(12):
            image = np.clip(rng.normal(60 + 60 * c, 20, (20, 24, 3)), 0, 255)
            (tmp_path / "img" / f"class{c}" / f"{i}.png").write_bytes(
                tf.io.encode_png(image.astype(np.uint8)).numpy())
    (tmp_path / "img" / "class1" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    result = _cli("train", "--config=demo", "--verbose=2", "--epochs=1",
                  "--batch_size=8", f"--dataset=folder:{tmp_path / 'img'}",
                  f"--output_dir={tmp_path / 'run'}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Skipped 1 file(s)" in result.stderr
    metrics = _metrics(tmp_path / "run")
    assert metrics["skipped_files"] == 1 and metrics["classes"] == 3


def test_finetune_from_a_checkpoint_at_higher_resolution(tmp_path, caplog):
    """--weights: Appendix C recipe by default, token mixing grown
    block-diagonally to the larger image, a fresh zero head for 10 classes."""
    from test_weights import to_official_npz

    keras.utils.set_random_seed(0)
    source = keras_mixer.MixerS32(input_shape=(32, 32, 3), classes=7)
    for v in source.weights:
        v.assign(np.random.default_rng(len(v.path)).normal(0, 0.05, v.shape))
    checkpoint = tmp_path / "s32.npz"
    to_official_npz(source, checkpoint)

    config = recipes.get_config("finetune", model="MixerS32", weights=str(checkpoint),
                                dataset="digits", image_size=64, batch_size=16,
                                epochs=1, steps_per_epoch=2)
    model = train.build_model(config, classes=10)
    assert model.output_shape == (None, 10)
    np.testing.assert_array_equal(model.get_layer("head").kernel, 0.0)
    np.testing.assert_array_equal(model.get_layer("head").bias, 0.0)
    # 1 token at 32 px, 4 at 64: tokens_mlp_dim 256 -> 1024, block-diagonal.
    kernel = np.asarray(model.get_layer("block_0").token_mixing.fc1.kernel)
    small = np.asarray(source.get_layer("block_0").token_mixing.fc1.kernel)
    assert kernel.shape == (4, 1024)
    for t in range(4):
        np.testing.assert_allclose(kernel[t, 256 * t: 256 * (t + 1)], small[0])
        assert not kernel[t, :256 * t].any()
    np.testing.assert_allclose(model.get_layer("stem").proj.kernel,
                               source.get_layer("stem").proj.kernel)

    result = _cli("train", "--model=MixerS32", f"--weights={checkpoint}",
                  "--dataset=digits", "--image_size=64", "--batch_size=16",
                  "--epochs=1", "--steps_per_epoch=2", "--verbose=2",
                  f"--output_dir={tmp_path / 'run'}")
    assert result.returncode == 0, result.stderr[-3000:]
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["config"] == "finetune" and saved["optimizer"] == "sgd"
    assert "fresh zero head for 10 classes" in result.stderr
    tuned = keras.saving.load_model(tmp_path / "run" / "final.keras")
    assert tuned.get_layer("block_0").token_mixing.fc1.kernel.shape == (4, 1024)


def test_distillation_from_a_teacher_file(tmp_path):
    teacher = keras_mixer.MLPMixer(4, 32, 1, 16, 64, input_shape=(16, 16, 3),
                                   classes=10, name="teacher")
    teacher.save(tmp_path / "teacher.keras")
    config = recipes.get_config("demo", image_size=32, epochs=1, steps_per_epoch=2,
                                teacher=str(tmp_path / "teacher.keras"))
    metrics = train.train(config, str(tmp_path / "run"), verbose=0)
    assert metrics["epochs_completed"] == 1
    student = keras.saving.load_model(tmp_path / "run" / "final.keras")
    assert student.name == "mixer_demo"  # the student, not the wrapper
    bad = recipes.get_config("demo", epochs=1, teacher=str(tmp_path / "none.keras"))
    with pytest.raises(train.InputError, match="Teacher model .* does not exist"):
        train.train(bad, str(tmp_path / "run2"))


def test_a_keras_file_as_the_model_is_refused_with_the_way_forward(tmp_path):
    config = recipes.get_config("demo", epochs=1, model=str(tmp_path / "m.keras"))
    with pytest.raises(train.InputError, match="resize_token_mixing .* fit"):
        train.train(config, str(tmp_path / "run"))
    assert not (tmp_path / "run" / "config.json").exists()

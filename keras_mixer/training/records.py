"""The records of a training run, written so that a kill at any instant
loses at most the epoch in flight and rerunning the same command resumes.

`train(config, output_dir)` leaves in `output_dir`:

    config.json     the resolved config (a rerun must match it, but for
                    `epochs`, which may grow).
    progress.json   the record of completed epochs: epochs_completed, the
                    config, one history row per epoch, the backup
                    generations, and `finished`. It is the commit point: an
                    epoch counts once its progress record is written.
    backup/         the training state (weights and optimizer) after each of
                    the last two committed epochs: `epoch-NNNNNN.weights.h5`.
    history.csv     one row per completed epoch (column `epoch`), rewritten
                    from progress.json: each epoch exactly once across resumes.
    best.keras      the model of the best validation accuracy so far (and
                    best.keras.json, its epoch and value).
    final.keras     the model at the end of training.
    metrics.json    val_accuracy, val_top5_accuracy, epochs_completed,
                    train_images_per_second, wall_seconds, ...
    labels.txt      the class names, one per line in class order (export,
                    predict and evaluate read it from beside the model).
    logs/           TensorBoard logs (TensorFlow backend).

Every file is written to a temporary name, flushed and renamed
(`keras_mixer.atomic`), so a kill never leaves a half-written file under a
final name. The end of an epoch writes the backup generation, then commits
progress.json, then rewrites history.csv and best.keras; a kill at any instant
loses at most the epoch in flight, and rerunning the same command resumes
after the last committed epoch (an interrupted history.csv or best.keras is
completed from the record). A newest backup that cannot be read (truncated,
corrupt) is dropped with a warning and the previous generation is used; the
epochs after it are trained again and recorded once. With no readable
generation at all, training starts over from the first epoch, with a warning.
"Finished" is progress.json's `finished`, written after final.keras and
metrics.json: a finished run is not trained again, and a run killed after its
last epoch but before the final save only evaluates and saves.

Test hook: with `KERAS_MIXER_TEST_KILL_AT=<point>[:<epoch>]` in the
environment the trainer SIGKILLs itself at that point (`backup_write`: the
backup's temporary file written but not renamed; `before_commit`: the backup
renamed, progress.json not yet written; `after_commit`: progress.json written,
history.csv and best.keras not yet; `after_fit`: all epochs committed, nothing
of the final save written), at the given epoch index, or the first time it
gets there. The fault-injection tests use it; it is not for use in training.
"""

import csv
import io
import json
import logging
import math
import os
import signal
import time

import keras

from keras_mixer import atomic

logger = logging.getLogger("keras_mixer")

PROGRESS = "progress.json"
BACKUP = "backup"
KILL_ENV = "KERAS_MIXER_TEST_KILL_AT"


def kill_point(name, epoch=None):
    """The fault-injection test hook (see the module docstring)."""
    spec = os.environ.get(KILL_ENV)
    if not spec:
        return
    point, _, at = spec.partition(":")
    if point != name or (at and epoch is not None and int(at) != epoch):
        return
    logger.warning("%s=%s: killing the trainer.", KILL_ENV, spec)
    logging.shutdown()
    os.kill(os.getpid(), signal.SIGKILL)


def read_progress(output_dir):
    """The run's progress record, or None before its first committed epoch."""
    path = os.path.join(output_dir, PROGRESS)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def _write_history(output_dir, rows):
    keys = []
    for row in rows:
        keys += [k for k in row if k not in keys]
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=keys)
    writer.writeheader()
    for row in rows:
        writer.writerow(row)
    atomic.write_text(os.path.join(output_dir, "history.csv"),
                      text.getvalue())


class RunRecord(keras.callbacks.Callback):
    """Backups, progress.json and history.csv, one commit per epoch.

    `on_train_begin` restores the newest readable backup generation into the
    model being fit (weights and optimizer state) and makes `fit` start after
    its epoch; `on_epoch_end` writes a new generation, commits progress.json,
    rewrites history.csv and drops generations older than the last two.
    """

    def __init__(self, output_dir, config, throughput=None):
        super().__init__()
        self.output_dir = output_dir
        self.backup_dir = os.path.join(output_dir, BACKUP)
        self.config = json.loads(json.dumps(config))
        self.throughput = throughput
        self.progress = read_progress(output_dir) or {
            "epochs_completed": 0, "generations": [], "history": [],
            "finished": False,
        }
        self.progress["config"] = self.config

    @property
    def epochs_completed(self):
        return self.progress["epochs_completed"]

    @property
    def rows(self):
        return self.progress["history"]

    def _commit(self, **changes):
        self.progress.update(changes)
        atomic.write_text(os.path.join(self.output_dir, PROGRESS),
                          json.dumps(self.progress, indent=1))

    def _remove(self, generations):
        for generation in generations:
            path = os.path.join(self.backup_dir, generation["file"])
            if os.path.exists(path):
                os.remove(path)

    def _load(self, path):
        optimizer = self.model.optimizer
        if optimizer is not None and not optimizer.built:
            optimizer.build(self.model.trainable_variables)
        self.model.load_weights(path)

    def on_train_begin(self, logs=None):
        generations = list(self.progress["generations"])
        failures = []
        if generations:  # the starting state, should no backup be readable
            optimizer = self.model.optimizer
            if optimizer is not None and not optimizer.built:
                optimizer.build(self.model.trainable_variables)
            state = list(self.model.weights) + list(
                optimizer.variables if optimizer is not None else [])
            initial = [keras.ops.convert_to_numpy(v) for v in state]
        for generation in reversed(generations):
            path = os.path.join(self.backup_dir, generation["file"])
            try:
                self._load(path)
            except Exception as error:  # noqa: BLE001 - h5py, Keras, OS errors
                failures.append(f"{path} ({type(error).__name__}: {error})")
                logger.warning(
                    "Backup %s cannot be read (%s); falling back to the "
                    "previous generation.", path, error)
                continue
            if failures:
                epochs = generation["epochs"]
                kept = generations[:generations.index(generation) + 1]
                logger.warning(
                    "Resuming from the backup after epoch %d; epochs %d..%d "
                    "are trained again.", epochs, epochs + 1,
                    self.progress["epochs_completed"])
                self._commit(epochs_completed=epochs, generations=kept,
                             history=self.rows[:epochs], finished=False)
                self._remove(generations[len(kept):])
            break
        else:
            if failures:
                logger.warning(
                    "No backup of %s can be read (%s); training starts over "
                    "from epoch 1.", self.output_dir, "; ".join(failures))
                for variable, value in zip(state, initial):
                    variable.assign(value)
                self._commit(epochs_completed=0, generations=[], history=[],
                             finished=False)
                self._remove(generations)
        if self.rows:  # completes a rewrite a kill interrupted
            _write_history(self.output_dir, self.rows)
        self.model._initial_epoch = self.epochs_completed

    def on_epoch_begin(self, epoch, logs=None):
        self._begin = time.time()

    def on_epoch_end(self, epoch, logs=None):
        row = {"epoch": epoch, "seconds": round(time.time() - self._begin, 3)}
        optimizer = self.model.optimizer
        row["learning_rate"] = float(
            keras.ops.convert_to_numpy(optimizer.learning_rate)
        )
        if self.throughput is not None and self.throughput.epochs:
            images, seconds = self.throughput.epochs[-1]
            row["train_images_per_second"] = round(images / seconds, 3)
        for key, value in sorted((logs or {}).items()):
            row[key] = float(value)
        name = f"epoch-{epoch + 1:06d}.weights.h5"
        os.makedirs(self.backup_dir, exist_ok=True)
        with atomic.writing(os.path.join(self.backup_dir, name)) as tmp:
            self.model.save_weights(tmp)
            kill_point("backup_write", epoch)
        kill_point("before_commit", epoch)
        generations = self.progress["generations"] + [
            {"epochs": epoch + 1, "file": name}]
        self._commit(epochs_completed=epoch + 1,
                     history=self.rows[:epoch] + [row],
                     generations=generations[-2:], finished=False)
        kill_point("after_commit", epoch)
        _write_history(self.output_dir, self.rows)
        keep = {g["file"] for g in self.progress["generations"]}
        for old in os.listdir(self.backup_dir):
            if old.endswith(".weights.h5") and old not in keep:
                os.remove(os.path.join(self.backup_dir, old))

    def finish(self, terminated_on_nan=False):
        """Marks the run finished: written after final.keras and
        metrics.json."""
        self._commit(finished=True, terminated_on_nan=terminated_on_nan)


class BestModel(keras.callbacks.Callback):
    """Saves the model of the best `monitor` so far as `path` (atomically),
    then its epoch and value as `path + ".json"`.

    Runs after RunRecord: a kill between an epoch's commit and this save is
    made good at the next start, from the restored backup of that epoch.
    """

    def __init__(self, path, model_to_save, record, monitor="val_accuracy"):
        super().__init__()
        self.path = path
        self.model_to_save = model_to_save
        self.record = record
        self.monitor = monitor
        self.best = -math.inf
        self.saved_epoch = None
        if os.path.exists(path + ".json") and os.path.exists(path):
            with open(path + ".json") as f:
                saved = json.load(f)
            self.best, self.saved_epoch = saved["value"], saved["epoch"]

    def _save(self, epoch, value):
        self.best = float(value)
        atomic.save_model(self.model_to_save, self.path)
        atomic.write_text(self.path + ".json", json.dumps(
            {"epoch": epoch, "monitor": self.monitor, "value": self.best}))
        self.saved_epoch = epoch

    def on_train_begin(self, logs=None):
        rows = self.record.rows
        if not rows:
            return
        last = rows[-1]
        value = last.get(self.monitor)
        earlier = [r.get(self.monitor) for r in rows[:-1]
                   if r.get(self.monitor) is not None]
        if (value is not None and value > max(earlier, default=-math.inf)
                and value > self.best and self.saved_epoch != last["epoch"]):
            # The restored state is that epoch's: save what the kill missed.
            self._save(last["epoch"], value)

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is None or not value > self.best:
            return
        self._save(epoch, value)


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
# A rerun of the same output_dir.


def check_resume(output_dir, config):
    """A rerun in the same output_dir must have the same config, but for
    `epochs`, which may grow (not below the epochs already completed)."""
    path = os.path.join(output_dir, "config.json")
    if not os.path.exists(path):
        return
    with open(path) as f:
        previous = json.load(f)
    current = json.loads(json.dumps(config))
    changed = sorted(k for k in set(previous) | set(current)
                     if k != "epochs" and previous.get(k) != current.get(k))
    if changed:
        raise ValueError(
            f"{output_dir} holds a run with another config (differs in "
            f"{', '.join(changed)}). Rerun with the same flags to resume it "
            "(only --epochs may grow), or pick a new --output_dir."
        )
    progress = read_progress(output_dir)
    completed = progress["epochs_completed"] if progress else 0
    if config["epochs"] < completed:
        raise ValueError(
            f"{output_dir} holds {completed} completed epochs; --epochs "
            f"{config['epochs']} is fewer. Give --epochs {completed} or more "
            "to continue the run, or pick a new --output_dir."
        )


def finished_metrics(output_dir, config, chief):
    """metrics.json of the finished run in `output_dir`, or None."""
    progress = read_progress(output_dir)
    if not progress or not progress.get("finished"):
        return None
    if not (progress["epochs_completed"] == config["epochs"]
            or progress.get("terminated_on_nan")):
        return None  # --epochs grew: continue
    metrics_path = os.path.join(output_dir, "metrics.json")
    final = os.path.join(output_dir, "final.keras")
    if not os.path.exists(metrics_path) or (chief and not os.path.exists(final)):
        return None  # a record removed by hand: save it again
    with open(metrics_path) as f:
        return json.load(f)

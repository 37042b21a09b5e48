"""Training and evaluation: what a run needs beyond the models.

    recipes.py     named configs, schedules, optimizers, losses (Keras only)
    data.py        tf.data pipelines by dataset name (TensorFlow), reading
                   sources.py (the bundled digits, tensorflow-datasets) and
                   folders.py (image folders)
    distribute.py  the tf.distribute strategy or JAX data parallelism
    train.py       `train(config, output_dir)`: checks, model, fit
    records.py     the run folder: backups, progress, history, best and final
                   models, metrics; resume after a kill
    evaluation.py  top-1/top-5 and few-shot linear evaluation (Keras only)

`import keras_mixer` imports `recipes` (its schedule is saved in trained
models), so this package imports nothing itself: TensorFlow loads only with
the modules that use it.
"""

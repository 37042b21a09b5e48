"""Training and evaluation: what a run needs beyond the models.

    recipes.py     named configs, schedules, optimizers, losses (Keras only)
    data.py        tf.data pipelines by dataset name (TensorFlow)
    distribute.py  the tf.distribute strategy or JAX data parallelism
    train.py       `train(config, output_dir)`: checks, fit, records, resume
    evaluation.py  top-1/top-5 and few-shot linear evaluation (Keras only)

`import keras_mixer` imports `recipes` (its schedule is saved in trained
models), so this package imports nothing itself: TensorFlow loads only with
the modules that use it.
"""

"""Writes the saved models that tests/test_saved_models.py loads back.

Each model is small, built with options away from their defaults, and has
every weight (head included) randomised, so that a layer renamed, a config
argument dropped or a variable mapped to another place changes the logits.
For each model NAME this writes, next to this script:

    NAME.keras          the whole model (config + weights)
    NAME.weights.h5     the weights alone
    NAME.json           the builder and its arguments (to rebuild the model
                        for the .weights.h5 file)
    NAME.input.npy      a batch of images
    NAME.logits.npy     the model's output on it (float32)

The mixer and resmlp files were written by the code of git a2d2373, before
the package was laid out in models/ and checkpoints/; cyclemlp and vip by the
code that added those families. They pin that saved files keep loading.
Write only a new case, by name, never the existing ones again:

    python tests/data/make_saved_models.py NAME [NAME ...]
"""

import json
import os
import sys

import numpy as np

import keras

import keras_mixer

HERE = os.path.dirname(os.path.abspath(__file__))

# name: (builder, arguments, seed).
CASES = {
    "mixer": (
        "MLPMixer",
        dict(
            patch_size=4, hidden_dim=16, num_blocks=2, tokens_mlp_dim=8,
            channels_mlp_dim=24, input_shape=(16, 12, 3), classes=5,
            classifier_activation=None, dropout_rate=0.1, drop_path_rate=0.2,
            approximate_gelu=False, layer_norm_epsilon=1e-5,
            head_dropout_rate=0.1, preprocessing="zero_one",
            name="tiny_mixer",
        ),
        0,
    ),
    "resmlp": (
        "ResMLP",
        dict(
            patch_size=4, hidden_dim=12, num_blocks=3, mlp_ratio=3,
            layerscale_init=0.3, input_shape=(8, 16, 3), classes=4,
            classifier_activation=None, dropout_rate=0.1, drop_path_rate=0.2,
            approximate_gelu=True, head_dropout_rate=0.1, preprocessing="tf",
            name="tiny_resmlp",
        ),
        1,
    ),
    # The configurations of tests/test_pyramid.py (with options away from
    # their defaults), so that its JAX and PyTorch processes reuse shapes.
    "cyclemlp": (
        "CycleMLP",
        dict(
            depths=[1, 1, 1, 1], widths=[8, 8, 16, 16], mlp_ratios=[2, 2, 4, 4],
            input_shape=(64, 64, 3), classes=5, classifier_activation=None,
            dropout_rate=0.1, drop_path_rate=0.2, head_dropout_rate=0.1,
            preprocessing="zero_one", name="tiny_cyclemlp",
        ),
        2,
    ),
    "vip": (
        "VisionPermutator",
        dict(
            patch_size=4, depths=[1, 1, 1, 1], widths=[16, 32, 32, 32],
            transitions=[True, False, False, False], segment_dims=[8, 4, 4, 4],
            mlp_ratios=3, input_shape=(32, 32, 3), classes=5,
            classifier_activation=None, dropout_rate=0.1, drop_path_rate=0.2,
            approximate_gelu=True, preprocessing="tf", name="tiny_vip",
        ),
        3,
    ),
}


def _randomise(model, seed):
    """Kernels ~ N(0, 1/fan_in), everything else ~ 1 + N(0, 0.3^2) or
    N(0, 0.3^2): no weight keeps its initial (zero, one or tiny) value."""
    rng = np.random.default_rng(seed)
    for v in model.weights:
        shape = tuple(v.shape)
        if len(shape) >= 2:
            fan_in = int(np.prod(shape[:-1]))
            value = rng.normal(size=shape) / np.sqrt(fan_in)
        elif v.path.endswith(("gamma", "alpha")):
            value = 1.0 + 0.3 * rng.normal(size=shape)
        else:
            value = 0.3 * rng.normal(size=shape)
        v.assign(value.astype("float32"))


def main(names):
    unknown = set(names) - set(CASES)
    if not names or unknown:
        raise SystemExit(f"give case names among {sorted(CASES)}")
    keras.utils.set_random_seed(0)
    for name in names:
        builder, kwargs, seed = CASES[name]
        model = getattr(keras_mixer, builder)(**kwargs)
        _randomise(model, seed)
        rng = np.random.default_rng(100 + seed)
        images = rng.uniform(0, 255, (3,) + tuple(kwargs["input_shape"]))
        images = images.astype("float32")
        logits = keras.ops.convert_to_numpy(model(images, training=False))
        prefix = os.path.join(HERE, name)
        model.save(prefix + ".keras")
        model.save_weights(prefix + ".weights.h5")
        np.save(prefix + ".input.npy", images)
        np.save(prefix + ".logits.npy", logits.astype("float32"))
        with open(prefix + ".json", "w") as f:
            json.dump({"builder": builder, "kwargs": kwargs}, f, indent=1)
            f.write("\n")
        print(f"{name}: {model.count_params()} parameters, logits "
              f"{logits.shape}, max |logit| {np.abs(logits).max():.3f}")


if __name__ == "__main__":
    main(sys.argv[1:])

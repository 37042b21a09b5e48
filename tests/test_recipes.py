"""Recipes: named configs, schedules, optimizers, accumulation, EMA,
distillation, mixed precision."""

import math

import keras
import numpy as np
import pytest

import keras_mixer
from keras_mixer.training import recipes
from keras_mixer.training import train


def test_paper_recipes_are_named_and_match_table_4():
    b16 = recipes.get_config("mixer_b16_imagenet")
    assert (b16["optimizer"], b16["beta_1"], b16["beta_2"]) == ("adamw", 0.9, 0.999)
    assert (b16["batch_size"], b16["warmup_steps"], b16["decay"]) == (4096, 10_000, "linear")
    assert (b16["learning_rate"], b16["weight_decay"], b16["global_clipnorm"]) == (1e-3, 0.1, 1.0)
    assert (b16["randaugment"], b16["mixup"], b16["drop_path_rate"]) == ((2, 15), 0.5, 0.1)
    l21k = recipes.get_config("mixer_l16_imagenet21k")
    assert (l21k["randaugment"], l21k["mixup"]) == ((2, 20), 0.5)
    ft = recipes.get_config("finetune")
    assert (ft["optimizer"], ft["momentum"], ft["batch_size"], ft["decay"]) == (
        "sgd", 0.9, 512, "cosine")
    assert (ft["weight_decay"], ft["global_clipnorm"], ft["eval_crop"]) == (
        0.0, 1.0, "resize_crop")
    s12 = recipes.get_config("resmlp_s12_imagenet")
    assert (s12["optimizer"], s12["learning_rate"], s12["weight_decay"]) == ("lamb", 5e-3, 0.2)


def test_config_errors_name_what_is_known():
    with pytest.raises(ValueError, match="Unknown config 'mixer_z'. Choose one of: default"):
        recipes.get_config("mixer_z")
    with pytest.raises(ValueError, match=r"Unknown config key\(s\) \['lr'\]"):
        recipes.get_config("default", lr=0.1)
    with pytest.raises(ValueError, match="Unknown optimizer 'adam'"):
        recipes.get_config("default", optimizer="adam")
    with pytest.raises(ValueError, match="`batch_size` must be a positive integer"):
        recipes.get_config("default", batch_size=0)
    config = recipes.get_config("mixer_b16_imagenet", epochs=3, mixup=0.0)
    assert (config["epochs"], config["mixup"], config["config"]) == (3, 0.0, "mixer_b16_imagenet")


def _reference_schedule(step, peak, total, warmup, decay, end):
    if step < warmup:
        return peak * step / warmup
    progress = min(max((step - warmup) / max(total - warmup, 1), 0.0), 1.0)
    if decay == "linear":
        fraction = 1 - progress
    elif decay == "cosine":
        fraction = 0.5 * (1 + math.cos(math.pi * progress))
    else:
        fraction = 1.0
    return end + (peak - end) * fraction


@pytest.mark.parametrize("decay", ["linear", "cosine", "constant"])
@pytest.mark.parametrize("warmup", [0, 7])
def test_warmup_decay_matches_its_formula(decay, warmup):
    schedule = recipes.WarmupDecay(0.3, 50, warmup_steps=warmup, decay=decay, end=0.01)
    for step in [0, 1, 3, 6, 7, 8, 20, 49, 50, 80]:
        expected = _reference_schedule(step, 0.3, 50, warmup, decay, 0.01)
        assert float(schedule(step)) == pytest.approx(expected, rel=1e-5, abs=1e-7)
    # Serialisable (it travels inside saved optimizers).
    again = recipes.WarmupDecay.from_config(schedule.get_config())
    assert float(again(20)) == pytest.approx(float(schedule(20)))
    with pytest.raises(ValueError, match="warmup_steps .* exceeds"):
        recipes.WarmupDecay(1.0, 10, warmup_steps=20)


def test_learning_rate_scales_linearly_with_the_effective_batch():
    config = recipes.get_config("mixer_b16_imagenet")
    assert recipes.scaled_learning_rate(config, 4096) == pytest.approx(1e-3)
    assert recipes.scaled_learning_rate(config, 1024) == pytest.approx(2.5e-4)
    config = recipes.get_config("mixer_b16_imagenet", grad_accum_steps=4)
    assert recipes.scaled_learning_rate(config, 1024) == pytest.approx(1e-3)
    schedule = recipes.make_schedule(config, 1024, steps_per_epoch=100)
    assert schedule.total_steps == 300 * 100 and schedule.warmup_steps == 10_000
    config = recipes.get_config("resmlp_s12_imagenet")
    schedule = recipes.make_schedule(config, 1024, steps_per_epoch=100)
    assert schedule.warmup_steps == 500 and schedule.peak == pytest.approx(1e-2)


@pytest.mark.parametrize("name, cls", [("adamw", keras.optimizers.AdamW),
                                       ("lamb", keras.optimizers.Lamb),
                                       ("sgd", keras.optimizers.SGD)])
def test_optimizers_carry_clipping_ema_and_accumulation(name, cls):
    config = recipes.get_config("default", optimizer=name, weight_decay=0.1,
                                ema=0.999, grad_accum_steps=2)
    optimizer = recipes.make_optimizer(config, 0.1)
    assert isinstance(optimizer, cls)
    assert optimizer.global_clipnorm == 1.0
    assert optimizer.use_ema and optimizer.ema_momentum == 0.999
    assert optimizer.gradient_accumulation_steps == 2


def test_weight_decay_reaches_kernels_only():
    layer = keras.layers.Dense(3, bias_initializer="ones")
    norm = keras.layers.LayerNormalization()
    model = keras.Sequential([keras.Input((4,)), layer, norm])
    config = recipes.get_config("default", optimizer="sgd", momentum=0.0,
                                weight_decay=0.5, global_clipnorm=None)
    optimizer = recipes.make_optimizer(config, 0.1)
    before = [np.array(v) for v in model.trainable_variables]
    zero = [keras.ops.zeros_like(v) for v in model.trainable_variables]
    optimizer.apply(zero, model.trainable_variables)
    after = {v.path: np.array(v) for v in model.trainable_variables}
    old = {v.path: b for v, b in zip(model.trainable_variables, before)}
    for path, value in after.items():
        if path.endswith("kernel"):
            np.testing.assert_allclose(value, old[path] * (1 - 0.1 * 0.5), rtol=1e-6)
        else:  # bias, gamma, beta untouched
            np.testing.assert_array_equal(value, old[path])


def _tiny_model(seed=0):
    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.Input((6,)), keras.layers.Dense(4),
                             keras.layers.Dense(3, activation="softmax")])


def test_gradient_accumulation_equals_one_step_on_the_joined_batch():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(8, 6)).astype("float32")
    y = np.eye(3, dtype="float32")[rng.integers(0, 3, 8)]
    accumulated, joined = _tiny_model(), _tiny_model()
    joined.set_weights(accumulated.get_weights())
    for model, accum in ((accumulated, 2), (joined, 1)):
        config = recipes.get_config("default", optimizer="sgd", momentum=0.0,
                                    grad_accum_steps=accum, global_clipnorm=None)
        model.compile(recipes.make_optimizer(config, 0.5),
                      loss="categorical_crossentropy")
    accumulated.fit(x, y, batch_size=4, epochs=1, shuffle=False, verbose=0)
    joined.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
    for a, b in zip(accumulated.get_weights(), joined.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    # And the update happened (not two no-ops).
    assert not np.allclose(accumulated.get_weights()[0], _tiny_model().get_weights()[0])


def test_hard_distillation_loss_is_the_deit_mix():
    rng = np.random.default_rng(1)
    student, teacher = _tiny_model(1), _tiny_model(2)
    distiller = recipes.HardDistillation(student, teacher, weight=0.3)
    distiller.compile(optimizer="sgd", loss=keras.losses.CategoricalCrossentropy())
    x = rng.normal(size=(5, 6)).astype("float32")
    y = np.eye(3, dtype="float32")[rng.integers(0, 3, 5)]
    p = np.asarray(student(x), np.float64)
    t = np.asarray(teacher(x), np.float64)
    hard = np.eye(3)[t.argmax(1)]
    ce = lambda target: float(np.mean(-np.sum(target * np.log(p), axis=1)))  # noqa: E731
    expected = 0.7 * ce(y) + 0.3 * ce(hard)
    loss = distiller.compute_loss(x=x, y=y, y_pred=student(x))
    assert float(loss) == pytest.approx(expected, rel=1e-5)
    # The teacher is frozen: training moves only the student.
    t_before = [w.copy() for w in teacher.get_weights()]
    distiller.fit(x, y, epochs=1, verbose=0)
    for a, b in zip(t_before, teacher.get_weights()):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("precision, policy", [("bfloat16", "mixed_bfloat16"),
                                               ("float16", "mixed_float16")])
def test_mixed_precision_trains_with_float32_head(precision, policy):
    assert train.set_precision(precision) == policy
    model = keras_mixer.MLPMixer(4, 16, 1, 8, 32, input_shape=(8, 8, 3), classes=3)
    config = recipes.get_config("default")
    model.compile(recipes.make_optimizer(config, 1e-3), loss=recipes.make_loss(config))
    if precision == "float16":  # compile wraps it for loss scaling.
        assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    assert model.get_layer("block_0").compute_dtype == precision
    x = np.random.uniform(0, 255, (4, 8, 8, 3)).astype("float32")
    y = np.eye(3, dtype="float32")[[0, 1, 2, 0]]
    history = model.fit(x, y, epochs=2, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    assert model.output.dtype == "float32"

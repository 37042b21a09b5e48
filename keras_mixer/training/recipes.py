"""Training recipes: named configs, learning-rate schedules, optimizers, losses.

Backend-agnostic (Keras core only); `train.py` wires them to data and
strategies. A config is a plain dict (`CONFIGS`), overridable key by key:

>>> config = keras_mixer.recipes.get_config("mixer_b16_imagenet",
...                                         epochs=3, batch_size=64)
>>> config["optimizer"], config["epochs"], config["batch_size"]
('adamw', 3, 64)

Learning-rate rule: each config quotes `learning_rate` at `base_batch`; the
run uses `learning_rate * effective_batch / base_batch` (linear scaling,
Goyal et al. 2017), where effective batch = global batch (per-replica batch x
replicas) x `grad_accum_steps`. So a recipe keeps its meaning when it moves
from a TPU pod to a few GPUs with gradient accumulation.
"""

import copy
import math

import keras
from keras import ops

from keras_mixer import checks

# Every key a config may set, with the defaults of a short generic run.
DEFAULTS = {
    # Model and data.
    "model": "MixerS16",
    "weights": None,  # name or path: fine-tune (fresh zero head).
    "dataset": "digits",
    "data_dir": None,  # tfds data_dir.
    "image_size": 224,
    "eval_split": "validation",
    "eval_crop": "resmall_crop",
    # Batch and length.
    "batch_size": 256,  # global; must divide by the number of replicas.
    "epochs": 10,
    "steps_per_epoch": None,  # default: train examples // global batch.
    "grad_accum_steps": 1,
    # Optimizer and schedule.
    "optimizer": "adamw",  # adamw | lamb | sgd
    "learning_rate": 1e-3,
    "base_batch": 256,  # learning_rate is quoted at this batch size.
    "beta_1": 0.9,
    "beta_2": 0.999,
    "momentum": 0.9,  # sgd
    "weight_decay": 0.0,  # decoupled; kernels only (not biases, norms).
    "global_clipnorm": 1.0,
    "warmup_steps": None,  # or warmup_epochs
    "warmup_epochs": 0.0,
    "decay": "linear",  # linear | cosine | constant
    "end_learning_rate": 0.0,
    "ema": 0.0,  # EMA momentum of the weights; 0 disables.
    # Regularisation and augmentation.
    "label_smoothing": 0.0,
    "dropout_rate": 0.0,
    "drop_path_rate": 0.0,
    "randaugment": None,  # (num_ops, magnitude)
    "mixup": 0.0,
    "cutmix": 0.0,
    "crop_area": (0.05, 1.0),
    # Distillation (DeiT hard distillation, the ResMLP recipe).
    "teacher": None,  # path of a .keras classifier.
    "distillation_weight": 0.5,
    # Numerics and engine.
    "precision": "float32",  # float32 | bfloat16 | float16 | auto
    "jit_compile": "auto",
    "seed": 0,
}

# Named recipes. Mixer pre-training: Table 4 of the MLP-Mixer paper with its
# shared settings (section 3: Adam 0.9/0.999, batch 4096, 10k warmup steps,
# linear decay, clipping at global norm 1, 224 px). Its weight decay 0.1 is
# multiplied by the learning rate, as flax.optim's Adam did and Keras's AdamW
# does (big_vision writes the same as wd=1e-4). ImageNet-21k is not in tfds:
# give those recipes `--dataset folder:PATH`. "finetune" is Appendix C (the
# ViT fine-tuning setup it follows: SGD momentum 0.9, batch 512, cosine with
# 500 warmup steps, clipping at 1, no weight decay; 448 px and resize-crop
# evaluation as in Table 2). ResMLP-S12: section 3.1 of the ResMLP paper
# (LAMB, lr 5e-3 at deit's reference batch 512, weight decay 0.2, 400 epochs)
# over deit's defaults; add `teacher=` for its hard distillation.
# Section 3's settings shared by every Table 4 row (ImageNet, ImageNet-21k).
_MIXER_PRETRAIN = {
    "epochs": 300, "batch_size": 4096, "base_batch": 4096,
    "learning_rate": 1e-3, "warmup_steps": 10_000, "decay": "linear",
    "weight_decay": 0.1, "dropout_rate": 0.0, "drop_path_rate": 0.1,
    "image_size": 224,
}

CONFIGS = {
    "default": {},
    "mixer_b16_imagenet": {**_MIXER_PRETRAIN, "model": "MixerB16",
                           "dataset": "imagenet2012", "randaugment": (2, 15),
                           "mixup": 0.5},
    "mixer_l16_imagenet": {**_MIXER_PRETRAIN, "model": "MixerL16",
                           "dataset": "imagenet2012", "randaugment": (2, 15),
                           "mixup": 0.5},
    "mixer_b16_imagenet21k": {**_MIXER_PRETRAIN, "model": "MixerB16",
                              "dataset": None, "randaugment": (2, 10),
                              "mixup": 0.2},
    "mixer_l16_imagenet21k": {**_MIXER_PRETRAIN, "model": "MixerL16",
                              "dataset": None, "randaugment": (2, 20),
                              "mixup": 0.5},
    "finetune": {
        "optimizer": "sgd", "momentum": 0.9, "batch_size": 512,
        "base_batch": 512, "learning_rate": 0.03, "warmup_steps": 500,
        "decay": "cosine", "weight_decay": 0.0, "global_clipnorm": 1.0,
        "image_size": 448, "epochs": 10, "eval_crop": "resize_crop",
        "crop_area": (0.05, 1.0), "label_smoothing": 0.0,
    },
    "resmlp_s12_imagenet": {
        "model": "ResMLP12", "dataset": "imagenet2012", "epochs": 400,
        "optimizer": "lamb", "batch_size": 1024, "base_batch": 512,
        "learning_rate": 5e-3, "weight_decay": 0.2, "warmup_epochs": 5,
        "decay": "cosine", "end_learning_rate": 1e-5, "global_clipnorm": None,
        "randaugment": (2, 9), "mixup": 0.8, "cutmix": 1.0,
        "label_smoothing": 0.1, "drop_path_rate": 0.1, "image_size": 224,
        "crop_area": (0.08, 1.0), "eval_crop": "resmall_crop",
        "ema": 0.99996,
    },
    # keras-mixer demo: a small Mixer on the bundled digits, offline.
    "demo": {
        "model": "demo", "dataset": "digits", "image_size": 32,
        "batch_size": 64, "base_batch": 64, "epochs": 15,
        "learning_rate": 3e-3, "warmup_epochs": 1.5, "decay": "cosine",
        "weight_decay": 0.05, "label_smoothing": 0.1, "crop_area": (0.7, 1.0),
        "eval_crop": "resize_crop", "eval_split": "validation",
    },
}

OPTIMIZERS = ("adamw", "lamb", "sgd")
DECAYS = ("linear", "cosine", "constant")
PRECISIONS = ("float32", "bfloat16", "float16", "auto")
# Variables that weight decay leaves alone: biases, LayerNorm, Affine and
# LayerScale parameters (decay on kernels only, as the official code).
NO_DECAY = ["bias", "gamma", "beta", "alpha"]


def get_config(name="default", **overrides):
    """The named recipe merged over `DEFAULTS`, then `overrides` on top.

    Raises a ValueError for an unknown name or key.
    """
    if name not in CONFIGS:
        raise ValueError(
            f"Unknown config {name!r}. Choose one of: {', '.join(CONFIGS)}."
        )
    config = copy.deepcopy(DEFAULTS)
    config.update(copy.deepcopy(CONFIGS[name]))
    unknown = sorted(set(overrides) - set(DEFAULTS))
    if unknown:
        raise ValueError(
            f"Unknown config key(s) {unknown}. Known keys: "
            f"{', '.join(sorted(DEFAULTS))}."
        )
    config.update({k: v for k, v in overrides.items()})
    config["config"] = name
    check_config(config)
    return config


def default_batch_size(name):
    """The batch size of the named config before any override."""
    return CONFIGS[name].get("batch_size", DEFAULTS["batch_size"])


def check_config(config):
    """Refuses values that would fail later, with what to use instead."""
    for key, allowed in (("optimizer", OPTIMIZERS), ("decay", DECAYS),
                         ("precision", PRECISIONS)):
        if config[key] not in allowed:
            raise ValueError(
                f"Unknown {key} {config[key]!r}; use one of {allowed}."
            )
    for key in ("batch_size", "epochs", "image_size", "grad_accum_steps"):
        checks.check_int(key, config[key])
    if config["learning_rate"] <= 0:
        raise ValueError("learning_rate must be positive.")
    if config["randaugment"] is not None:
        num_ops, magnitude = config["randaugment"]
        if int(num_ops) < 1 or not 0 <= float(magnitude) <= 20:
            raise ValueError(
                f"randaugment {config['randaugment']}: give (num_ops >= 1, "
                "magnitude in 0..20), e.g. (2, 15)."
            )


def scaled_learning_rate(config, global_batch):
    """`learning_rate * global_batch * grad_accum_steps / base_batch`."""
    effective = global_batch * config["grad_accum_steps"]
    return config["learning_rate"] * effective / config["base_batch"]


def learning_rate_rule(config, global_batch):
    """The learning-rate rule with this run's numbers, as train prints it.

    >>> config = keras_mixer.recipes.get_config("default")
    >>> print(keras_mixer.recipes.learning_rate_rule(config, 8))
    peak lr = lr x batch / base_batch = 0.001 x 8 / 256 = 3.13e-05 (the
    learning rate is 32x smaller than --learning_rate 0.001: give
    --base_batch 8 to train at it)
    """
    accum = config["grad_accum_steps"]
    names = "lr x batch" + (" x grad_accum_steps" if accum > 1 else "")
    numbers = f"{config['learning_rate']:g} x {global_batch}" + (
        f" x {accum}" if accum > 1 else "")
    peak = scaled_learning_rate(config, global_batch)
    rule = (f"peak lr = {names} / base_batch = {numbers} / "
            f"{config['base_batch']} = {peak:.3g}")
    factor = config["learning_rate"] / peak
    if factor >= 4:  # a hint when the rule shrinks the rate a lot
        rule += (f" (the learning rate is {factor:.3g}x smaller than "
                 f"--learning_rate {config['learning_rate']:g}: give "
                 f"--base_batch {global_batch * accum} to train at it)")
    return rule


@keras.saving.register_keras_serializable(package="keras_mixer")
class WarmupDecay(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warmup from 0 to `peak`, then linear, cosine or no decay to
    `end` at `total_steps` (held there after).

    >>> schedule = keras_mixer.recipes.WarmupDecay(1.0, 10, warmup_steps=2)
    >>> [round(float(schedule(s)), 3) for s in (0, 1, 2, 6, 10, 12)]
    [0.0, 0.5, 1.0, 0.5, 0.0, 0.0]
    """

    def __init__(self, peak, total_steps, warmup_steps=0, decay="linear",
                 end=0.0):
        if decay not in DECAYS:
            raise ValueError(f"Unknown decay {decay!r}; use one of {DECAYS}.")
        if warmup_steps > total_steps:
            raise ValueError(
                f"warmup_steps ({warmup_steps}) exceeds the run's "
                f"{total_steps} steps: shorten warmup or train longer."
            )
        self.peak = float(peak)
        self.total_steps = int(total_steps)
        self.warmup_steps = int(warmup_steps)
        self.decay = decay
        self.end = float(end)

    def __call__(self, step):
        step = ops.cast(step, "float32")
        warmup = float(max(self.warmup_steps, 1))
        warm = self.peak * step / warmup
        span = float(max(self.total_steps - self.warmup_steps, 1))
        progress = ops.clip((step - self.warmup_steps) / span, 0.0, 1.0)
        if self.decay == "linear":
            fraction = 1.0 - progress
        elif self.decay == "cosine":
            fraction = 0.5 * (1.0 + ops.cos(math.pi * progress))
        else:
            fraction = ops.ones_like(progress)
        decayed = self.end + (self.peak - self.end) * fraction
        if self.warmup_steps == 0:
            return decayed
        return ops.where(step < self.warmup_steps, warm, decayed)

    def get_config(self):
        return {"peak": self.peak, "total_steps": self.total_steps,
                "warmup_steps": self.warmup_steps, "decay": self.decay,
                "end": self.end}


def make_schedule(config, global_batch, steps_per_epoch):
    """The config's schedule over `epochs * steps_per_epoch` optimizer calls."""
    total = config["epochs"] * steps_per_epoch
    warmup = config["warmup_steps"]
    if warmup is None:
        warmup = int(round(config["warmup_epochs"] * steps_per_epoch))
    warmup = min(int(warmup), total)
    return WarmupDecay(
        scaled_learning_rate(config, global_batch), total,
        warmup_steps=warmup, decay=config["decay"],
        end=config["end_learning_rate"],
    )


def make_optimizer(config, learning_rate):
    """AdamW, LAMB or momentum SGD with the config's clipping, weight decay,
    EMA and gradient accumulation."""
    common = {
        "global_clipnorm": config["global_clipnorm"],
        "use_ema": bool(config["ema"]),
        "ema_momentum": float(config["ema"] or 0.99),
        "gradient_accumulation_steps": (
            config["grad_accum_steps"] if config["grad_accum_steps"] > 1
            else None
        ),
    }
    weight_decay = config["weight_decay"] or None
    name = config["optimizer"]
    if name == "adamw":
        optimizer = keras.optimizers.AdamW(
            learning_rate, weight_decay=weight_decay or 0.0,
            beta_1=config["beta_1"], beta_2=config["beta_2"], **common,
        )
    elif name == "lamb":
        optimizer = keras.optimizers.Lamb(
            learning_rate, beta_1=config["beta_1"], beta_2=config["beta_2"],
            weight_decay=weight_decay, **common,
        )
    else:
        optimizer = keras.optimizers.SGD(
            learning_rate, momentum=config["momentum"],
            weight_decay=weight_decay, **common,
        )
    if weight_decay:
        optimizer.exclude_from_weight_decay(var_names=NO_DECAY)
    return optimizer


def make_loss(config):
    return keras.losses.CategoricalCrossentropy(
        label_smoothing=config["label_smoothing"]
    )


def make_metrics():
    return [
        keras.metrics.CategoricalAccuracy(name="accuracy"),
        keras.metrics.TopKCategoricalAccuracy(k=5, name="top5_accuracy"),
    ]


class HardDistillation(keras.Model):
    """DeiT hard distillation without a distillation token (the ResMLP
    recipe): loss = (1 - w) * CE(labels, p) + w * CE(argmax teacher, p).

    Wraps `student` for training only; save `distiller.student`. The teacher
    (any classifier on the same raw-pixel inputs, e.g. a `.keras` file) is
    frozen and called in inference mode.
    """

    def __init__(self, student, teacher, weight=0.5, **kwargs):
        super().__init__(name=kwargs.pop("name", "hard_distillation"),
                         **kwargs)
        self.student = student
        self.teacher = teacher
        self.teacher.trainable = False
        self.weight = float(weight)
        self._teacher_loss = keras.losses.CategoricalCrossentropy()

    def call(self, inputs, training=False):
        return self.student(inputs, training=training)

    def teacher_targets(self, inputs):
        """One-hot of the teacher's top-1 class, at the teacher's input size."""
        size = self.teacher.input_shape[1:3]
        if tuple(inputs.shape[1:3]) != tuple(size):
            inputs = ops.image.resize(inputs, size)
        logits = self.teacher(inputs, training=False)
        classes = logits.shape[-1]
        return ops.one_hot(ops.argmax(logits, axis=-1), classes)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None,
                     training=True):
        base = super().compute_loss(
            x=x, y=y, y_pred=y_pred, sample_weight=sample_weight,
            training=training,
        )
        hard = ops.stop_gradient(self.teacher_targets(x))
        distill = self._teacher_loss(hard, ops.cast(y_pred, "float32"))
        return (1.0 - self.weight) * base + self.weight * distill

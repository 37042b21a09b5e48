"""The `keras-mixer` command line: `keras-mixer <command> [--flags]`.

Commands:
    summary   the layers, parameter count and GFLOPs per image of a model.
    weights   the table of pretrained weights (all, or --model's).
    convert   builds a model with --weights and saves it as --output
              (.keras or .weights.h5), for air-gapped machines.

Examples:
    keras-mixer summary --model MixerB16 --image_size 224
    keras-mixer weights --model MixerB16
    keras-mixer convert --model MixerB16 --weights imagenet1k --output mixer_b16.keras
"""

import sys

from absl import app
from absl import flags

FLAGS = flags.FLAGS

flags.DEFINE_string(
    "model", None, "Model name, e.g. MixerB16, MixerS32, ResMLP12 "
    "(summary: default MixerB16)."
)
flags.DEFINE_string(
    "weights", None, "Weights name (see `keras-mixer weights`) or file path."
)
flags.DEFINE_string("output", None, "Output file: .keras or .weights.h5.")
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


def model_constructor(name):
    """The constructor of a named variant, or a UsageError listing them."""
    import keras_mixer

    if name not in keras_mixer.MODELS:
        raise app.UsageError(
            f"Unknown --model {name!r}. Choose one of: "
            f"{', '.join(keras_mixer.MODELS)}."
        )
    return keras_mixer.MODELS[name]


def build_from_flags(weights=None):
    import keras_mixer

    name = FLAGS.model or "MixerB16"
    constructor = model_constructor(name)
    classes = FLAGS.classes
    if classes is None:
        entry = keras_mixer.WEIGHTS.get(name, {}).get(weights or "")
        classes = entry["classes"] if entry else 1000
        if entry is None and weights and not weights.endswith(".weights.h5"):
            from keras_mixer import convert as convert_lib

            try:  # a local checkpoint: keep its head
                classes = convert_lib.read_checkpoint(weights).num_classes or 1000
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
    model = build_from_flags(weights=FLAGS.weights)
    if FLAGS.output.endswith(".weights.h5"):
        model.save_weights(FLAGS.output)
    else:
        model.save(FLAGS.output)
    print(f"wrote {FLAGS.output}: {model.name}, {model.count_params():,} parameters")
    return 0


COMMANDS = {"summary": summary, "weights": weights, "convert": convert}


def main(argv):
    if len(argv) < 2 or argv[1] not in COMMANDS:
        given = argv[1] if len(argv) > 1 else "nothing"
        raise app.UsageError(
            f"Expected a command ({', '.join(COMMANDS)}), got {given!r}. "
            "Example: keras-mixer summary --model MixerB16"
        )
    if len(argv) > 2:
        raise app.UsageError(
            f"Unexpected arguments {argv[2:]}; flags take the form --name=value."
        )
    return COMMANDS[argv[1]](argv[2:])


def run():
    """Entry point of the `keras-mixer` console script."""
    app.run(main, argv=sys.argv)

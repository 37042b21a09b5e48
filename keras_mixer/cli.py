"""The `keras-mixer` command line: `keras-mixer <command> [--flags]`.

Commands:
    summary   the layers, parameter count and GFLOPs per image of a model.

Example:
    keras-mixer summary --model MixerB16 --image_size 224
"""

import sys

from absl import app
from absl import flags

FLAGS = flags.FLAGS

flags.DEFINE_string(
    "model", "MixerB16", "Model name, e.g. MixerB16, MixerS32, ResMLP12."
)
flags.DEFINE_integer(
    "image_size", None, "Input side in pixels; default: the model's (224)."
)
flags.DEFINE_integer("channels", 3, "Input channels.")
flags.DEFINE_integer("classes", 1000, "Classes of the head.")
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


def build_from_flags():
    constructor = model_constructor(FLAGS.model)
    kwargs = dict(classes=FLAGS.classes, include_top=FLAGS.include_top)
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
    print(f"model: {FLAGS.model} ({model.name})")
    print(f"input: {height}x{width}x{channels}")
    print(f"parameters: {model.count_params():,}")
    gflops = keras_mixer.count_flops(model) / 1e9
    print(f"GFLOPs per image (2 x multiply-accumulates): {gflops:.2f}")
    return 0


COMMANDS = {"summary": summary}


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

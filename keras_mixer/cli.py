"""The `keras-mixer` command line: `keras-mixer COMMAND [--flag=value ...]`.

Parsing and dispatch only; the commands themselves are in `commands.py`.
`COMMANDS` (the table at the end of this file) gives each command its
function, its line in `keras-mixer --help`, an example and its own flags.
Each command parses its arguments with a `flags.FlagValues` of its own, built
from its row of the table, so a flag means one thing in each command, and a
flag that another command takes is refused by name rather than ignored. The
function is called with the parsed values as keyword arguments; train and
evaluate get the flags that set a training config (`CONFIG`) as one resolved
`config` dict.

`keras-mixer --help` lists the commands, one line each; `keras-mixer COMMAND
--help` (or `-h`) prints that command's flags with their defaults and an
example. A mistyped command or flag is refused with the nearest valid name.
"""

import ast
import difflib
import logging
import sys
import textwrap
import typing

from absl import app
from absl import flags

import keras

from keras_mixer import commands
from keras_mixer import tf_logs
from keras_mixer.training import recipes


class Flag(typing.NamedTuple):
    """One flag of one command: absl's `DEFINE_<kind>`, its help and
    default, the choices of an enum, and whether it sets the training config
    (train and evaluate: unset, it keeps the config's value)."""

    kind: str
    help: str
    default: object = None
    choices: tuple = ()
    config: bool = False


class Command(typing.NamedTuple):
    """A `keras-mixer` command: its function, its line in `keras-mixer
    --help`, one example, its flags (name -> Flag, in help order), the flags
    it cannot run without, and the parameter that receives the positional
    arguments (image files), if it takes any."""

    function: typing.Callable
    summary: str
    example: str
    flags: dict
    needs: tuple = ()
    positional: str = ""


def _define(values, name, flag):
    if flag.kind == "enum":
        flags.DEFINE_enum(name, flag.default, flag.choices, flag.help,
                          flag_values=values)
    else:
        define = getattr(flags, f"DEFINE_{flag.kind}")
        define(name, flag.default, flag.help, flag_values=values)


def flag_values(command):
    """A fresh `flags.FlagValues` holding `command`'s flags."""
    values = flags.FlagValues()
    for name, flag in command.flags.items():
        _define(values, name, flag)
    return values


def _nearest(name, candidates):
    close = difflib.get_close_matches(name, list(candidates), n=1)
    return close[0] if close else None


def _unknown_flag(name, flag):
    """The usage error for `--flag`, which command `name` does not take."""
    takers = [n for n, c in COMMANDS.items() if flag in c.flags]
    near = _nearest(flag, COMMANDS[name].flags)
    hint = f"; did you mean --{near}?" if near else "."
    if not takers:
        return app.UsageError(f"Unknown flag --{flag}{hint}")
    return app.UsageError(f"--{flag} is not a flag of {name} (it is one of "
                          f"{', '.join(takers)}){hint}")


def parse(argv):
    """`(command name, {flag: value}, [positional ...])` of `argv`
    ([program, command, ...]), parsed with the command's own flags; raises
    app.UsageError for a missing or unknown command, an unknown flag or a
    bad value."""
    if len(argv) > 1 and argv[1].startswith("-"):
        raise app.UsageError(
            f"Give the command first: keras-mixer COMMAND --flags "
            f"({', '.join(COMMANDS)}).")
    if len(argv) < 2 or argv[1] not in COMMANDS:
        given = argv[1] if len(argv) > 1 else "nothing"
        near = _nearest(given, COMMANDS) if len(argv) > 1 else None
        hint = f" Did you mean {near!r}?" if near else ""
        raise app.UsageError(
            f"Expected a command ({', '.join(COMMANDS)}), got {given!r}."
            f"{hint} Example: keras-mixer summary --model MixerB16"
        )
    name, command = argv[1], COMMANDS[argv[1]]
    values = flag_values(command)
    try:
        positional = values([argv[0]] + list(argv[2:]))[1:]
    except flags.UnrecognizedFlagError as error:
        raise _unknown_flag(name, error.flagname) from None
    except flags.Error as error:
        raise app.UsageError(str(error)) from None
    if positional and not command.positional:
        raise app.UsageError(
            f"Unexpected arguments {positional}; flags take the form "
            "--name=value.")
    return name, {n: values[n].value for n in command.flags}, positional


def make_config(values):
    """The training config named by --config (default: finetune with
    --weights, else default) with every config flag that is set and each
    --override key=value applied; raises app.UsageError for a bad one."""
    overrides = {k: v for k, v in values.items()
                 if v is not None and k not in ("config", "randaugment",
                                                "override")}
    randaugment = values.get("randaugment")
    if randaugment is not None:
        text = randaugment.strip().lower()
        if text in ("none", "0", ""):
            overrides["randaugment"] = None
        else:
            try:
                num_ops, magnitude = (float(v) for v in text.split(","))
            except ValueError:
                raise app.UsageError(
                    f"--randaugment {randaugment!r}: give 'num_ops,magnitude',"
                    " e.g. 2,15, or none."
                ) from None
            overrides["randaugment"] = (int(num_ops), magnitude)
    for item in values.get("override", ()):
        key, sep, value = item.partition("=")
        if not sep:
            raise app.UsageError(
                f"--override {item!r}: use key=value, e.g. crop_area=(0.3,1.0)."
            )
        try:
            overrides[key.strip()] = ast.literal_eval(value.strip())
        except (ValueError, SyntaxError):
            overrides[key.strip()] = value.strip()
    name = values.get("config") or ("finetune" if values.get("weights")
                                    else "default")
    try:
        return recipes.get_config(name, **overrides)
    except ValueError as error:
        raise app.UsageError(str(error)) from None


def run_command(name, values, positional=()):
    """Calls command `name`'s function with its parsed flags `values` and
    `positional` arguments; returns its exit status."""
    command = COMMANDS[name]
    if any(values[n] in (None, "") for n in command.needs):
        needs = [f"--{n}" for n in command.needs]
        listed = " and ".join([", ".join(needs[:-1]), needs[-1]] if
                              len(needs) > 1 else needs)
        raise app.UsageError(f"{name} needs {listed}, e.g. {command.example}")
    kwargs = {n: v for n, v in values.items() if not command.flags[n].config}
    config = {n: v for n, v in values.items() if command.flags[n].config}
    if config:
        kwargs["config"] = make_config(config)
    if command.positional:
        kwargs[command.positional] = list(positional)
    return command.function(**kwargs)


def main(argv):
    """Parses `argv` ([program, command, ...]) and runs its command; raises
    app.UsageError for bad input."""
    return run_command(*parse(argv))


# ----------------------------------------------------------------------------
# Help.


def overview():
    """`keras-mixer --help`: the commands, one line each."""
    width = max(len(name) for name in COMMANDS)
    lines = ["usage: keras-mixer COMMAND [--flag=value ...]", "",
             "commands:"]
    lines += [f"  {name:<{width}}  {command.summary}"
              for name, command in COMMANDS.items()]
    lines += ["", "`keras-mixer COMMAND --help` prints a command's flags and "
              "an example."]
    return "\n".join(lines)


def _default(name, flag):
    value = flag.default
    if value is None and flag.config:  # the config decides
        value = recipes.DEFAULTS.get(name)
        return "" if value is None else f" (default config: {value})"
    if value is None or value == []:
        return ""
    if isinstance(value, bool):
        value = str(value).lower()
    return f" (default: {value})"


def command_help(name):
    """`keras-mixer NAME --help`: that command's flags, defaults, example."""
    command = COMMANDS[name]
    files = f" {command.positional.upper()}..." if command.positional else ""
    lines = [f"keras-mixer {name}: {command.summary}.", "",
             f"usage: keras-mixer {name} [--flag=value ...]{files}", "",
             "flags:"]
    for flag_name, flag in command.flags.items():
        lines.append(f"  --{flag_name}")
        given = (" (required)" if flag_name in command.needs
                 else _default(flag_name, flag))
        lines += textwrap.wrap(flag.help + given, 76,
                               initial_indent="      ",
                               subsequent_indent="      ")
    if any(flag.config for flag in command.flags.values()):
        lines += ["", "Flags left unset keep the --config's values (shown: the "
                  "default config's; see keras_mixer.recipes.CONFIGS)."]
    lines += ["", "example:", f"  {command.example}"]
    return "\n".join(lines)


# ----------------------------------------------------------------------------
# The console script.

HELP = ("-h", "--help", "-help", "--helpfull", "--helpshort", "help")


class _Messages(logging.Formatter):
    """keras_mixer's log lines as plain sentences; warnings say so."""

    def format(self, record):
        message = super().format(record)
        if record.levelno >= logging.WARNING:
            return f"{record.levelname.lower()}: {message}"
        return message


def _start_devices():
    """TensorFlow's devices started with their start-up lines dropped."""
    if keras.backend.backend() == "tensorflow":
        with tf_logs.quiet_startup():
            import tensorflow as tf

            tf.config.list_physical_devices()


def execute(argv):
    """`keras-mixer` with `argv` ([program, arguments ...]): prints help or
    runs a command, and returns the exit status (2 for bad input). Nothing
    global is parsed, so it can run in-process."""
    args = list(argv[1:])
    own = args[:args.index("--")] if "--" in args else args
    if not args or args[0] in HELP:
        name = args[1] if len(args) > 1 and args[0] == "help" else None
        if name in COMMANDS:
            print(command_help(name))
            return 0
        print(overview(), file=sys.stdout if args else sys.stderr)
        return 0 if args else 2
    name = args[0]
    if name in COMMANDS and any(a in HELP[:-1] for a in own[1:]):
        print(command_help(name))
        return 0
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Messages())
    logger = logging.getLogger("keras_mixer")
    tf_logger = logging.getLogger("tensorflow")
    levels = logger.level, tf_logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    if not tf_logs.USER_SET:  # TensorFlow's INFO lines with its C++ ones
        tf_logger.setLevel(logging.WARNING)
    try:
        parsed = parse(["keras-mixer"] + args)
        _start_devices()
        return run_command(*parsed) or 0
    except app.UsageError as error:
        where = f" {name}" if name in COMMANDS else ""
        more = (f"`keras-mixer {name} --help` lists its flags."
                if name in COMMANDS else
                "`keras-mixer --help` lists the commands.")
        print(f"keras-mixer{where}: error: {error}\n{more}", file=sys.stderr)
        return 2
    finally:
        logger.removeHandler(handler)
        logger.setLevel(levels[0])
        tf_logger.setLevel(levels[1])


def run():
    """Entry point of the `keras-mixer` console script."""
    sys.exit(execute(sys.argv))


# ----------------------------------------------------------------------------
# The commands and their flags. A flag defined once here means the same in
# every command that lists it; a command whose flag means something else
# defines its own.

MODEL = Flag("string", "Model name, e.g. MixerB16, MixerS32, ResMLP12.")
WEIGHTS = Flag("string", "Weights name (see `keras-mixer weights`) or file "
               "path.")
MODEL_FILE = Flag("string", "A .keras file (e.g. a run's final.keras), or a "
                  "model name with --weights.")
IMAGE_SIZE = Flag("integer", "Input side in pixels; default: the model's "
                  "(224).")
CHANNELS = Flag("integer", "Input channels.", 3)
CLASSES = Flag("integer", "Classes of the head; default: the weights' (or "
               "1000).")
INCLUDE_TOP = Flag("bool", "Build with the classification head.", True)
# The commands that build a named model or load a .keras file.
MODEL_FLAGS = dict(model=MODEL, weights=WEIGHTS, image_size=IMAGE_SIZE,
                   channels=CHANNELS, classes=CLASSES, include_top=INCLUDE_TOP)
DATA_DIR = Flag("string", "tensorflow-datasets data_dir, where `tfds build "
                "NAME --data_dir DIR` prepared the dataset (default: "
                "~/tensorflow_datasets).")
VERBOSE = Flag("integer", "Keras progress: 1 bar, 2 one line per epoch "
               "(default: bar on a terminal).")
TOP_K = Flag("integer", "Classes in the top-k outputs; default: min(5, "
             "classes).")


def _config(kind, help, choices=()):
    return Flag(kind, help, choices=choices, config=True)


# The flags that set a training config (train, evaluate).
CONFIG = dict(
    config=_config("string", "Named recipe (keras_mixer.recipes.CONFIGS), "
                   "e.g. mixer_b16_imagenet, mixer_l16_imagenet21k, "
                   "resmlp_s12_imagenet, finetune; default: finetune with "
                   "--weights, else default."),
    model=_config("string", MODEL.help),
    weights=_config("string", WEIGHTS.help),
    dataset=_config("string", "digits (bundled), a tensorflow-datasets name "
                    "(cifar10, imagenet2012, ...) or folder:PATH (one "
                    "sub-folder per class)."),
    data_dir=_config("string", DATA_DIR.help),
    image_size=_config("integer", IMAGE_SIZE.help),
    epochs=_config("integer", "Epochs."),
    batch_size=_config("integer", "Global batch size (per-replica batch x "
                       "replicas)."),
    steps_per_epoch=_config("integer", "Steps per epoch; default: training "
                            "examples // global batch."),
    learning_rate=_config("float", "Peak learning rate at --base_batch; the "
                          "run uses learning_rate x batch_size x "
                          "grad_accum_steps / base_batch (printed at start)."),
    base_batch=_config("integer", "The batch size --learning_rate is quoted "
                       "at; set it to --batch_size to use --learning_rate as "
                       "is."),
    optimizer=_config("enum", "Optimizer.", recipes.OPTIMIZERS),
    weight_decay=_config("float", "Decoupled weight decay (kernels)."),
    warmup_steps=_config("integer", "Linear warmup steps."),
    decay=_config("enum", "Decay after warmup.", recipes.DECAYS),
    label_smoothing=_config("float", "Label smoothing."),
    dropout_rate=_config("float", "Dropout in the MLPs."),
    drop_path_rate=_config("float", "Stochastic depth (last block)."),
    mixup=_config("float", "MixUp alpha (0: off)."),
    cutmix=_config("float", "CutMix alpha (0: off)."),
    ema=_config("float", "EMA momentum of the weights (0: off)."),
    grad_accum_steps=_config("integer", "Gradient accumulation steps."),
    precision=_config("string", "float32, bfloat16 (mixed; TPU, CPU), "
                      "float16 (mixed with loss scaling; GPU), or auto."),
    teacher=_config("string", "Teacher .keras file for hard distillation "
                    "(DeiT / ResMLP recipe)."),
    eval_crop=_config("enum", "Evaluation crop.", ("resmall_crop",
                                                   "resize_crop")),
    seed=_config("integer", "Random seed."),
    randaugment=_config("string", "RandAugment 'num_ops,magnitude' "
                        "(magnitude 0..20), or 'none'."),
    override=Flag("multi_string", "Any other config key: --override "
                  "key=value (Python literal).", [], config=True),
)

COMMANDS = {
    "summary": Command(
        commands.summary, "layers, parameter count and GFLOPs per image of a "
                          "model",
        "keras-mixer summary --model MixerB16 --image_size 224",
        dict(model=MODEL._replace(default="MixerB16"), image_size=IMAGE_SIZE,
             channels=CHANNELS, classes=CLASSES, include_top=INCLUDE_TOP)),
    "weights": Command(
        commands.weights, "the table of pretrained weights (all, or "
                          "--model's)",
        "keras-mixer weights --model MixerB16",
        dict(model=Flag("string", "Only this model's weights, e.g. "
                        "MixerB16."))),
    "convert": Command(
        commands.convert, "a model with pretrained weights saved as .keras "
                          "or .weights.h5",
        "keras-mixer convert --model MixerB16 --weights imagenet1k "
        "--output mixer_b16.keras",
        dict(MODEL_FLAGS, output=Flag("string", "The file to write: .keras "
                                      "(whole model) or .weights.h5.")),
        needs=("model", "weights", "output")),
    "train": Command(
        commands.train, "trains or fine-tunes a model; rerun to resume",
        "keras-mixer train --dataset folder:photos --model MixerS16 "
        "--image_size 64 --epochs 30 --output_dir runs/photos",
        dict(CONFIG,
             batch_size=_config("integer", "Global batch size (per-replica "
                                "batch x replicas); when not given, the "
                                "config's is lowered to fit a small "
                                "dataset."),
             image_size=_config("integer", "Input side in pixels, a multiple "
                                "of the model's patch size."),
             weights=_config("string", "Pretrained weights to fine-tune from "
                             "(a name, see `keras-mixer weights`, or a file); "
                             "the head starts fresh."),
             output_dir=Flag("string", "Run folder: backups, history.csv, "
                             "best.keras, final.keras, metrics.json, logs/."),
             strategy=Flag("enum", "tf.distribute strategy (TensorFlow "
                           "backend).", "auto", ("auto", "tpu", "mirrored",
                                                 "multi_worker",
                                                 "one_device")),
             tpu=Flag("string", "TPU name or grpc:// address."),
             cpu_devices=Flag("integer", "Split the CPU into this many "
                              "logical devices (to run MirroredStrategy on a "
                              "CPU)."),
             verbose=VERBOSE),
        needs=("output_dir",)),
    "evaluate": Command(
        commands.evaluate, "top-1/top-5 accuracy on a dataset, or few-shot "
                           "accuracy",
        "keras-mixer evaluate --model runs/photos/final.keras "
        "--dataset folder:photos",
        dict(CONFIG, model=MODEL_FILE._replace(config=True), classes=CLASSES,
             split=Flag("string", "Split (default: the config's eval_split, "
                        "validation)."),
             fewshot=Flag("string", "Few-shot linear evaluation with these "
                          "shots per class, e.g. 1,5,10,25."),
             labels=Flag("string", "Class names the model was trained on, "
                         "one per line (default: the labels.txt beside "
                         "--model); evaluate refuses a dataset with other "
                         "classes."),
             output=Flag("string", "Also write the report to this .json "
                         "file.")),
        needs=("model",)),
    "demo": Command(
        commands.demo, "trains, exports and runs a small Mixer on bundled "
                       "digits (offline)",
        "keras-mixer demo --output_dir mixer_demo",
        dict(output_dir=Flag("string", "Run folder.", "mixer_demo"),
             epochs=Flag("integer", "Epochs (default: the demo config's, "
                         "15)."),
             verbose=VERBOSE)),
    "export": Command(
        commands.export, "a TF Serving SavedModel, TFLite and ONNX files of "
                         "a model",
        "keras-mixer export --model runs/photos/final.keras --output "
        "export/models/photos --tflite none,dynamic_int8",
        dict(MODEL_FLAGS, model=MODEL_FILE,
             output=Flag("string", "The model's base path: the SavedModel "
                         "goes to <output>/<version>/, TFLite files and "
                         "labels.txt to <output>/."),
             version=Flag("integer", "SavedModel version folder.", 1),
             tflite=Flag("string", "TFLite files to write, e.g. none,float16,"
                         "dynamic_int8,int8 (int8 calibrates on --dataset)."),
             onnx=Flag("bool", "Also write <output>/<name>.onnx (tf2onnx, "
                       "checked with onnxruntime).", False),
             top_k=TOP_K,
             labels=Flag("string", "Class names, one per line; default: the "
                         "labels.txt beside the model file (train writes "
                         "it), else the ImageNet names for 1000/21843/11221 "
                         "classes."),
             overwrite=Flag("bool", "Replace an existing version.", False),
             dataset=Flag("string", "Images to calibrate --tflite int8 on: "
                          "digits, folder:PATH or a tensorflow-datasets "
                          "name."),
             data_dir=DATA_DIR),
        needs=("output",)),
    "predict": Command(
        commands.predict, "top classes of image files (SavedModel, .tflite, "
                          ".keras)",
        "keras-mixer predict --model_dir export/models/photos/1 cat.jpg "
        "dog.png",
        dict(model_dir=Flag("string", "A SavedModel version directory, a "
                            ".tflite or a .keras file."),
             labels=Flag("string", "Class names, one per line; default: the "
                         "SavedModel's own, else the labels.txt beside the "
                         ".tflite or .keras file."),
             top_k=TOP_K),
        needs=("model_dir",), positional="images"),
    "visualize": Command(
        commands.visualize, "a figure of a model's learned weights, as a "
                            ".png",
        "keras-mixer visualize --model MixerB16 --weights imagenet21k "
        "--output units.png",
        dict(MODEL_FLAGS, output=Flag("string", "The .png file to write."),
             figure=Flag("enum", "The figure; auto is token_mixing for Mixer "
                         "and gMixer, cross_patch for ResMLP and gMLP, stem "
                         "for ConvMixer, CycleMLP and ViP.", "auto",
                         ("auto", "token_mixing", "stem", "cross_patch",
                          "sparsity")),
             block=Flag("integer", "The block of token_mixing and "
                        "cross_patch.", 0))),
    "benchmark": Command(
        commands.benchmark, "images/s through predict, fit, model(x)... "
                            "with timm's",
        "keras-mixer benchmark --model MixerB16 --batch_size 32 "
        "--precision float32,bfloat16 --mode infer,train",
        dict(model=MODEL._replace(default="MixerB16"),
             batch_size=Flag("integer", "Batch size.", 32),
             image_size=Flag("integer", "Input side in pixels.", 224),
             precision=Flag("string", "Dtype policies to measure, a list, "
                            "e.g. float32,bfloat16.", "float32"),
             mode=Flag("string", "infer, train or both (infer,train).",
                       "infer"),
             paths=Flag("string", "The calls to time, a list of "
                        "predict_numpy, call, predict_on_batch, "
                        "predict_dataset, fit_numpy, train_on_batch, "
                        "fit_dataset (default: all of the modes)."),
             steps=Flag("integer", "Batches per predict / fit call (the "
                        "other calls run one).", 3),
             rounds=Flag("integer", "Interleaved timed rounds; figures are "
                         "medians over them.", 3),
             warmup=Flag("integer", "Untimed calls of each measurement "
                         "first.", 1),
             timm=Flag("bool", "Also time timm's model when torch and timm "
                       "import.", True),
             jit_compile=Flag("enum", "XLA (torch.compile on PyTorch); auto "
                              "keeps Keras's default.",
                              "auto", ("auto", "true", "false")),
             tflite=Flag("string", "Also batch-1 TFLite latency of these "
                         "quantizations against none, e.g. dynamic_int8."))),
}

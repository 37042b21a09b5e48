"""The `keras-mixer` command line, run as a user runs it."""

import os
import re
import shutil
import subprocess
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))

ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}


def _run(*args):
    return subprocess.run(
        [sys.executable, "-m", "keras_mixer", *args],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=300,
    )


def test_summary_prints_layers_parameters_and_gflops():
    result = _run("summary", "--model=MixerS32", "--image_size=64", "--classes=10")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "block_7" in out and "pre_head_norm" in out
    import keras_mixer

    model = keras_mixer.MixerS32(input_shape=(64, 64, 3), classes=10)
    params = int(re.search(r"parameters: ([\d,]+)", out).group(1).replace(",", ""))
    assert params == model.count_params()
    gflops = float(re.search(r"GFLOPs per image.*: ([\d.]+)", out).group(1))
    assert gflops == pytest.approx(keras_mixer.count_flops(model) / 1e9, abs=0.005)


def test_summary_of_b16_at_224_reports_25_gflops():
    result = _run("summary", "--model=MixerB16")
    assert result.returncode == 0, result.stderr
    assert "parameters: 59,880,472" in result.stdout
    assert "GFLOPs per image (2 x multiply-accumulates): 25.20" in result.stdout


@pytest.mark.parametrize(
    "args, message",
    [
        (["summary", "--model=MixerZ9"], "Unknown model 'MixerZ9'. Choose one of: MixerS32"),
        (["summary", "--model=MixerS32", "--image_size=50"], "not a multiple of the patch size 32"),
        (["fly"], "Expected a command (summary, weights, convert, train, evaluate, demo, export, predict, visualize, benchmark), got 'fly'"),
        (["visualize", "--model=MixerS32", "--output=units.jpg"], "visualize needs --output ending in .png"),
        (["benchmark", "--model=MixerB16", "--image_size=200"], "image_size 200 is not a multiple of MixerB16's patch size 16: use 192 or 208"),
        (["benchmark", "--precision=float64"], "Unknown precision 'float64'; use one or more of float32, bfloat16"),
        ([], "Expected a command"),
    ],
)
def test_bad_input_is_a_usage_error(args, message, cli_usage_error):
    """In this process: each check fails before any work starts."""
    assert message in cli_usage_error(*args)


def test_a_usage_error_exits_non_zero_with_the_message_on_stderr():
    """The same checks, as the console script reports them."""
    result = _run("summary", "--model=MixerZ9")
    assert result.returncode != 0
    assert "Unknown model 'MixerZ9'. Choose one of: MixerS32" in result.stderr


def test_console_script_is_installed():
    script = shutil.which("keras-mixer")
    if script is None:
        pytest.skip("keras-mixer is not on PATH: install with pip install -e .")
    result = subprocess.run(
        [script, "summary", "--model=ResMLP12", "--image_size=32"],
        capture_output=True, text=True, env=ENV, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "parameters:" in result.stdout


def test_weights_lists_the_table():
    result = _run("weights", "--model=MixerB16")
    assert result.returncode == 0, result.stderr
    assert "imagenet21k: 21843 classes" in result.stdout
    assert "mixer_models/gsam/Mixer-B_16.npz" in result.stdout
    everything = _run("weights")
    assert "ResMLPB24" in everything.stdout and "dino" in everything.stdout


@pytest.mark.parametrize("suffix", [".keras", ".weights.h5"])
def test_convert_a_local_checkpoint(tmp_path, suffix):
    import keras
    import numpy as np

    import keras_mixer
    from test_weights import _randomise, to_official_npz

    source = keras_mixer.MixerS32(input_shape=(64, 64, 3), classes=10)
    _randomise(source, seed=9)
    to_official_npz(source, tmp_path / "ckpt.npz")
    out = tmp_path / f"mixer{suffix}"
    result = _run(
        "convert", "--model=MixerS32", f"--weights={tmp_path / 'ckpt.npz'}",
        "--image_size=64", f"--output={out}",
    )
    assert result.returncode == 0, result.stderr
    x = np.random.default_rng(0).uniform(0, 255, (1, 64, 64, 3))
    if suffix == ".keras":
        restored = keras.models.load_model(out)
    else:
        restored = keras_mixer.MixerS32(input_shape=(64, 64, 3), classes=10)
        restored.load_weights(out)
    np.testing.assert_allclose(restored(x), source(x), rtol=1e-6, atol=1e-7)


def test_convert_needs_its_flags():
    result = _run("convert", "--model=MixerS32")
    assert result.returncode != 0
    assert "convert needs --model, --weights and --output" in result.stderr


def test_readme_quickstart_is_exactly_the_two_commands():
    readme = open(os.path.join(os.path.dirname(__file__), "..", "README.md")).read()
    block = readme.split("## Quickstart", 1)[1].split("```", 2)[1]
    assert block.strip().splitlines() == [
        "pip install -e . && keras-mixer demo",
        'pip install -e ".[test]" && pytest',
    ]


# ----------------------------------------------------------------------------
# Help and names, in this process (`cli.execute` is the console script's
# body; flags are reset after each call).


def _execute(capsys, *args):
    from keras_mixer import cli

    code = cli.execute(["keras-mixer", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_help_lists_each_command_on_one_line(capsys):
    from keras_mixer import cli

    for args in (["--help"], ["-h"], ["help"]):
        code, out, _ = _execute(capsys, *args)
        assert code == 0
        lines = out.splitlines()
        for name in cli.COMMANDS:
            assert len([l for l in lines if l.startswith(f"  {name} ")]) == 1
        assert max(len(l) for l in lines) <= 80
    code, _, err = _execute(capsys)  # nothing: the same list, as an error
    assert code == 2 and "commands:" in err


@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_command_help_is_its_flags_with_defaults_and_an_example(capsys, flag):
    from keras_mixer import cli

    everything = set().union(*(c.flags for c in cli.COMMANDS.values()))
    for name, command in cli.COMMANDS.items():
        code, out, _ = _execute(capsys, name, flag)
        assert code == 0, name
        shown = set(re.findall(r"^  --(\w+)$", out, re.MULTILINE))
        assert shown == set(command.flags), name
        assert not (everything - set(command.flags)) & shown
        assert f"example:\n  keras-mixer {name} " in out
    _, out, _ = _execute(capsys, "summary", flag)
    assert re.search(r"--channels\n\s+Input channels\. \(default: 3\)", out)
    _, out, _ = _execute(capsys, "train", flag, "--modle=typo")
    assert re.search(r"--base_batch\n.*\(default config: 256\)", out, re.DOTALL)


def test_each_command_takes_exactly_its_flags_and_its_example_parses():
    """The table behind the help and the flag checks agrees with the code:
    each command's function takes exactly the flags of its row (those that
    set the config as one `config`, the image files as its positional
    parameter), and its example parses with its own flags only."""
    import inspect
    import shlex

    from keras_mixer import cli

    for name, command in cli.COMMANDS.items():
        takes = {n for n, f in command.flags.items() if not f.config}
        takes |= {"config"} if any(
            f.config for f in command.flags.values()) else set()
        takes |= {command.positional} - {""}
        assert set(inspect.signature(command.function).parameters) == takes
        assert set(command.needs) <= set(command.flags), name
        parsed, values, _ = cli.parse(shlex.split(command.example))
        assert parsed == name and set(values) == set(command.flags)


def test_no_code_reads_global_flags():
    """Flags are parsed per command and passed on: nothing in the package
    defines or reads absl's global FLAGS."""
    import pathlib

    package = pathlib.Path(__file__).parent.parent / "keras_mixer"
    readers = [str(p) for p in package.rglob("*.py")
               if re.search(r"\bFLAGS\b", p.read_text())]
    assert readers == []


def test_a_flag_of_two_commands_is_explained_for_each(capsys):
    """--output, --precision and --tflite mean something else in each
    command that takes them; each command's help says its own meaning."""
    texts = {}
    for name in ("convert", "evaluate", "export", "visualize", "train",
                 "benchmark"):
        _, out, _ = _execute(capsys, name, "--help")
        for flag in ("output", "precision", "tflite"):
            found = re.search(rf"^  --{flag}\n((?:      .*\n?)+)", out,
                              re.MULTILINE)
            if found:
                texts.setdefault(flag, {})[name] = " ".join(
                    found.group(1).split())
    assert len(set(texts["output"].values())) == 4
    assert texts["precision"]["train"] != texts["precision"]["benchmark"]
    assert texts["tflite"]["export"] != texts["tflite"]["benchmark"]
    for flag in texts.values():  # no help names another command's use
        for name, text in flag.items():
            assert not re.search(r"\b(train|benchmark|export|evaluate):",
                                 text), (name, text)


@pytest.mark.parametrize("args, message", [
    (["trian"], "got 'trian'. Did you mean 'train'?"),
    (["summary", "--modle=MixerS32"], "Unknown flag --modle; did you mean --model?"),
    (["summary", "--epochs=3"], "--epochs is not a flag of summary (it is one of train, evaluate, demo)"),
    (["export", "--lables=l.txt"], "did you mean --labels?"),
    (["--model=MixerS32", "summary"], "Give the command first"),
])
def test_unknown_names_get_the_nearest_valid_one(capsys, args, message):
    code, out, err = _execute(capsys, *args)
    assert code == 2 and out == ""
    assert message in err
    assert "--help` lists" in err


def test_console_script_help_is_quiet_and_exits_zero():
    """As installed: no TensorFlow start-up lines (log level left unset)."""
    script = shutil.which("keras-mixer")
    command = [script] if script else [sys.executable, "-m", "keras_mixer"]
    env = {k: v for k, v in ENV.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    result = subprocess.run(command + ["train", "-h"], capture_output=True,
                            text=True, env=env, timeout=300)
    assert result.returncode == 0 and result.stderr == ""
    assert result.stdout.startswith("keras-mixer train: ")
    assert "--base_batch" in result.stdout and "--fewshot" not in result.stdout


def test_tensorflow_start_up_lines_are_dropped_and_the_rest_kept(
        monkeypatch, capfd):
    from keras_mixer import tf_logs

    monkeypatch.setattr(tf_logs, "USER_SET", False)
    noise = (
        "WARNING: All log messages before absl::InitializeLog() is called are "
        "written to STDERR\n"
        "I0000 00:00:1795966434.904185    7788 port.cc:153] oneDNN custom "
        "operations are on.\n"
        "I0000 00:00:1795966434.967848    7788 cpu_feature_guard.cc:227] This "
        "TensorFlow binary is optimized\n"
        "To enable the following instructions: AVX2 FMA, in other operations, "
        "rebuild TensorFlow with the appropriate compiler flags.\n"
        "E0000 00:00:1795966437.348085    7788 cuda_platform.cc:52] failed call "
        "to cuInit: INTERNAL: CUDA error\n")
    kept = "E0000 00:00:1795966437.348085    7788 io.cc:1] disk full\nother\n"
    with tf_logs.quiet_startup():
        os.write(2, (noise + kept).encode())
    assert capfd.readouterr().err == kept
    with pytest.raises(ImportError):  # a failure shows every line
        with tf_logs.quiet_startup():
            os.write(2, noise.encode())
            raise ImportError("no tensorflow")
    assert capfd.readouterr().err == noise
    monkeypatch.setattr(tf_logs, "USER_SET", True)  # the user's level: all
    with tf_logs.quiet_startup():
        os.write(2, noise.encode())
    assert capfd.readouterr().err == noise

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

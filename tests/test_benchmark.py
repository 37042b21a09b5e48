"""keras_mixer.benchmark: argument checks, the arithmetic of the rates (on a
fake clock), Keras and timm rows of a small model, timm's model against
keras_mixer's on the same weights, the Markdown report."""

import functools
import importlib.util
import itertools
import sys

import keras
import numpy as np
import pytest

import keras_mixer
from keras_mixer import benchmark

# A one-block Mixer: Keras rows in seconds on two cores.
TINY = functools.partial(
    keras_mixer.MLPMixer, patch_size=16, hidden_dim=32, num_blocks=1,
    tokens_mlp_dim=16, channels_mlp_dim=64, classes=10)
SMALL_MATMUL = (64, 32, 48)


@pytest.fixture
def tiny(monkeypatch):
    """Registers the tiny Mixer as "MixerTiny"; records the global dtype
    policy each build sees."""
    policies = []

    def build(**kwargs):
        policies.append(keras.config.dtype_policy().name)
        return TINY(**kwargs)

    monkeypatch.setitem(keras_mixer.MODELS, "MixerTiny", build)
    return policies


def tiny_flops(image_size=32):
    return keras_mixer.count_flops(
        TINY(input_shape=(image_size, image_size, 3)))


class FakeClock:
    """Each call returns the next of `times` (default: 0, 1, 2, ...)."""

    def __init__(self, times=None):
        self.times = iter(times) if times is not None else itertools.count()
        self.calls = 0

    def __call__(self):
        self.calls += 1
        return float(next(self.times))


def timm_or_skip():
    pytest.importorskip("torch")
    try:
        return benchmark.import_timm()
    except ImportError as error:
        pytest.skip(f"timm does not import: {error}")


# --------------------------------------------------------------------------
# Bad input


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(model_name="MixerB17"), "Unknown model 'MixerB17'"),
        (dict(precisions="float16"), "Unknown precision 'float16'"),
        (dict(precisions="float32,mixed_bfloat16"), "Unknown precision"),
        (dict(modes="eval"), "Unknown mode 'eval'"),
        (dict(modes=()), "`mode` is empty"),
        (dict(batch_size=0), "`batch_size` must be a positive integer"),
        (dict(batch_size=2.0), "`batch_size` must be a positive integer"),
        (dict(batch_size=True), "`batch_size` must be a positive integer"),
        (dict(image_size=70),
         "not a multiple of MixerS32's patch size 32: use 64 or 96"),
        (dict(model_name="ResMLPB24", image_size=60), "patch size 8: use 56 or 64"),
        (dict(steps=0), "`steps` must be a positive integer"),
        (dict(warmup=-1), "`warmup` must be an integer >= 0"),
    ],
)
def test_bad_arguments_raise_before_any_work(monkeypatch, kwargs, message):
    def no_work(*args, **kwargs):
        raise AssertionError("measured before checking the arguments")

    for name in ("matmul_rate", "keras_throughput", "timm_throughput",
                 "import_timm", "machine_description"):
        monkeypatch.setattr(benchmark, name, no_work)
    arguments = dict(model_name="MixerS32", batch_size=2, image_size=64,
                     precisions="float32", modes="infer", steps=1, warmup=1)
    arguments.update(kwargs)
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        benchmark.run(**arguments)


def test_throughput_functions_check_their_arguments():
    with pytest.raises(ValueError, match="Unknown mode 'predict'"):
        benchmark.keras_throughput("MixerS32", 2, 64, mode="predict")
    with pytest.raises(ValueError, match="Unknown precision 'int8'"):
        benchmark.timm_throughput("MixerS32", 2, 64, precision="int8")
    with pytest.raises(ValueError, match="dtype"):
        benchmark.matmul_rate("float16", 8, 8, 8)
    with pytest.raises(ValueError, match="`k` must be"):
        benchmark.matmul_rate("float32", 8, 0, 8)
    with pytest.raises(ValueError, match="timm has no model for 'MixerS8'"):
        benchmark.build_timm_model("MixerS8", 64)


# --------------------------------------------------------------------------
# Matmul rate


def test_matmul_rate_arithmetic_on_a_fake_clock(monkeypatch):
    # (start, stop) per timed call: 0.3 s, 0.1 s, 0.2 s without XLA, then
    # (TensorFlow only) 0.5 s, 0.05 s, 0.4 s with XLA: the fastest counts.
    clock = FakeClock([0, 0.3, 1, 1.1, 2, 2.2, 3, 3.5, 4, 4.05, 5, 5.4])
    monkeypatch.setattr(benchmark, "_now", clock)
    m, k, n = 30, 50, 70
    rate = benchmark.matmul_rate("float32", m, k, n, repeats=3,
                                 backend="tensorflow")
    assert clock.calls == 12
    assert rate == pytest.approx(2 * m * k * n / 0.05 / 1e9)
    clock = FakeClock([0, 0.3, 1, 1.1, 2, 2.2])
    monkeypatch.setattr(benchmark, "_now", clock)
    rate = benchmark.matmul_rate("float32", m, k, n, repeats=3, backend="jax")
    assert clock.calls == 6
    assert rate == pytest.approx(2 * m * k * n / 0.1 / 1e9)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_matmul_rate_is_positive(dtype):
    rate = benchmark.matmul_rate(dtype, 128, 128, 128, repeats=2)
    assert np.isfinite(rate) and rate > 0


def test_matmul_rate_default_shape_is_mixer_b16_channel_mlp():
    assert benchmark.MATMUL_SHAPE == (32 * 196, 768, 3072)


# --------------------------------------------------------------------------
# Keras rows


@pytest.mark.parametrize("hook", ["train", "predict"])
def test_step_timer_times_exactly_the_timed_batches(monkeypatch, hook):
    # batch b begins at 100 b and lasts 2 + b^2; batches 2 .. 4 are timed:
    # 6, 11, 18 (median 11, mean 11.67).
    clock_value = {}
    monkeypatch.setattr(benchmark, "_now", lambda: clock_value["t"])
    timer = benchmark._StepTimer(first=2, last=4)
    begin = getattr(timer, f"on_{hook}_batch_begin")
    end = getattr(timer, f"on_{hook}_batch_end")
    for batch in range(6):
        clock_value["t"] = 100 * batch
        begin(batch)
        clock_value["t"] = 100 * batch + 2 + batch ** 2
        end(batch)
    assert timer.durations == [6, 11, 18]
    assert timer.median == 11
    assert timer.seconds == 418 - 200
    with pytest.raises(RuntimeError, match="did not run the timed batches"):
        benchmark._StepTimer(first=2, last=9).seconds


@pytest.mark.parametrize("mode", ["infer", "train"])
def test_keras_throughput_counts_the_timed_images(monkeypatch, tiny, mode):
    timers = []

    class RecordingTimer(benchmark._StepTimer):
        def __init__(self, first, last):
            super().__init__(first, last)
            self.batches = []
            timers.append(self)

        def on_train_batch_begin(self, batch, logs=None):
            self.batches.append(batch)
            super().on_train_batch_begin(batch, logs)

        on_predict_batch_begin = on_train_batch_begin

    monkeypatch.setattr(benchmark, "_StepTimer", RecordingTimer)
    # The timed batches 1 .. 3 last 1, 5 and 2 s (each reads the clock at
    # its begin and end hooks) and span 22 s: median 2 s, mean 2.67 s.
    monkeypatch.setattr(benchmark, "_now", FakeClock([0, 1, 10, 15, 20, 22]))
    result = benchmark.keras_throughput(
        "MixerTiny", batch_size=2, image_size=32, mode=mode, steps=3, warmup=1)
    # One fit / predict call: 1 warmup batch, then batches 1 .. 3 timed.
    [timer] = timers
    assert timer.batches == [0, 1, 2, 3]
    assert (timer.first, timer.last) == (1, 3)
    assert timer.durations == [1.0, 5.0, 2.0]
    assert result["seconds"] == 22.0
    assert result["images_per_s"] == 2 / 2.0
    assert result["flops_per_image"] == tiny_flops()
    assert result["jit_compile"] in (True, False)


def test_run_keras_rows(tiny):
    rows, machine = benchmark.run(
        "MixerTiny", batch_size=2, image_size=32,
        precisions="float32,bfloat16", modes="infer,train", steps=2, warmup=1,
        timm=True, matmul_shape=SMALL_MATMUL, matmul_repeats=2)
    # bfloat16 builds under mixed_bfloat16; the global policy comes back.
    assert tiny == ["float32", "float32", "mixed_bfloat16", "mixed_bfloat16"]
    assert keras.config.dtype_policy().name == "float32"
    assert machine["timm"] == "no timm model for MixerTiny"
    rates = machine["matmul_gflop_per_s"]
    assert set(rates) == {"float32", "bfloat16"} and min(rates.values()) > 0
    assert [(r["framework"], r["precision"], r["mode"]) for r in rows] == [
        ("keras_mixer", "float32", "infer"), ("keras_mixer", "float32", "train"),
        ("keras_mixer", "bfloat16", "infer"), ("keras_mixer", "bfloat16", "train"),
    ]
    flops = tiny_flops()
    by_key = {(r["precision"], r["mode"]): r for r in rows}
    for row in rows:
        assert row["images_per_s"] > 0
        assert (row["model"], row["batch"], row["image_size"]) == ("MixerTiny", 2, 32)
        factor = 3 if row["mode"] == "train" else 1
        assert row["gflop_per_s"] == pytest.approx(
            factor * flops * row["images_per_s"] / 1e9)
        assert row["matmul_fraction"] == pytest.approx(
            row["gflop_per_s"] / rates[row["precision"]])
        assert "ratio_vs_timm" not in row
        if row["precision"] == "bfloat16":
            assert row["ratio_vs_float32"] == pytest.approx(
                row["images_per_s"]
                / by_key[("float32", row["mode"])]["images_per_s"])
        else:
            assert "ratio_vs_float32" not in row


# --------------------------------------------------------------------------
# timm


def test_import_timm_gives_real_timm_and_says_whether_it_stubbed():
    torchvision_missing = (
        "torchvision" not in sys.modules
        and importlib.util.find_spec("torchvision") is None
    ) or benchmark.torchvision_is_stub()
    timm, stubbed = timm_or_skip()
    assert stubbed is torchvision_missing
    assert stubbed is benchmark.torchvision_is_stub()
    assert hasattr(timm, "create_model")
    assert not hasattr(timm, "__keras_mixer_torchvision_stub__")
    if not stubbed:
        return
    import torchvision.ops.misc

    # Placeholders are distinct (timm keys dicts on them) and refuse use.
    modes = torchvision.transforms.functional.InterpolationMode
    assert modes.BILINEAR is modes.BILINEAR and modes.BILINEAR is not modes.BICUBIC
    with pytest.raises(RuntimeError, match="inert stand-in"):
        torchvision.ops.misc.FrozenBatchNorm2d(3)
    # Modules timm imports inside try/except stay missing.
    with pytest.raises(ImportError):
        import torchvision.models.feature_extraction  # noqa: F401
    # Refusing the stand-in: no timm, no timm rows.
    with pytest.raises(ImportError, match="stand-in"):
        benchmark.import_timm(stub_torchvision=False)
    with_timm, info = benchmark._timm_status("MixerS32", True, False)
    assert not with_timm and info["timm"].startswith("not importable")


def test_timm_model_is_keras_mixers_model_on_the_same_weights(tmp_path):
    timm, _ = timm_or_skip()
    import torch
    from timm.models.mlp_mixer import MlpMixer

    save_file = pytest.importorskip("safetensors.torch").save_file

    model = benchmark.build_timm_model("MixerS32", image_size=64)
    assert isinstance(model, MlpMixer)
    # timm zeroes the head at init; random values everywhere make every
    # tensor count.
    torch.manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias") or name.startswith("head"):
                p.copy_(torch.randn_like(p) * 0.1)
            elif "norm" in name:
                p.copy_(1 + torch.randn_like(p) * 0.1)
    path = tmp_path / "mixer_s32_224.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))

    ours = keras_mixer.MixerS32(weights=str(path), input_shape=(64, 64, 3),
                                include_preprocessing=False,
                                classifier_activation=None)
    x = np.random.default_rng(0).standard_normal((2, 64, 64, 3)).astype("float32")
    model.eval()
    with torch.inference_mode():
        expected = model(torch.from_numpy(x.transpose(0, 3, 1, 2))).numpy()
    logits = keras.ops.convert_to_numpy(ours(x))
    assert expected.shape == (2, 1000) and expected.std() > 0.1
    np.testing.assert_allclose(logits, expected, rtol=1e-4,
                               atol=1e-4 * np.abs(expected).max())
    assert keras_mixer.count_flops(ours) == keras_mixer.count_flops(
        keras_mixer.MixerS32(input_shape=(64, 64, 3)))


@pytest.mark.parametrize("precision, mode", [("float32", "infer"),
                                             ("bfloat16", "train")])
def test_timm_throughput_counts_the_timed_images(monkeypatch, precision, mode):
    timm_or_skip()
    # Three timed steps of 1, 5 and 2 s (each reads the clock twice): the
    # median is 2 s, the mean 2.67 s.
    monkeypatch.setattr(benchmark, "_now", FakeClock([0, 1, 10, 15, 20, 22]))
    result = benchmark.timm_throughput("MixerS32", batch_size=2, image_size=32,
                                       precision=precision, mode=mode,
                                       steps=3, warmup=1)
    assert result["seconds"] == 8.0 and result["images_per_s"] == 2 / 2.0
    assert result["timm_name"] == "mixer_s32_224"
    assert result["timm_torchvision_stub"] is benchmark.torchvision_is_stub()


def test_run_with_timm_rows():
    _, stubbed = timm_or_skip()
    rows, machine = benchmark.run(
        "MixerS32", batch_size=2, image_size=32, precisions="float32",
        modes="infer", steps=1, warmup=1, matmul_shape=SMALL_MATMUL,
        matmul_repeats=2)
    assert machine["timm"] == "mixer_s32_224"
    assert machine["timm_torchvision_stub"] is stubbed
    assert machine["torch_matmul_gflop_per_s"]["float32"] > 0
    keras_row, timm_row = rows
    assert (keras_row["framework"], timm_row["framework"]) == ("keras_mixer", "timm")
    flops = keras_mixer.count_flops(keras_mixer.MixerS32(input_shape=(32, 32, 3)))
    for row in rows:
        assert row["images_per_s"] > 0
        assert row["gflop_per_s"] == pytest.approx(flops * row["images_per_s"] / 1e9)
    assert timm_row["timm_torchvision_stub"] is stubbed
    assert keras_row["ratio_vs_timm"] == pytest.approx(
        keras_row["images_per_s"] / timm_row["images_per_s"])
    text = benchmark.format_markdown(rows, machine)
    assert "| timm (torch eager" in text
    assert ("torchvision stub" in text) is stubbed


# --------------------------------------------------------------------------
# Report


def test_markdown_has_the_command_machine_and_rows():
    machine = dict(cpu="Test CPU", cores=2, usable_cores=2, python="3.11",
                   backend="tensorflow", versions={"keras": "3.0", "jax": None},
                   matmul_shape=(6272, 768, 3072),
                   matmul_gflop_per_s={"float32": 100.0, "bfloat16": 400.0},
                   timm="mixer_b16_224", timm_torchvision_stub=True,
                   command=benchmark.command_line(
                       "MixerB16", 32, 224, ("float32", "bfloat16"),
                       ("infer",), 10, 2, jit_compile=True))
    rows = [
        dict(framework="keras_mixer", model="MixerB16", precision="float32",
             mode="infer", batch=32, images_per_s=320.0, gflop_per_s=90.0,
             matmul_fraction=0.9, jit_compile=True, ratio_vs_timm=1.25),
        dict(framework="timm", model="MixerB16", precision="float32",
             mode="infer", batch=32, images_per_s=256.0, gflop_per_s=72.0,
             matmul_fraction=0.72, timm_torchvision_stub=True),
    ]
    text = benchmark.format_markdown(rows, machine)
    assert ("python benchmarks/throughput.py --model=MixerB16 --batch_size=32 "
            "--image_size=224 --precision=float32,bfloat16 --mode=infer "
            "--steps=10 --warmup=2 --jit_compile=true") in text
    assert "Test CPU, 2 cores" in text and "keras 3.0" in text and "jax" not in text
    assert "float32 100.0 GFLOP/s, bfloat16 400.0 GFLOP/s" in text
    assert "inert stand-in" in text
    assert ("| keras_mixer (tensorflow, XLA) | MixerB16 | float32 | infer | 32 "
            "| 320.0 | 100.0 | 90.0 | 90% | 1.25 | – |") in text
    assert "| timm (torch eager, torchvision stub) | MixerB16 |" in text
    text = benchmark.format_markdown(
        rows, machine, command="keras-mixer benchmark --model MixerB16")
    assert text.count("keras-mixer benchmark --model MixerB16") == 1
    assert "benchmarks/throughput.py" not in text

"""keras_mixer.benchmark: argument checks, the arithmetic of interleaved rounds,
medians, spreads, per-round ratios and the busy-machine check (on a fake
clock and fake readings), the Keras paths of a tiny model, timm's model
against keras_mixer's on the same weights, benchmarks/'s torchvision
stand-in, and the Markdown report. Nothing here times anything."""

import functools
import itertools
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

import keras_mixer
from keras_mixer import benchmark
from keras_mixer.benchmark import keras_paths
from keras_mixer.benchmark import report
from keras_mixer.benchmark import timing
from keras_mixer.benchmark import torch_models

BENCHMARKS = os.path.join(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))), "benchmarks")

# A one-block Mixer: its Keras calls take a fraction of a second.
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


class FakeClock:
    """Each call returns the next of `times` (default: 0, 1, 2, ...)."""

    def __init__(self, times=None):
        self.times = iter(times) if times is not None else itertools.count()
        self.calls = 0

    def __call__(self):
        self.calls += 1
        return float(next(self.times))


class QuietMachine(timing.MachineLoad):
    """Readings of an idle machine: load 0, no other CPU time."""

    def __init__(self):
        idle = itertools.count(0, 100)  # only idle ticks pass
        super().__init__(read_loadavg=lambda: 0.0,
                         read_jiffies=lambda: (0, 0, next(idle)),
                         own_cpu_seconds=lambda: 0.0, ticks_per_second=100)


def standin():
    sys.path.insert(0, BENCHMARKS)
    try:
        import torchvision_standin
    finally:
        sys.path.remove(BENCHMARKS)
    return torchvision_standin


def timm_or_skip():
    pytest.importorskip("torch")
    try:
        return standin().import_timm()
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
        (dict(paths="predict"), "Unknown path 'predict'"),
        (dict(paths="fit_numpy"), "'fit_numpy' is a train path"),
        (dict(batch_size=0), "`batch_size` must be a positive integer"),
        (dict(batch_size=2.0), "`batch_size` must be a positive integer"),
        (dict(batch_size=True), "`batch_size` must be a positive integer"),
        (dict(image_size=70),
         "not a multiple of MixerS32's patch size 32: use 64 or 96"),
        (dict(model_name="ResMLPB24", image_size=60), "patch size 8: use 56 or 64"),
        (dict(steps=0), "`steps` must be a positive integer"),
        (dict(rounds=0), "`rounds` must be a positive integer"),
        (dict(warmup=-1), "`warmup` must be an integer >= 0"),
        (dict(matmul_shape=(8, 8)), "`matmul_shape` must be"),
    ],
)
def test_bad_arguments_raise_before_any_work(monkeypatch, kwargs, message):
    def no_work(*args, **kwargs):
        raise AssertionError("measured before checking the arguments")

    for owner, name in ((keras_paths, "build"), (keras_paths, "matmul_timers"),
                        (timing, "interleave"), (benchmark, "_timm_model"),
                        (benchmark, "MachineLoad")):
        monkeypatch.setattr(owner, name, no_work)
    arguments = dict(model_name="MixerS32", batch_size=2, image_size=64,
                     precisions="float32", modes="infer", steps=1, rounds=1,
                     warmup=1)
    arguments.update(kwargs)
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        benchmark.run(**arguments)


def test_parts_check_their_arguments():
    with pytest.raises(ValueError, match=r"Unknown path\(s\) \['predict'\]"):
        keras_paths.keras_measurements(TINY(input_shape=(32, 32, 3)),
                                       ["predict"], 2, 1)
    with pytest.raises(ValueError, match="No matmul timer for backend 'mlx'"):
        keras_paths.matmul_timers("float32", 8, 8, 8, "mlx")
    with pytest.raises(ValueError, match="timm has no model for 'MixerS8'"):
        torch_models.timm_model("MixerS8", 64)
    with pytest.raises(ValueError, match="names repeat"):
        timing.interleave([timing.Measurement("a", int)] * 2, rounds=1)
    with pytest.raises(ValueError, match="same rounds"):
        timing.ratios([1.0], [1.0, 2.0], 1, 1)


# --------------------------------------------------------------------------
# The arithmetic, on a fake clock


def test_interleave_warms_up_then_alternates_rounds(monkeypatch):
    calls = []
    measurements = [timing.Measurement(name, functools.partial(calls.append, name))
                    for name in ("A", "B", "C")]
    # Each timed call reads the clock twice: A, B, C of round 0 take 1, 2
    # and 4 s, then 3, 5, 1 in round 1.
    monkeypatch.setattr(timing, "_now", FakeClock(
        [0, 1, 10, 12, 20, 24, 30, 33, 40, 45, 50, 51]))
    seen = []
    times = timing.interleave(measurements, rounds=2, warmup=2,
                              on_round=lambda i, t: seen.append((i, t)))
    assert calls == ["A", "A", "B", "B", "C", "C"] + ["A", "B", "C"] * 2
    assert times == {"A": [1, 3], "B": [2, 5], "C": [4, 1]}
    assert seen == [(0, {"A": 1, "B": 2, "C": 4}), (1, {"A": 3, "B": 5, "C": 1})]


def test_self_timed_measurements_report_their_own_seconds(monkeypatch):
    # best_seconds: 0.3, 0.1, 0.2 s after one warm-up call -> 0.1; the
    # clock around the self-timed call is never read.
    clock = FakeClock([0, 0.3, 1, 1.1, 2, 2.2])
    monkeypatch.setattr(timing, "_now", clock)
    counted = []
    m = keras_paths.matmul_measurement(
        "mm", [lambda: counted.append(1)], 30, 50, 70, repeats=3)
    assert m.self_timed and m.flops == 2 * 30 * 50 * 70
    assert timing.time_call(m) == pytest.approx(0.1)
    assert clock.calls == 6 and len(counted) == 4
    # A plain call returning a float (train_on_batch returns the loss) is
    # timed around the call, not taken at its word.
    monkeypatch.setattr(timing, "_now", FakeClock([5, 7]))
    assert timing.time_call(timing.Measurement("loss", lambda: 6.9)) == 2


def test_matmul_rate_is_flops_over_the_best_time(monkeypatch):
    # One timer (JAX's), 2 warm-up calls then 3 timed: 0.5, 0.25, 1.0 s.
    monkeypatch.setattr(timing, "_now", FakeClock([0, 0.5, 1, 1.25, 2, 3]))
    calls = []
    monkeypatch.setattr(keras_paths, "matmul_timers",
                        lambda *args: [lambda: calls.append(args)])
    rate = benchmark.matmul_rate("float32", (10, 20, 30), repeats=3,
                                 backend="jax")
    assert rate == pytest.approx(2 * 10 * 20 * 30 / 0.25 / 1e9)
    assert len(calls) == 5 and calls[0] == ("float32", 10, 20, 30, "jax")
    with pytest.raises(ValueError, match="precision"):
        benchmark.matmul_rate("float16")

def test_spread_rates_and_round_by_round_ratios():
    assert timing.spread([3, 1, 2, 10]) == dict(median=2.5, low=1, high=10)
    assert timing.rates([2.0, 4.0], 8) == [4.0, 2.0]
    # A does 8 images in 2 s then 4 s; B does 4 images in 4 s then 8 s: A is
    # 4x B in both rounds, although the machine halved its speed between.
    assert timing.ratios([2.0, 4.0], [4.0, 8.0], 8, 4) == [4.0, 4.0]
    with pytest.raises(ValueError, match="No values"):
        timing.spread([])


def _rows(times, extra=()):
    m = timing.Measurement
    measurements = [
        m("float32/matmul/tensorflow", None, flops=100e9, matmul=True),
        m("float32/matmul/torch", None, flops=50e9, matmul=True),
        m("float32/predict_numpy", None, images=64, flops=64e9,
          framework="keras_mixer", path="predict_numpy", mode="infer",
          precision="float32", library="tensorflow"),
        m("float32/timm/infer", None, images=32, flops=32e9, framework="timm",
          reference=True, mode="infer", precision="float32", library="torch"),
        *extra,
    ]
    return report.rows_from_times(measurements, times, "MixerTiny", 32, 224)


def test_rows_medians_spreads_and_ratios_from_the_same_rounds():
    times = {
        "float32/matmul/tensorflow": [1.0, 2.0, 1.0],  # 100, 50, 100 GFLOP/s
        "float32/matmul/torch": [1.0, 1.0, 1.0],  # 50 GFLOP/s
        "float32/predict_numpy": [2.0, 4.0, 1.0],  # 32, 16, 64 images/s
        "float32/timm/infer": [2.0, 2.0, 1.0],  # 16, 16, 32 images/s
    }
    rows, matmul = _rows(times)
    assert matmul["float32/matmul/tensorflow"] == dict(median=100, low=50, high=100)
    keras_row, timm_row = rows
    assert keras_row["images_per_s"] == dict(median=32, low=16, high=64)
    assert keras_row["gflop_per_s"] == 32
    # Of the matmul rate round by round: 32/100, 16/50, 64/100.
    assert keras_row["matmul_fraction"] == dict(median=0.32, low=0.32, high=0.64)
    assert timm_row["matmul_fraction"]["median"] == pytest.approx(16 / 50)
    # Against timm round by round: 2, 1, 2 (a ratio of the medians would
    # say 32 / 16 = 2 as well, but the low round shows the spread).
    assert keras_row["ratio_vs_reference"] == dict(median=2, low=1, high=2)
    assert keras_row["reference_name"] == "timm"
    assert "ratio_vs_reference" not in timm_row
    assert "ratio_vs_float32" not in keras_row


def test_rows_compare_bfloat16_with_float32_and_prefer_the_same_path():
    m = timing.Measurement
    extra = [
        m("bfloat16/predict_numpy", None, images=64, flops=64e9,
          framework="keras_mixer", path="predict_numpy", mode="infer",
          precision="bfloat16", library="tensorflow"),
        m("float32/ref_numpy", None, images=64, flops=64e9, framework="tf",
          reference=True, path="predict_numpy", mode="infer",
          precision="float32", library="tensorflow"),
    ]
    times = {"float32/matmul/tensorflow": [1.0], "float32/matmul/torch": [1.0],
             "float32/predict_numpy": [2.0], "float32/timm/infer": [1.0],
             "bfloat16/predict_numpy": [1.0], "float32/ref_numpy": [4.0]}
    rows, _ = _rows(times, extra)
    by_name = {r["name"]: r for r in rows}
    # The reference row of the same path (4 s) wins over timm's (1 s).
    assert by_name["float32/predict_numpy"]["ratio_vs_reference"]["median"] == 2
    assert by_name["float32/predict_numpy"]["reference_name"] == "tf"
    assert by_name["bfloat16/predict_numpy"]["ratio_vs_float32"]["median"] == 2
    # No bfloat16 matmul was timed: no fraction rather than a wrong one.
    assert "matmul_fraction" not in by_name["bfloat16/predict_numpy"]


# --------------------------------------------------------------------------
# The busy machine


def test_machine_load_warns_on_load_others_and_steal():
    jiffies = iter([(1000, 10, 5000), (1000 + 150, 10 + 20, 5000 + 400)])
    own = iter([2.0, 2.9])  # 0.9 CPU seconds = 90 ticks of this process
    load = timing.MachineLoad(read_loadavg=lambda: 1.3,
                              read_jiffies=lambda: next(jiffies),
                              own_cpu_seconds=lambda: next(own),
                              ticks_per_second=100).start()
    load.add_own(0.2)  # 20 ticks of a worker process
    load.stop()
    # Others: 150 busy ticks - 110 own = 40 of 400; steal 20 of 400.
    assert load.others_share == pytest.approx(0.10)
    assert load.steal_share == pytest.approx(0.05)
    text = " / ".join(load.warnings())
    assert "load average was 1.30 at the start" in text
    assert "other processes used 10% of the CPU" in text
    assert "steal" not in text  # 5% is not above the limit
    assert "load average 1.30 at the start" in load.describe()


def test_load_left_by_work_that_ended_is_not_a_warning_after_the_run():
    # Load 1.3 at the start, but others used 1% of the CPU during the run:
    # the start warns, the finished run does not (describe keeps the load).
    jiffies = iter([(0, 0, 0), (4, 0, 400)])
    load = timing.MachineLoad(read_loadavg=lambda: 1.3,
                              read_jiffies=lambda: next(jiffies),
                              own_cpu_seconds=lambda: 0.0,
                              ticks_per_second=100).start()
    assert "load average was 1.30" in " ".join(load.warnings())
    load.stop()
    assert load.others_share == pytest.approx(0.01)
    assert load.warnings() == []
    assert "load average 1.30 at the start" in load.describe()


def test_quiet_machine_gives_no_warning():
    load = QuietMachine().start().stop()
    assert load.warnings() == [] and load.others_share == 0.0


def test_machine_without_proc_reports_nothing():
    def missing():
        raise OSError("no /proc")

    load = timing.MachineLoad(read_loadavg=missing).start().stop()
    assert load.warnings() == [] and load.describe() == "not measured"


# --------------------------------------------------------------------------
# Keras rows of a tiny model, end to end on the fake clock


def test_run_keras_paths_of_a_tiny_model(monkeypatch, tiny, capsys):
    # Every timed interval is 1 s and every matmul's best is 1 s, so
    # images/s equals the images of one call.
    monkeypatch.setattr(timing, "_now", FakeClock())
    rounds_seen = []
    rows, machine = benchmark.run(
        "MixerTiny", batch_size=2, image_size=32,
        precisions="float32,bfloat16", modes="infer,train", steps=3, rounds=2,
        warmup=1, timm=True, matmul_shape=SMALL_MATMUL, matmul_repeats=2,
        load=QuietMachine(), on_round=lambda i, t: rounds_seen.append(i))
    assert rounds_seen == [0, 1]
    # bfloat16 builds under mixed_bfloat16; the global policy comes back.
    assert tiny == ["float32", "mixed_bfloat16"]
    assert keras.config.dtype_policy().name == "float32"
    assert machine["timm"] == "no timm model for MixerTiny"
    assert machine["warnings"] == [] and "Busy" not in capsys.readouterr().err
    mm = 2 * 64 * 32 * 48 / 1e9
    assert machine["matmul_gflop_per_s"] == {
        f"{p}/matmul/{keras.backend.backend()}": dict(median=mm, low=mm, high=mm)
        for p in ("float32", "bfloat16")}
    assert [r["path"] for r in rows] == list(benchmark.PATHS) * 2
    flops = keras_mixer.count_flops(TINY(input_shape=(32, 32, 3)))
    for row in rows:
        images = 6 if row["path"] in keras_paths.MULTI_BATCH else 2
        factor = 3 if row["mode"] == "train" else 1
        assert row["images"] == images
        assert row["images_per_s"] == dict(median=images, low=images, high=images)
        assert row["gflop_per_s"] == pytest.approx(factor * flops * images / 1e9)
        assert row["matmul_fraction"]["median"] == pytest.approx(
            row["gflop_per_s"] / mm)
        if row["precision"] == "bfloat16":
            assert row["ratio_vs_float32"]["median"] == pytest.approx(1)
    text = benchmark.format_markdown(rows, machine, command="keras-mixer benchmark")
    assert "| `model.predict(x, batch_size=B)` | keras_mixer | float32 | infer " \
           "| 6.00 (6.00–6.00) |" in text
    assert "2 interleaved rounds after 1 untimed call(s)" in text


# --------------------------------------------------------------------------
# Report


def test_markdown_has_the_command_machine_warnings_and_rows():
    machine = dict(cpu="Test CPU", cores=2, usable_cores=2, python="3.11",
                   backend="tensorflow", versions={"keras": "3.0", "jax": None},
                   matmul_shape=(6272, 768, 3072), rounds=3, warmup=1, steps=4,
                   matmul_gflop_per_s={"float32/matmul/tensorflow": dict(
                       median=100.0, low=90.0, high=110.0)},
                   load="load average 0.05 at the start",
                   warnings=["other processes used 30% of the CPU time"],
                   reference="timm 1.0 `mixer_b16_224`",
                   command="keras-mixer benchmark --model MixerB16")
    rows = [dict(name="float32/predict_numpy", framework="keras_mixer",
                 written="model.predict(x, batch_size=B)", precision="float32",
                 mode="infer", jit_compile=True, backend="tensorflow",
                 images_per_s=dict(median=8.0, low=7.5, high=8.25),
                 gflop_per_s=201.6,
                 matmul_fraction=dict(median=0.9, low=0.85, high=0.95),
                 ratio_vs_reference=dict(median=1.25, low=1.2, high=1.3))]
    text = benchmark.format_markdown(rows, machine)
    assert text.startswith("```\nkeras-mixer benchmark --model MixerB16\n```")
    assert "**Busy machine: other processes used 30% of the CPU time.**" in text
    assert "Test CPU, 2 cores" in text and "keras 3.0" in text
    assert "jax" not in text
    assert "tensorflow float32 100.0 (90.0–110.0)" in text
    assert ("| `model.predict(x, batch_size=B)` | keras_mixer (XLA) | float32 "
            "| infer | 8.00 (7.50–8.25) | 201.6 | 90% (85%–95%) "
            "| 1.25× (1.20–1.30) | – |") in text
    assert "- Reference: timm 1.0 `mixer_b16_224`" in text


# --------------------------------------------------------------------------
# timm and the torchvision stand-in (benchmarks/)


def test_torchvision_standin_is_inert_and_keeps_optional_modules_missing():
    """In a fresh interpreter (the stand-in stays installed in a process)."""
    code = textwrap.dedent("""
        import sys
        sys.path.insert(0, sys.argv[1])
        import torchvision_standin as standin
        sys.meta_path.append(standin._Finder())
        import torchvision.ops.misc
        import torchvision.transforms.functional as F
        assert standin.is_stub()
        modes = F.InterpolationMode
        assert modes.BILINEAR is modes.BILINEAR
        assert modes.BILINEAR is not modes.BICUBIC
        try:
            torchvision.ops.misc.FrozenBatchNorm2d(3)
        except RuntimeError as error:
            assert "inert stand-in" in str(error)
        else:
            raise AssertionError("a placeholder ran")
        try:
            import torchvision.models.feature_extraction
        except ImportError:
            pass
        else:
            raise AssertionError("feature_extraction imported")
        print("ok")
    """)
    if importlib_find("torchvision"):
        pytest.skip("torchvision is installed: the stand-in is not used")
    out = subprocess.run([sys.executable, "-c", code, BENCHMARKS],
                         capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "ok", out.stderr


def importlib_find(name):
    import importlib.util

    return importlib.util.find_spec(name) is not None


def test_timm_model_is_keras_mixers_model_on_the_same_weights(tmp_path):
    timm_or_skip()
    import torch
    from timm.models.mlp_mixer import MlpMixer

    save_file = pytest.importorskip("safetensors.torch").save_file

    model = torch_models.timm_model("MixerS32", image_size=64)
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


def test_run_with_timm_rows(monkeypatch):
    timm_or_skip()
    monkeypatch.setattr(timing, "_now", FakeClock())
    rows, machine = benchmark.run(
        "MixerS32", batch_size=2, image_size=32, precisions="float32",
        modes="infer,train", paths="predict_numpy,fit_numpy", steps=2,
        rounds=1, matmul_shape=SMALL_MATMUL, matmul_repeats=1,
        load=QuietMachine())
    assert machine["timm"] == "mixer_s32_224"
    assert "timm" in machine["reference"] and "torch" in machine["reference"]
    assert [(r["framework"], r["mode"]) for r in rows] == [
        ("keras_mixer", "infer"), ("keras_mixer", "train"),
        ("timm", "infer"), ("timm", "train")]
    flops = keras_mixer.count_flops(keras_mixer.MixerS32(input_shape=(32, 32, 3)))
    for row in rows:  # every call 1 s on the fake clock, 4 images each
        assert row["images_per_s"]["median"] == 4
        factor = 3 if row["mode"] == "train" else 1
        assert row["gflop_per_s"] == pytest.approx(factor * flops * 4 / 1e9)
    assert rows[0]["ratio_vs_reference"]["median"] == 1
    assert rows[0]["reference_name"] == "timm"


def test_processes_interleave_workers_and_compare_with_the_reference():
    # Two worker processes of the same tiny model (one the reference) go
    # through the protocol: rows for both, ratios against the reference
    # path by path, each against its own matmul rate. The figures
    # themselves are not checked (real clocks).
    sys.path.insert(0, BENCHMARKS)
    try:
        import processes
    finally:
        sys.path.remove(BENCHMARKS)
    spec = dict(kind="keras", model="tiny", image_size=32, batch_size=2,
                steps=2, precisions=["float32"], matmul_shape=[16, 16, 16],
                paths=["predict_numpy", "predict_on_batch"],
                model_kwargs=dict(patch_size=16, hidden_dim=32, num_blocks=1,
                                  tokens_mlp_dim=16, channels_mlp_dim=64,
                                  classes=10, input_shape=[32, 32, 3]))
    env = {"KERAS_BACKEND": "tensorflow", "TF_CPP_MIN_LOG_LEVEL": "3"}
    workers = [(dict(spec, tag="a", label="A", reference=True), None, env),
               (dict(spec, tag="b", label="B"), None, env)]
    rows, machine = processes.run(workers, 2, "tiny", 2, 32, "cmd")
    assert [(r["framework"], r["path"]) for r in rows] == [
        ("A", "predict_numpy"), ("A", "predict_on_batch"),
        ("B", "predict_numpy"), ("B", "predict_on_batch")]
    assert set(machine["matmul_gflop_per_s"]) == {"a:float32/matmul/a",
                                                  "b:float32/matmul/b"}
    for row in rows:
        assert row["images"] == (4 if row["path"] == "predict_numpy" else 2)
        assert row["images_per_s"]["low"] <= row["images_per_s"]["high"]
        assert "matmul_fraction" in row
        assert ("ratio_vs_reference" in row) == (row["framework"] == "B")
    assert machine["matmul_shape"] == (16, 16, 16)
    assert "GFLOP/s: a float32 " in benchmark.format_markdown(rows, machine)
    assert "| `model.predict_on_batch(x)` | B | float32 | infer |" in \
        benchmark.format_markdown(rows, machine)

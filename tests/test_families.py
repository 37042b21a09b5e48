"""gMLP, gMixer and ConvMixer against timm's layout and semantics.

Every checkpoint here is generated in timm's exact key layout (buffers and
`num_batches_tracked` included) with random values for every entry
(`tests/reference_families.random_state`: heads non-zero, BatchNorm
statistics random, activations scaled so that an epsilon bug shows far above
the tolerance). The Keras models load these files through keras_mixer's
readers and key maps and must give the logits of the independent NumPy
float64 forward pass that reads the same state dict in timm's layout
(`tests/reference_families.py`), within 1e-5. Seeded converter and model
bugs must move the logits far beyond that. The models are tiny (width 16,
two blocks, 32x32 images); the full sizes are built for parameter counts
only (tests/test_models.py).
"""

import functools
import importlib.util
import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

import keras_mixer
from keras_mixer import checkpoints
from keras_mixer.checkpoints import readers
from keras_mixer.models import _builder
from keras_mixer.models import convmixer
from keras_mixer.models import gmlp
from keras_mixer.models import mixer

TESTS = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(TESTS)


def _load(name):
    path = os.path.join(TESTS, f"{name}.py")
    spec = importlib.util.spec_from_file_location(f"_keras_mixer_tests_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


ref = _load("reference_families")
rel_err = _load("reference").rel_err

try:
    import torch
except ImportError:
    torch = None

RTOL = 1e-5
CLASSES = 10

# name: (family, timm config of the state dict, image (H, W), builder,
# builder arguments, reference arguments).
CASES = {
    "gmlp": (
        "gmlp", dict(patch_size=8, dim=16, depth=2, mlp_ratio=6), (32, 32),
        keras_mixer.GMLP, dict(patch_size=8, hidden_dim=16, num_blocks=2), {},
    ),
    "gmixer": (
        "gmixer", dict(patch_size=8, dim=16, depth=2, mlp_ratio=(1.0, 4.0)), (32, 32),
        keras_mixer.MLPMixer,
        dict(patch_size=8, hidden_dim=16, num_blocks=2, tokens_mlp_dim=16,
             channels_mlp_dim=64, mlp_layer="glu", preprocessing="torch"), {},
    ),
    "convmixer_gelu": (
        "convmixer", dict(patch_size=4, dim=16, depth=2, kernel_size=5), (32, 32),
        keras_mixer.ConvMixer,
        dict(hidden_dim=16, num_blocks=2, kernel_size=5, patch_size=4),
        dict(activation="gelu"),
    ),
    # An even kernel (torch's "same" pads one more pixel after) and a
    # non-square input.
    "convmixer_relu": (
        "convmixer", dict(patch_size=4, dim=16, depth=2, kernel_size=4), (24, 32),
        keras_mixer.ConvMixer,
        dict(hidden_dim=16, num_blocks=2, kernel_size=4, patch_size=4,
             activation="relu"),
        dict(activation="relu"),
    ),
}
# The backbone output checked for each case.
POOLING = {"gmlp": None, "gmixer": "avg", "convmixer_gelu": None, "convmixer_relu": "max"}


@pytest.fixture(autouse=True, scope="module")
def _float32_full_precision():
    """No TF32 matmuls on GPUs (they would miss 1e-5)."""
    import tensorflow as tf

    before = tf.config.experimental.tensor_float_32_execution_enabled()
    tf.config.experimental.enable_tensor_float_32_execution(False)
    yield
    tf.config.experimental.enable_tensor_float_32_execution(before)


@functools.lru_cache(maxsize=None)
def state(name, seed=0, image=None):
    family, config, size, *_ = CASES[name]
    return ref.random_state(family, seed=seed, image_size=(image or size)[0],
                            num_classes=CLASSES, **config)


def pixels(name, seed=1, batch=2, size=None):
    height, width = size or CASES[name][2]
    rng = np.random.default_rng(seed)
    return rng.uniform(0, 255, (batch, height, width, 3)).astype(np.float32)


def expected(name, sd, x, **kwargs):
    family, *_, reference_kwargs = CASES[name]
    kwargs = {"preprocess": True, **reference_kwargs, **kwargs}
    return ref.forward(family, sd, x, data_format="channels_last", **kwargs)


def build(case, size=None, **kwargs):
    _, _, default, builder, arguments, _ = CASES[case]
    height, width = size or default
    kwargs = {"classes": CLASSES, "classifier_activation": None, **arguments, **kwargs}
    return builder(input_shape=(height, width, 3), **kwargs)


@functools.lru_cache(maxsize=None)
def model(name, include_top=True):
    """A built model of the case (random weights); tests load into it."""
    return build(name, include_top=include_top,
                 pooling=None if include_top else POOLING[name])


def save_safetensors(path, sd):
    from safetensors.numpy import save_file

    save_file({k: np.ascontiguousarray(v) for k, v in sd.items()}, str(path))
    return str(path)


def save_pth(path, sd):
    torch.save({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in sd.items()},
               str(path))
    return str(path)


def load(target, path):
    """`weights=path` on a built model: what the builder does after building."""
    family = next(l.family for l in target.layers if hasattr(l, "family"))
    _builder.load_weights(target, _builder.read_weights(path, family, target.name))
    return target


def run(target, x, training=False):
    return keras.ops.convert_to_numpy(target(x, training=training))


# ----------------------------------------------------------------------------
# The models against the reference, from files in timm's layout.
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(CASES))
def test_safetensors_file_gives_the_reference_logits_and_features(name, tmp_path):
    sd = state(name)
    assert any(k.endswith("num_batches_tracked") for k in sd) == name.startswith("conv")
    path = save_safetensors(tmp_path / "model.safetensors", sd)
    x = pixels(name)
    logits = expected(name, sd, x)
    assert logits.shape == (2, CLASSES) and np.abs(logits).max() > 0.1
    # Through the constructor's weights=, with its default preprocessing.
    classifier = build(name, weights=path)
    assert rel_err(run(classifier, x), logits) < RTOL
    backbone = load(model(name, include_top=False), path)
    features = expected(name, sd, x, include_top=False, pooling=POOLING[name])
    assert run(backbone, x).shape == features.shape
    assert rel_err(run(backbone, x), features) < RTOL


@pytest.mark.skipif(torch is None, reason="torch is not installed: the .pth "
                    "files are written with torch.save (pip install torch)")
@pytest.mark.parametrize("name", sorted(CASES))
def test_pth_file_gives_the_reference_logits(name, tmp_path):
    sd = state(name, seed=2)
    path = save_pth(tmp_path / "model.pth", sd)
    x = pixels(name, seed=3)
    assert rel_err(run(load(model(name), path), x), expected(name, sd, x)) < RTOL
    # The counters are int64 tensors in the file and are skipped by name.
    arrays = readers.read_torch(path)
    assert {k for k, v in arrays.items() if v.dtype == np.int64} == {
        k for k in sd if k.endswith("num_batches_tracked")}


def test_feature_extractor_of_each_family():
    """Every block's output; ConvMixer's are maps and it has no pre-head
    norm; the last one is the backbone's output."""
    for name, last in (("gmlp", "pre_head_norm"), ("convmixer_gelu", "block_1")):
        backbone = model(name, include_top=False)
        _builder.load_weights(backbone, checkpoints.convert_arrays(state(name)))
        x = pixels(name)
        outputs = keras_mixer.feature_extractor(backbone)(x)
        assert list(outputs) == ["stem", "block_0", "block_1"] + (
            ["pre_head_norm"] if last == "pre_head_norm" else [])
        shape = (2, 16, 16) if name == "gmlp" else (2, 8, 8, 16)
        assert all(tuple(v.shape) == shape for v in outputs.values())
        np.testing.assert_allclose(outputs[last], run(backbone, x), rtol=1e-6, atol=1e-6)


def test_variants_have_timms_architectures():
    """Each named variant's table entry is timm's model (reference VARIANTS,
    checked against timm itself); sizes are pinned by the parameter counts
    in tests/test_models.py, the activation only here."""
    tables = {
        **{f"GMLP{k.replace('/', '')}": (f"gmlp_{k.split('/')[0].lower()}16_224", v)
           for k, v in gmlp.MODEL_CONFIGS.items()},
        **{f"GMixer{k}": (f"gmixer_{k}_224", v) for k, v in mixer.GMIXER_CONFIGS.items()},
        **{f"ConvMixer{k.replace('/', '_')}": (timm, convmixer.MODEL_CONFIGS[k])
           for timm, k in convmixer.TIMM_ARCHITECTURES.items()},
    }
    assert set(tables) == {n for n in keras_mixer.MODELS if n.startswith(("GM", "Conv"))}
    for name, (timm_name, config) in tables.items():
        timm = ref.VARIANTS[timm_name]
        assert config["patch_size"] == timm["patch_size"], name
        assert config["hidden_dim"] == timm["dim"], name
        assert config["num_blocks"] == timm["depth"], name
        if timm["family"] == "convmixer":
            assert config["kernel_size"] == timm["kernel_size"], name
            assert config["activation"] == timm["activation"], name
        elif timm["family"] == "gmixer":
            ratios = timm["mlp_ratio"]
            assert (config["tokens_mlp_dim"], config["channels_mlp_dim"]) == tuple(
                int(r * timm["dim"]) for r in ratios), name
        else:
            assert config["mlp_ratio"] == timm["mlp_ratio"], name


def test_gmixer_variants_default_to_timms_recipe():
    """The gMixer variants are MLPMixer with the GLU, ImageNet normalisation
    and the same stochastic depth in every block, as timm; a caller's
    argument still wins."""
    model = keras_mixer.GMixer12(input_shape=(32, 32, 3), drop_path_rate=0.1)
    np.testing.assert_allclose(model.get_layer("preprocessing").mean, (0.485, 0.456, 0.406))
    blocks = [model.get_layer(f"block_{i}") for i in range(12)]
    assert {(b.mlp_layer, b.drop_path_rate) for b in blocks} == {("glu", 0.1)}
    # A caller's values reach the builder (whose checks run before building).
    with pytest.raises(ValueError, match="Unknown preprocessing mode 'caffe'"):
        keras_mixer.GMixer12(preprocessing="caffe")
    with pytest.raises(ValueError, match="Unknown `drop_path_schedule` 'cosine'"):
        keras_mixer.GMixer12(drop_path_schedule="cosine")


# ----------------------------------------------------------------------------
# Seeded bugs: each must move the logits far beyond the tolerance.
# ----------------------------------------------------------------------------


def _swap_halves(array, axis=-1):
    return np.concatenate(np.split(array, 2, axis=axis)[::-1], axis=axis)


# bug: (case, what it changes: "tensors" of the converted checkpoint, or
# arguments of the model, or the call), the change
BUGS = {
    "gmlp_transposed_gate": ("gmlp", "tensors", lambda t: t.update({
        "block_0/spatial_gating/proj/kernel": t["block_0/spatial_gating/proj/kernel"].T})),
    "gmlp_swapped_gate_halves": ("gmlp", "tensors", lambda t: t.update({
        "block_1/fc1/kernel": _swap_halves(t["block_1/fc1/kernel"]),
        "block_1/fc1/bias": _swap_halves(t["block_1/fc1/bias"])})),
    "gmlp_gate_epsilon_1e-6": ("gmlp", "model", dict(gate_epsilon=1e-6)),
    "gmlp_block_epsilon_1e-5": ("gmlp", "model", dict(layer_norm_epsilon=1e-5)),
    "gmlp_tanh_gelu": ("gmlp", "model", dict(approximate_gelu=True)),
    "gmixer_swapped_token_glu_halves": ("gmixer", "tensors", lambda t: t.update({
        "block_0/token_mixing/fc1/kernel": _swap_halves(t["block_0/token_mixing/fc1/kernel"]),
        "block_0/token_mixing/fc1/bias": _swap_halves(t["block_0/token_mixing/fc1/bias"])})),
    "gmixer_epsilon_1e-5": ("gmixer", "model", dict(layer_norm_epsilon=1e-5)),
    "convmixer_batch_norm_epsilon_1e-3": ("convmixer_gelu", "model", dict(batch_norm_epsilon=1e-3)),
    "convmixer_batch_norm_epsilon_1e-6": ("convmixer_gelu", "model", dict(batch_norm_epsilon=1e-6)),
    "convmixer_gelu_for_relu": ("convmixer_relu", "model", dict(activation="gelu")),
    "convmixer_depthwise_transposed": ("convmixer_gelu", "tensors", lambda t: t.update({
        "block_1/depthwise/kernel": t["block_1/depthwise/kernel"].transpose(1, 0, 2, 3)})),
    "convmixer_batch_statistics": ("convmixer_gelu", "call", dict(training=True)),
}


@pytest.mark.parametrize("bug", sorted(BUGS))
def test_seeded_bug_is_caught(bug):
    name, kind, change = BUGS[bug]
    sd = state(name)
    x = pixels(name)
    want = expected(name, sd, x)
    checkpoint = checkpoints.convert_arrays(sd)
    clean = model(name)
    _builder.load_weights(clean, checkpoint)
    assert rel_err(run(clean, x), want) < RTOL  # the clean case agrees
    if kind == "tensors":
        change(checkpoint.tensors)
        _builder.load_weights(clean, checkpoint)
        got = run(clean, x)
    elif kind == "model":
        broken = build(name, **change)
        _builder.load_weights(broken, checkpoint)
        got = run(broken, x)
    else:
        got = run(clean, x, **change)
    # tanh and erf GELU differ by < 5e-4 anywhere: small, yet many times
    # the tolerance.
    assert rel_err(got, want) > (3e-5 if "tanh" in bug else 1e-3), bug


def test_batch_norm_counter_is_skipped_by_name_only():
    sd = dict(state("convmixer_gelu"))
    without = {k: v for k, v in sd.items() if not k.endswith("num_batches_tracked")}
    assert checkpoints.convert_arrays(without).tensors.keys() == (
        checkpoints.convert_arrays(sd).tensors.keys())
    # A counter where no BatchNorm is: an unknown key, named.
    with pytest.raises(ValueError, match=r"blocks\.0\.num_batches_tracked"):
        checkpoints.convert_arrays({**sd, "blocks.0.num_batches_tracked": np.array(1)})
    # Integer values where a BatchNorm statistic belongs: refused, named.
    with pytest.raises(ValueError, match=r"'stem\.2\.running_var'.*floating-point"):
        checkpoints.convert_arrays({**sd, "stem.2.running_var": np.ones(16, np.int64)})


def test_families_refuse_each_others_files(tmp_path):
    gmlp_file = save_safetensors(tmp_path / "gmlp.safetensors", state("gmlp"))
    with pytest.raises(ValueError, match="is a gmlp checkpoint .* but 'mlp_mixer' is a mixer model"):
        build("gmixer", weights=gmlp_file)
    conv_file = save_safetensors(tmp_path / "convmixer.safetensors", state("convmixer_gelu"))
    with pytest.raises(ValueError, match="is a convmixer checkpoint"):
        build("gmlp", weights=conv_file)
    # A gMixer file in a plain Mixer: refused by shape, naming the source key.
    with pytest.raises(ValueError, match=r"source key 'blocks\.0\.mlp_(tokens|channels)\.fc2\.weight'"):
        keras_mixer.MLPMixer(8, 16, 2, 16, 64, input_shape=(32, 32, 3),
                             weights=save_safetensors(tmp_path / "g.safetensors", state("gmixer")))


# ----------------------------------------------------------------------------
# Appendix C: a checkpoint of a smaller grid, tiled input.
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["gmlp", "gmixer"])
def test_tiled_image_gives_the_small_checkpoints_logits(name, tmp_path):
    """A timm file trained on 16x16 images (2x2 patches) in a model at 32x48
    (4x6 patches: K = 2 x 3): gMLP's gate projection and gMixer's token GLU
    (values before gates) grow block-diagonally, so that 6 tiled copies of
    an image give the small model's logits (the reference on the small
    image)."""
    sd = state(name, image=(16, 16))
    path = save_safetensors(tmp_path / "small.safetensors", sd)
    large = build(name, size=(32, 48), weights=path)
    image = pixels(name, size=(16, 16))
    tiled = np.tile(image, (1, 2, 3, 1))
    want = expected(name, sd, image)
    assert rel_err(run(large, tiled), want) < RTOL
    other = tiled.copy()
    other[:, :16, :16] = pixels(name, seed=9, size=(16, 16))
    assert rel_err(run(large, other), want) > 1e-3
    if name == "gmixer":  # D_S grew with the 6 parts
        assert large.get_layer("block_0").tokens_mlp_dim == 6 * 16


def test_convmixer_takes_any_multiple_of_its_patch_and_refuses_others(tmp_path):
    path = save_safetensors(tmp_path / "convmixer.safetensors", state("convmixer_gelu"))
    sd = state("convmixer_gelu")
    for size in ((20, 44), (8, 8)):  # other sizes than the 32x32 of the case
        x = pixels("convmixer_gelu", size=size)
        assert rel_err(run(build("convmixer_gelu", size=size, weights=path), x),
                       expected("convmixer_gelu", sd, x)) < RTOL
    with pytest.raises(ValueError, match="Input width 30 is not a multiple of the "
                       "patch size 7: use 28 or 35"):
        keras_mixer.ConvMixer768_32(input_shape=(28, 30, 3))


# ----------------------------------------------------------------------------
# Hugging Face Hub folders.
# ----------------------------------------------------------------------------


def timm_config(architecture, name, pretrained=True):
    """config.json as timm's `save_config_for_hf` writes it (a tiny model)."""
    family, config = CASES[name][0], CASES[name][1]
    mean_std = {"gmlp": ((0.5,) * 3, (0.5,) * 3)}.get(
        family, ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)))
    cfg = {"tag": "in1k", "input_size": [3, 224, 224], "interpolation": "bicubic",
           "crop_pct": 0.96, "crop_mode": "center", "mean": list(mean_std[0]),
           "std": list(mean_std[1]), "num_classes": CLASSES, "first_conv": "stem.0",
           "classifier": "head", "license": "mit"}
    out = {"architecture": architecture, "num_classes": CLASSES,
           "num_features": config["dim"], "global_pool": "avg"}
    if pretrained:
        out["pretrained_cfg"] = cfg
    else:  # older files: flat
        out.update({k: cfg[k] for k in ("mean", "std")})
    return out


def hub_folder(folder, name, architecture, weights_file="model.safetensors", seed=0,
               **kwargs):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(timm_config(architecture, name, **kwargs)))
    save = save_pth if weights_file.endswith(".bin") else save_safetensors
    save(folder / weights_file, state(name, seed=seed))
    return str(folder)


def test_hub_folder_loads_with_its_config(tmp_path):
    folder = hub_folder(tmp_path / "gmlp", "gmlp", "gmlp_s16_224")
    checkpoint = checkpoints.read_checkpoint(folder)
    assert checkpoint.architecture == "gmlp_s16_224"
    assert checkpoint.mean_std == ((0.5,) * 3, (0.5,) * 3)
    x = pixels("gmlp")
    assert rel_err(run(build("gmlp", weights=folder), x), expected("gmlp", state("gmlp"), x)) < RTOL
    # The config's normalisation is checked against the model's.
    with pytest.raises(ValueError, match=r"mean \(0.5, 0.5, 0.5\).*preprocessing='torch'.*"
                       r"build the model with preprocessing='tf'"):
        build("gmlp", weights=folder, preprocessing="torch")
    build("gmlp", weights=folder, preprocessing="torch", include_preprocessing=False)


@pytest.mark.skipif(torch is None, reason="torch is not installed: "
                    "pytorch_model.bin is written with torch.save")
def test_hub_folder_of_pytorch_model_bin_and_its_architecture(tmp_path):
    folder = hub_folder(tmp_path / "c", "convmixer_relu", "convmixer_768_32",
                        weights_file="pytorch_model.bin", pretrained=False)
    x = pixels("convmixer_relu")
    got = run(build("convmixer_relu", weights=folder), x)
    assert rel_err(got, expected("convmixer_relu", state("convmixer_relu"), x)) < RTOL
    # The weights do not record ConvMixer-768/32's ReLU; its config.json does.
    with pytest.raises(ValueError, match=r"timm's convmixer_768_32, which uses RELU.*"
                       r"activation='relu' \(keras_mixer.ConvMixer768_32\)"):
        build("convmixer_relu", weights=folder, activation="gelu")


def test_hub_name_and_folder_errors(tmp_path, monkeypatch):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="not a Hugging Face Hub model folder: it needs config.json"):
        build("gmlp", weights=str(empty))
    for name in ("hf://gmlp", "hf://timm/", "hf://timm/x@"):
        with pytest.raises(ValueError, match="is not a Hugging Face Hub name"):
            keras_mixer.GMLPS16(weights=name)
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # not installed
    with pytest.raises(ImportError, match=r'pip install "keras-mixer\[hub\]"') as info:
        build("gmlp", weights="hf://timm/gmlp_s16_224.ra3_in1k")
    assert isinstance(info.value, ValueError)


def test_hf_name_takes_the_presets_entry():
    from keras_mixer.checkpoints import download

    weights, entry = download.resolve("GMixer24", "hf://timm/gmixer_24_224.ra3_in1k")
    assert (weights.repo_id, weights.revision) == ("timm/gmixer_24_224.ra3_in1k", None)
    assert entry["preprocessing"] == "torch" and entry["crop_pct"] == 0.875
    weights, entry = download.resolve("GMixer24", "hf://someone/gmixer@v2")
    assert (weights.repo_id, weights.revision, entry) == ("someone/gmixer", "v2", None)


# ----------------------------------------------------------------------------
# Mixed precision, the command line by name, export.
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("policy, tolerance", [("mixed_bfloat16", 0.05), ("mixed_float16", 0.01)])
def test_mixed_precision(policy, tolerance):
    """Variables stay float32, blocks compute in the half type, the pooling,
    head and softmax in float32; the logits stay near the reference's."""
    half = policy.split("_")[1]
    for name in ("gmlp", "gmixer", "convmixer_gelu"):
        keras.config.set_dtype_policy(policy)
        mixed = build(name)
        assert {v.dtype for v in mixed.weights} == {"float32"}
        assert mixed.get_layer("block_0").compute_dtype == half
        for layer in ("avg_pool", "head", "predictions"):
            assert mixed.get_layer(layer).compute_dtype == "float32"
        _builder.load_weights(mixed, checkpoints.convert_arrays(state(name)))
        x = pixels(name)
        got = run(mixed, x)
        assert got.dtype == np.float32
        assert rel_err(got, expected(name, state(name), x)) < tolerance, name


@pytest.fixture
def cli_run(capsys):
    """`keras-mixer ARGS...` in this process; returns what it printed."""
    from keras_mixer import cli

    def run_cli(*args):
        assert cli.main(["keras-mixer", *args]) == 0
        return capsys.readouterr().out

    return run_cli


def test_command_line_by_name(cli_run, cli_usage_error, tmp_path):
    out = cli_run("weights", "--model=ConvMixer768_32")
    assert "in1k: 1000 classes" in out and "hf://timm/convmixer_768_32.in1k" in out
    # convert: a timm file of GMLPTi16 (at 32x32) to .keras, then the logits.
    config = dict(ref.VARIANTS["gmlp_ti16_224"])
    sd = ref.random_state(config.pop("family"), seed=6, image_size=32,
                          num_classes=CLASSES, **config)
    source = save_safetensors(tmp_path / "gmlp_ti.safetensors", sd)
    output = tmp_path / "gmlp_ti.keras"
    out = cli_run("convert", "--model=GMLPTi16", f"--weights={source}",
                  "--image_size=32", f"--output={output}")
    assert f"wrote {output}: gmlp_ti16" in out
    x = pixels("gmlp")
    converted = keras.models.load_model(output, safe_mode=True)
    logits = ref.gmlp_forward(sd, x, data_format="channels_last", preprocess=True)
    softmax = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    assert rel_err(run(converted, x), softmax) < RTOL
    out = cli_run("summary", "--model=GMLPTi16", "--image_size=32", f"--classes={CLASSES}")
    assert "block_29" in out and f"parameters: {converted.count_params():,}" in out
    # train and benchmark take the names (their checks name the model).
    (tmp_path / "images" / "a").mkdir(parents=True)
    assert "--image_size 30 is not a multiple of ConvMixer768_32's patch size 7: use 28 or 35" in (
        cli_usage_error("train", "--model=ConvMixer768_32", "--image_size=30",
                        f"--dataset=folder:{tmp_path / 'images'}",
                        f"--output_dir={tmp_path / 'run'}"))
    assert "image_size 200 is not a multiple of GMixer24's patch size 16: use 192 or 208" in (
        cli_usage_error("benchmark", "--model=GMixer24", "--image_size=200"))


def test_exports_of_the_new_families(tmp_path):
    """One classifier on the pooled features of a gMLP, a gMixer and a
    ConvMixer (each with its timm weights): one SavedModel (reloaded, called
    at another batch size), one TFLite file (builtin ops only) and one ONNX
    file cover all three families' operations."""
    import tensorflow as tf

    from keras_mixer import export

    inputs = keras.Input((32, 32, 3), name="images")
    features = []
    for name in ("gmlp", "gmixer", "convmixer_gelu"):
        backbone = build(name, include_top=False, pooling="avg", name=name)
        _builder.load_weights(backbone, checkpoints.convert_arrays(state(name)))
        features.append(backbone(inputs))
    x = keras.layers.Concatenate(name="avg_pool")(features)
    x = keras.layers.Dense(CLASSES, name="head")(x)
    x = keras.layers.Activation("softmax", name="predictions")(x)
    model = keras.Model(inputs, x)
    model.get_layer("head").kernel.assign(
        np.random.default_rng(7).normal(size=(48, CLASSES)).astype("float32"))
    images = pixels("gmlp", batch=3)
    want = model.predict(images, verbose=0)

    served = tf.saved_model.load(export.save_for_serving(model, str(tmp_path / "serving")))
    got = served.signatures["serving_default"](images=tf.constant(images))["probabilities"]
    assert rel_err(got.numpy(), want) < 1e-5

    report = export.to_tflite(model, str(tmp_path / "m.tflite"), measure_latency=False)
    assert not [op for op in report["ops"] if op.startswith("Flex")]
    # ConvMixer's depthwise convolution, the exact GELU, SiLU's sigmoid, the
    # gates' halves, token mixing's transposes: all builtins.
    assert {"DEPTHWISE_CONV_2D", "GELU", "LOGISTIC", "SPLIT", "TRANSPOSE"} <= set(report["ops"])
    assert rel_err(export.run_tflite(report["path"], images), want) < 1e-4

    pytest.importorskip("tf2onnx")
    report = export.to_onnx(model, str(tmp_path / "m.onnx"), check_data=images)
    assert report["max_relative_error"] < 1e-5 and "Erf" in report["ops"]


def test_convmixer_7x7_exports_in_3x3_pieces(tmp_path):
    """ConvMixer-768/32's 7x7 depthwise convolution reaches TFLite as 3x3
    pieces (LiteRT's XNNPACK runs a 7x7 about 5x slower than its nine
    pieces), all in one XNNPACK partition, and matches Keras."""
    from keras_mixer import export

    model = keras_mixer.ConvMixer(16, 1, kernel_size=7, patch_size=4,
                                  activation="relu", input_shape=(32, 32, 3),
                                  classes=CLASSES)
    rng = np.random.default_rng(8)
    for v in model.weights:
        v.assign(rng.uniform(0.5, 1.5, v.shape) if "variance" in v.path
                 else rng.normal(0, 0.3, v.shape))
    images = pixels("gmlp", batch=3)
    report = export.to_tflite(model, str(tmp_path / "m.tflite"), check_data=images,
                              measure_latency=False)
    details = export.tflite.load_interpreter(report["path"])._get_ops_details()
    assert [op["op_name"] for op in details].count("DEPTHWISE_CONV_2D") == 9
    assert report["max_relative_error"] < 1e-4
    assert (report["ops_outside_xnnpack"], report["xnnpack_partitions"]) == ({}, 1)
    # With int8 weights and float activations the kernel stays whole (LiteRT's
    # own hybrid kernel runs it faster than XNNPACK runs the pieces).
    report = export.to_tflite(model, str(tmp_path / "d.tflite"), "dynamic_int8",
                              check_data=images, measure_latency=False)
    details = export.tflite.load_interpreter(report["path"])._get_ops_details()
    assert [op["op_name"] for op in details].count("DEPTHWISE_CONV_2D") == 1
    assert report["top1_agreement"] == 1.0


# ----------------------------------------------------------------------------
# JAX and PyTorch in fresh processes; the Hub through huggingface_hub.
# ----------------------------------------------------------------------------


HUB = importlib.util.find_spec("huggingface_hub") is not None
REPO = "timm/convmixer_768_32.in1k"  # served with the tiny ReLU ConvMixer
COMMIT = "0123456789abcdef0123456789abcdef01234567"


class HubServer:
    """Answers `huggingface_hub.hf_hub_download` from 127.0.0.1 as the Hub
    does for a file stored directly: HEAD/GET
    /<org>/<name>/resolve/<revision>/<file> -> 200 with ETag (the sha256),
    X-Repo-Commit and Content-Length, or 404 with X-Error-Code."""

    def __init__(self, repos):
        import hashlib
        import http.server
        import threading

        self.requests = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def answer(self, body):
                outer.requests.append((self.command, self.path))
                parts = self.path.split("?")[0].strip("/").split("/")
                repo = "/".join(parts[:2])
                if len(parts) < 5 or parts[2] != "resolve" or repo not in repos:
                    return self.error("RepoNotFound")
                if parts[3] not in ("main", COMMIT):
                    return self.error("RevisionNotFound")
                path = os.path.join(repos[repo], "/".join(parts[4:]))
                if not os.path.isfile(path):
                    return self.error("EntryNotFound")
                with open(path, "rb") as f:
                    data = f.read()
                self.send_response(200)
                self.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
                self.send_header("X-Repo-Commit", COMMIT)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if body:
                    self.wfile.write(data)

            def error(self, code):
                self.send_response(404)
                self.send_header("X-Error-Code", code)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def do_HEAD(self):  # noqa: N802
                self.answer(False)

            def do_GET(self):  # noqa: N802
                self.answer(True)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


# Run by a new interpreter per backend: the .keras files the previous
# backend saved (loaded, run, saved again for the next), a model built from
# a timm file, and the Hub.
_CHILD = r"""
import json, os, sys
import numpy as np
backend, work = sys.argv[1], sys.argv[2]
if backend == "jax":
    import jax
    jax.config.update("jax_default_matmul_precision", "highest")
import keras
import keras_mixer
assert keras.backend.backend() == backend, keras.backend.backend()
if backend == "jax":
    # Every variable is then assigned from a file (exactly, or the test
    # fails): skip the random initial values, which JAX compiles per shape
    # (about a second each).
    import jax.numpy as jnp
    from keras.src.backend.jax import random as jax_random
    for _name in ("normal", "uniform", "truncated_normal"):
        setattr(jax_random, _name, lambda shape, *a, dtype=None, **k: jnp.zeros(shape, dtype or "float32"))
spec = json.load(open(os.path.join(work, "spec.json")))
out, errors = {}, {}

def run(model, name):
    images = np.load(os.path.join(work, name + ".x.npy"))
    if backend == "jax":  # one compiled graph, not one per op
        return np.asarray(model.predict(images, verbose=0))
    return keras.ops.convert_to_numpy(model(images, training=False))

for name, source in spec["keras"][backend].items():
    model = keras.models.load_model(source, safe_mode=True)
    out[name] = run(model, name)
    model.save(os.path.join(work, f"{name}.{backend}.keras"))
if backend == "jax":
    out[spec["built"]["name"]] = run(keras_mixer.ConvMixer(**spec["built"]["kwargs"]), spec["built"]["name"])
if spec["hub"]:
    kwargs = dict(spec["built"]["kwargs"], weights="hf://" + spec["repo"])
    out["hub"] = run(keras_mixer.ConvMixer(**kwargs), spec["built"]["name"])
    for name in ("hf://timm/not_there", "hf://" + spec["repo"] + "@" + "0" * 40):
        try:
            keras_mixer.ConvMixer(**dict(kwargs, weights=name))
        except ValueError as error:
            errors[name] = str(error)
np.savez(os.path.join(work, f"out.{backend}.npz"), **out)
print("ERRORS" + json.dumps(errors))
"""


def _child(backend, work, env):
    env = {**os.environ, **env, "KERAS_BACKEND": backend, "JAX_PLATFORMS": "cpu",
           "TF_CPP_MIN_LOG_LEVEL": "3", "HF_HUB_DISABLE_TELEMETRY": "1",
           "PYTHONPATH": os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run([sys.executable, "-c", _CHILD, backend, str(work)],
                            cwd=str(work), env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    line = [l for l in result.stdout.splitlines() if l.startswith("ERRORS")][-1]
    with np.load(work / f"out.{backend}.npz", allow_pickle=False) as data:
        return {k: data[k] for k in data.files}, json.loads(line[len("ERRORS"):])


@pytest.fixture(scope="module")
def backends(tmp_path_factory):
    """A JAX process, then a PyTorch one, on files this process wrote: a
    .keras file of each family with its timm weights (TensorFlow -> JAX ->
    PyTorch -> back here), a timm safetensors file of the ReLU ConvMixer
    (built by JAX), and, with huggingface_hub, that file as a Hub
    repository on 127.0.0.1 (JAX downloads it into a new cache; PyTorch
    reads the cache with HF_HUB_OFFLINE=1 and the server stopped)."""
    work = tmp_path_factory.mktemp("backends")
    spec = {"keras": {"jax": {}, "torch": {}}, "hub": HUB, "repo": REPO}
    want, saved = {}, {}
    for name in CASES:
        sd = state(name, seed=12)
        x = pixels(name, seed=11)
        np.save(work / f"{name}.x.npy", x)
        want[name] = expected(name, sd, x)
        if name == "convmixer_relu":
            spec["built"] = dict(name=name, kwargs=dict(
                CASES[name][4], input_shape=(*CASES[name][2], 3), classes=CLASSES,
                classifier_activation=None,
                weights=save_safetensors(work / f"{name}.safetensors", sd)))
            continue
        trained = build(name)
        _builder.load_weights(trained, checkpoints.convert_arrays(sd))
        trained.save(work / f"{name}.tensorflow.keras")
        spec["keras"]["jax"][name] = str(work / f"{name}.tensorflow.keras")
        spec["keras"]["torch"][name] = str(work / f"{name}.jax.keras")
        saved[name] = run(trained, x)
    (work / "spec.json").write_text(json.dumps(spec))
    hub_env = {"HF_HUB_CACHE": str(work / "hf_cache")}
    server = None
    if HUB:
        server = HubServer({REPO: hub_folder(work / "repo", "convmixer_relu", "convmixer_768_32",
                                           seed=12)})
        hub_env["HF_ENDPOINT"] = server.url
    try:
        jax_out, jax_errors = _child("jax", work, hub_env)
    finally:
        if server:
            server.close()
    requests = list(server.requests) if server else []
    torch_out, torch_errors = _child("torch", work, {**hub_env, "HF_HUB_OFFLINE": "1"})
    returned = {name: run(keras.models.load_model(work / f"{name}.torch.keras",
                                                  safe_mode=True), pixels(name, seed=11))
                for name in saved}
    return dict(want=want, saved=saved, jax=jax_out, torch=torch_out, returned=returned,
                errors={"jax": jax_errors, "torch": torch_errors}, requests=requests)


@pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="jax is not installed")
def test_jax_matches_the_reference(backends):
    assert sorted(backends["jax"]) == sorted(CASES) + (["hub"] if HUB else [])
    for name, logits in backends["want"].items():
        assert rel_err(backends["jax"][name], logits) < RTOL, name


@pytest.mark.skipif(importlib.util.find_spec("jax") is None or torch is None,
                    reason="the round trip needs jax and torch")
def test_keras_files_round_trip_through_jax_and_pytorch(backends):
    for name, logits in backends["saved"].items():
        assert rel_err(logits, backends["want"][name]) < RTOL, name
        for step in (backends["jax"], backends["torch"], backends["returned"]):
            assert rel_err(step[name], logits) < RTOL, name


@pytest.mark.skipif(not HUB, reason="huggingface_hub is not installed "
                    '(pip install "keras-mixer[hub]"): hf:// is not tested')
def test_hf_hub_download_cache_and_offline(backends):
    want = backends["want"]["convmixer_relu"]
    # Downloaded into the cache by JAX, read from the cache offline by PyTorch.
    assert rel_err(backends["jax"]["hub"], want) < RTOL
    assert rel_err(backends["torch"]["hub"], want) < RTOL
    fetched = {path.rsplit("/", 1)[-1] for method, path in backends["requests"] if method == "GET"}
    assert fetched == {"config.json", "model.safetensors"}
    jax_errors, torch_errors = backends["errors"]["jax"], backends["errors"]["torch"]
    assert "the Hub has no repository 'timm/not_there'" in jax_errors["hf://timm/not_there"]
    assert "has no revision '0000000000" in "".join(jax_errors.values())
    assert "HF_HUB_OFFLINE is set and it is not in the Hugging Face cache" in (
        torch_errors["hf://timm/not_there"])


@pytest.mark.parametrize("name", ["gmlp", "gmixer", "convmixer_gelu"])
def test_weights_file_round_trip(name, tmp_path):
    """`.weights.h5` through `load_weights` and `weights=` (BatchNorm
    statistics included)."""
    source = model(name)
    _builder.load_weights(source, checkpoints.convert_arrays(state(name, seed=14)))
    path = str(tmp_path / f"{name}.weights.h5")
    source.save_weights(path)
    x = pixels(name)
    np.testing.assert_array_equal(run(build(name, weights=path), x), run(source, x))

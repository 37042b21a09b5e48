"""Checkpoint key maps and readers: official Flax .npz, timm and deit.

Every checkpoint is generated here, offline, in the exact key layout of its
source, with random values for every tensor. The Keras model loaded with the
converted tensors must give the logits of an independent NumPy float64 forward
pass that reads the SOURCE dict itself (tests/reference_sources.py), so a
missing transpose, swapped norms or swapped fc1/fc2 are caught.
"""

import functools
import importlib.util
import os
import pickle
import sys
import zipfile

import keras
import numpy as np
import pytest

import keras_mixer
from keras_mixer import checkpoints
from keras_mixer.checkpoints import deit_resmlp
from keras_mixer.checkpoints import flax_mixer
from keras_mixer.checkpoints import readers
from keras_mixer.checkpoints import timm_mlp_mixer


def _load(name):
    # Loaded by path under a private name, as tests/test_reference.py does.
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), f"{name}.py")
    spec = importlib.util.spec_from_file_location(f"_keras_mixer_tests_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


ref = _load("reference_sources")
rel_err = _load("reference").rel_err

try:
    import torch
except ImportError:
    torch = None

needs_torch = pytest.mark.skipif(
    torch is None,
    reason="torch is not installed: the real .pth round trip needs torch "
    "(pip install torch); the safetensors paths are tested without it",
)

PATCH, DIM, BLOCKS, TOKENS_MLP, CHANNELS_MLP = 4, 24, 2, 12, 48
SIZE, CHANNELS, CLASSES = 16, 3, 7
TOKENS = (SIZE // PATCH) ** 2
RESMLP_HIDDEN = 4 * DIM
RTOL = 1e-5


# ----------------------------------------------------------------------------
# Source-format checkpoints with random values.
# ----------------------------------------------------------------------------


def _rand(rng, *shape, fan_in=None, center=0.0, scale=None):
    if scale is None:
        scale = 1.0 / np.sqrt(fan_in) if fan_in else 0.3
    return (center + scale * rng.standard_normal(shape)).astype(np.float32)


def _norm_scale(rng, *shape):
    return _rand(rng, *shape, center=1.0, scale=0.2)


def flax_mixer_params(seed=0):
    """Names of vit_jax/models_mixer.py, flattened with '/' (Linen)."""
    rng = np.random.default_rng(seed)
    p = {
        "stem/kernel": _rand(rng, PATCH, PATCH, CHANNELS, DIM, fan_in=PATCH * PATCH * CHANNELS),
        "stem/bias": _rand(rng, DIM),
    }
    for i in range(BLOCKS):
        b = f"MixerBlock_{i}"
        for norm in ("LayerNorm_0", "LayerNorm_1"):
            p[f"{b}/{norm}/scale"] = _norm_scale(rng, DIM)
            p[f"{b}/{norm}/bias"] = _rand(rng, DIM)
        p[f"{b}/token_mixing/Dense_0/kernel"] = _rand(rng, TOKENS, TOKENS_MLP, fan_in=TOKENS)
        p[f"{b}/token_mixing/Dense_0/bias"] = _rand(rng, TOKENS_MLP)
        p[f"{b}/token_mixing/Dense_1/kernel"] = _rand(rng, TOKENS_MLP, TOKENS, fan_in=TOKENS_MLP)
        p[f"{b}/token_mixing/Dense_1/bias"] = _rand(rng, TOKENS)
        p[f"{b}/channel_mixing/Dense_0/kernel"] = _rand(rng, DIM, CHANNELS_MLP, fan_in=DIM)
        p[f"{b}/channel_mixing/Dense_0/bias"] = _rand(rng, CHANNELS_MLP)
        p[f"{b}/channel_mixing/Dense_1/kernel"] = _rand(rng, CHANNELS_MLP, DIM, fan_in=CHANNELS_MLP)
        p[f"{b}/channel_mixing/Dense_1/bias"] = _rand(rng, DIM)
    p["pre_head_layer_norm/scale"] = _norm_scale(rng, DIM)
    p["pre_head_layer_norm/bias"] = _rand(rng, DIM)
    p["head/kernel"] = _rand(rng, DIM, CLASSES, fan_in=DIM)
    p["head/bias"] = _rand(rng, CLASSES)
    return p


def _torch_linear(rng, out, inp):
    return _rand(rng, out, inp, fan_in=inp), _rand(rng, out)


def _torch_stem(rng):
    return (
        _rand(rng, DIM, CHANNELS, PATCH, PATCH, fan_in=PATCH * PATCH * CHANNELS),
        _rand(rng, DIM),
    )


def timm_mixer_state_dict(seed=1):
    """Keys of timm `MlpMixer` with `MixerBlock` (mlp_ratio set by the dims)."""
    rng = np.random.default_rng(seed)
    sd = {}
    sd["stem.proj.weight"], sd["stem.proj.bias"] = _torch_stem(rng)
    for i in range(BLOCKS):
        b = f"blocks.{i}"
        for norm in ("norm1", "norm2"):
            sd[f"{b}.{norm}.weight"] = _norm_scale(rng, DIM)
            sd[f"{b}.{norm}.bias"] = _rand(rng, DIM)
        sd[f"{b}.mlp_tokens.fc1.weight"], sd[f"{b}.mlp_tokens.fc1.bias"] = _torch_linear(rng, TOKENS_MLP, TOKENS)
        sd[f"{b}.mlp_tokens.fc2.weight"], sd[f"{b}.mlp_tokens.fc2.bias"] = _torch_linear(rng, TOKENS, TOKENS_MLP)
        sd[f"{b}.mlp_channels.fc1.weight"], sd[f"{b}.mlp_channels.fc1.bias"] = _torch_linear(rng, CHANNELS_MLP, DIM)
        sd[f"{b}.mlp_channels.fc2.weight"], sd[f"{b}.mlp_channels.fc2.bias"] = _torch_linear(rng, DIM, CHANNELS_MLP)
    sd["norm.weight"] = _norm_scale(rng, DIM)
    sd["norm.bias"] = _rand(rng, DIM)
    sd["head.weight"], sd["head.bias"] = _torch_linear(rng, CLASSES, DIM)
    return sd


def timm_resmlp_state_dict(seed=2):
    """Keys of timm `MlpMixer` with `ResBlock` and `Affine` ((1, 1, D))."""
    rng = np.random.default_rng(seed)
    sd = {}
    sd["stem.proj.weight"], sd["stem.proj.bias"] = _torch_stem(rng)
    for i in range(BLOCKS):
        b = f"blocks.{i}"
        for norm in ("norm1", "norm2"):
            sd[f"{b}.{norm}.alpha"] = _norm_scale(rng, 1, 1, DIM)
            sd[f"{b}.{norm}.beta"] = _rand(rng, 1, 1, DIM)
        sd[f"{b}.linear_tokens.weight"], sd[f"{b}.linear_tokens.bias"] = _torch_linear(rng, TOKENS, TOKENS)
        sd[f"{b}.mlp_channels.fc1.weight"], sd[f"{b}.mlp_channels.fc1.bias"] = _torch_linear(rng, RESMLP_HIDDEN, DIM)
        sd[f"{b}.mlp_channels.fc2.weight"], sd[f"{b}.mlp_channels.fc2.bias"] = _torch_linear(rng, DIM, RESMLP_HIDDEN)
        sd[f"{b}.ls1"] = _rand(rng, DIM, center=0.5)
        sd[f"{b}.ls2"] = _rand(rng, DIM, center=0.5)
    sd["norm.alpha"] = _norm_scale(rng, 1, 1, DIM)
    sd["norm.beta"] = _rand(rng, 1, 1, DIM)
    sd["head.weight"], sd["head.bias"] = _torch_linear(rng, CLASSES, DIM)
    return sd


def deit_resmlp_state_dict(seed=3):
    """Keys of deit `resmlp_models` / `layers_scale_mlp_blocks` (Affine (D,))."""
    rng = np.random.default_rng(seed)
    sd = {}
    sd["patch_embed.proj.weight"], sd["patch_embed.proj.bias"] = _torch_stem(rng)
    for i in range(BLOCKS):
        b = f"blocks.{i}"
        for norm in ("norm1", "norm2"):
            sd[f"{b}.{norm}.alpha"] = _norm_scale(rng, DIM)
            sd[f"{b}.{norm}.beta"] = _rand(rng, DIM)
        sd[f"{b}.attn.weight"], sd[f"{b}.attn.bias"] = _torch_linear(rng, TOKENS, TOKENS)
        sd[f"{b}.gamma_1"] = _rand(rng, DIM, center=0.5)
        sd[f"{b}.gamma_2"] = _rand(rng, DIM, center=0.5)
        sd[f"{b}.mlp.fc1.weight"], sd[f"{b}.mlp.fc1.bias"] = _torch_linear(rng, RESMLP_HIDDEN, DIM)
        sd[f"{b}.mlp.fc2.weight"], sd[f"{b}.mlp.fc2.bias"] = _torch_linear(rng, DIM, RESMLP_HIDDEN)
    sd["norm.alpha"] = _norm_scale(rng, DIM)
    sd["norm.beta"] = _rand(rng, DIM)
    sd["head.weight"], sd["head.bias"] = _torch_linear(rng, CLASSES, DIM)
    return sd


def images(seed=4):
    """A batch of already-normalised NHWC images."""
    rng = np.random.default_rng(seed)
    return rng.standard_normal((2, SIZE, SIZE, CHANNELS)).astype(np.float32)


def nchw(x):
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


# ----------------------------------------------------------------------------
# Writing files.
# ----------------------------------------------------------------------------


def save_npz(path, arrays):
    np.savez(path, **arrays)
    return path


def save_safetensors(path, arrays):
    from safetensors.numpy import save_file

    save_file({k: np.ascontiguousarray(v) for k, v in arrays.items()}, str(path))
    return path


def save_pth(path, obj):
    def to_torch(value):
        if isinstance(value, dict):
            return {k: to_torch(v) for k, v in value.items()}
        return torch.from_numpy(np.ascontiguousarray(value))

    torch.save(to_torch(obj), str(path))
    return path


def fake_torch_zip(path):
    """A zip with the members of torch.save's format (no torch needed)."""
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", pickle.dumps({"x": 1}, protocol=2))
        archive.writestr("archive/byteorder", "little")
        archive.writestr("archive/data/0", np.arange(4096, dtype=np.float32).tobytes())
        archive.writestr("archive/version", "3\n")
    return path


def truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


# ----------------------------------------------------------------------------
# Keras side.
# ----------------------------------------------------------------------------


@functools.lru_cache(maxsize=None)
def _model(family, approximate_gelu):
    if family == "mixer":
        return keras_mixer.MLPMixer(
            patch_size=PATCH, hidden_dim=DIM, num_blocks=BLOCKS,
            tokens_mlp_dim=TOKENS_MLP, channels_mlp_dim=CHANNELS_MLP,
            input_shape=(SIZE, SIZE, CHANNELS), classes=CLASSES,
            classifier_activation=None, include_preprocessing=False,
            approximate_gelu=approximate_gelu,
        )
    return keras_mixer.ResMLP(
        patch_size=PATCH, hidden_dim=DIM, num_blocks=BLOCKS,
        input_shape=(SIZE, SIZE, CHANNELS), classes=CLASSES,
        classifier_activation=None, include_preprocessing=False,
        approximate_gelu=approximate_gelu,
    )


def keras_logits(checkpoint, x):
    """Assigns every model variable from `checkpoint` by path; runs `x`."""
    model = _model(checkpoint.family, checkpoint.approximate_gelu)
    paths = [v.path for v in model.weights]
    assert sorted(paths) == sorted(checkpoint.tensors), (
        set(paths) ^ set(checkpoint.tensors)
    )
    for v in model.weights:
        value = checkpoint.tensors[v.path]
        assert value.shape == tuple(v.shape), (v.path, value.shape, v.shape)
        assert value.dtype == np.float32, (v.path, value.dtype)
        v.assign(value)
    out = model(x, training=False)
    return keras.ops.convert_to_numpy(out).astype(np.float64)


def assert_close(checkpoint, x, expected):
    assert np.all(np.isfinite(expected))
    assert np.max(np.abs(expected)) > 0.1  # a meaningful, non-degenerate output
    error = rel_err(keras_logits(checkpoint, x), expected)
    assert error < RTOL, error


# ----------------------------------------------------------------------------
# Numerics: every source layout.
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("prefix", ["", "opt/target/", "params/"])
def test_flax_npz_matches_source_forward(tmp_path, prefix):
    params = flax_mixer_params()
    stored = {prefix + k: v for k, v in params.items()}
    if prefix == "opt/target/":
        # A Flax optimizer checkpoint also holds optimizer state: ignored.
        stored["opt/state/step"] = np.array(10, dtype=np.int32)
        stored["opt/state/param_states/stem/kernel/grad_ema"] = params["stem/kernel"]
    path = save_npz(tmp_path / "Mixer-T_4.npz", stored)
    checkpoint = checkpoints.read_checkpoint(path)
    assert (checkpoint.family, checkpoint.source) == ("mixer", "flax")
    assert checkpoint.approximate_gelu is True
    assert checkpoint.num_blocks == BLOCKS
    assert checkpoint.num_classes == CLASSES
    assert checkpoint.tensors["block_0/token_mixing/fc1/kernel"].shape == (TOKENS, TOKENS_MLP)
    assert checkpoint.patch_size == PATCH
    assert checkpoint.hidden_dim == DIM
    x = images()
    assert_close(checkpoint, x, ref.flax_mixer_logits(params, x))
    # The module-level API gives the same tensors.
    direct = flax_mixer.convert(readers.read_npz(path))
    assert direct.tensors.keys() == checkpoint.tensors.keys()
    for key, value in direct.tensors.items():
        np.testing.assert_array_equal(value, checkpoint.tensors[key])


def test_flax_npz_keys_are_slash_separated_in_the_archive(tmp_path):
    path = save_npz(tmp_path / "m.npz", flax_mixer_params())
    with zipfile.ZipFile(path) as archive:
        assert "MixerBlock_0/token_mixing/Dense_0/kernel.npy" in archive.namelist()
    assert "MixerBlock_0/LayerNorm_1/scale" in readers.read_npz(path)


def test_flax_pre_linen_numbering_and_dot_separators():
    params = flax_mixer_params()
    linen = flax_mixer.convert(params).tensors
    # Pre-Linen numbering: one counter over a module's children.
    pre_linen = {
        k.replace("LayerNorm_1", "LayerNorm_2"): v for k, v in params.items()
    }
    dotted = {k.replace("/", "."): v for k, v in params.items()}
    for variant in (pre_linen, dotted):
        converted = flax_mixer.convert(variant).tensors
        assert converted.keys() == linen.keys()
        for key in linen:
            np.testing.assert_array_equal(converted[key], linen[key])


def test_flax_ten_blocks_are_ordered_numerically():
    params = flax_mixer_params()
    extra = {}
    for i in range(2, 11):
        for k, v in params.items():
            if k.startswith("MixerBlock_0/"):
                extra[k.replace("MixerBlock_0/", f"MixerBlock_{i}/")] = v + i
    tensors = flax_mixer.convert({**params, **extra}).tensors
    np.testing.assert_array_equal(
        tensors["block_10/norm1/beta"], params["MixerBlock_0/LayerNorm_0/bias"] + 10
    )


@pytest.mark.parametrize(
    "family, make, reference",
    [
        ("mixer", timm_mixer_state_dict, ref.timm_mixer_logits),
        ("resmlp", timm_resmlp_state_dict, ref.timm_resmlp_logits),
    ],
)
def test_timm_safetensors_matches_source_forward(tmp_path, family, make, reference):
    sd = make()
    path = save_safetensors(tmp_path / "model.safetensors", sd)
    checkpoint = checkpoints.read_checkpoint(path)
    assert (checkpoint.family, checkpoint.source) == (family, "timm")
    assert checkpoint.approximate_gelu is False
    tokens_path = {"mixer": "block_0/token_mixing/fc1/kernel",
                   "resmlp": "block_0/cross_patch/kernel"}[family]
    assert checkpoint.tensors[tokens_path].shape[0] == TOKENS
    assert checkpoint.num_classes == CLASSES
    x = images()
    assert_close(checkpoint, x, reference(sd, nchw(x)))


@pytest.mark.parametrize("alpha_shape", ["(1, 1, D)", "(D,)"])
def test_timm_resmlp_accepts_both_affine_shapes(alpha_shape):
    sd = timm_resmlp_state_dict()
    if alpha_shape == "(D,)":
        sd = {k: v.reshape(-1) if v.ndim == 3 else v for k, v in sd.items()}
    checkpoint = timm_mlp_mixer.convert(sd)
    assert checkpoint.tensors["block_1/norm2/alpha"].shape == (DIM,)
    x = images()
    assert_close(checkpoint, x, ref.timm_resmlp_logits(sd, nchw(x)))


def test_deit_safetensors_matches_source_forward(tmp_path):
    sd = deit_resmlp_state_dict()
    path = save_safetensors(tmp_path / "resmlp_12_no_dist.safetensors", sd)
    checkpoint = checkpoints.read_checkpoint(path)
    assert (checkpoint.family, checkpoint.source) == ("resmlp", "deit")
    assert checkpoint.approximate_gelu is False
    x = images()
    assert_close(checkpoint, x, ref.deit_resmlp_logits(sd, nchw(x)))
    # deit's training checkpoints nest the state dict under 'model'.
    nested = deit_resmlp.convert({"model": sd})
    for key, value in nested.tensors.items():
        np.testing.assert_array_equal(value, checkpoint.tensors[key])


@needs_torch
@pytest.mark.parametrize("nesting", ["model", "flat"])
def test_deit_pth_matches_source_forward(tmp_path, nesting):
    sd = deit_resmlp_state_dict()
    obj = {"model": sd} if nesting == "model" else sd
    path = save_pth(tmp_path / "resmlp_12_no_dist.pth", obj)
    checkpoint = checkpoints.read_checkpoint(path)
    assert (checkpoint.family, checkpoint.source) == ("resmlp", "deit")
    x = images()
    assert_close(checkpoint, x, ref.deit_resmlp_logits(sd, nchw(x)))


@needs_torch
@pytest.mark.parametrize(
    "make, reference, wrapper",
    [
        (timm_mixer_state_dict, ref.timm_mixer_logits, None),
        (timm_resmlp_state_dict, ref.timm_resmlp_logits, "state_dict"),
        (timm_mixer_state_dict, ref.timm_mixer_logits, "model_ema"),
    ],
)
def test_timm_pth_matches_source_forward(tmp_path, make, reference, wrapper):
    sd = make()
    obj = sd if wrapper is None else {wrapper: sd, "epoch": torch.tensor(3)}
    path = save_pth(tmp_path / "timm.pth", obj)
    arrays = readers.read_torch(path)
    assert arrays.keys() == sd.keys()
    checkpoint = checkpoints.read_checkpoint(path)
    assert checkpoint.source == "timm"
    x = images()
    assert_close(checkpoint, x, reference(sd, nchw(x)))


@needs_torch
def test_pth_with_python_objects_is_refused(tmp_path):
    import argparse
    import datetime

    # Training checkpoints (deit, CycleMLP, timm) also hold their argparse
    # arguments, which read_torch allows; any other object is refused.
    path = tmp_path / "checkpoint.pth"
    args = argparse.Namespace(model="resmlp_12")
    torch.save({"model": {"w": torch.zeros(2)}, "args": args,
                "date": datetime.date(2021, 7, 21)}, str(path))
    with pytest.raises(ValueError, match="weights_only") as info:
        checkpoints.read_checkpoint(path)
    assert str(path) in str(info.value)


# The comparison itself must catch converter bugs: break one tensor at a time
# and the Keras logits must leave the reference's.
@pytest.mark.parametrize(
    "source, mutation",
    [
        ("flax", "swap_norms"),
        ("flax", "swap_token_fc"),
        ("timm_resmlp", "transpose_cross_patch"),
        ("timm_resmlp", "swap_layerscale"),
        ("timm_mixer", "transpose_stem_hw"),
        ("timm_mixer", "wrong_gelu"),
    ],
)
def test_reference_catches_converter_bugs(source, mutation):
    x = images()
    if source == "flax":
        params = flax_mixer_params()
        checkpoint, expected = flax_mixer.convert(params), ref.flax_mixer_logits(params, x)
    elif source == "timm_resmlp":
        sd = timm_resmlp_state_dict()
        checkpoint, expected = timm_mlp_mixer.convert(sd), ref.timm_resmlp_logits(sd, nchw(x))
    else:
        sd = timm_mixer_state_dict()
        checkpoint, expected = timm_mlp_mixer.convert(sd), ref.timm_mixer_logits(sd, nchw(x))
    t = checkpoint.tensors
    if mutation == "swap_norms":
        for name in ("gamma", "beta"):
            t[f"block_0/norm1/{name}"], t[f"block_0/norm2/{name}"] = (
                t[f"block_0/norm2/{name}"], t[f"block_0/norm1/{name}"])
    elif mutation == "swap_token_fc":
        # fc1 (S, D_S) <-> fc2^T: same shapes, different function.
        fc1, fc2 = t["block_0/token_mixing/fc1/kernel"], t["block_0/token_mixing/fc2/kernel"]
        t["block_0/token_mixing/fc1/kernel"], t["block_0/token_mixing/fc2/kernel"] = fc2.T, fc1.T
    elif mutation == "transpose_cross_patch":
        t["block_0/cross_patch/kernel"] = np.ascontiguousarray(t["block_0/cross_patch/kernel"].T)
    elif mutation == "swap_layerscale":
        t["block_1/ls1/gamma"], t["block_1/ls2/gamma"] = t["block_1/ls2/gamma"], t["block_1/ls1/gamma"]
    elif mutation == "transpose_stem_hw":
        t["stem/proj/kernel"] = np.ascontiguousarray(t["stem/proj/kernel"].transpose(1, 0, 2, 3))
    elif mutation == "wrong_gelu":
        checkpoint.approximate_gelu = not checkpoint.approximate_gelu
    error = rel_err(keras_logits(checkpoint, x), expected)
    # tanh and erf GELU differ by < 5e-4 anywhere: small, yet several times
    # the tolerance of the comparison.
    assert error > (3 * RTOL if mutation == "wrong_gelu" else 1e-3), error


# ----------------------------------------------------------------------------
# Wrong architecture or layout.
# ----------------------------------------------------------------------------


def vit_npz_arrays():
    rng = np.random.default_rng(5)
    return {
        "embedding/kernel": _rand(rng, 4, 4, 3, 8),
        "embedding/bias": _rand(rng, 8),
        "cls": _rand(rng, 1, 1, 8),
        "Transformer/posembed_input/pos_embedding": _rand(rng, 1, 17, 8),
        "Transformer/encoderblock_0/LayerNorm_0/scale": _rand(rng, 8),
        "Transformer/encoderblock_0/MultiHeadDotProductAttention_1/query/kernel": _rand(rng, 8, 2, 4),
        "Transformer/encoder_norm/scale": _rand(rng, 8),
        "head/kernel": _rand(rng, 8, 7),
        "head/bias": _rand(rng, 7),
    }


def test_vit_npz_is_not_an_mlp_mixer(tmp_path):
    path = save_npz(tmp_path / "ViT-B_16.npz", vit_npz_arrays())
    with pytest.raises(ValueError, match="not an MLP-Mixer") as info:
        checkpoints.read_checkpoint(path)
    message = str(info.value)
    assert str(path) in message
    assert "Vision Transformer" in message
    with pytest.raises(ValueError, match="not an MLP-Mixer"):
        flax_mixer.convert(readers.read_npz(path))


@pytest.mark.parametrize("make", [timm_resmlp_state_dict, deit_resmlp_state_dict])
def test_resmlp_state_dict_fed_to_flax_reader(tmp_path, make):
    path = save_npz(tmp_path / "resmlp.npz", make())
    with pytest.raises(ValueError, match="not an MLP-Mixer") as info:
        flax_mixer.convert(readers.read_npz(path))
    assert "ResMLP" in str(info.value)


def test_flax_mixer_fed_to_timm_and_deit_converters():
    params = flax_mixer_params()
    with pytest.raises(ValueError, match="not a timm MLP-Mixer or ResMLP") as info:
        timm_mlp_mixer.convert(params)
    assert "Flax" in str(info.value)
    with pytest.raises(ValueError, match="not a deit ResMLP"):
        deit_resmlp.convert(params)


def test_deit_vit_is_not_a_resmlp():
    rng = np.random.default_rng(6)
    vit = {
        "cls_token": _rand(rng, 1, 1, 8),
        "pos_embed": _rand(rng, 1, 17, 8),
        "patch_embed.proj.weight": _rand(rng, 8, 3, 4, 4),
        "patch_embed.proj.bias": _rand(rng, 8),
        "blocks.0.norm1.weight": _rand(rng, 8),
        "blocks.0.attn.qkv.weight": _rand(rng, 24, 8),
        "blocks.0.attn.proj.weight": _rand(rng, 8, 8),
        "norm.weight": _rand(rng, 8),
        "head.weight": _rand(rng, 7, 8),
        "head.bias": _rand(rng, 7),
    }
    with pytest.raises(ValueError, match="not a deit ResMLP") as info:
        deit_resmlp.convert(vit)
    assert "Vision Transformer" in str(info.value)


def test_timm_gated_mlp_is_rejected_by_shape(tmp_path):
    # timm's gmixer (GluMlp): fc1 is twice as wide as fc2's input. The
    # model's variables refuse it, naming the source key.
    sd = timm_mixer_state_dict()
    rng = np.random.default_rng(7)
    for i in range(BLOCKS):
        sd[f"blocks.{i}.mlp_channels.fc1.weight"] = _rand(rng, 2 * CHANNELS_MLP, DIM)
        sd[f"blocks.{i}.mlp_channels.fc1.bias"] = _rand(rng, 2 * CHANNELS_MLP)
    path = save_safetensors(tmp_path / "gmixer.safetensors", sd)
    with pytest.raises(ValueError, match=r"'block_0/channel_mixing/fc1/kernel' \(source key 'blocks.0.mlp_channels.fc1.weight'\) has shape \(24, 96\), the model expects \(24, 48\)") as info:
        keras_mixer.MLPMixer(
            patch_size=PATCH, hidden_dim=DIM, num_blocks=BLOCKS,
            tokens_mlp_dim=TOKENS_MLP, channels_mlp_dim=CHANNELS_MLP,
            input_shape=(SIZE, SIZE, CHANNELS), classes=CLASSES, weights=path,
        )
    assert str(path) in str(info.value)


def test_missing_and_extra_keys_are_named():
    sd = timm_mixer_state_dict()
    del sd["blocks.1.norm2.bias"]
    with pytest.raises(ValueError, match=r"missing.*blocks\.1\.norm2\.bias"):
        timm_mlp_mixer.convert(sd)
    params = flax_mixer_params()
    params["MixerBlock_0/extra/kernel"] = np.zeros(3, np.float32)
    with pytest.raises(ValueError, match="MixerBlock_0/extra/kernel"):
        flax_mixer.convert(params)
    sd = deit_resmlp_state_dict()
    del sd["head.bias"]
    with pytest.raises(ValueError, match="head.bias"):
        deit_resmlp.convert(sd)


def test_checkpoint_without_head():
    sd = {k: v for k, v in deit_resmlp_state_dict().items() if not k.startswith("head.")}
    checkpoint = deit_resmlp.convert(sd)
    assert checkpoint.num_classes is None
    assert not any(k.startswith("head/") for k in checkpoint.tensors)


# ----------------------------------------------------------------------------
# Damaged, unknown and unsafe files.
# ----------------------------------------------------------------------------


def _write_container(kind, tmp_path):
    if kind == "npz":
        return save_npz(tmp_path / "Mixer.npz", flax_mixer_params())
    if kind == "safetensors":
        return save_safetensors(tmp_path / "model.safetensors", timm_mixer_state_dict())
    if kind == "torch_zip":
        return fake_torch_zip(tmp_path / "model.pth")
    return save_pth(tmp_path / "real.pth", {"model": deit_resmlp_state_dict()})


@pytest.mark.parametrize(
    "kind",
    ["npz", "safetensors", "torch_zip", pytest.param("torch_real", marks=needs_torch)],
)
def test_truncated_file_names_the_file(tmp_path, kind):
    path = truncate(_write_container(kind, tmp_path))
    with pytest.raises(ValueError, match="truncated") as info:
        checkpoints.read_checkpoint(path)
    assert str(path) in str(info.value)


def test_truncated_file_readers_name_the_file(tmp_path):
    npz = truncate(save_npz(tmp_path / "Mixer.npz", flax_mixer_params()))
    with pytest.raises(ValueError, match="not a readable .npz") as info:
        readers.read_npz(npz)
    assert str(npz) in str(info.value) and "download it again" in str(info.value)
    st = truncate(save_safetensors(tmp_path / "m.safetensors", timm_mixer_state_dict()))
    with pytest.raises(ValueError, match="not a readable safetensors") as info:
        readers.read_safetensors(st)
    assert str(st) in str(info.value)


def test_safetensors_truncated_inside_its_header(tmp_path):
    path = save_safetensors(tmp_path / "m.safetensors", timm_mixer_state_dict())
    data = path.read_bytes()
    header = int.from_bytes(data[:8], "little")
    path.write_bytes(data[: 8 + header // 2])
    with pytest.raises(ValueError, match="truncated safetensors") as info:
        checkpoints.read_checkpoint(path)
    assert str(path) in str(info.value)


def test_empty_file(tmp_path):
    path = tmp_path / "empty.npz"
    path.write_bytes(b"")
    with pytest.raises(ValueError, match="empty") as info:
        checkpoints.read_checkpoint(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize(
    "content",
    [
        np.random.default_rng(8).integers(0, 256, 4096, dtype=np.uint8).tobytes(),
        b"<html>404 Not Found</html>",
        b"\x93NUMPY\x01\x00",  # a lone .npy
    ],
    ids=["random", "html", "npy"],
)
def test_unknown_format_lists_accepted_formats(tmp_path, content):
    path = tmp_path / "weights.bin"
    path.write_bytes(content)
    with pytest.raises(ValueError, match="Accepted formats") as info:
        checkpoints.read_checkpoint(path)
    message = str(info.value)
    assert str(path) in message
    for fmt in (".npz", "safetensors", ".pth"):
        assert fmt in message


def test_zip_of_other_files_is_not_accepted(tmp_path):
    path = tmp_path / "archive.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("readme.txt", "hello")
    with pytest.raises(ValueError, match="Accepted formats"):
        checkpoints.read_checkpoint(path)


def test_npz_object_arrays_are_refused(tmp_path):
    path = tmp_path / "pickled.npz"
    np.savez(path, **flax_mixer_params(), meta=np.array([{"a": 1}], dtype=object))
    with pytest.raises(ValueError, match="pickled") as info:
        checkpoints.read_checkpoint(path)
    assert str(path) in str(info.value)
    with pytest.raises(ValueError, match="allow_pickle=False"):
        readers.read_npz(path)


def test_np_load_is_called_with_allow_pickle_false(tmp_path, monkeypatch):
    path = save_npz(tmp_path / "m.npz", flax_mixer_params())
    calls = []
    real_load = np.load

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return real_load(*args, **kwargs)

    monkeypatch.setattr(np, "load", spy)
    arrays = readers.read_npz(path)
    assert not calls  # headers only so far
    for array in arrays.values():
        np.asarray(array)
    assert len(calls) == len(arrays)
    assert all(c.get("allow_pickle") is False for c in calls)


def test_npz_headers_are_checked_before_any_array_is_decompressed(
        tmp_path, monkeypatch):
    """An .npz whose array inflates to 2 GiB from 2 MB: refused from its zip
    entry (over MAX_MEMBER_BYTES); wrong names at conversion and a wrong
    shape against the model, from the .npy headers: np.load never runs."""
    import bombs

    def mixer(path):
        return keras_mixer.MLPMixer(
            PATCH, DIM, BLOCKS, TOKENS_MLP, CHANNELS_MLP, weights=str(path),
            input_shape=(SIZE, SIZE, CHANNELS), classes=CLASSES)

    path = bombs.npz_with_bomb(tmp_path / "bomb.npz", flax_mixer_params(),
                               "huge", (8, 1 << 26))
    params = flax_mixer_params()
    params["MixerBlock_1/channel_mixing/Dense_0/kernel"] = np.zeros(
        (DIM, 7), np.float32)
    shape_path = save_npz(tmp_path / "shape.npz", params)
    vit_path = save_npz(tmp_path / "vit.npz", vit_npz_arrays())
    # A member whose header declares less than it holds.
    np.savez(tmp_path / "lie.npz", x=np.zeros(4, np.float32))
    with zipfile.ZipFile(tmp_path / "lie.npz") as archive:
        raw = archive.read("x.npy").replace(b"(4,)", b"(3,)")
    with zipfile.ZipFile(tmp_path / "lie.npz", "w") as archive:
        archive.writestr("x.npy", raw)

    monkeypatch.setattr(np, "load", None)  # any decompression would fail
    assert os.path.getsize(path) < 3e6
    with pytest.raises(ValueError, match=r"array 'huge' decompresses to "
                       r"2,147,483,776 bytes, over the limit of 1,073,741,824"):
        checkpoints.read_checkpoint(path)
    with pytest.raises(ValueError, match=r"shape.npz: tensor 'block_1/"
                       r"channel_mixing/fc1/kernel' \(source key 'MixerBlock_1/"
                       r"channel_mixing/Dense_0/kernel'\) has shape \(24, 7\)"):
        mixer(shape_path)
    with pytest.raises(ValueError, match="not an MLP-Mixer"):
        checkpoints.read_checkpoint(vit_path)
    with pytest.raises(ValueError, match=r"declares \(3,\) float32 \(140 "
                       r"bytes\) but holds 144 bytes"):
        readers.read_npz(tmp_path / "lie.npz")
    monkeypatch.undo()
    # With np.load back, the same files that pass those checks load.
    model = mixer(save_npz(tmp_path / "good.npz", flax_mixer_params()))
    np.testing.assert_array_equal(
        model.get_layer("stem").proj.kernel, flax_mixer_params()["stem/kernel"])


def test_torch_file_without_torch_says_how_to_fix(tmp_path, monkeypatch):
    path = fake_torch_zip(tmp_path / "model.pth")
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` fails
    with pytest.raises(ImportError, match="pip install torch") as info:
        checkpoints.read_checkpoint(path)
    assert isinstance(info.value, ValueError)
    assert "safetensors" in str(info.value) and str(path) in str(info.value)


def test_container_detection(tmp_path):
    assert checkpoints.detect_container(save_npz(tmp_path / "a.npz", {"x": np.zeros(2)})) == "npz"
    st = save_safetensors(tmp_path / "a.safetensors", {"x": np.zeros(2, np.float32)})
    assert checkpoints.detect_container(st) == "safetensors"
    assert checkpoints.detect_container(fake_torch_zip(tmp_path / "a.pth")) == "torch"
    legacy = tmp_path / "legacy.pth"
    legacy.write_bytes(pickle.dumps({"a": 1}, protocol=2))
    assert checkpoints.detect_container(legacy) == "torch"

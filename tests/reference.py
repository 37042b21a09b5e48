"""Independent NumPy float64 forward passes of MLP-Mixer and ResMLP.

Written from the papers' equations, with NumPy only (no keras, no
keras_mixer), to check the Keras models numerically:

- Tolstikhin et al., "MLP-Mixer: An all-MLP Architecture for Vision", 2021,
  https://arxiv.org/abs/2105.01601, eq. (1):
      U = X + W2 GELU(W1 LayerNorm(X)^T)^T      (token mixing, per channel)
      Y = U + W4 GELU(W3 LayerNorm(U))          (channel mixing, per token)
- Touvron et al., "ResMLP: Feedforward networks for image classification
  with data-efficient training", 2021, https://arxiv.org/abs/2105.03404,
  eq. (1)-(3):
      Z = X + ls1 * (A Aff1(X)^T)^T             (one linear layer over patches)
      Y = Z + ls2 * C GELU(B Aff2(Z))           (channel MLP)
  with Aff(x) = alpha * x + beta per channel.

Weights are a dict of NumPy arrays keyed by the Keras variable path
(`model.weights[i].path`):

    stem/proj/kernel              (p, p, C_in, D)  conv kernel, HWIO
    stem/proj/bias                (D,)
  MLP-Mixer, block i:
    block_i/norm1/gamma|beta      (D,)             LayerNorm before token mixing
    block_i/token_mixing/fc1/kernel (S, D_S)  bias (D_S,)   along the tokens
    block_i/token_mixing/fc2/kernel (D_S, S)  bias (S,)
    block_i/norm2/gamma|beta      (D,)
    block_i/channel_mixing/fc1/kernel (D, D_C) bias (D_C,)
    block_i/channel_mixing/fc2/kernel (D_C, D) bias (D,)
    pre_head_norm/gamma|beta      (D,)
  ResMLP, block i:
    block_i/norm1/alpha|beta      (D,)             Affine
    block_i/cross_patch/kernel    (S, S)  bias (S,)
    block_i/ls1/gamma             (D,)
    block_i/norm2/alpha|beta      (D,)
    block_i/channel_mixing/fc1|fc2/kernel|bias
    block_i/ls2/gamma             (D,)
    pre_head_norm/alpha|beta      (D,)
  Both:
    head/kernel (D, classes), head/bias (classes,)

A dense layer "along the token axis" with kernel K (S_in, S_out) and bias b
(S_out,) maps a token table X (S_in, D) to (X^T K + b)^T, shape (S_out, D).

Everything is computed in float64 whatever the dtype of the inputs.
"""

import math
import re

import numpy as np

try:  # Vectorised erf; scipy is optional.
    from scipy.special import erf as _erf
except ImportError:  # pragma: no cover - depends on the environment
    _erf = np.vectorize(math.erf, otypes=[np.float64])

# Input normalisation, for pixels scaled to [0, 1]: (x / 255 - mean) / std.
PREPROCESSING = {
    # The official MLP-Mixer input pipeline maps [0, 255] to [-1, 1].
    "tf": (0.5, 0.5),
    # ImageNet statistics, as deit (ResMLP) and torchvision.
    "torch": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "zero_one": (0.0, 1.0),
}
MIXER_PREPROCESSING = "tf"
RESMLP_PREPROCESSING = "torch"

LAYER_NORM_EPSILON = 1e-6


def _f64(x):
    return np.asarray(x, dtype=np.float64)


# ----------------------------------------------------------------------------
# Elementary functions.
# ----------------------------------------------------------------------------


def gelu(x, approximate):
    """GELU: tanh approximation, or the exact x * Phi(x) with erf."""
    x = _f64(x)
    if approximate:
        c = math.sqrt(2.0 / math.pi)
        return 0.5 * x * (1.0 + np.tanh(c * (x + 0.044715 * x**3)))
    return 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)))


def layer_norm(x, gamma, beta, epsilon=LAYER_NORM_EPSILON):
    """LayerNorm over the last axis, biased variance."""
    x = _f64(x)
    mean = x.mean(axis=-1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
    return (x - mean) / np.sqrt(var + epsilon) * _f64(gamma) + _f64(beta)


def affine(x, alpha, beta):
    """ResMLP's Aff: alpha * x + beta per channel."""
    return _f64(x) * _f64(alpha) + _f64(beta)


def dense(x, kernel, bias):
    """Dense layer on the last axis: x @ K + b."""
    return _f64(x) @ _f64(kernel) + _f64(bias)


def token_dense(x, kernel, bias):
    """Dense layer along the token axis of x (batch, tokens, channels):
    (x^T @ K + b)^T, written literally with the transposes."""
    xt = np.swapaxes(_f64(x), -1, -2)  # (batch, channels, tokens)
    yt = xt @ _f64(kernel) + _f64(bias)  # (batch, channels, tokens_out)
    return np.swapaxes(yt, -1, -2)  # (batch, tokens_out, channels)


def softmax(x, axis=-1):
    x = _f64(x)
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


# ----------------------------------------------------------------------------
# Input side: normalisation and patches.
# ----------------------------------------------------------------------------


def normalization_constants(preprocess, default_mode):
    """(mean, std) for `preprocess`: True (the family's default), a mode
    name ("tf", "torch", "zero_one") or an explicit (mean, std) pair.
    Returns None for False / None (no preprocessing)."""
    if preprocess is None or preprocess is False:
        return None
    if preprocess is True:
        preprocess = default_mode
    if isinstance(preprocess, str):
        return PREPROCESSING[preprocess]
    mean, std = preprocess
    return mean, std


def normalize(images, mean, std):
    """Pixels in [0, 255] -> (x / 255 - mean) / std, per channel."""
    images = _f64(images)
    mean = _f64(mean)
    std = _f64(std)
    channels = images.shape[-1]
    for name, value in (("mean", mean), ("std", std)):
        if value.ndim and value.shape[-1] != channels:
            raise ValueError(
                f"{name} has {value.shape[-1]} entries for {channels} channels"
            )
    return (images / 255.0 - mean) / std


def patchify(images, patch_size):
    """(batch, H, W, C) -> (batch, (H/p) * (W/p), p * p * C).

    Non-overlapping p x p patches in raster order (row of patches by row of
    patches, left to right), each flattened in (row, col, channel) order,
    which is the row order of an HWIO kernel reshaped to (p * p * C, D).
    """
    images = _f64(images)
    batch, height, width, channels = images.shape
    p = int(patch_size)
    if height % p or width % p:
        raise ValueError(f"image {height}x{width} not divisible by patch {p}")
    rows, cols = height // p, width // p
    x = images.reshape(batch, rows, p, cols, p, channels)
    # (batch, patch row, patch col, row in patch, col in patch, channel)
    x = x.transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(batch, rows * cols, p * p * channels)


def patch_embed(images, kernel, bias):
    """The stem: a linear projection of every flattened patch."""
    kernel = _f64(kernel)
    p, q, channels, dim = kernel.shape
    if p != q:
        raise ValueError(f"non-square patch kernel {kernel.shape}")
    patches = patchify(images, p)
    return patches @ kernel.reshape(p * q * channels, dim) + _f64(bias)


# ----------------------------------------------------------------------------
# Shared pieces.
# ----------------------------------------------------------------------------


def num_blocks(weights):
    """Number of blocks `block_0` ... `block_{N-1}` in the weights dict."""
    indices = set()
    for key in weights:
        match = re.match(r"block_(\d+)/", key)
        if match:
            indices.add(int(match.group(1)))
    if indices != set(range(len(indices))):
        raise ValueError(f"blocks are not numbered 0..N-1: {sorted(indices)}")
    return len(indices)


def mlp(x, weights, prefix, approximate_gelu, along_tokens=False):
    """Dense -> GELU -> Dense, over the channels or along the tokens."""
    layer = token_dense if along_tokens else dense
    h = layer(x, weights[f"{prefix}/fc1/kernel"], weights[f"{prefix}/fc1/bias"])
    h = gelu(h, approximate_gelu)
    return layer(h, weights[f"{prefix}/fc2/kernel"], weights[f"{prefix}/fc2/bias"])


def _head(tokens, weights, include_top, logits, pooling):
    if include_top:
        pooled = tokens.mean(axis=1)  # global average pooling over tokens
        out = dense(pooled, weights["head/kernel"], weights["head/bias"])
        return out if logits else softmax(out)
    if pooling is None:
        return tokens
    if pooling == "avg":
        return tokens.mean(axis=1)
    if pooling == "max":
        return tokens.max(axis=1)
    raise ValueError(f"unknown pooling {pooling!r}")


# ----------------------------------------------------------------------------
# MLP-Mixer.
# ----------------------------------------------------------------------------


def mixer_block(x, weights, prefix, approximate_gelu=True,
                epsilon=LAYER_NORM_EPSILON):
    """Eq. (1): token mixing then channel mixing, both residual."""
    y = layer_norm(x, weights[f"{prefix}/norm1/gamma"],
                   weights[f"{prefix}/norm1/beta"], epsilon)
    u = x + mlp(y, weights, f"{prefix}/token_mixing", approximate_gelu,
                along_tokens=True)
    y = layer_norm(u, weights[f"{prefix}/norm2/gamma"],
                   weights[f"{prefix}/norm2/beta"], epsilon)
    return u + mlp(y, weights, f"{prefix}/channel_mixing", approximate_gelu)


def mixer_tokens(weights, images, approximate_gelu=True, preprocess=True,
                 epsilon=LAYER_NORM_EPSILON):
    """Stem, every Mixer block and the pre-head LayerNorm: the token table
    (batch, tokens, D)."""
    x = _f64(images)
    constants = normalization_constants(preprocess, MIXER_PREPROCESSING)
    if constants is not None:
        x = normalize(x, *constants)
    x = patch_embed(x, weights["stem/proj/kernel"], weights["stem/proj/bias"])
    for i in range(num_blocks(weights)):
        x = mixer_block(x, weights, f"block_{i}", approximate_gelu, epsilon)
    return layer_norm(x, weights["pre_head_norm/gamma"],
                      weights["pre_head_norm/beta"], epsilon)


def mixer_forward(weights, images, approximate_gelu=True, preprocess=True,
                  include_top=True, logits=False, pooling=None,
                  epsilon=LAYER_NORM_EPSILON):
    """MLP-Mixer on images (batch, H, W, C).

    Args:
        weights: dict {Keras variable path: array}.
        images: pixels in [0, 255] if `preprocess`, else normalised input.
        approximate_gelu: tanh GELU (official Flax code) or exact erf GELU.
        preprocess: True ([-1, 1] as the official pipeline), False, a mode
            name or a (mean, std) pair.
        include_top: True: mean over tokens, head, softmax (or logits).
            False: the token table after the pre-head LayerNorm, or pooled
            by `pooling` ("avg" / "max").
        logits: with include_top, return the head's output before softmax.

    Returns:
        float64 array.
    """
    tokens = mixer_tokens(weights, images, approximate_gelu, preprocess,
                          epsilon)
    return _head(tokens, weights, include_top, logits, pooling)


# ----------------------------------------------------------------------------
# ResMLP.
# ----------------------------------------------------------------------------


def resmlp_block(x, weights, prefix, approximate_gelu=False):
    """Eq. (1)-(3) of ResMLP: linear cross-patch sublayer (no activation),
    then the channel MLP, each with Affine before and LayerScale after."""
    y = affine(x, weights[f"{prefix}/norm1/alpha"],
               weights[f"{prefix}/norm1/beta"])
    y = token_dense(y, weights[f"{prefix}/cross_patch/kernel"],
                    weights[f"{prefix}/cross_patch/bias"])
    z = x + _f64(weights[f"{prefix}/ls1/gamma"]) * y
    y = affine(z, weights[f"{prefix}/norm2/alpha"],
               weights[f"{prefix}/norm2/beta"])
    y = mlp(y, weights, f"{prefix}/channel_mixing", approximate_gelu)
    return z + _f64(weights[f"{prefix}/ls2/gamma"]) * y


def resmlp_tokens(weights, images, approximate_gelu=False, preprocess=True):
    """Stem, every ResMLP block and the final Affine: (batch, tokens, D)."""
    x = _f64(images)
    constants = normalization_constants(preprocess, RESMLP_PREPROCESSING)
    if constants is not None:
        x = normalize(x, *constants)
    x = patch_embed(x, weights["stem/proj/kernel"], weights["stem/proj/bias"])
    for i in range(num_blocks(weights)):
        x = resmlp_block(x, weights, f"block_{i}", approximate_gelu)
    return affine(x, weights["pre_head_norm/alpha"],
                  weights["pre_head_norm/beta"])


def resmlp_forward(weights, images, approximate_gelu=False, preprocess=True,
                   include_top=True, logits=False, pooling=None):
    """ResMLP on images (batch, H, W, C); arguments as `mixer_forward`, with
    preprocess=True meaning the ImageNet mean and std, and the exact GELU
    by default (as deit)."""
    tokens = resmlp_tokens(weights, images, approximate_gelu, preprocess)
    return _head(tokens, weights, include_top, logits, pooling)


def forward(family, weights, images, **kwargs):
    """`mixer_forward` for family "mixer", `resmlp_forward` for "resmlp"."""
    if family == "mixer":
        return mixer_forward(weights, images, **kwargs)
    if family == "resmlp":
        return resmlp_forward(weights, images, **kwargs)
    raise ValueError(f"unknown family {family!r}")


def rel_err(actual, expected):
    """Largest absolute difference relative to the largest |expected|, the
    measure every numerical comparison of the tests uses."""
    actual = np.asarray(actual, np.float64)
    expected = np.asarray(expected, np.float64)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    assert np.all(np.isfinite(actual)) and np.all(np.isfinite(expected))
    return float(np.max(np.abs(actual - expected)) / np.max(np.abs(expected)))

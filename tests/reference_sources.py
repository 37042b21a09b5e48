"""NumPy float64 forward passes that read checkpoints in their SOURCE layout.

Independent of keras_mixer (and of tests/reference.py, which is keyed by Keras
variable paths): each function consumes the source's own dict and follows the
source's code literally, so that a converter that forgets a transpose, swaps
two norms or mixes up fc1 and fc2 gives different logits.

- `flax_mixer_logits`: google-research/vision_transformer
  `vit_jax/models_mixer.py` (Linen names, '/'-separated as in the official
  .npz files). Flax `nn.Dense` is `x @ kernel + bias` with kernel (in, out);
  `nn.Conv` kernels are HWIO on NHWC input; `nn.gelu` is the tanh
  approximation; `nn.LayerNorm` has epsilon 1e-6.
- `timm_mixer_logits`, `timm_resmlp_logits`: timm `timm/models/mlp_mixer.py`
  (`MlpMixer` with `MixerBlock` or `ResBlock`). `nn.Linear` is
  `x @ weight.T + bias` with weight (out, in); `nn.Conv2d` weights are OIHW on
  NCHW input; `nn.GELU` is exact; LayerNorm epsilon 1e-6; `Affine` is
  `beta + alpha * x` with (1, 1, D) parameters.
- `deit_resmlp_logits`: facebookresearch/deit `resmlp_models.py`.

Images are NCHW float arrays for the torch layouts and NHWC for Flax, already
normalised (no preprocessing here).
"""

import math

import numpy as np

try:
    from scipy.special import erf as _erf
except ImportError:  # pragma: no cover
    _erf = np.vectorize(math.erf, otypes=[np.float64])

EPS = 1e-6


def _f(x):
    return np.asarray(x, dtype=np.float64)


def gelu_tanh(x):
    return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


def gelu_erf(x):
    return 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)))


def layer_norm(x, weight, bias):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + EPS) * _f(weight) + _f(bias)


# ----------------------------------------------------------------------------
# Flax (official MLP-Mixer).
# ----------------------------------------------------------------------------


def flax_dense(x, params, name):
    return x @ _f(params[f"{name}/kernel"]) + _f(params[f"{name}/bias"])


def flax_conv_patches(images, kernel, bias):
    """nn.Conv(kernel_size=p, strides=p) on NHWC images, HWIO kernel."""
    kernel = _f(kernel)
    p = kernel.shape[0]
    n, h, w, c = images.shape
    x = _f(images).reshape(n, h // p, p, w // p, p, c)
    # out[n, i, j, o] = sum_{a, b, c} x[n, i*p + a, j*p + b, c] kernel[a, b, c, o]
    out = np.einsum("niajbc,abco->nijo", x, kernel) + _f(bias)
    return out.reshape(n, (h // p) * (w // p), -1)  # 'n h w c -> n (h w) c'


def flax_mixer_logits(params, images):
    """`MlpMixer.__call__` of vit_jax/models_mixer.py; `params` keyed by the
    flattened Linen names without any prefix."""
    x = flax_conv_patches(images, params["stem/kernel"], params["stem/bias"])
    i = 0
    while f"MixerBlock_{i}/LayerNorm_0/scale" in params:
        b = f"MixerBlock_{i}"
        y = layer_norm(x, params[f"{b}/LayerNorm_0/scale"], params[f"{b}/LayerNorm_0/bias"])
        y = np.swapaxes(y, 1, 2)
        y = flax_dense(y, params, f"{b}/token_mixing/Dense_0")
        y = flax_dense(gelu_tanh(y), params, f"{b}/token_mixing/Dense_1")
        y = np.swapaxes(y, 1, 2)
        x = x + y
        y = layer_norm(x, params[f"{b}/LayerNorm_1/scale"], params[f"{b}/LayerNorm_1/bias"])
        y = flax_dense(y, params, f"{b}/channel_mixing/Dense_0")
        x = x + flax_dense(gelu_tanh(y), params, f"{b}/channel_mixing/Dense_1")
        i += 1
    x = layer_norm(x, params["pre_head_layer_norm/scale"], params["pre_head_layer_norm/bias"])
    x = x.mean(axis=1)
    return flax_dense(x, params, "head")


# ----------------------------------------------------------------------------
# PyTorch layouts (timm, deit).
# ----------------------------------------------------------------------------


def torch_linear(x, sd, name):
    """nn.Linear: x @ W^T + b, W of shape (out, in)."""
    return x @ _f(sd[f"{name}.weight"]).T + _f(sd[f"{name}.bias"])


def torch_patch_embed(images_nchw, weight, bias):
    """timm PatchEmbed: Conv2d(kernel=stride=p) on NCHW, OIHW weight, then
    flatten(2).transpose(1, 2)."""
    weight = _f(weight)
    out_ch, in_ch, p, q = weight.shape
    n, c, h, w = images_nchw.shape
    x = _f(images_nchw).reshape(n, c, h // p, p, w // q, q)
    # y[n, o, i, j] = sum_{c, a, b} W[o, c, a, b] x[n, c, i*p + a, j*q + b]
    y = np.einsum("ocab,nciajb->noij", weight, x) + _f(bias)[None, :, None, None]
    y = y.reshape(n, out_ch, -1)  # flatten(2)
    return np.swapaxes(y, 1, 2)  # transpose(1, 2)


def torch_mlp(x, sd, name):
    """timm Mlp: fc1 -> GELU (exact) -> fc2."""
    return torch_linear(gelu_erf(torch_linear(x, sd, f"{name}.fc1")), sd, f"{name}.fc2")


def affine(x, alpha, beta):
    """Affine of timm (torch.addcmul(beta, alpha, x)) and deit
    (alpha * x + beta); alpha/beta (1, 1, D) or (D,) broadcast alike."""
    return _f(beta) + _f(alpha) * x


def _num_blocks(sd):
    return len({k.split(".")[1] for k in sd if k.startswith("blocks.")})


def timm_mixer_logits(sd, images_nchw):
    x = torch_patch_embed(images_nchw, sd["stem.proj.weight"], sd["stem.proj.bias"])
    for i in range(_num_blocks(sd)):
        b = f"blocks.{i}"
        y = layer_norm(x, sd[f"{b}.norm1.weight"], sd[f"{b}.norm1.bias"])
        x = x + np.swapaxes(torch_mlp(np.swapaxes(y, 1, 2), sd, f"{b}.mlp_tokens"), 1, 2)
        y = layer_norm(x, sd[f"{b}.norm2.weight"], sd[f"{b}.norm2.bias"])
        x = x + torch_mlp(y, sd, f"{b}.mlp_channels")
    x = layer_norm(x, sd["norm.weight"], sd["norm.bias"])
    return torch_linear(x.mean(axis=1), sd, "head")


def timm_resmlp_logits(sd, images_nchw):
    x = torch_patch_embed(images_nchw, sd["stem.proj.weight"], sd["stem.proj.bias"])
    for i in range(_num_blocks(sd)):
        b = f"blocks.{i}"
        y = affine(x, sd[f"{b}.norm1.alpha"], sd[f"{b}.norm1.beta"])
        y = np.swapaxes(torch_linear(np.swapaxes(y, 1, 2), sd, f"{b}.linear_tokens"), 1, 2)
        x = x + _f(sd[f"{b}.ls1"]) * y
        y = affine(x, sd[f"{b}.norm2.alpha"], sd[f"{b}.norm2.beta"])
        x = x + _f(sd[f"{b}.ls2"]) * torch_mlp(y, sd, f"{b}.mlp_channels")
    x = affine(x, sd["norm.alpha"], sd["norm.beta"])
    return torch_linear(x.mean(axis=1), sd, "head")


def deit_resmlp_logits(sd, images_nchw):
    x = torch_patch_embed(
        images_nchw, sd["patch_embed.proj.weight"], sd["patch_embed.proj.bias"]
    )
    for i in range(_num_blocks(sd)):
        b = f"blocks.{i}"
        y = affine(x, sd[f"{b}.norm1.alpha"], sd[f"{b}.norm1.beta"])
        y = np.swapaxes(torch_linear(np.swapaxes(y, 1, 2), sd, f"{b}.attn"), 1, 2)
        x = x + _f(sd[f"{b}.gamma_1"]) * y
        y = affine(x, sd[f"{b}.norm2.alpha"], sd[f"{b}.norm2.beta"])
        x = x + _f(sd[f"{b}.gamma_2"]) * torch_mlp(y, sd, f"{b}.mlp")
    x = affine(x, sd["norm.alpha"], sd["norm.beta"])
    return torch_linear(x.mean(axis=1), sd, "head")

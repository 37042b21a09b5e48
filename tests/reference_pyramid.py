"""Independent NumPy float64 forward passes of CycleMLP and Vision Permutator.

Written from the papers' equations and the semantics of the official code,
with NumPy only (no torch, no keras, no keras_mixer), to check the Keras
models numerically:

- Chen et al., "CycleMLP: A MLP-like Architecture for Dense Prediction",
  ICLR 2022, https://arxiv.org/abs/2107.10224 (official code:
  github.com/ShoufaChen/CycleMLP, `cycle_mlp.py`).
  Block:  X = X + CycleMLP(LN(X));  X = X + MLP(LN(X)), with
      h = CycleFC_(1,3)(X), w = CycleFC_(3,1)(X), c = X Wc     (no bias on c)
      a = softmax over the 3 branches of Reweight(mean_HW(h + w + c))
      CycleMLP(X) = (a_h * h + a_w * w + a_c * c) Wp + bp
  The Cycle FC is torchvision's `deform_conv2d` with a 1x1 kernel and a fixed
  integer offset per input channel; `deform_conv2d` below evaluates that
  operator's definition literally (bilinear sampling at p + p_k + dp_k, zero
  outside the image), not the shift shortcut, so it can check an
  implementation built on shifts. `cycle_fc_shift` is the shortcut, kept
  here to show the two agree.
- Hou et al., "Vision Permutator: A Permutable MLP-Like Architecture for
  Visual Recognition", TPAMI 2022, https://arxiv.org/abs/2106.12368
  (official code: github.com/Andrew-Qibin/VisionPermutator, `models/vip.py`).
  Permute-MLP: channels are cut into `segment_dim` segments of N channels;
  the height branch mixes, for every column and segment, the H x N block
  (all rows, the segment's channels) with one (C, C) matrix, which needs
  H * N == C, i.e. H == segment_dim; the width branch does the same along W;
  the channel branch is a plain (C, C) matrix. The branches are reweighted
  as in CycleMLP.

Weights are a dict {official state-dict key: NumPy array} in torch layouts:
Linear weight (out, in), Conv2d weight (out, in, kh, kw). CycleMLP:

    patch_embed.proj.weight (D0, 3, 7, 7)  .bias (D0,)   7x7 conv, stride 4, pad 2
    network.{2s}.{j}.norm1.weight|bias               (Ds,)     LayerNorm, eps 1e-5
    network.{2s}.{j}.attn.mlp_c.weight               (Ds, Ds)  no bias
    network.{2s}.{j}.attn.sfc_h.weight (Ds, Ds, 1, 1) .bias (Ds,)
    network.{2s}.{j}.attn.sfc_h.offset (1, 2 Ds, 1, 1)         kernel (1, 3)
    network.{2s}.{j}.attn.sfc_w.weight|bias|offset             kernel (3, 1)
    network.{2s}.{j}.attn.reweight.fc1.weight (Ds//4, Ds) .bias (Ds//4,)
    network.{2s}.{j}.attn.reweight.fc2.weight (3 Ds, Ds//4) .bias (3 Ds,)
    network.{2s}.{j}.attn.proj.weight (Ds, Ds) .bias (Ds,)
    network.{2s}.{j}.norm2.weight|bias
    network.{2s}.{j}.mlp.fc1.weight (r Ds, Ds) .bias; mlp.fc2.weight (Ds, r Ds) .bias
    network.{2s+1}.proj.weight (Ds+1, Ds, 3, 3) .bias  3x3 conv, stride 2, pad 1
    norm.weight|bias (D3,)   head.weight (classes, D3)  head.bias (classes,)

Vision Permutator: the same names, with `attn.mlp_h.weight`, `attn.mlp_w.weight`
(C, C) (no bias, no offsets) in place of the Cycle FCs, a patch stem
`patch_embed.proj` (kernel = stride = patch size, no padding) and a
downsampling conv `network.{i}.proj` (kernel = stride = 2) only where the
variant has a transition, so stage s is not always at network index 2s.

Images are (batch, H, W, 3), pixels in [0, 255] when `preprocess` (ImageNet
mean and std, as both official pipelines), else already normalised.
Everything is computed in float64 whatever the dtype of the inputs.
"""

import math
import re

import numpy as np

try:  # Vectorised erf; scipy is optional.
    from scipy.special import erf as _erf
except ImportError:  # pragma: no cover - depends on the environment
    _erf = np.vectorize(math.erf, otypes=[np.float64])

# timm's IMAGENET_DEFAULT_MEAN / STD, used by both official pipelines.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# torch.nn.LayerNorm's default, used by both families (never overridden).
LAYER_NORM_EPSILON = 1e-5

# The Cycle FC pseudo-kernels of the token mixer: `sfc_h` samples along the
# width (kernel 1 x 3), `sfc_w` along the height (kernel 3 x 1).
CYCLE_KERNELS = {"sfc_h": (1, 3), "sfc_w": (3, 1)}

# Architectures of the released variants (official `cycle_mlp.py`, `vip.py`).
CYCLEMLP_CONFIGS = {
    "B1": dict(depths=(2, 2, 4, 2), widths=(64, 128, 320, 512),
               mlp_ratios=(4, 4, 4, 4)),
    "B2": dict(depths=(2, 3, 10, 3), widths=(64, 128, 320, 512),
               mlp_ratios=(4, 4, 4, 4)),
    "B3": dict(depths=(3, 4, 18, 3), widths=(64, 128, 320, 512),
               mlp_ratios=(8, 8, 4, 4)),
    "B4": dict(depths=(3, 8, 27, 3), widths=(64, 128, 320, 512),
               mlp_ratios=(8, 8, 4, 4)),
    "B5": dict(depths=(3, 4, 24, 3), widths=(96, 192, 384, 768),
               mlp_ratios=(4, 4, 4, 4)),
}
VIP_CONFIGS = {
    "S14": dict(patch_size=14, depths=(4, 3, 8, 3), widths=(384,) * 4,
                transitions=(False,) * 4, segment_dims=(16,) * 4,
                mlp_ratios=(3,) * 4),
    "S7": dict(patch_size=7, depths=(4, 3, 8, 3),
               widths=(192, 384, 384, 384),
               transitions=(True, False, False, False),
               segment_dims=(32, 16, 16, 16), mlp_ratios=(3,) * 4),
    "M7": dict(patch_size=7, depths=(4, 3, 14, 3),
               widths=(256, 256, 512, 512),
               transitions=(False, True, False, False),
               segment_dims=(32, 32, 16, 16), mlp_ratios=(3,) * 4),
    "L7": dict(patch_size=7, depths=(8, 8, 16, 4),
               widths=(256, 512, 512, 512),
               transitions=(True, False, False, False),
               segment_dims=(32, 16, 16, 16), mlp_ratios=(3,) * 4),
}


def _f64(x):
    return np.asarray(x, dtype=np.float64)


# ----------------------------------------------------------------------------
# Elementary functions.
# ----------------------------------------------------------------------------


def gelu(x):
    """Exact GELU x * Phi(x) (torch.nn.GELU's default)."""
    x = _f64(x)
    return 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)))


def layer_norm(x, weight, bias, epsilon=LAYER_NORM_EPSILON):
    """LayerNorm over the last axis, biased variance."""
    x = _f64(x)
    mean = x.mean(axis=-1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
    return (x - mean) / np.sqrt(var + epsilon) * _f64(weight) + _f64(bias)


def linear(x, weight, bias=None):
    """torch.nn.Linear on the last axis: x W^T + b, W of shape (out, in)."""
    y = _f64(x) @ _f64(weight).T
    return y if bias is None else y + _f64(bias)


def softmax(x, axis=-1):
    x = _f64(x)
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def mlp(x, weights, prefix):
    """fc1 -> exact GELU -> fc2 (dropout is the identity at inference)."""
    h = gelu(linear(x, weights[f"{prefix}.fc1.weight"],
                    weights[f"{prefix}.fc1.bias"]))
    return linear(h, weights[f"{prefix}.fc2.weight"],
                  weights[f"{prefix}.fc2.bias"])


def normalize(images, mean=IMAGENET_MEAN, std=IMAGENET_STD):
    """Pixels in [0, 255] -> (x / 255 - mean) / std, per channel."""
    images = _f64(images)
    if images.ndim != 4 or images.shape[-1] != len(mean):
        raise ValueError(f"images must be (batch, H, W, {len(mean)}), "
                         f"got {images.shape}")
    return (images / 255.0 - _f64(mean)) / _f64(std)


# ----------------------------------------------------------------------------
# Convolutions, by definition.
# ----------------------------------------------------------------------------


def conv2d(x, weight, bias, stride, padding):
    """torch Conv2d on NHWC input: zero padding, then
    y[b, p, q, o] = bias[o] + sum_{c,i,j} W[o, c, i, j] x[b, s p + i, s q + j, c].
    Returns NHWC."""
    x = _f64(x)
    weight = _f64(weight)
    out_ch, in_ch, kh, kw = weight.shape
    if x.shape[-1] != in_ch:
        raise ValueError(f"conv weight {weight.shape} for {x.shape[-1]} "
                         "input channels")
    x = np.pad(x, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
    rows = (x.shape[1] - kh) // stride + 1
    cols = (x.shape[2] - kw) // stride + 1
    y = np.zeros((x.shape[0], rows, cols, out_ch))
    for i in range(kh):
        for j in range(kw):
            tap = x[:, i:i + stride * (rows - 1) + 1:stride,
                    j:j + stride * (cols - 1) + 1:stride, :]
            y += tap @ weight[:, :, i, j].T
    return y + _f64(bias)


def _bilinear(images, y, x):
    """torchvision's deformable-conv sampling of images (B, C, H, W) at real
    positions y, x (B, C, P, Q): zero when y <= -1, y >= H, x <= -1 or
    x >= W; otherwise the bilinear blend of the four neighbours, each corner
    outside the image counting as zero."""
    batch, channels, height, width = images.shape
    flat = images.reshape(batch, channels, height * width)
    y0 = np.floor(y)
    x0 = np.floor(x)
    ly, lx = y - y0, x - x0

    def corner(yy, xx):
        inside = (yy >= 0) & (yy <= height - 1) & (xx >= 0) & (xx <= width - 1)
        index = (np.clip(yy, 0, height - 1) * width
                 + np.clip(xx, 0, width - 1)).astype(np.int64)
        values = np.take_along_axis(
            flat, index.reshape(batch, channels, -1), axis=2
        ).reshape(yy.shape)
        return np.where(inside, values, 0.0)

    blend = ((1 - ly) * (1 - lx) * corner(y0, x0)
             + (1 - ly) * lx * corner(y0, x0 + 1)
             + ly * (1 - lx) * corner(y0 + 1, x0)
             + ly * lx * corner(y0 + 1, x0 + 1))
    valid = (y > -1) & (y < height) & (x > -1) & (x < width)
    return np.where(valid, blend, 0.0)


def deform_conv2d(x, offset, weight, bias=None, stride=1, padding=0,
                  dilation=1):
    """torchvision.ops.deform_conv2d (v1, no mask), by its definition, NCHW:

        y[b, o, p, q] = bias[o] + sum_{c, i, j} W[o, c, i, j]
                        * x_c(p s - pad + i d + dy, q s - pad + j d + dx)

    where x_c(., .) samples channel c bilinearly (`_bilinear`) and
    (dy, dx) = offset[b, 2 k, p, q], offset[b, 2 k + 1, p, q] with
    k = g K + i kw + j, K = kh kw, g = c // (C / G) the offset group of c and
    G = offset.shape[1] / (2 K). Weight groups = C / weight.shape[1].
    """
    x = _f64(x)
    offset = _f64(offset)
    weight = _f64(weight)
    batch, channels, height, width = x.shape
    out_ch, group_in, kh, kw = weight.shape
    taps = kh * kw
    if offset.shape[1] % (2 * taps):
        raise ValueError(f"offset has {offset.shape[1]} channels, not a "
                         f"multiple of 2 * {taps}")
    offset_groups = offset.shape[1] // (2 * taps)
    groups = channels // group_in
    if channels % offset_groups or channels % group_in or out_ch % groups:
        raise ValueError("channels do not divide into the groups")
    rows = (height + 2 * padding - dilation * (kh - 1) - 1) // stride + 1
    cols = (width + 2 * padding - dilation * (kw - 1) - 1) // stride + 1
    if offset.shape[2:] != (rows, cols):
        raise ValueError(f"offset map {offset.shape[2:]} for output "
                         f"{(rows, cols)}")
    offset = offset.reshape(batch, offset_groups, taps, 2, rows, cols)
    base_y = (np.arange(rows) * stride - padding)[:, None]
    base_x = (np.arange(cols) * stride - padding)[None, :]
    per_group = channels // offset_groups
    # samples[b, c, i, j, p, q]: the value weight tap (i, j) sees at (p, q).
    samples = np.empty((batch, channels, kh, kw, rows, cols))
    for i in range(kh):
        for j in range(kw):
            k = i * kw + j
            dy = np.repeat(offset[:, :, k, 0], per_group, axis=1)
            dx = np.repeat(offset[:, :, k, 1], per_group, axis=1)
            samples[:, :, i, j] = _bilinear(x, base_y + i * dilation + dy,
                                            base_x + j * dilation + dx)
    out_per_group = out_ch // groups
    y = np.empty((batch, out_ch, rows, cols))
    for g in range(groups):
        cs = slice(g * group_in, (g + 1) * group_in)
        os_ = slice(g * out_per_group, (g + 1) * out_per_group)
        y[:, os_] = np.einsum("ocij,bcijpq->bopq", weight[os_],
                              samples[:, cs])
    if bias is not None:
        y += _f64(bias)[None, :, None, None]
    return y


# ----------------------------------------------------------------------------
# Cycle FC.
# ----------------------------------------------------------------------------


def cycle_shifts(channels, kernel_size):
    """Integer sampling displacement (dy, dx) of every input channel of a
    Cycle FC with pseudo-kernel (kh, kw), one of them 1: along the long side
    k, channel c samples at + ((c + (kh kw) // 2) mod k) - k // 2. For k = 3:
    ((c + 1) mod 3) - 1, i.e. 0, +1, -1 for c mod 3 = 0, 1, 2."""
    kh, kw = kernel_size
    if kh != 1 and kw != 1:
        raise ValueError(f"a Cycle FC kernel is 1 x k or k x 1, got {kernel_size}")
    start = (kh * kw) // 2
    c = np.arange(channels)
    zero = np.zeros(channels, dtype=np.int64)
    if kh == 1:
        return zero, (c + start) % kw - kw // 2
    return (c + start) % kh - kh // 2, zero


def cycle_offsets(channels, kernel_size):
    """The `offset` buffer of a Cycle FC, shape (1, 2 C, 1, 1):
    [dy_0, dx_0, dy_1, dx_1, ...] as float32, the official dtype."""
    dy, dx = cycle_shifts(channels, kernel_size)
    return np.stack([dy, dx], axis=1).reshape(1, 2 * channels, 1, 1).astype(
        np.float32)


def cycle_fc(x, weight, bias, offset):
    """Cycle FC on NHWC x as the official module: deform_conv2d with a 1x1
    kernel, stride 1, no padding, and the (1, 2C, 1, 1) offset broadcast to
    every batch element and position (C offset groups, one per channel)."""
    x = _f64(x)
    batch, height, width, channels = x.shape
    offset = np.broadcast_to(_f64(offset), (batch, 2 * channels, height, width))
    y = deform_conv2d(x.transpose(0, 3, 1, 2), offset, weight, bias)
    return y.transpose(0, 2, 3, 1)


def shift(x, dy, dx):
    """Per-channel integer shift of NHWC x with zero fill:
    out[b, y, x, c] = x[b, y + dy[c], x + dx[c], c], 0 outside the image."""
    x = _f64(x)
    _, height, width, _ = x.shape
    pad = int(max(np.abs(dy).max(initial=0), np.abs(dx).max(initial=0)))
    padded = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    out = np.empty_like(x)
    for a, b in set(zip(dy.tolist(), dx.tolist())):
        channels = np.flatnonzero((dy == a) & (dx == b))
        out[..., channels] = padded[:, pad + a:pad + a + height,
                                    pad + b:pad + b + width, channels]
    return out


def cycle_fc_shift(x, weight, bias, kernel_size):
    """The shortcut: shift every channel by its fixed displacement, then a
    1x1 FC (weight (C_out, C_in, 1, 1)). Equal to `cycle_fc` for the
    offsets of `cycle_offsets(C, kernel_size)`."""
    dy, dx = cycle_shifts(_f64(x).shape[-1], kernel_size)
    return linear(shift(x, dy, dx), _f64(weight)[:, :, 0, 0], bias)


def check_cycle_offsets(weights):
    """Raise if any `offset` buffer differs from the fixed pattern."""
    for key, value in weights.items():
        match = re.fullmatch(r"(.*\.(sfc_[hw]))\.offset", key)
        if not match:
            continue
        channels = _f64(weights[f"{match.group(1)}.weight"]).shape[1]
        expected = cycle_offsets(channels, CYCLE_KERNELS[match.group(2)])
        if _f64(value).shape != expected.shape or not np.array_equal(
                _f64(value), expected):
            raise ValueError(f"{key} differs from the fixed Cycle FC offsets")


# ----------------------------------------------------------------------------
# Token mixers.
# ----------------------------------------------------------------------------


def reweight(h, w, c, weights, prefix):
    """Split attention over the three branches (both families): the MLP of
    the spatial mean of h + w + c gives 3 C numbers, read as (C, 3) (branch
    index fastest), softmax over the branch axis, weighted sum."""
    a = (h + w + c).mean(axis=(1, 2))  # (B, C)
    batch, channels = a.shape
    a = mlp(a, weights, f"{prefix}.reweight").reshape(batch, channels, 3)
    a = softmax(a, axis=-1)[:, None, None, :, :]  # (B, 1, 1, C, 3)
    return h * a[..., 0] + w * a[..., 1] + c * a[..., 2]


def cycle_mixer(x, weights, prefix, use_shift=False):
    """The CycleMLP token mixer on NHWC x: two Cycle FCs and a channel FC,
    reweighted, then the output projection."""
    branches = []
    for name in ("sfc_h", "sfc_w"):
        p = f"{prefix}.{name}"
        if use_shift or f"{p}.offset" not in weights:
            # Without an offset buffer, the architecture's fixed pattern.
            branches.append(cycle_fc_shift(x, weights[f"{p}.weight"],
                                           weights[f"{p}.bias"],
                                           CYCLE_KERNELS[name]))
        else:
            branches.append(cycle_fc(x, weights[f"{p}.weight"],
                                     weights[f"{p}.bias"],
                                     weights[f"{p}.offset"]))
    h, w = branches
    c = linear(x, weights[f"{prefix}.mlp_c.weight"],
               weights.get(f"{prefix}.mlp_c.bias"))
    y = reweight(h, w, c, weights, prefix)
    return linear(y, weights[f"{prefix}.proj.weight"],
                  weights[f"{prefix}.proj.bias"])


def permute_branch(x, weight, segment_dim, axis):
    """ViP's height (axis 1) or width (axis 2) branch on NHWC x: channels
    cut into `segment_dim` segments of N = C // segment_dim; for every
    segment and every position on the other spatial axis, the (L, N) block
    (L positions along `axis` x the segment's channels), flattened as
    l N + n, is multiplied by W (C, C), which needs L N == C."""
    x = _f64(x)
    batch, height, width, channels = x.shape
    n = channels // segment_dim
    length = x.shape[axis]
    if channels % segment_dim or length * n != channels:
        raise ValueError(
            f"Vision Permutator needs {'height' if axis == 1 else 'width'} "
            f"== segment_dim ({segment_dim}) at {channels} channels: its "
            f"(C, C) permute matrices mix {segment_dim} positions x "
            f"{n} channels; got {length}. The model is tied to its training "
            "resolution.")
    w4 = _f64(weight).reshape(length, n, length, n)  # (l_out, n_out, l, n)
    xs = x.reshape(batch, height, width, segment_dim, n)
    if axis == 1:
        y = np.einsum("uvln,blwgn->buwgv", w4, xs)
    else:
        y = np.einsum("uvln,bhlgn->bhugv", w4, xs)
    return y.reshape(batch, height, width, channels)


def permute_mixer(x, weights, prefix, segment_dim):
    """ViP's Weighted Permute-MLP on NHWC x."""
    for name in ("mlp_h", "mlp_w"):
        if f"{prefix}.{name}.bias" in weights:  # qkv_bias=True: never released
            raise ValueError(f"{prefix}.{name}.bias is not supported")
    h = permute_branch(x, weights[f"{prefix}.mlp_h.weight"], segment_dim, 1)
    w = permute_branch(x, weights[f"{prefix}.mlp_w.weight"], segment_dim, 2)
    c = linear(x, weights[f"{prefix}.mlp_c.weight"],
               weights.get(f"{prefix}.mlp_c.bias"))
    y = reweight(h, w, c, weights, prefix)
    return linear(y, weights[f"{prefix}.proj.weight"],
                  weights[f"{prefix}.proj.bias"])


def block(x, weights, prefix, mixer):
    """x + mixer(LN(x)), then x + MLP(LN(x)) (skip_lam 1, no layer scale)."""
    y = layer_norm(x, weights[f"{prefix}.norm1.weight"],
                   weights[f"{prefix}.norm1.bias"])
    x = x + mixer(y, f"{prefix}.attn")
    y = layer_norm(x, weights[f"{prefix}.norm2.weight"],
                   weights[f"{prefix}.norm2.bias"])
    return x + mlp(y, weights, f"{prefix}.mlp")


# ----------------------------------------------------------------------------
# Networks.
# ----------------------------------------------------------------------------


def network_layout(weights):
    """The `network` ModuleList read from the keys: a list of
    ("stage", index, number of blocks) and ("downsample", index, None)."""
    indices = sorted({int(m.group(1)) for k in weights
                      for m in [re.match(r"network\.(\d+)\.", k)] if m})
    if indices != list(range(len(indices))):
        raise ValueError(f"network entries are not 0..N-1: {indices}")
    layout = []
    for i in indices:
        if f"network.{i}.proj.weight" in weights:
            layout.append(("downsample", i, None))
            continue
        blocks = {int(m.group(1)) for k in weights
                  for m in [re.match(rf"network\.{i}\.(\d+)\.", k)] if m}
        if blocks != set(range(len(blocks))) or not blocks:
            raise ValueError(f"network.{i} blocks are not 0..N-1: {blocks}")
        layout.append(("stage", i, len(blocks)))
    return layout


def _run(weights, x, stem, downsample, mixer_for_stage):
    """Stem, then the network; returns (final NHWC map, stage outputs)."""
    x = stem(x)
    features = {}
    stage = 0
    for kind, i, count in network_layout(weights):
        if kind == "downsample":
            x = downsample(x, f"network.{i}.proj")
            continue
        mixer = mixer_for_stage(stage)
        for j in range(count):
            x = block(x, weights, f"network.{i}.{j}", mixer)
        features[f"stage_{stage}"] = x
        stage += 1
    return x, features


def _head(x, weights, include_top, logits, pooling):
    """Final LayerNorm on every token, mean over tokens, Linear."""
    tokens = layer_norm(x.reshape(x.shape[0], -1, x.shape[-1]),
                        weights["norm.weight"], weights["norm.bias"])
    if include_top:
        out = linear(tokens.mean(axis=1), weights["head.weight"],
                     weights["head.bias"])
        return out if logits else softmax(out)
    if pooling is None:
        return tokens.reshape(x.shape)
    if pooling == "avg":
        return tokens.mean(axis=1)
    if pooling == "max":
        return tokens.max(axis=1)
    raise ValueError(f"unknown pooling {pooling!r}")


def _input(images, preprocess):
    return normalize(images) if preprocess else _f64(images)


def cyclemlp_run(weights, images, preprocess=True, use_shift=False):
    """CycleMLP up to the last stage: (final NHWC map, {"stage_s": NHWC}).
    Stage s has stride 4 * 2**s. `use_shift` evaluates the Cycle FCs by the
    shift shortcut instead of deform_conv2d's definition."""

    def stem(x):
        return conv2d(x, weights["patch_embed.proj.weight"],
                      weights["patch_embed.proj.bias"], stride=4, padding=2)

    def downsample(x, prefix):
        return conv2d(x, weights[f"{prefix}.weight"], weights[f"{prefix}.bias"],
                      stride=2, padding=1)

    def mixer_for_stage(_):
        return lambda y, prefix: cycle_mixer(y, weights, prefix, use_shift)

    return _run(weights, _input(images, preprocess), stem, downsample,
                mixer_for_stage)


def cyclemlp_forward(weights, images, preprocess=True, include_top=True,
                     logits=False, pooling=None, use_shift=False):
    """CycleMLP on images (batch, H, W, 3); arguments as in tests/reference.py:
    include_top: final LayerNorm, token mean, head, softmax (or logits);
    else the normalised NHWC map, or pooled by `pooling` ("avg"/"max")."""
    x, _ = cyclemlp_run(weights, images, preprocess, use_shift)
    return _head(x, weights, include_top, logits, pooling)


def cyclemlp_features(weights, images, preprocess=True, use_shift=False):
    """The four stage outputs (strides 4, 8, 16, 32), NHWC, before any norm
    (the official dense-prediction backbone adds new LayerNorms `norm0`,
    `norm2`, `norm4`, `norm6` that no released file contains)."""
    return cyclemlp_run(weights, images, preprocess, use_shift)[1]


def vip_run(weights, images, segment_dims, preprocess=True):
    """Vision Permutator up to the last stage. `segment_dims`: one per stage
    (not stored in the weights). The stem and downsampling convs have
    kernel = stride, no padding; sizes not divisible are refused rather than
    cropped as torch would."""

    def patch_conv(x, prefix):
        kernel = _f64(weights[f"{prefix}.weight"])
        size = kernel.shape[-1]
        if x.shape[1] % size or x.shape[2] % size:
            raise ValueError(f"{prefix}: {x.shape[1]}x{x.shape[2]} is not a "
                             f"multiple of {size}")
        return conv2d(x, kernel, weights[f"{prefix}.bias"], stride=size,
                      padding=0)

    def mixer_for_stage(s):
        return lambda y, prefix: permute_mixer(y, weights, prefix,
                                               segment_dims[s])

    stages = sum(kind == "stage" for kind, _, _ in network_layout(weights))
    if len(segment_dims) != stages:
        raise ValueError(f"{len(segment_dims)} segment dims for {stages} stages")
    return _run(weights, _input(images, preprocess),
                lambda x: patch_conv(x, "patch_embed.proj"), patch_conv,
                mixer_for_stage)


def vip_forward(weights, images, segment_dims, preprocess=True,
                include_top=True, logits=False, pooling=None):
    """Vision Permutator on images (batch, H, W, 3); see cyclemlp_forward."""
    x, _ = vip_run(weights, images, segment_dims, preprocess)
    return _head(x, weights, include_top, logits, pooling)


def vip_features(weights, images, segment_dims, preprocess=True):
    """The four stage outputs, NHWC, before any norm."""
    return vip_run(weights, images, segment_dims, preprocess)[1]


# ----------------------------------------------------------------------------
# State dicts in the official key layouts.
# ----------------------------------------------------------------------------


def _block_shapes(prefix, dim, mlp_ratio, mixer):
    hidden = int(dim * mlp_ratio)
    shapes = {f"{prefix}.norm1.weight": (dim,), f"{prefix}.norm1.bias": (dim,),
              f"{prefix}.attn.mlp_c.weight": (dim, dim)}
    if mixer == "cycle":
        for name in ("sfc_h", "sfc_w"):
            shapes[f"{prefix}.attn.{name}.weight"] = (dim, dim, 1, 1)
            shapes[f"{prefix}.attn.{name}.bias"] = (dim,)
            shapes[f"{prefix}.attn.{name}.offset"] = (1, 2 * dim, 1, 1)
    else:
        shapes[f"{prefix}.attn.mlp_h.weight"] = (dim, dim)
        shapes[f"{prefix}.attn.mlp_w.weight"] = (dim, dim)
    shapes.update({
        f"{prefix}.attn.reweight.fc1.weight": (dim // 4, dim),
        f"{prefix}.attn.reweight.fc1.bias": (dim // 4,),
        f"{prefix}.attn.reweight.fc2.weight": (3 * dim, dim // 4),
        f"{prefix}.attn.reweight.fc2.bias": (3 * dim,),
        f"{prefix}.attn.proj.weight": (dim, dim),
        f"{prefix}.attn.proj.bias": (dim,),
        f"{prefix}.norm2.weight": (dim,), f"{prefix}.norm2.bias": (dim,),
        f"{prefix}.mlp.fc1.weight": (hidden, dim),
        f"{prefix}.mlp.fc1.bias": (hidden,),
        f"{prefix}.mlp.fc2.weight": (dim, hidden),
        f"{prefix}.mlp.fc2.bias": (dim,),
    })
    return shapes


def _state_shapes(mixer, stem, depths, widths, mlp_ratios, downsample_after,
                  classes):
    shapes = {"patch_embed.proj.weight": stem,
              "patch_embed.proj.bias": (widths[0],)}
    index = 0
    for s, depth in enumerate(depths):
        for j in range(depth):
            shapes.update(_block_shapes(f"network.{index}.{j}", widths[s],
                                        mlp_ratios[s], mixer))
        index += 1
        if s + 1 < len(depths) and downsample_after[s] is not None:
            kernel = downsample_after[s]
            shapes[f"network.{index}.proj.weight"] = (
                widths[s + 1], widths[s], kernel, kernel)
            shapes[f"network.{index}.proj.bias"] = (widths[s + 1],)
            index += 1
    shapes["norm.weight"] = (widths[-1],)
    shapes["norm.bias"] = (widths[-1],)
    shapes["head.weight"] = (classes, widths[-1])
    shapes["head.bias"] = (classes,)
    return shapes


def cyclemlp_state_shapes(depths, widths, mlp_ratios, classes=1000):
    """{key: shape} of the official CycleMLP state dict (offsets included),
    in the official order."""
    return _state_shapes("cycle", (widths[0], 3, 7, 7), depths, widths,
                         mlp_ratios, [3] * (len(depths) - 1), classes)


def vip_state_shapes(patch_size, depths, widths, transitions, mlp_ratios,
                     classes=1000, segment_dims=None):
    """{key: shape} of the official Vision Permutator state dict. A
    downsampling conv follows stage s when transitions[s] (kernel 2) or the
    width changes (kernel 1). `segment_dims` is accepted and unused (it is
    not stored in the weights)."""
    del segment_dims
    after = []
    for s in range(len(depths) - 1):
        if transitions[s] or widths[s] != widths[s + 1]:
            after.append(2 if transitions[s] else 1)
        else:
            after.append(None)
    return _state_shapes("permute", (widths[0], 3, patch_size, patch_size),
                         depths, widths, mlp_ratios, after, classes)


def random_state(shapes, seed=0, dtype=np.float32):
    """Random weights for `shapes` with O(1) activations: Linear/Conv weights
    N(0, 1/fan_in), norms 1 + N(0, 0.2^2), biases N(0, 0.1^2), the reweight
    fc2 three times larger so the branch softmax is far from uniform, and
    the exact fixed Cycle FC offsets."""
    rng = np.random.default_rng(seed)
    state = {}
    for key, shape in shapes.items():
        if key.endswith(".offset"):
            name = key.rsplit(".", 2)[-2]
            state[key] = cycle_offsets(shape[1] // 2, CYCLE_KERNELS[name])
            continue
        if key.endswith(".bias"):
            value = 0.1 * rng.standard_normal(shape)
        elif re.search(r"norm\d?\.weight$", key):
            value = 1.0 + 0.2 * rng.standard_normal(shape)
        else:
            fan_in = int(np.prod(shape[1:]))
            scale = 3.0 if ".reweight.fc2." in key else 1.0
            value = scale * rng.standard_normal(shape) / math.sqrt(fan_in)
        state[key] = value.astype(dtype)
    return state


def random_cyclemlp_state(depths=(2, 2, 2, 2), widths=(16, 24, 32, 32),
                          mlp_ratios=(4, 4, 4, 4), classes=10, seed=0,
                          dtype=np.float32):
    """A random CycleMLP state dict in the official layout (small default)."""
    return random_state(cyclemlp_state_shapes(depths, widths, mlp_ratios,
                                              classes), seed, dtype)


def random_vip_state(patch_size=4, depths=(2, 2, 2, 2),
                     widths=(16, 32, 32, 32),
                     transitions=(True, False, False, False),
                     mlp_ratios=(3, 3, 3, 3), classes=10, seed=0,
                     dtype=np.float32, segment_dims=None):
    """A random ViP state dict in the official layout. The small default is
    S/7's shape at 32 x 32 input: stride 4 -> 8 x 8 with segment_dim 8
    (N = 2), then stride 8 -> 4 x 4 with segment_dim 4 (N = 8)."""
    return random_state(vip_state_shapes(patch_size, depths, widths,
                                         transitions, mlp_ratios, classes,
                                         segment_dims), seed, dtype)

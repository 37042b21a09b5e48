"""Independent NumPy float64 forward passes of gMLP, gMixer and ConvMixer,
reading state dicts in timm's own key layout.

Written from the papers' equations and the semantics of timm's modules, with
NumPy only (no torch, no timm, no keras, no keras_mixer), to check the Keras
models and the timm converters numerically:

- Liu et al., "Pay Attention to MLPs", 2021, https://arxiv.org/abs/2105.08050,
  Sec. 2 (gMLP block, Spatial Gating Unit):
      Z = GELU(LN(X) U^T + c)               U: (2H, D), every channel of Z
      Z1, Z2 = Z[:, :H], Z[:, H:]           first half multiplies,
      s(Z) = Z1 * (W LN'(Z2) + b)           second half is normalised and
                                            projected over the n tokens
      Y = X + s(Z) V^T + d
  with W (n, n) acting on the token axis (timm initialises W ~ N(0, 1e-6),
  b = 1). LN uses epsilon 1e-6; LN' (inside the gate) epsilon 1e-5.
- gMixer (timm `gmixer_12_224` / `gmixer_24_224`, Ross Wightman's experiment):
  MLP-Mixer (Tolstikhin et al., https://arxiv.org/abs/2105.01601, eq. 1) with
  both MLPs replaced by a GLU MLP
      GLU(x) = (x W1^T + b1)[:h] * SiLU((x W1^T + b1)[h:]) W2^T + b2
  (value first, SiLU-gated second half; W1: (2h, in), W2: (out, h)).
  Token mixing applies it along the tokens: transpose -> GLU -> transpose.
- Trockman & Kolter, "Patches Are All You Need?", 2022,
  https://arxiv.org/abs/2201.09792, Sec. 2:
      z0   = BN(act(Conv_{C->h, k=p, stride=p}(X)))
      z'_l = BN(act(DepthwiseConv_{k x k, 'same'}(z_{l-1}))) + z_{l-1}
      z_l  = BN(act(PointwiseConv(z'_l)))
      logits = Linear(GlobalAvgPool(z_depth))
  act is exact GELU, or ReLU for ConvMixer-768/32. BatchNorm at inference:
  (x - running_mean) / sqrt(running_var + 1e-5) * weight + bias.

State dicts are dicts {timm key: array} in torch layouts:
  nn.Linear  weight (out, in), bias (out,):      y = x @ W^T + b
  nn.Conv2d  weight (out, in / groups, kh, kw):  OIHW, cross-correlation
  LayerNorm / BatchNorm2d weight, bias (C,); BatchNorm2d also running_mean,
  running_var (C,) and num_batches_tracked () (int64, unused at inference).

gMLP (timm `MlpMixer` + `SpatialGatingBlock` + `GatedMlp`):
  stem.proj.weight (D, C_in, p, p)   stem.proj.bias (D,)
  blocks.{i}.norm.weight|bias                        (D,)
  blocks.{i}.mlp_channels.fc1.weight (2H, D)  .bias (2H,)    2H = mlp_ratio*D
  blocks.{i}.mlp_channels.gate.norm.weight|bias      (H,)
  blocks.{i}.mlp_channels.gate.proj.weight (S, S) .bias (S,)  S tokens
  blocks.{i}.mlp_channels.fc2.weight (D, H)   .bias (D,)
  norm.weight|bias (D,)   head.weight (K, D)  head.bias (K,)
gMixer (timm `MlpMixer` + `MixerBlock` with `mlp_layer=GluMlp`, act SiLU):
  stem.proj.*, norm.*, head.* as gMLP
  blocks.{i}.norm1.weight|bias, blocks.{i}.norm2.weight|bias  (D,)
  blocks.{i}.mlp_tokens.fc1.weight (2h_t, S)  .bias (2h_t,)
  blocks.{i}.mlp_tokens.fc2.weight (S, h_t)   .bias (S,)
  blocks.{i}.mlp_channels.fc1.weight (2h_c, D) .bias (2h_c,)
  blocks.{i}.mlp_channels.fc2.weight (D, h_c)  .bias (D,)
  where 2h_t = int(r_t * D), 2h_c = int(r_c * D), mlp_ratio (r_t, r_c).
ConvMixer (timm `ConvMixer`):
  stem.0.weight (D, C_in, p, p)  stem.0.bias (D,)   stem.2.* BatchNorm2d(D)
  blocks.{i}.0.fn.0.weight (D, 1, k, k)  .bias (D,)  depthwise, 'same'
  blocks.{i}.0.fn.2.*  BatchNorm2d(D)              (inside the residual)
  blocks.{i}.1.weight (D, D, 1, 1)       .bias (D,)  pointwise
  blocks.{i}.3.*       BatchNorm2d(D)
  head.weight (K, D)  head.bias (K,)

Images: `data_format="channels_first"` (NCHW, timm's) by default, or
"channels_last" (NHWC, Keras's). Either already normalised
(`preprocess=False`, the default) or pixels in [0, 255] normalised here with
the checkpoint's mean and std (`preprocess=True` uses the family's timm
pretrained_cfg; a (mean, std) pair is also accepted).

Everything is computed in float64 whatever the dtype of the inputs. The
forward passes and layouts were checked once against timm 1.0.31 itself
(every weight and buffer random, float64: rel err < 1e-15; the key names,
order and shapes of the eight full variants, and their parameter counts);
the tests use them without timm or torch. `rel_err` is tests/reference.py's.
"""

import math
import re

import numpy as np

try:  # Vectorised erf; scipy is optional.
    from scipy.special import erf as _erf
except ImportError:  # pragma: no cover - depends on the environment
    _erf = np.vectorize(math.erf, otypes=[np.float64])

# Epsilons of timm's modules (timm/models/mlp_mixer.py, timm/models/convmixer.py).
LAYER_NORM_EPSILON = 1e-6  # partial(nn.LayerNorm, eps=1e-6): block and final norms
GATE_NORM_EPSILON = 1e-5  # SpatialGatingUnit's plain nn.LayerNorm (torch default)
BATCH_NORM_EPSILON = 1e-5  # nn.BatchNorm2d default

# Normalisation of pixels scaled to [0, 1], from timm's pretrained_cfg.
IMAGENET_MEAN_STD = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
INCEPTION_MEAN_STD = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
PREPROCESSING = {
    "gmlp": INCEPTION_MEAN_STD,  # gmlp_*_224 _cfg(): mean = std = 0.5
    "gmixer": IMAGENET_MEAN_STD,  # gmixer_*_224: IMAGENET_DEFAULT_MEAN/STD
    "convmixer": IMAGENET_MEAN_STD,  # convmixer _cfg(): IMAGENET_DEFAULT_*
}

# The timm variants of issue 16, as constructor arguments of the generators
# below (image_size is the stem's input size; it fixes S for gMLP / gMixer).
VARIANTS = {
    "gmlp_ti16_224": dict(family="gmlp", patch_size=16, dim=128, depth=30, mlp_ratio=6),
    "gmlp_s16_224": dict(family="gmlp", patch_size=16, dim=256, depth=30, mlp_ratio=6),
    "gmlp_b16_224": dict(family="gmlp", patch_size=16, dim=512, depth=30, mlp_ratio=6),
    "gmixer_12_224": dict(family="gmixer", patch_size=16, dim=384, depth=12, mlp_ratio=(1.0, 4.0)),
    "gmixer_24_224": dict(family="gmixer", patch_size=16, dim=384, depth=24, mlp_ratio=(1.0, 4.0)),
    "convmixer_1536_20": dict(family="convmixer", patch_size=7, dim=1536, depth=20,
                              kernel_size=9, activation="gelu"),
    "convmixer_768_32": dict(family="convmixer", patch_size=7, dim=768, depth=32,
                             kernel_size=7, activation="relu"),
    "convmixer_1024_20_ks9_p14": dict(family="convmixer", patch_size=14, dim=1024, depth=20,
                                      kernel_size=9, activation="gelu"),
}

BATCH_NORM_BUFFERS = ("running_mean", "running_var", "num_batches_tracked")


def _f64(x):
    return np.asarray(x, dtype=np.float64)


# ----------------------------------------------------------------------------
# Elementary functions.
# ----------------------------------------------------------------------------


def gelu(x):
    """Exact GELU x * Phi(x) (torch nn.GELU's default, approximate='none')."""
    x = _f64(x)
    return 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)))


def silu(x):
    """SiLU x * sigmoid(x), written with tanh so it cannot overflow."""
    x = _f64(x)
    return x * 0.5 * (1.0 + np.tanh(0.5 * x))


def relu(x):
    return np.maximum(_f64(x), 0.0)


ACTIVATIONS = {"gelu": gelu, "silu": silu, "relu": relu}


def layer_norm(x, weight, bias, epsilon):
    """LayerNorm over the last axis, biased variance."""
    x = _f64(x)
    mean = x.mean(axis=-1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
    return (x - mean) / np.sqrt(var + epsilon) * _f64(weight) + _f64(bias)


def linear(x, weight, bias):
    """nn.Linear on the last axis: x @ W^T + b, W of shape (out, in)."""
    return _f64(x) @ _f64(weight).T + _f64(bias)


def token_linear(x, weight, bias):
    """nn.Linear applied along the token axis of x (batch, tokens, channels),
    as timm writes it: transpose -> Linear -> transpose."""
    xt = np.swapaxes(_f64(x), -1, -2)  # (batch, channels, tokens)
    return np.swapaxes(linear(xt, weight, bias), -1, -2)


def batch_norm(x, sd, prefix, epsilon=BATCH_NORM_EPSILON):
    """BatchNorm2d at inference on NCHW x, from `prefix`.weight|bias|
    running_mean|running_var."""
    shape = (1, -1, 1, 1)
    mean = _f64(sd[f"{prefix}.running_mean"]).reshape(shape)
    var = _f64(sd[f"{prefix}.running_var"]).reshape(shape)
    scale = _f64(sd[f"{prefix}.weight"]).reshape(shape)
    shift = _f64(sd[f"{prefix}.bias"]).reshape(shape)
    return (_f64(x) - mean) / np.sqrt(var + epsilon) * scale + shift


def same_padding(kernel_size):
    """torch's padding='same' (stride 1, dilation 1): k - 1 pixels in all,
    the smaller half before (top / left): (k - 1) // 2 and k // 2."""
    total = kernel_size - 1
    return total // 2, total - total // 2


def conv2d(x, weight, bias, stride=1, padding=0, groups=1):
    """nn.Conv2d on NCHW x with an OIHW weight (cross-correlation):

        y[n, o, i, j] = b[o] + sum_{c, a, e} W[o, c, a, e]
                         * xpad[n, g(o) * C_g + c, i * stride + a, j * stride + e]

    with C_g = C_in / groups input channels per group and g(o) the group of
    output channel o. `padding` is an int (both sides) or "same". Output size
    floor((H + pads - k) / stride) + 1, as torch: trailing rows / columns that
    do not fill a window are not used.
    """
    x = _f64(x)
    weight = _f64(weight)
    n, c_in, _, _ = x.shape
    c_out, c_group, kh, kw = weight.shape
    if c_in % groups or c_out % groups or c_in // groups != c_group:
        raise ValueError(
            f"weight {weight.shape} does not fit {c_in} input channels in {groups} groups"
        )
    if padding == "same":
        if stride != 1:
            raise ValueError("padding='same' needs stride 1 (as torch)")
        (top, bottom), (left, right) = same_padding(kh), same_padding(kw)
    else:
        top = bottom = left = right = int(padding)
    x = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)))
    # windows[n, c, i, j, a, e] = x[n, c, i + a, j + e] (a view, no copy)
    windows = np.lib.stride_tricks.sliding_window_view(x, (kh, kw), axis=(2, 3))
    windows = windows[:, :, ::stride, ::stride]
    h_out, w_out = windows.shape[2:4]
    windows = windows.reshape(n, groups, c_group, h_out, w_out, kh, kw)
    w = weight.reshape(groups, c_out // groups, c_group, kh, kw)
    y = np.einsum("ngcijae,gocae->ngoij", windows, w, optimize=True)
    y = y.reshape(n, c_out, h_out, w_out)
    return y + _f64(bias).reshape(1, -1, 1, 1)


# ----------------------------------------------------------------------------
# Input side.
# ----------------------------------------------------------------------------


def normalize(images, mean, std, data_format="channels_first"):
    """Pixels in [0, 255] -> (x / 255 - mean) / std per channel."""
    images = _f64(images)
    axis = 1 if data_format == "channels_first" else -1
    shape = [1] * images.ndim
    shape[axis] = -1
    mean = _f64(mean).reshape(shape)
    std = _f64(std).reshape(shape)
    if mean.size != images.shape[axis] or std.size != images.shape[axis]:
        raise ValueError(
            f"mean/std have {mean.size}/{std.size} entries for {images.shape[axis]} channels"
        )
    return (images / 255.0 - mean) / std


def to_nchw(images, data_format, preprocess, family):
    """Validated float64 NCHW input, normalised if `preprocess` asks for it."""
    if data_format not in ("channels_first", "channels_last"):
        raise ValueError(f"data_format must be 'channels_first' or 'channels_last', got {data_format!r}")
    x = _f64(images)
    if x.ndim != 4:
        raise ValueError(f"images must be 4-D (batch, ...), got shape {x.shape}")
    if preprocess is True:
        x = normalize(x, *PREPROCESSING[family], data_format=data_format)
    elif preprocess:
        x = normalize(x, *preprocess, data_format=data_format)
    return x if data_format == "channels_first" else x.transpose(0, 3, 1, 2)


def patch_embed(x_nchw, sd, prefix="stem.proj"):
    """timm PatchEmbed: Conv2d(kernel = stride = p), then flatten(2) and
    transpose(1, 2): tokens in raster order (row of patches by row)."""
    weight = _f64(sd[f"{prefix}.weight"])
    p, q = weight.shape[2:]
    _, _, h, w = x_nchw.shape
    if h % p or w % q:
        # timm's PatchEmbed (strict_img_size) refuses such inputs.
        raise ValueError(f"image {h}x{w} is not a multiple of the patch {p}x{q}")
    y = conv2d(x_nchw, weight, sd[f"{prefix}.bias"], stride=p)
    n, d = y.shape[:2]
    return np.swapaxes(y.reshape(n, d, -1), 1, 2)  # (batch, tokens, D)


def num_blocks(sd):
    """Number of blocks `blocks.0` ... `blocks.{N-1}` in the state dict."""
    indices = {int(m.group(1)) for m in (re.match(r"blocks\.(\d+)\.", k) for k in sd) if m}
    if indices != set(range(len(indices))):
        raise ValueError(f"blocks are not numbered 0..N-1: {sorted(indices)}")
    return len(indices)


def _token_head(tokens, sd, include_top, pooling):
    """Mean over tokens then the head (timm global_pool='avg'), or features."""
    if include_top:
        return linear(tokens.mean(axis=1), sd["head.weight"], sd["head.bias"])
    if pooling is None:
        return tokens
    if pooling == "avg":
        return tokens.mean(axis=1)
    if pooling == "max":
        return tokens.max(axis=1)
    raise ValueError(f"unknown pooling {pooling!r}")


# ----------------------------------------------------------------------------
# gMLP.
# ----------------------------------------------------------------------------


def spatial_gating_unit(z, sd, prefix, gate_epsilon=GATE_NORM_EPSILON):
    """s(Z) = Z1 * (W LN'(Z2) + b), the projection along the tokens.

    z: (batch, tokens, 2H), already through GELU. The first half Z1 is the
    value; the second half Z2 is normalised and projected.
    """
    half = z.shape[-1] // 2
    if z.shape[-1] != 2 * half:
        raise ValueError(f"the gate needs an even width, got {z.shape[-1]}")
    value, gate = z[..., :half], z[..., half:]
    gate = layer_norm(gate, sd[f"{prefix}.norm.weight"], sd[f"{prefix}.norm.bias"], gate_epsilon)
    gate = token_linear(gate, sd[f"{prefix}.proj.weight"], sd[f"{prefix}.proj.bias"])
    return value * gate


def gmlp_block(x, sd, prefix, epsilon=LAYER_NORM_EPSILON, gate_epsilon=GATE_NORM_EPSILON):
    """Y = X + fc2(SGU(GELU(fc1(LN(X))))); GELU on all 2H channels."""
    m = f"{prefix}.mlp_channels"
    y = layer_norm(x, sd[f"{prefix}.norm.weight"], sd[f"{prefix}.norm.bias"], epsilon)
    z = gelu(linear(y, sd[f"{m}.fc1.weight"], sd[f"{m}.fc1.bias"]))
    z = spatial_gating_unit(z, sd, f"{m}.gate", gate_epsilon)
    return x + linear(z, sd[f"{m}.fc2.weight"], sd[f"{m}.fc2.bias"])


def gmlp_forward(sd, images, data_format="channels_first", preprocess=False,
                 include_top=True, pooling=None, epsilon=LAYER_NORM_EPSILON,
                 gate_epsilon=GATE_NORM_EPSILON):
    """gMLP logits (batch, K); with include_top=False the token table after
    the final LayerNorm (batch, S, D), or pooled by `pooling` ("avg"/"max")."""
    x = to_nchw(images, data_format, preprocess, "gmlp")
    x = patch_embed(x, sd)
    for i in range(num_blocks(sd)):
        x = gmlp_block(x, sd, f"blocks.{i}", epsilon, gate_epsilon)
    x = layer_norm(x, sd["norm.weight"], sd["norm.bias"], epsilon)
    return _token_head(x, sd, include_top, pooling)


# ----------------------------------------------------------------------------
# gMixer.
# ----------------------------------------------------------------------------


def glu_mlp(x, sd, prefix, gate_last=True):
    """timm GluMlp with SiLU: h = fc1(x); a, g = halves of h;
    fc2(a * SiLU(g)). gate_last=False gates the first half instead (not
    timm's gMixer; kept to show that the order matters)."""
    h = linear(x, sd[f"{prefix}.fc1.weight"], sd[f"{prefix}.fc1.bias"])
    half = h.shape[-1] // 2
    if h.shape[-1] != 2 * half:
        raise ValueError(f"GluMlp needs an even hidden width, got {h.shape[-1]}")
    first, second = h[..., :half], h[..., half:]
    h = first * silu(second) if gate_last else silu(first) * second
    return linear(h, sd[f"{prefix}.fc2.weight"], sd[f"{prefix}.fc2.bias"])


def gmixer_block(x, sd, prefix, epsilon=LAYER_NORM_EPSILON, gate_last=True):
    """Mixer block with GLU MLPs: token mixing (along the tokens) then
    channel mixing, both residual."""
    y = layer_norm(x, sd[f"{prefix}.norm1.weight"], sd[f"{prefix}.norm1.bias"], epsilon)
    y = np.swapaxes(glu_mlp(np.swapaxes(y, 1, 2), sd, f"{prefix}.mlp_tokens", gate_last), 1, 2)
    x = x + y
    y = layer_norm(x, sd[f"{prefix}.norm2.weight"], sd[f"{prefix}.norm2.bias"], epsilon)
    return x + glu_mlp(y, sd, f"{prefix}.mlp_channels", gate_last)


def gmixer_forward(sd, images, data_format="channels_first", preprocess=False,
                   include_top=True, pooling=None, epsilon=LAYER_NORM_EPSILON,
                   gate_last=True):
    """gMixer logits; other outputs as `gmlp_forward`."""
    x = to_nchw(images, data_format, preprocess, "gmixer")
    x = patch_embed(x, sd)
    for i in range(num_blocks(sd)):
        x = gmixer_block(x, sd, f"blocks.{i}", epsilon, gate_last)
    x = layer_norm(x, sd["norm.weight"], sd["norm.bias"], epsilon)
    return _token_head(x, sd, include_top, pooling)


# ----------------------------------------------------------------------------
# ConvMixer.
# ----------------------------------------------------------------------------


def convmixer_features(sd, x_nchw, activation="gelu", epsilon=BATCH_NORM_EPSILON):
    """Stem and every block: the feature map (batch, D, H/p, W/p), NCHW."""
    act = ACTIVATIONS[activation]
    p = _f64(sd["stem.0.weight"]).shape[-1]
    # Stem: a p x p convolution with stride p, no padding (a remainder of
    # H or W that does not fill a patch is not used, as torch).
    x = conv2d(x_nchw, sd["stem.0.weight"], sd["stem.0.bias"], stride=p)
    x = batch_norm(act(x), sd, "stem.2", epsilon)
    for i in range(num_blocks(sd)):
        b = f"blocks.{i}"
        dim = x.shape[1]
        y = conv2d(x, sd[f"{b}.0.fn.0.weight"], sd[f"{b}.0.fn.0.bias"], padding="same", groups=dim)
        x = x + batch_norm(act(y), sd, f"{b}.0.fn.2", epsilon)  # Residual(fn)
        y = conv2d(x, sd[f"{b}.1.weight"], sd[f"{b}.1.bias"])
        x = batch_norm(act(y), sd, f"{b}.3", epsilon)
    return x


def convmixer_forward(sd, images, activation="gelu", data_format="channels_first",
                      preprocess=False, include_top=True, pooling=None,
                      epsilon=BATCH_NORM_EPSILON):
    """ConvMixer logits (batch, K): global average pooling then the head.

    `activation`: "gelu" (exact; 1536/20 and 1024/20) or "relu" (768/32);
    it is not recorded in the weights. With include_top=False: the feature
    map in `data_format`, or pooled by `pooling` ("avg" / "max")."""
    x = to_nchw(images, data_format, preprocess, "convmixer")
    x = convmixer_features(sd, x, activation, epsilon)
    if include_top:
        return linear(x.mean(axis=(2, 3)), sd["head.weight"], sd["head.bias"])
    if pooling is None:
        return x if data_format == "channels_first" else x.transpose(0, 2, 3, 1)
    if pooling == "avg":
        return x.mean(axis=(2, 3))
    if pooling == "max":
        return x.max(axis=(2, 3))
    raise ValueError(f"unknown pooling {pooling!r}")


def forward(family, sd, images, **kwargs):
    """`gmlp_forward`, `gmixer_forward` or `convmixer_forward` by name."""
    functions = {"gmlp": gmlp_forward, "gmixer": gmixer_forward, "convmixer": convmixer_forward}
    if family not in functions:
        raise ValueError(f"unknown family {family!r}; expected one of {sorted(functions)}")
    return functions[family](sd, images, **kwargs)


# ----------------------------------------------------------------------------
# State-dict layouts and random state dicts in timm's exact key layout.
# ----------------------------------------------------------------------------


def _tokens(image_size, patch_size):
    if image_size % patch_size:
        raise ValueError(f"image_size {image_size} is not a multiple of patch_size {patch_size}")
    return (image_size // patch_size) ** 2


def _even(width, what):
    if width % 2:
        raise ValueError(f"{what} must be even for the gate's split, got {width}")
    return width


def state_shapes(family, *, dim, depth, patch_size, in_chans=3, num_classes=1000,
                 image_size=224, mlp_ratio=None, kernel_size=None, **unused):
    """{timm key: shape} for a family and config, in timm's state_dict order.

    The keys are exactly those of timm's model (buffers included), so the
    parameter count is the sum over the non-buffer entries (`num_params`).
    Extra keyword arguments (family tables carry `activation`) are ignored.
    """
    del unused
    shapes = {}
    if family in ("gmlp", "gmixer"):
        tokens = _tokens(image_size, patch_size)
        shapes["stem.proj.weight"] = (dim, in_chans, patch_size, patch_size)
        shapes["stem.proj.bias"] = (dim,)
        for i in range(depth):
            b = f"blocks.{i}"
            if family == "gmlp":
                hidden = _even(int((mlp_ratio or 6) * dim), "gMLP hidden width")
                m = f"{b}.mlp_channels"
                shapes[f"{b}.norm.weight"] = shapes[f"{b}.norm.bias"] = (dim,)
                shapes[f"{m}.fc1.weight"], shapes[f"{m}.fc1.bias"] = (hidden, dim), (hidden,)
                shapes[f"{m}.gate.norm.weight"] = shapes[f"{m}.gate.norm.bias"] = (hidden // 2,)
                shapes[f"{m}.gate.proj.weight"] = (tokens, tokens)
                shapes[f"{m}.gate.proj.bias"] = (tokens,)
                shapes[f"{m}.fc2.weight"], shapes[f"{m}.fc2.bias"] = (dim, hidden // 2), (dim,)
            else:
                ratio_t, ratio_c = mlp_ratio or (1.0, 4.0)
                h_t = _even(int(ratio_t * dim), "gMixer token hidden width")
                h_c = _even(int(ratio_c * dim), "gMixer channel hidden width")
                shapes[f"{b}.norm1.weight"] = shapes[f"{b}.norm1.bias"] = (dim,)
                t = f"{b}.mlp_tokens"
                shapes[f"{t}.fc1.weight"], shapes[f"{t}.fc1.bias"] = (h_t, tokens), (h_t,)
                shapes[f"{t}.fc2.weight"], shapes[f"{t}.fc2.bias"] = (tokens, h_t // 2), (tokens,)
                shapes[f"{b}.norm2.weight"] = shapes[f"{b}.norm2.bias"] = (dim,)
                c = f"{b}.mlp_channels"
                shapes[f"{c}.fc1.weight"], shapes[f"{c}.fc1.bias"] = (h_c, dim), (h_c,)
                shapes[f"{c}.fc2.weight"], shapes[f"{c}.fc2.bias"] = (dim, h_c // 2), (dim,)
        shapes["norm.weight"] = shapes["norm.bias"] = (dim,)
    elif family == "convmixer":
        k = kernel_size or 9

        def bn(prefix):
            for name in ("weight", "bias", "running_mean", "running_var"):
                shapes[f"{prefix}.{name}"] = (dim,)
            shapes[f"{prefix}.num_batches_tracked"] = ()

        shapes["stem.0.weight"] = (dim, in_chans, patch_size, patch_size)
        shapes["stem.0.bias"] = (dim,)
        bn("stem.2")
        for i in range(depth):
            b = f"blocks.{i}"
            shapes[f"{b}.0.fn.0.weight"], shapes[f"{b}.0.fn.0.bias"] = (dim, 1, k, k), (dim,)
            bn(f"{b}.0.fn.2")
            shapes[f"{b}.1.weight"], shapes[f"{b}.1.bias"] = (dim, dim, 1, 1), (dim,)
            bn(f"{b}.3")
    else:
        raise ValueError(f"unknown family {family!r}")
    if num_classes:
        shapes["head.weight"], shapes["head.bias"] = (num_classes, dim), (num_classes,)
    return shapes


def is_buffer(key):
    """BatchNorm running statistics and counter: state, not parameters."""
    return key.rsplit(".", 1)[-1] in BATCH_NORM_BUFFERS


def num_params(shapes):
    """Trainable parameter count of a {key: shape} layout (buffers excluded)."""
    return sum(int(np.prod(s, dtype=np.int64)) for k, s in shapes.items() if not is_buffer(k))


def random_state(family, seed=0, *, gate_input_scale=0.02, stream_scale=0.01,
                 dtype=np.float32, **config):
    """A state dict with random values for every entry of `state_shapes`.

    Every weight is random and non-trivial: linear / conv weights
    N(0, 1/fan_in), biases N(0, 0.1), LayerNorm / BatchNorm weights 1 +
    N(0, 0.2), the head non-zero, gMLP's gate projection dense and
    asymmetric with bias 1 + N(0, 0.1) (timm's init, W ~ 1e-6, would hide a
    transposed gate).

    Three choices make epsilon bugs visible, not just possible (with plain
    O(1) activations an epsilon of 1e-5 instead of 1e-6 moves the logits by
    only ~5e-6, below a 1e-5 test tolerance):
    - gMLP / gMixer: the stem (weight and bias) and every layer that writes
      into the residual stream (gMLP mlp_channels.fc2; gMixer mlp_tokens.fc2
      and mlp_channels.fc2) are scaled by `stream_scale`, so the residual
      stream, hence the input of every block LayerNorm and of the final one,
      has a variance of order stream_scale^2 = 1e-4.
    - gMLP: the gate half of fc1 (rows H..2H, weight and bias) is scaled by
      `gate_input_scale`, so the gate LayerNorm sees a variance of order
      (scale / 2)^2 = 1e-4: its epsilon 1e-5 (vs 1e-6) then changes the
      normalised gate by several per cent.
    - BatchNorm: running_var is log-uniform in [1e-4, 1], and the BN weight
      is (1 + N(0, 0.2)) * sqrt(running_var), which keeps activations O(1)
      through depth while channels with a small variance make epsilon 1e-5
      (vs 1e-6 or Keras's default 1e-3) change the output by per cents.
      running_mean is N(0, 0.3); num_batches_tracked is an int64 scalar.
    """
    rng = np.random.default_rng(seed)
    shapes = state_shapes(family, **config)
    sd = {}
    for key, shape in shapes.items():
        name = key.rsplit(".", 1)[-1]
        if name == "num_batches_tracked":
            sd[key] = np.asarray(int(rng.integers(1, 10**6)), dtype=np.int64)
            continue
        if name == "running_var":
            value = np.exp(rng.uniform(np.log(1e-4), 0.0, shape))
        elif name == "running_mean":
            value = 0.3 * rng.standard_normal(shape)
        elif len(shape) >= 2:  # Linear (out, in) or Conv2d (out, in/groups, kh, kw)
            fan_in = int(np.prod(shape[1:]))
            value = rng.standard_normal(shape) / math.sqrt(fan_in)
        elif _is_norm_weight(key, shapes):
            value = 1.0 + 0.2 * rng.standard_normal(shape)
        else:  # a bias
            value = 0.1 * rng.standard_normal(shape)
        sd[key] = value
    for key in shapes:
        if key.endswith(".gate.proj.bias"):
            sd[key] = 1.0 + 0.1 * rng.standard_normal(shapes[key])
        if family == "gmlp" and key.endswith("mlp_channels.fc1.weight"):
            half = shapes[key][0] // 2
            bias_key = key[: -len("weight")] + "bias"
            sd[key][half:] *= gate_input_scale
            sd[bias_key][half:] *= gate_input_scale
        if family in ("gmlp", "gmixer") and _writes_stream(key):
            sd[key] = sd[key] * stream_scale
        if key.endswith(".running_var"):
            prefix = key[: -len("running_var")]
            sd[prefix + "weight"] = sd[prefix + "weight"] * np.sqrt(sd[key])
    return {k: (v if v.dtype == np.int64 else v.astype(dtype)) for k, v in sd.items()}


def _writes_stream(key):
    """Stem and residual-branch output layers of gMLP / gMixer."""
    return re.fullmatch(r"stem\.proj\.(weight|bias)|blocks\.\d+\.mlp_(channels|tokens)\.fc2\.(weight|bias)",
                        key) is not None


def _is_norm_weight(key, shapes):
    """LayerNorm / BatchNorm weight: 1-D `*.weight` (Linear/Conv weights are
    >= 2-D)."""
    return key.endswith(".weight") and len(shapes[key]) == 1


def random_images(seed, batch=2, image_size=32, in_chans=3, data_format="channels_first"):
    """Normalised-looking random images N(0, 1), float32."""
    rng = np.random.default_rng(seed)
    shape = (batch, in_chans, image_size, image_size)
    x = rng.standard_normal(shape).astype(np.float32)
    return x if data_format == "channels_first" else x.transpose(0, 2, 3, 1)


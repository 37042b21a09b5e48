"""Pictures of what the all-MLP models learn (matplotlib).

- `token_mixing_units`: the hidden units of a token-mixing MLP (MLP-Mixer,
  gMixer), each shown as its weights over the patch grid, paired with its
  opposite-phase partner and sorted from low to high spatial frequency
  (MLP-Mixer paper, Figure 5).
- `stem_units`: the stem's linear projection units as RGB patches (Figure 7);
  for ConvMixer, CycleMLP and Vision Permutator, their convolution stem's
  filters.
- `cross_patch_weights`: the incoming weights of every output patch of a
  linear map across patches, laid out on the patch grid: ResMLP's cross-patch
  layer (ResMLP paper, section 4) or gMLP's spatial gating projection (gMLP
  paper, Figure 3).
- `weight_sparsity`: the fraction of near-zero weights of each linear layer
  of MLP-Mixer and ResMLP, block by block; `sparsity` gives the numbers.

`DEFAULT_FIGURE` names the figure that suits each family (`keras-mixer
visualize --figure auto`).

Each figure function returns a `matplotlib.figure.Figure` (displayed inline
in a notebook) and, given `output`, saves it as a PNG. Tiles are built into one
mosaic image, so even Mixer-H/14's 640 units draw in a fraction of a second.

>>> model = keras_mixer.MLPMixer(
...     patch_size=4, hidden_dim=16, num_blocks=2, tokens_mlp_dim=8,
...     channels_mlp_dim=32, input_shape=(32, 32, 3), classes=10)
>>> figure = keras_mixer.visualize.token_mixing_units(model, block=1)
>>> len(figure.axes)
1
"""

import numpy as np

from keras_mixer import atomic
from keras_mixer import checks
from keras_mixer.layers import PatchEmbedding
from keras_mixer.models import _builder
from keras_mixer.models._pyramid import ConvEmbedding
from keras_mixer.models.convmixer import ConvMixerStem
from keras_mixer.models.gmlp import GMLPBlock
from keras_mixer.models.mixer import MixerBlock
from keras_mixer.models.resmlp import ResMLPBlock

# Fraction of the layer's largest |weight| below which a weight counts as zero.
SPARSITY_THRESHOLD = 0.05


def _figure(width, height):
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise ImportError(
            "keras_mixer.visualize needs matplotlib: pip install matplotlib "
            '(or pip install "keras-mixer[notebooks]").'
        ) from None
    return Figure(figsize=(width, height), layout="constrained")


def _finish(figure, output):
    if output is not None:
        with atomic.writing(output) as tmp:
            figure.savefig(tmp, dpi=figure.dpi, format="png")
    return figure


def _show_mosaic(figure, image, title, output, **imshow):
    """Draws one mosaic image without axes under `title`; saves, returns."""
    axis = figure.add_subplot()
    axis.imshow(image, interpolation="nearest", **imshow)
    axis.set_axis_off()
    axis.set_title(title, fontsize=9)
    return _finish(figure, output)


def _blocks(model, kinds, figure):
    """The model's blocks of `kinds`; a ValueError that says which figures
    suit the model when it has none."""
    blocks = [layer for layer in model.layers if isinstance(layer, kinds)]
    if not blocks:
        suited = ", ".join(
            name for name, families in FIGURE_FAMILIES.items()
            if _family(model) in families
        )
        raise ValueError(
            f"{model.name} has no {' or '.join(k.__name__ for k in kinds)}: "
            f"the {figure} figure is for {', '.join(FIGURE_FAMILIES[figure])} "
            f"models. For this model: {suited or 'none'}."
        )
    return blocks


def _family(model):
    return next((layer.family for layer in model.layers
                 if getattr(layer, "family", None)), None)


def _block(model, kinds, block, figure):
    blocks = _blocks(model, kinds, figure)
    if not isinstance(block, int) or not -len(blocks) <= block < len(blocks):
        raise ValueError(
            f"block must be an integer in [0, {len(blocks) - 1}] for "
            f"{model.name} ({len(blocks)} blocks), got {block!r}."
        )
    return blocks[block]


def mosaic(tiles, columns, gap=1, group=1, group_gap=None):
    """Lays tiles `(n, h, w[, c])` out in rows of `columns`, NaN between them.

    Tiles sit `gap` apart. With `group > 1`, every `group` consecutive tiles
    of a row form a group and groups and rows are `group_gap` apart (default
    `3 * gap`), which shows the pairs of `token_mixing_units`.
    """
    tiles = np.asarray(tiles, dtype=np.float64)
    n, h, w = tiles.shape[:3]
    if group == 1:
        group_gap = gap
    elif group_gap is None:
        group_gap = 3 * gap
    rows = -(-n // columns)
    offsets = []
    x = 0
    for col in range(columns):
        offsets.append(x)
        x += w + (group_gap if (col + 1) % group == 0 else gap)
    width = offsets[-1] + w
    height = rows * h + (rows - 1) * group_gap
    canvas = np.full((height, width) + tiles.shape[3:], np.nan)
    for i, tile in enumerate(tiles):
        r, c = divmod(i, columns)
        y = r * (h + group_gap)
        canvas[y:y + h, offsets[c]:offsets[c] + w] = tile
    return canvas


def _symmetric(tiles):
    """Scales each tile to [-1, 1] by its largest |value| (0 stays at 0)."""
    tiles = np.asarray(tiles, dtype=np.float64)
    scale = np.abs(tiles).reshape(len(tiles), -1).max(axis=1)
    scale = np.where(scale > 0, scale, 1.0)
    return tiles / scale.reshape((-1,) + (1,) * (tiles.ndim - 1))


def spatial_frequency(tiles):
    """Mean radial spatial frequency (cycles per patch) of each 2-D tile.

    The power-weighted mean of `sqrt(fy^2 + fx^2)` over the tile's 2-D FFT,
    after removing the tile's mean; a constant tile has frequency 0.
    """
    tiles = np.asarray(tiles, dtype=np.float64)
    _, h, w = tiles.shape
    centred = tiles - tiles.mean(axis=(1, 2), keepdims=True)
    power = np.abs(np.fft.fft2(centred)) ** 2
    radius = np.hypot(*np.meshgrid(np.fft.fftfreq(h), np.fft.fftfreq(w),
                                   indexing="ij"))
    total = power.sum(axis=(1, 2))
    weighted = (power * radius).sum(axis=(1, 2))
    return np.where(total > 0, weighted / np.where(total > 0, total, 1), 0.0)


def opposite_phase_pairs(vectors):
    """Pairs rows of `vectors` greedily by most negative cosine similarity.

    Returns a list of `(i, j)` pairs, most anti-correlated first; with an odd
    count the last unit is returned alone as `(i,)`.
    """
    v = np.asarray(vectors, dtype=np.float64)
    v = v - v.mean(axis=1, keepdims=True)
    norms = np.linalg.norm(v, axis=1, keepdims=True)
    v = v / np.where(norms > 0, norms, 1.0)
    similarity = v @ v.T
    rows, cols = np.triu_indices(len(v), k=1)
    order = np.argsort(similarity[rows, cols], kind="stable")
    free = np.ones(len(v), dtype=bool)
    pairs = []
    for index in order:
        i, j = rows[index], cols[index]
        if free[i] and free[j]:
            pairs.append((int(i), int(j)))
            free[i] = free[j] = False
    pairs.extend((int(i),) for i in np.flatnonzero(free))
    return pairs


def token_mixing_units(model, block=0, num_units=None, columns=None,
                       output=None):
    """Figure 5 of the MLP-Mixer paper for one block of `model`.

    Each hidden unit of the block's token-mixing MLP (a column of
    `token_mixing/fc1`'s kernel, one weight per patch) is drawn on the patch
    grid. Units are paired with their most anti-correlated partner
    (`opposite_phase_pairs`) and the pairs sorted by their mean
    `spatial_frequency`, low to high. Colours: red positive, blue negative,
    each unit scaled by its own largest weight.

    Args:
        model: a keras_mixer MLP-Mixer.
        block: index of the Mixer block.
        num_units: draw the first `num_units` units of the sorted pairs
            (default: all `tokens_mlp_dim` units).
        columns: units per row (even; default about twice as wide as tall).
        output: PNG path to save to, or None.

    Returns:
        A `matplotlib.figure.Figure`; `figure.pairs` holds the drawn unit
        indices pair by pair.
    """
    layer = _block(model, (MixerBlock,), block, "token_mixing")
    kernel = np.asarray(layer.token_mixing.fc1.kernel)  # (tokens, units)
    grid = _builder.patch_grid(model)
    units = kernel.T.reshape((-1,) + grid)
    pairs = opposite_phase_pairs(kernel.T)
    frequency = spatial_frequency(units)
    pairs.sort(key=lambda pair: float(np.mean(frequency[list(pair)])))
    order = [i for pair in pairs for i in pair]
    if num_units is not None:
        checks.check_int("num_units", num_units)
        order = order[:num_units]
    if columns is None:
        columns = max(2, 2 * int(np.ceil(np.sqrt(len(order) / 2) * 1.0)))
    columns += columns % 2
    image = mosaic(_symmetric(units[order]), columns, group=2)
    rows = -(-len(order) // columns)
    figure = _figure(min(16, 1.0 + 0.45 * columns), min(16, 1.2 + 0.45 * rows))
    figure.pairs = [pair for pair in pairs if set(pair) <= set(order)]
    title = (
        f"{model.name} block {block}: {len(order)} token-mixing units on the "
        f"{grid[0]}x{grid[1]} patch grid\nopposite-phase pairs, low to high "
        "frequency"
    )
    return _show_mosaic(figure, image, title, output, cmap=_cmap("RdBu_r"),
                        vmin=-1, vmax=1)


def _cmap(name):
    import matplotlib

    return matplotlib.colormaps[name].with_extremes(bad="white")


def stem_units(model, num_units=128, columns=16, output=None):
    """Figure 7 of the MLP-Mixer paper: the stem's linear projection units.

    Each unit (an output channel of the stem's patch x patch convolution) is
    drawn as an RGB patch (grey for one-channel inputs), min-max scaled on its
    own. The first `num_units` units are shown.
    """
    stem = model.get_layer("stem")
    if not isinstance(stem, (PatchEmbedding, ConvEmbedding, ConvMixerStem)):
        raise ValueError(
            f"{model.name}'s `stem` is not a PatchEmbedding, ConvEmbedding or "
            "ConvMixerStem."
        )
    kernel = np.asarray(stem.proj.kernel)  # (p, p, channels, hidden)
    tiles = np.moveaxis(kernel, -1, 0)[:num_units]
    low = tiles.min(axis=(1, 2, 3), keepdims=True)
    span = tiles.max(axis=(1, 2, 3), keepdims=True) - low
    tiles = (tiles - low) / np.where(span > 0, span, 1.0)
    channels = tiles.shape[-1]
    if channels == 1:
        tiles = tiles[..., 0]
    elif channels != 3:
        tiles = tiles.mean(axis=-1)
    columns = min(columns, len(tiles))
    image = mosaic(tiles, columns)
    if image.ndim == 3:  # white gaps for RGB
        image = np.where(np.isnan(image), 1.0, image)
    rows = -(-len(tiles) // columns)
    figure = _figure(min(16, 1.0 + 0.5 * columns), min(16, 1.2 + 0.5 * rows))
    stride = getattr(stem, "strides", kernel.shape[0])
    what = "patches" if stride == kernel.shape[0] else f"filters, stride {stride}"
    title = (
        f"{model.name} stem: {len(tiles)} of {kernel.shape[-1]} linear\n"
        f"projection units ({kernel.shape[0]}x{kernel.shape[1]} {what})"
    )
    return _show_mosaic(figure, image, title, output, cmap=_cmap("gray"))


def cross_patch_weights(model, block=0, output=None):
    """The connectivity across patches of one ResMLP or gMLP block.

    Output patch `j` gets `sum_i kernel[i, j] * x_i`: column `j` of the
    block's linear map across patches (ResMLP's `cross_patch`, gMLP's
    `spatial_gating/proj`), drawn on the patch grid and placed at `j`'s own
    grid position, so the figure is a grid of grids. Local, shift-like
    patterns show as a bright spot that moves with the tile.
    """
    layer = _block(model, (ResMLPBlock, GMLPBlock), block, "cross_patch")
    if isinstance(layer, ResMLPBlock):
        kernel, what = layer.cross_patch.kernel, "cross-patch"
    else:
        kernel, what = layer.spatial_gating.proj.kernel, "spatial gating"
    kernel = np.asarray(kernel)  # (tokens in, tokens out)
    grid = _builder.patch_grid(model)
    tiles = _symmetric(kernel.T.reshape((-1,) + grid))
    image = mosaic(tiles, grid[1])
    figure = _figure(9, 9 * grid[0] / grid[1] + 0.4)
    title = (
        f"{model.name} block {block}: incoming {what} weights of each of "
        f"the {grid[0]}x{grid[1]} patches, at its own position"
    )
    return _show_mosaic(figure, image, title, output, cmap=_cmap("RdBu_r"),
                        vmin=-1, vmax=1)


def _linear_layers(block):
    if isinstance(block, MixerBlock):
        return {
            "token_mixing/fc1": block.token_mixing.fc1.kernel,
            "token_mixing/fc2": block.token_mixing.fc2.kernel,
            "channel_mixing/fc1": block.channel_mixing.fc1.kernel,
            "channel_mixing/fc2": block.channel_mixing.fc2.kernel,
        }
    return {
        "cross_patch": block.cross_patch.kernel,
        "channel_mixing/fc1": block.channel_mixing.fc1.kernel,
        "channel_mixing/fc2": block.channel_mixing.fc2.kernel,
    }


def sparsity(model, threshold=SPARSITY_THRESHOLD):
    """Fraction of weights with `|w| < threshold * max|w|`, layer by layer.

    Returns:
        `{layer name: array of one fraction per block}` for every linear
        layer of the blocks (`token_mixing/fc1` ... for Mixer,
        `cross_patch`, `channel_mixing/fc1`, `channel_mixing/fc2` for ResMLP).
    """
    if not 0 < threshold < 1:
        raise ValueError(f"threshold must be in (0, 1), got {threshold!r}.")
    blocks = _blocks(model, (MixerBlock, ResMLPBlock), "sparsity")
    result = {}
    for block in blocks:
        for name, kernel in _linear_layers(block).items():
            w = np.abs(np.asarray(kernel))
            peak = w.max()
            fraction = float((w < threshold * peak).mean()) if peak > 0 else 1.0
            result.setdefault(name, []).append(fraction)
    return {name: np.array(values) for name, values in result.items()}


def weight_sparsity(model, threshold=SPARSITY_THRESHOLD, output=None):
    """Plots `sparsity(model, threshold)` against the block index."""
    values = sparsity(model, threshold)
    figure = _figure(6.5, 3.8)
    axis = figure.add_subplot()
    for name, fractions in values.items():
        axis.plot(np.arange(len(fractions)), 100 * fractions, marker="o",
                  label=name)
    axis.set_xlabel("block")
    axis.set_xticks(np.arange(len(next(iter(values.values())))))
    axis.set_ylabel(f"weights below {threshold:.0%} of the layer max (%)")
    axis.set_ylim(0, 100)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    axis.set_title(f"{model.name}: sparsity of the linear layers", fontsize=9)
    return _finish(figure, output)


FIGURES = {
    "token_mixing": token_mixing_units,
    "stem": stem_units,
    "cross_patch": cross_patch_weights,
    "sparsity": weight_sparsity,
}

# The families (a block's `family`) each figure draws; gMixer is a "mixer".
FIGURE_FAMILIES = {
    "token_mixing": ("mixer",),
    "stem": ("mixer", "resmlp", "gmlp", "convmixer", "cyclemlp", "vip"),
    "cross_patch": ("resmlp", "gmlp"),
    "sparsity": ("mixer", "resmlp"),
}

# The figure `keras-mixer visualize --figure auto` draws for each family.
DEFAULT_FIGURE = {
    "mixer": "token_mixing",
    "resmlp": "cross_patch",
    "gmlp": "cross_patch",
    "convmixer": "stem",
    "cyclemlp": "stem",
    "vip": "stem",
}

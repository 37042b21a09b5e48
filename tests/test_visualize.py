"""keras_mixer.visualize: the figures show the weights they claim to show."""

import os
import subprocess
import sys

import numpy as np
import pytest

import keras_mixer
from keras_mixer import visualize

pytest.importorskip("matplotlib")

GRID = 4  # 16x16 images, 4x4 patches


def _mixer(tokens_mlp_dim=8, **kwargs):
    return keras_mixer.MLPMixer(
        patch_size=4, hidden_dim=12, num_blocks=2, tokens_mlp_dim=tokens_mlp_dim,
        channels_mlp_dim=24, input_shape=(4 * GRID, 4 * GRID, 3), classes=5,
        **kwargs,
    )


def _resmlp():
    return keras_mixer.ResMLP(
        patch_size=4, hidden_dim=12, num_blocks=2,
        input_shape=(4 * GRID, 4 * GRID, 3), classes=5,
    )


def _grating(k, axis=1, phase=0.0):
    """cos(2 pi k x / GRID + phase) on the GRID x GRID patch grid."""
    y, x = np.meshgrid(np.arange(GRID), np.arange(GRID), indexing="ij")
    coordinate = x if axis == 1 else y
    return np.cos(2 * np.pi * k * coordinate / GRID + phase)


def _image(figure):
    return np.asarray(figure.axes[0].images[0].get_array().filled(np.nan))


def _is_png(path):
    with open(path, "rb") as f:
        return f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_spatial_frequency_of_gratings_is_cycles_per_sample():
    tiles = np.stack([_grating(1), _grating(2, axis=0), np.ones((GRID, GRID))])
    np.testing.assert_allclose(
        visualize.spatial_frequency(tiles), [1 / GRID, 2 / GRID, 0.0], atol=1e-12
    )
    diagonal = np.outer(np.cos(np.pi * np.arange(GRID) / 2), np.ones(GRID))
    diagonal = diagonal * np.cos(np.pi * np.arange(GRID) / 2)
    assert visualize.spatial_frequency(diagonal[None])[0] == pytest.approx(
        np.hypot(1 / GRID, 1 / GRID)
    )


def test_opposite_phase_pairs_finds_each_negated_partner():
    rng = np.random.default_rng(0)
    base = rng.normal(size=(4, 20))
    vectors = np.concatenate([base, -base, rng.normal(size=(1, 20))])
    pairs = visualize.opposite_phase_pairs(vectors)
    assert sorted(tuple(sorted(p)) for p in pairs[:4]) == [
        (0, 4), (1, 5), (2, 6), (3, 7)
    ]
    assert pairs[4] == (8,)


def test_token_mixing_units_pairs_opposite_phases_low_to_high_frequency(tmp_path):
    model = _mixer(tokens_mlp_dim=6)
    fc1 = model.get_layer("block_1").token_mixing.fc1
    # Units: frequencies 2, 1, 0.5-ish (k=1 on the other axis at a phase) in
    # shuffled order, each with its negation somewhere else.
    units = {0: _grating(2), 3: -_grating(2), 1: _grating(1, phase=0.3),
             5: -_grating(1, phase=0.3), 4: _grating(1, axis=0, phase=1.0),
             2: -_grating(1, axis=0, phase=1.0)}
    kernel = np.stack([units[i].ravel() for i in range(6)], axis=1)
    fc1.kernel.assign(kernel.astype("float32"))
    out = tmp_path / "units.png"
    figure = visualize.token_mixing_units(model, block=1, output=str(out))
    assert _is_png(out) and out.stat().st_size > 1000
    pairs = [tuple(sorted(p)) for p in figure.pairs]
    assert sorted(pairs[:2]) == [(1, 5), (2, 4)]  # both frequency 1/GRID
    assert pairs[2] == (0, 3)  # frequency 2/GRID last
    # The mosaic draws the units in that order, each scaled to max |w| = 1.
    image = _image(figure)
    order = [i for p in figure.pairs for i in p]
    first = image[:GRID, :GRID]
    expected = kernel[:, order[0]].reshape(GRID, GRID)
    np.testing.assert_allclose(first, expected / np.abs(expected).max(),
                               atol=1e-6)
    assert np.isnan(image[:, GRID]).all()  # a gap after every tile


def test_token_mixing_units_num_units_and_errors():
    model = _mixer()
    figure = visualize.token_mixing_units(model, num_units=4, columns=4)
    assert np.count_nonzero(~np.isnan(_image(figure))) == 4 * GRID * GRID
    with pytest.raises(ValueError, match=r"block must be an integer in \[0, 1\]"):
        visualize.token_mixing_units(model, block=2)
    with pytest.raises(ValueError, match="no ResMLPBlock or GMLPBlock: the "
                       "cross_patch figure is for resmlp, gmlp models. For "
                       "this model: token_mixing, stem, sparsity"):
        visualize.cross_patch_weights(model)
    with pytest.raises(ValueError, match="no MixerBlock.*For this model: "
                       "stem, cross_patch, sparsity"):
        visualize.token_mixing_units(_resmlp())


def test_every_family_has_a_default_figure_it_can_draw():
    """`--figure auto` of every family names a figure that accepts it."""
    from keras_mixer.models import convmixer, cyclemlp, gmlp, mixer, resmlp, vip

    blocks = (mixer.MixerBlock, resmlp.ResMLPBlock, gmlp.GMLPBlock,
              convmixer.ConvMixerBlock, cyclemlp.CycleBlock, vip.PermutatorBlock)
    assert set(visualize.DEFAULT_FIGURE) == {block.family for block in blocks}
    for family, figure in visualize.DEFAULT_FIGURE.items():
        assert family in visualize.FIGURE_FAMILIES[figure]
    assert set(visualize.FIGURE_FAMILIES) == set(visualize.FIGURES)


def test_stem_units_draws_each_filter_scaled_to_unit_range(tmp_path):
    model = _mixer()
    out = tmp_path / "stem.png"
    figure = visualize.stem_units(model, num_units=5, columns=5, output=str(out))
    assert _is_png(out)
    image = _image(figure)
    assert image.shape == (4, 5 * 4 + 4, 3)  # five 4x4 RGB tiles, 1-px gaps
    kernel = np.asarray(model.get_layer("stem").proj.kernel)[..., 2]
    tile = image[:, 10:14]
    expected = (kernel - kernel.min()) / (kernel.max() - kernel.min())
    np.testing.assert_allclose(tile, expected, atol=1e-6)


def test_a_failed_figure_write_leaves_the_previous_file(tmp_path,
                                                        monkeypatch):
    from matplotlib.figure import Figure

    out = tmp_path / "stem.png"
    out.write_bytes(b"previous figure")

    def broken(self, path, **kwargs):
        with open(path, "wb") as f:
            f.write(b"\x89PNG half")
        raise OSError("disk full")

    monkeypatch.setattr(Figure, "savefig", broken)
    with pytest.raises(OSError, match="disk full"):
        visualize.stem_units(_mixer(), num_units=5, columns=5,
                             output=str(out))
    assert out.read_bytes() == b"previous figure"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["stem.png"]


def test_cross_patch_weights_shows_a_shift_at_each_position(tmp_path):
    model = _resmlp()
    layer = model.get_layer("block_0").cross_patch
    tokens = GRID * GRID
    # Output patch j reads patch j - 1 (its left neighbour, wrapping).
    kernel = np.zeros((tokens, tokens), "float32")
    kernel[(np.arange(tokens) - 1) % tokens, np.arange(tokens)] = 2.0
    layer.kernel.assign(kernel)
    out = tmp_path / "cross.png"
    image = _image(visualize.cross_patch_weights(model, output=str(out)))
    assert _is_png(out)
    step = GRID + 1  # tile plus one-pixel gap
    for j in range(tokens):
        row, col = divmod(j, GRID)
        tile = image[row * step:row * step + GRID,
                     col * step:col * step + GRID]
        spot = np.unravel_index(np.argmax(tile), tile.shape)
        assert np.ravel_multi_index(spot, (GRID, GRID)) == (j - 1) % tokens
        assert tile.max() == 1.0 and np.count_nonzero(tile) == 1


def test_gmlp_spatial_gating_and_convmixer_stem_figures():
    """gMLP's spatial gating projection is drawn like ResMLP's cross-patch
    layer (column j at patch j); ConvMixer's stem filters as patches."""
    gmlp = keras_mixer.GMLP(patch_size=4, hidden_dim=12, num_blocks=2,
                            input_shape=(4 * GRID, 4 * GRID, 3), classes=5)
    proj = gmlp.get_layer("block_1").spatial_gating.proj
    tokens = GRID * GRID
    kernel = np.zeros((tokens, tokens), "float32")
    kernel[(np.arange(tokens) + GRID) % tokens, np.arange(tokens)] = -3.0
    proj.kernel.assign(kernel)  # output patch j reads the patch below it
    figure = visualize.cross_patch_weights(gmlp, block=1)
    assert "spatial gating" in figure.axes[0].get_title()
    image = _image(figure)
    step = GRID + 1
    for j in range(tokens):
        row, col = divmod(j, GRID)
        tile = image[row * step:row * step + GRID, col * step:col * step + GRID]
        spot = np.unravel_index(np.argmin(tile), tile.shape)
        assert np.ravel_multi_index(spot, (GRID, GRID)) == (j + GRID) % tokens
    convmixer = keras_mixer.ConvMixer(hidden_dim=6, num_blocks=1, kernel_size=3,
                                      patch_size=4, input_shape=(16, 16, 3),
                                      classes=5)
    image = _image(visualize.stem_units(convmixer, columns=6))
    assert image.shape == (4, 6 * 4 + 5, 3)
    kernel = np.asarray(convmixer.get_layer("stem").proj.kernel)[..., 0]
    np.testing.assert_allclose(
        image[:, :4], (kernel - kernel.min()) / (kernel.max() - kernel.min()),
        atol=1e-6)
    with pytest.raises(ValueError, match="For this model: stem"):
        visualize.weight_sparsity(convmixer)


def test_sparsity_counts_weights_below_the_threshold(tmp_path):
    model = _resmlp()
    layer = model.get_layer("block_1").cross_patch
    tokens = GRID * GRID
    values = np.full((tokens, tokens), 0.5, "float32")
    values.flat[:64] = 0.01  # below 5% of the max (1.0)
    values.flat[64] = 1.0
    layer.kernel.assign(values)
    result = visualize.sparsity(model)
    assert set(result) == {"cross_patch", "channel_mixing/fc1",
                           "channel_mixing/fc2"}
    assert result["cross_patch"][1] == pytest.approx(64 / tokens**2)
    fc1 = np.abs(np.asarray(model.get_layer("block_0").channel_mixing.fc1.kernel))
    assert result["channel_mixing/fc1"][0] == pytest.approx(
        np.mean(fc1 < 0.05 * fc1.max())
    )
    figure = visualize.weight_sparsity(model, output=str(tmp_path / "s.png"))
    assert len(figure.axes[0].lines) == 3
    assert set(visualize.sparsity(_mixer())) == {
        "token_mixing/fc1", "token_mixing/fc2",
        "channel_mixing/fc1", "channel_mixing/fc2",
    }
    with pytest.raises(ValueError, match=r"threshold must be in \(0, 1\)"):
        visualize.sparsity(model, threshold=5)


def test_cli_visualize_writes_the_png(tmp_path):
    path = tmp_path / "tiny.keras"
    _resmlp().save(path)
    out = tmp_path / "figs" / "cross.png"
    result = subprocess.run(
        [sys.executable, "-m", "keras_mixer", "visualize", f"--model={path}",
         f"--output={out}", "--block=1"],
        capture_output=True, text=True, timeout=300,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    assert result.returncode == 0, result.stderr
    assert f"wrote {out} (cross_patch" in result.stdout
    assert _is_png(out)

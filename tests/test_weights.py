"""The weights table, downloads, exact loading and the Appendix C resize."""

import functools
import hashlib
import http.server
import io
import logging
import os
import threading

import keras
import numpy as np
import pytest

import keras_mixer
from keras_mixer import checkpoints
from keras_mixer import presets
from keras_mixer.checkpoints import Checkpoint
from keras_mixer.checkpoints import assign
from keras_mixer.checkpoints import download
from keras_mixer.checkpoints import resize
from keras_mixer.models import _builder

RNG = np.random.default_rng(0)


def _randomise(model, seed=0):
    rng = np.random.default_rng(seed)
    for v in model.weights:
        fan_in = v.shape[0] if len(v.shape) == 2 else 1
        v.assign(rng.normal(size=v.shape) / np.sqrt(max(fan_in, 1)))


# --- The table ---------------------------------------------------------------

ISSUE_NAMES = {
    "MixerB16": {"imagenet1k", "imagenet21k", "sam", "gsam", "goog_in21k_ft_in1k", "miil_in21k_ft_in1k"},
    "MixerL16": {"imagenet1k", "imagenet21k", "goog_in21k_ft_in1k"},
    "MixerB32": {"sam", "gsam"},
    "MixerS8": {"gsam"},
    "MixerS16": {"gsam"},
    "MixerS32": {"gsam"},
    "ResMLP12": {"imagenet1k", "imagenet1k_distilled", "dino"},
    "ResMLP24": {"imagenet1k", "imagenet1k_distilled", "dino"},
    "ResMLP36": {"imagenet1k", "imagenet1k_distilled"},
    "ResMLPB24": {"imagenet1k", "imagenet1k_distilled", "imagenet22k_ft_in1k"},
    # timm publishes these five of issue 16's variants (the others untrained).
    "GMLPS16": {"ra3_in1k"},
    "GMixer24": {"ra3_in1k"},
    "ConvMixer1536_20": {"in1k"},
    "ConvMixer768_32": {"in1k"},
    "ConvMixer1024_20": {"in1k"},
    **{f"CycleMLPB{i}": {"imagenet1k"} for i in range(1, 6)},
    **{f"ViP{k}": {"imagenet1k"} for k in ("S7", "M7", "L7")},
}
FIELDS = {
    "url", "filename", "format", "source", "license", "classes", "resolution",
    "preprocessing", "approximate_gelu", "sha256", "description",
}
# Entries of the Hugging Face Hub also record these (timm's pretrained_cfg).
HUB_FIELDS = {"hf_hub_id", "mean", "std", "crop_pct", "interpolation"}
# The evaluation crop of the published accuracies, and a page to download a
# file by hand (CycleMLP and ViP entries).
OPTIONAL_FIELDS = {"crop_pct", "interpolation", "page"}


def test_table_has_every_published_name_with_all_fields():
    for model, names in ISSUE_NAMES.items():
        assert names <= set(presets.WEIGHTS[model]), model
    filenames = set()
    for model, entries in presets.WEIGHTS.items():
        assert model in keras_mixer.MODELS
        for name, entry in entries.items():
            assert FIELDS <= set(entry) <= FIELDS | HUB_FIELDS | OPTIONAL_FIELDS, (model, name)
            if "hf_hub_id" in entry or "mean" in entry:
                assert set(entry) & HUB_FIELDS in ({"hf_hub_id"}, HUB_FIELDS)
            assert entry["url"].startswith("https://")
            assert entry["format"] in ("flax_npz", "torch", "safetensors")
            assert entry["preprocessing"] in _builder.PREPROCESSING_MODES
            if "mean" in entry:  # the mode normalises as timm's cfg says
                mean, std = _builder.preprocessing_constants(entry["preprocessing"])
                np.testing.assert_allclose(np.broadcast_to(mean, 3), entry["mean"])
                np.testing.assert_allclose(np.broadcast_to(std, 3), entry["std"])
            assert entry["classes"] in keras_mixer.labels.LABEL_SETS
            # Google's file names repeat across collections: cache names don't.
            assert entry["filename"] not in filenames
            filenames.add(entry["filename"])
            google = entry["format"] == "flax_npz"
            assert entry["approximate_gelu"] is google
    assert presets.WEIGHTS["MixerB16"]["imagenet1k"]["url"] == (
        "https://storage.googleapis.com/mixer_models/imagenet1k/Mixer-B_16.npz"
    )
    assert presets.WEIGHTS["MixerB16"]["imagenet21k"]["classes"] == 21843


def test_timm_file_names_carry_a_verified_hash_prefix():
    entry = presets.WEIGHTS["MixerB16"]["goog_in21k_ft_in1k"]
    assert download.expected_hash(entry) == (None, "76587d61")
    assert download.expected_hash(presets.WEIGHTS["GMLPS16"]["ra3_in1k"]) == (None, "10536d42")
    assert download.expected_hash(presets.WEIGHTS["GMixer24"]["ra3_in1k"]) == (None, "7daf7ae6")
    assert download.expected_hash(presets.WEIGHTS["MixerB16"]["imagenet1k"]) == (None, None)


def test_list_weights_prints_the_table():
    out = io.StringIO()
    table = keras_mixer.list_weights("MixerB16", file=out)
    text = out.getvalue()
    assert set(table) == {"MixerB16"}
    for name in presets.WEIGHTS["MixerB16"]:
        assert f"  {name}: " in text
    assert "mixer_models/imagenet21k/Mixer-B_16.npz" in text
    with pytest.raises(ValueError, match="No pretrained weights are published for 'MixerH14'"):
        keras_mixer.list_weights("MixerH14", file=out)


# --- Downloads against a local HTTP server ----------------------------------


class _Server:
    """Serves a folder on 127.0.0.1 and counts the requests."""

    def __init__(self, folder):
        self.requests = []
        outer = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                outer.requests.append(self.path)
                super().do_GET()

        handler = functools.partial(Handler, directory=str(folder))
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def served(tmp_path, monkeypatch):
    """A fake table entry for MixerS32 served from 127.0.0.1; KERAS_HOME in
    tmp_path so nothing touches the user's cache."""
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
    monkeypatch.delenv("KERAS_MIXER_WEIGHTS_DIR", raising=False)
    folder = tmp_path / "www"
    folder.mkdir()
    payload = b"weights" * 1000
    (folder / "file.npz").write_bytes(payload)
    with _Server(folder) as server:
        entry = dict(
            presets.WEIGHTS["MixerS32"]["gsam"],
            url=f"{server.url}/file.npz",
            filename="test_file.npz",
            sha256=hashlib.sha256(payload).hexdigest(),
        )
        monkeypatch.setitem(presets.WEIGHTS["MixerS32"], "test", entry)
        server.folder = folder
        yield server, entry, payload


def test_download_then_cache_hit(served):
    server, entry, payload = served
    path = download.fetch("MixerS32", "test")
    assert path == os.path.join(download.cache_dir(), "test_file.npz")
    assert open(path, "rb").read() == payload
    assert server.requests == ["/file.npz"]
    assert download.fetch("MixerS32", "test") == path
    assert server.requests == ["/file.npz"]  # no second download


def test_checksum_mismatch_of_a_download_keeps_nothing(served, monkeypatch):
    server, entry, payload = served
    monkeypatch.setitem(entry, "sha256", "0" * 64)
    with pytest.raises(ValueError, match="Checksum mismatch for the download "
                       ".* discarded; nothing was kept"):
        download.fetch("MixerS32", "test")
    assert os.listdir(download.cache_dir()) == []  # no file, no temporary


def test_damaged_download_is_fetched_again(served, monkeypatch):
    """A file keras_mixer downloaded carries a record (its sha256): damaged
    in place later, it is removed and fetched again, even where the table
    has no hash (Google's .npz files)."""
    server, entry, payload = served
    monkeypatch.setitem(entry, "sha256", None)
    path = download.fetch("MixerS32", "test")
    stat = os.stat(path)
    with open(path, "r+b") as f:  # bit rot: same inode, same mtime
        f.write(b"X")
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert download.fetch("MixerS32", "test") == path
    assert open(path, "rb").read() == payload
    assert server.requests == ["/file.npz", "/file.npz"]


def test_users_file_with_a_bad_checksum_is_reported_never_removed(
        served, tmp_path, monkeypatch):
    server, entry, payload = served
    local = tmp_path / "local"
    local.mkdir()
    own = tmp_path / "elsewhere.npz"
    own.write_bytes(b"the user's own bytes")
    monkeypatch.setenv("KERAS_MIXER_WEIGHTS_DIR", str(local))
    for kind in ("file", "symlink"):
        target = local / "test_file.npz"
        if kind == "file":
            target.write_bytes(b"the user's own bytes")
        else:
            target.unlink()
            target.symlink_to(own)
        with pytest.raises(ValueError, match="Checksum mismatch .* left in "
                           "place"):
            download.fetch("MixerS32", "test")
        assert target.read_bytes() == b"the user's own bytes"
        assert target.is_symlink() == (kind == "symlink")
    # In the cache too: a file copied over a download is the user's.
    monkeypatch.delenv("KERAS_MIXER_WEIGHTS_DIR")
    path = download.fetch("MixerS32", "test")
    with open(path, "wb") as f:
        f.write(b"copied over it")
    with pytest.raises(ValueError, match="left in place"):
        download.fetch("MixerS32", "test")
    assert open(path, "rb").read() == b"copied over it"
    assert server.requests == ["/file.npz"]


def test_hash_prefix_in_file_name_is_verified(served, monkeypatch):
    server, entry, payload = served
    good = hashlib.sha256(payload).hexdigest()[:8]
    monkeypatch.setitem(entry, "sha256", None)
    monkeypatch.setitem(entry, "url", f"{server.url}/file-{good}.npz")
    (server.folder / f"file-{good}.npz").write_bytes(payload)
    os.remove(download.fetch("MixerS32", "test"))  # verified, then removed here
    (server.folder / f"file-{good}.npz").write_bytes(payload + b"tampered")
    with pytest.raises(ValueError, match=f"expected sha256 {good}"):
        download.fetch("MixerS32", "test")
    assert not os.path.exists(os.path.join(download.cache_dir(), "test_file.npz"))


def test_offline_error_names_the_url_and_where_to_put_the_file(served, monkeypatch):
    server, entry, payload = served
    monkeypatch.setitem(entry, "url", f"{server.url}/missing.npz")
    with pytest.raises(ValueError) as info:
        download.fetch("MixerS32", "test")
    message = str(info.value)
    assert f"{server.url}/missing.npz" in message
    assert os.path.join(download.cache_dir(), "test_file.npz") in message
    assert "KERAS_MIXER_WEIGHTS_DIR" in message


def test_weights_dir_skips_the_network(served, tmp_path, monkeypatch):
    server, entry, payload = served
    local = tmp_path / "local"
    local.mkdir()
    (local / "test_file.npz").write_bytes(payload)
    monkeypatch.setenv("KERAS_MIXER_WEIGHTS_DIR", str(local))
    assert download.fetch("MixerS32", "test") == str(local / "test_file.npz")
    assert server.requests == []


def test_pyramid_entries_and_their_files(served, monkeypatch):
    """The CycleMLP and ViP entries: the official sources, the crop of the
    published accuracies, the licenses; a served file in the official
    layout is read as its family."""
    torch = pytest.importorskip("torch")
    server, _, _ = served
    cycle = presets.WEIGHTS["CycleMLPB2"]["imagenet1k"]
    assert cycle["url"] == ("https://github.com/ShoufaChen/CycleMLP/releases/"
                            "download/v0.1/CycleMLP_B2.pth")
    assert (cycle["crop_pct"], cycle["interpolation"], cycle["license"]) == (
        0.875, "bicubic", "MIT")
    vip = presets.WEIGHTS["ViPL7"]["imagenet1k"]
    assert vip["page"] == (
        "https://drive.google.com/file/d/14F5IXGXmB_3jrwK33Efae-WEb5D_G85c/view")
    assert "non-commercial" in vip["license"] and vip["crop_pct"] == 0.875
    assert presets.WEIGHTS["ViPS7"]["imagenet1k"]["crop_pct"] == 0.9
    state = {  # a one-stage CycleMLP in the official layout
        "patch_embed.proj.weight": torch.zeros(4, 3, 7, 7),
        "patch_embed.proj.bias": torch.zeros(4),
        "norm.weight": torch.ones(4), "norm.bias": torch.zeros(4),
    }
    prefix = "network.0.0."
    for key, shape in (("norm1.weight", (4,)), ("norm1.bias", (4,)),
                       ("attn.mlp_c.weight", (4, 4)),
                       ("attn.reweight.fc1.weight", (1, 4)),
                       ("attn.reweight.fc1.bias", (1,)),
                       ("attn.reweight.fc2.weight", (12, 1)),
                       ("attn.reweight.fc2.bias", (12,)),
                       ("attn.proj.weight", (4, 4)), ("attn.proj.bias", (4,)),
                       ("norm2.weight", (4,)), ("norm2.bias", (4,)),
                       ("mlp.fc1.weight", (8, 4)), ("mlp.fc1.bias", (8,)),
                       ("mlp.fc2.weight", (4, 8)), ("mlp.fc2.bias", (4,))):
        state[prefix + key] = torch.zeros(shape)
    for fc in ("sfc_h", "sfc_w"):
        state[f"{prefix}attn.{fc}.weight"] = torch.zeros(4, 4, 1, 1)
        state[f"{prefix}attn.{fc}.bias"] = torch.zeros(4)
        state[f"{prefix}attn.{fc}.offset"] = torch.zeros(1, 8, 1, 1)
    torch.save({"model": state}, str(server.folder / "CycleMLP_B2.pth"))
    monkeypatch.setitem(cycle, "url", f"{server.url}/CycleMLP_B2.pth")
    checkpoint = checkpoints.read_checkpoint(download.fetch("CycleMLPB2", "imagenet1k"))
    assert (checkpoint.family, checkpoint.source) == ("cyclemlp", "official CycleMLP")
    assert sorted(checkpoint.buffers) == [
        "stage_0_block_0/token_mixing/sfc_h/offset",
        "stage_0_block_0/token_mixing/sfc_w/offset",
    ]


def test_a_web_page_instead_of_the_weights_says_how_to_get_them(served, tmp_path, monkeypatch):
    """Google Drive (ViP's weights) answers the download of a large file with
    an HTML page asking a person to confirm."""
    server, _, _ = served
    entry = presets.WEIGHTS["ViPS7"]["imagenet1k"]
    page = (b"<!DOCTYPE html><html><head><title>Google Drive - Virus scan "
            b"warning</title></head><body>...</body></html>")
    (server.folder / "uc").write_bytes(page)
    monkeypatch.setitem(entry, "url", f"{server.url}/uc")
    cached = os.path.join(download.cache_dir(), "vip_s7.pth")
    with pytest.raises(ValueError) as info:
        download.fetch("ViPS7", "imagenet1k")
    message = str(info.value)
    assert "sent an HTML page, not the weights file (nothing was kept)" in message
    assert f"Open {entry['page']} in a browser" in message
    assert f"put it at {cached}" in message and "KERAS_MIXER_WEIGHTS_DIR" in message
    assert not os.path.exists(cached)
    assert os.listdir(download.cache_dir()) == []  # no temporary either
    # Saved by hand in KERAS_MIXER_WEIGHTS_DIR: refused, and left in place.
    local = tmp_path / "local"
    local.mkdir()
    (local / "vip_s7.pth").write_bytes(page)
    monkeypatch.setenv("KERAS_MIXER_WEIGHTS_DIR", str(local))
    with pytest.raises(ValueError, match="sent an HTML page, not the weights file"):
        download.fetch("ViPS7", "imagenet1k")
    assert (local / "vip_s7.pth").read_bytes() == page
    # Given as weights=: the file is named as a web page.
    with pytest.raises(ValueError, match="vip_s7.pth is an HTML web page, not a checkpoint"):
        keras_mixer.ViPS7(weights=str(local / "vip_s7.pth"))


# --- The Appendix C resize ---------------------------------------------------


@pytest.mark.parametrize("family, new_shape", [
    ("mixer", (64, 64, 3)), ("mixer", (32, 96, 3)), ("resmlp", (64, 64, 3)),
    ("resmlp", (32, 96, 3)), ("gmlp", (64, 64, 3)), ("gmixer", (32, 96, 3)),
])
def test_tiled_image_gives_the_small_models_logits(family, new_shape, reference):
    common = dict(patch_size=8, hidden_dim=24, num_blocks=2,
                  input_shape=(32, 32, 3), classes=7, classifier_activation=None)
    if family in ("mixer", "gmixer"):
        small = keras_mixer.MLPMixer(
            tokens_mlp_dim=6, channels_mlp_dim=48,
            mlp_layer="glu" if family == "gmixer" else "mlp", **common,
        )
    else:
        small = {"resmlp": keras_mixer.ResMLP, "gmlp": keras_mixer.GMLP}[family](**common)
    _randomise(small)
    large = keras_mixer.resize_token_mixing(small, new_shape)
    kh, kw = new_shape[0] // 32, new_shape[1] // 32
    if family in ("mixer", "gmixer"):
        assert large.get_layer("block_0").tokens_mlp_dim == 6 * kh * kw
    image = RNG.uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    tiled = np.tile(image, (1, kh, kw, 1))
    expected = np.asarray(small(image))
    assert reference.rel_err(large(tiled), expected) < 1e-5
    # A non-tiled image does not give those logits: the test can fail.
    other = tiled.copy()
    other[:, :32, :32] = RNG.uniform(0, 255, (2, 32, 32, 3))
    assert reference.rel_err(large(other), expected) > 1e-3


def test_blocks_are_permuted_not_contiguous():
    part, local = resize.token_index_map((2, 2), (4, 4))
    # Raster order over the 4x4 grid: the first row crosses two parts.
    np.testing.assert_array_equal(part[:4], [0, 0, 1, 1])
    np.testing.assert_array_equal(local[:4], [0, 1, 0, 1])
    np.testing.assert_array_equal(part[4:8], [0, 0, 1, 1])
    np.testing.assert_array_equal(local[4:8], [2, 3, 2, 3])


def test_non_integer_factor_is_refused():
    small = keras_mixer.MixerS32(input_shape=(64, 64, 3))
    with pytest.raises(ValueError, match="must grow by an integer factor K"):
        keras_mixer.resize_token_mixing(small, (96, 96, 3))
    with pytest.raises(ValueError, match="not a multiple of the patch size 32"):
        keras_mixer.resize_token_mixing(small, (100, 100, 3))


# --- Heads and class names ---------------------------------------------------


def test_other_class_count_and_no_top_load_all_but_the_head(caplog):
    source = keras_mixer.MixerS32(input_shape=(64, 64, 3), classes=10)
    _randomise(source)
    checkpoint = Checkpoint(
        tensors={v.path: np.asarray(v) for v in source.weights},
        family="mixer", source="keras", approximate_gelu=True,
    )
    target = keras_mixer.MixerS32(input_shape=(64, 64, 3), classes=3)
    with caplog.at_level(logging.WARNING, logger="keras_mixer"):
        assign.assign_checkpoint(target, checkpoint)
    assert "head has 10 classes, the model 3" in caplog.text
    assert np.all(np.asarray(target.get_layer("head").kernel) == 0)
    np.testing.assert_array_equal(
        target.get_layer("stem").proj.kernel, source.get_layer("stem").proj.kernel
    )
    backbone = keras_mixer.MixerS32(input_shape=(64, 64, 3), include_top=False)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="keras_mixer"):
        assign.assign_checkpoint(backbone, checkpoint)
    assert "no head (include_top=False)" in caplog.text
    headless = {k: v for k, v in checkpoint.tensors.items() if not k.startswith("head/")}
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="keras_mixer"):
        assign.assign_checkpoint(target, Checkpoint(headless, "mixer", "keras", True))
    assert "the checkpoint has no head" in caplog.text
    x = RNG.uniform(0, 255, (1, 64, 64, 3))
    features = keras_mixer.feature_extractor(source)(x)["pre_head_norm"]
    np.testing.assert_allclose(backbone(x), features, rtol=1e-5, atol=1e-5)


def test_mismatched_tensor_names_path_and_shapes():
    source = keras_mixer.MixerS32(input_shape=(64, 64, 3))
    tensors = {v.path: np.asarray(v) for v in source.weights}
    other = keras_mixer.MixerS16(input_shape=(64, 64, 3))
    checkpoint = Checkpoint(tensors, "mixer", "keras", True)
    with pytest.raises(ValueError, match=r"'stem/proj/kernel' has shape \(32, 32, 3, 512\), the model expects \(16, 16, 3, 512\)"):
        assign.assign_checkpoint(other, checkpoint)
    del tensors["block_3/norm2/gamma"]
    with pytest.raises(ValueError, match=r"no tensor for 'block_3/norm2/gamma' \(expected shape \(512,\)\)"):
        assign.assign_checkpoint(source, Checkpoint(tensors, "mixer", "keras", True))
    resmlp = keras_mixer.ResMLP12(input_shape=(32, 32, 3))
    with pytest.raises(ValueError, match="of another architecture"):
        assign.assign_checkpoint(resmlp, checkpoint)


def test_checkpoint_of_another_family_is_refused_before_building(tmp_path):
    source = keras_mixer.MixerS32(input_shape=(64, 64, 3))
    path = tmp_path / "Mixer-S_32.npz"
    to_official_npz(source, path)
    with pytest.raises(ValueError, match="is a mixer checkpoint .* but 'resmlp_12' is a resmlp model"):
        keras_mixer.ResMLP12(weights=str(path), input_shape=(32, 32, 3))


def test_non_finite_weights_are_refused_at_load(tmp_path):
    """A checkpoint or .weights.h5 holding NaN/Inf is refused, the tensor
    named, whatever the format."""
    def build(weights=None):
        return keras_mixer.MLPMixer(4, 16, 2, 8, 32, input_shape=(16, 16, 3),
                                    classes=7, weights=weights)

    source = build()
    _randomise(source)
    bias = source.get_layer("block_1").token_mixing.fc2.bias
    bias.assign(np.where(np.arange(bias.shape[0]) == 0, np.nan, 0.0))
    npz = tmp_path / "mixer.npz"
    to_official_npz(source, npz)
    with pytest.raises(ValueError, match=r"mixer.npz: tensor "
                       r"'block_1/token_mixing/fc2/bias' holds 1 NaN/Inf"):
        build(str(npz))
    h5 = str(tmp_path / "mixer.weights.h5")
    source.save_weights(h5)
    with pytest.raises(ValueError, match=r"tensor 'block_1/token_mixing/fc2/"
                       "bias' holds 1 NaN/Inf"):
        build(h5)


def test_decode_predictions():
    scores = np.zeros((2, 1000))
    scores[0, [1, 207, 3]] = [0.2, 0.7, 0.1]
    scores[1, 999] = 1.0
    decoded = keras_mixer.decode_predictions(scores, top=2)
    assert decoded[0] == [("n02099601", "golden retriever", 0.7), ("n01443537", "goldfish", 0.2)]
    assert decoded[1][0][:2] == ("n15075141", "toilet tissue")
    names = keras_mixer.labels.class_names(21843)
    assert len(names) == 21843 and len(set(w for w, _ in names)) == 21843
    assert len(keras_mixer.labels.class_names(11221)) == 11221
    with pytest.raises(ValueError, match="No class names are shipped for a 10-class head"):
        keras_mixer.decode_predictions(np.zeros((1, 10)))


# --- End to end: a table name served over HTTP, through the constructor ------


def to_official_npz(model, path):
    """Writes `model`'s weights with the official Flax key names."""
    names = {
        "stem/proj/": "stem/",
        "norm1/gamma": "LayerNorm_0/scale", "norm1/beta": "LayerNorm_0/bias",
        "norm2/gamma": "LayerNorm_1/scale", "norm2/beta": "LayerNorm_1/bias",
        "fc1/": "Dense_0/", "fc2/": "Dense_1/",
        "pre_head_norm/gamma": "pre_head_layer_norm/scale",
        "pre_head_norm/beta": "pre_head_layer_norm/bias",
    }
    arrays = {}
    for v in model.weights:
        key = v.path
        for old, new in names.items():
            key = key.replace(old, new)
        if key.startswith("block_"):
            key = "MixerBlock_" + key[len("block_"):]
        arrays[key] = np.asarray(v)
    np.savez(path, **arrays)


def test_named_weights_download_load_and_resize(tmp_path, monkeypatch, reference):
    """MixerS32 at full size, its official-layout file served from
    127.0.0.1 under a table name: the constructor downloads, verifies, loads
    exactly; at 2x the resolution the tiled image gives the same logits."""
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
    monkeypatch.delenv("KERAS_MIXER_WEIGHTS_DIR", raising=False)
    source = keras_mixer.MixerS32(classifier_activation=None)
    _randomise(source, seed=5)
    www = tmp_path / "www"
    www.mkdir()
    to_official_npz(source, www / "Mixer-S_32.npz")
    digest = hashlib.sha256((www / "Mixer-S_32.npz").read_bytes()).hexdigest()
    with _Server(www) as server:
        entry = dict(
            presets.WEIGHTS["MixerS32"]["gsam"],
            url=f"{server.url}/Mixer-S_32.npz",
            filename="e2e_Mixer-S_32.npz",
            sha256=digest,
        )
        monkeypatch.setitem(presets.WEIGHTS["MixerS32"], "e2e", entry)
        model = keras_mixer.MixerS32(weights="e2e", classifier_activation=None)
        large = keras_mixer.MixerS32(
            weights="e2e", input_shape=(448, 448, 3), classifier_activation=None
        )
        assert server.requests == ["/Mixer-S_32.npz"]  # the second is cached
    assert model.get_layer("block_0").approximate_gelu is True
    x = RNG.uniform(0, 255, (2, 224, 224, 3)).astype("float32")
    expected = np.asarray(source(x))
    assert reference.rel_err(model(x), expected) < 1e-6
    assert large.get_layer("block_0").tokens_mlp_dim == 4 * 256
    assert reference.rel_err(large(np.tile(x, (1, 2, 2, 1))), expected) < 1e-5
    # Fine-tuning on 10 classes is one line: all but the head, a zero head.
    tuned = keras_mixer.MixerS32(
        weights=str(tmp_path / "keras_home/models/keras_mixer/e2e_Mixer-S_32.npz"),
        classes=10,
    )
    assert np.all(np.asarray(tuned.get_layer("head").kernel) == 0)
    np.testing.assert_array_equal(
        tuned.get_layer("block_7").channel_mixing.fc2.kernel,
        source.get_layer("block_7").channel_mixing.fc2.kernel,
    )
